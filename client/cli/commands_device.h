// vfioctl's device commands: info, config, config read, config write, state, reset.
#ifndef VFIOD_CLIENT_CLI_COMMANDS_DEVICE_H_
#define VFIOD_CLIENT_CLI_COMMANDS_DEVICE_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> DeviceCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_DEVICE_H_
