// vfioctl's live view: top.
#ifndef VFIOD_CLIENT_CLI_COMMANDS_TOP_H_
#define VFIOD_CLIENT_CLI_COMMANDS_TOP_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> TopCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_TOP_H_
