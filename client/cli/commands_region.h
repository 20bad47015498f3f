// vfioctl's region commands: BAR and ROM access (region read, read32, write, write32, poll32).
#ifndef VFIOD_CLIENT_CLI_COMMANDS_REGION_H_
#define VFIOD_CLIENT_CLI_COMMANDS_REGION_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> RegionCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_REGION_H_
