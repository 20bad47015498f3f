// vfioctl's daemon discovery: list.
#ifndef VFIOD_CLIENT_CLI_COMMANDS_LIST_H_
#define VFIOD_CLIENT_CLI_COMMANDS_LIST_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> ListCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_LIST_H_
