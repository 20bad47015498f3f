// vfioctl's ownership commands: claim, release.
#ifndef VFIOD_CLIENT_CLI_COMMANDS_OWNERSHIP_H_
#define VFIOD_CLIENT_CLI_COMMANDS_OWNERSHIP_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> OwnershipCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_OWNERSHIP_H_
