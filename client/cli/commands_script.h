// vfioctl's script commands: session, sleep, expect-error.
#ifndef VFIOD_CLIENT_CLI_COMMANDS_SCRIPT_H_
#define VFIOD_CLIENT_CLI_COMMANDS_SCRIPT_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> ScriptCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_SCRIPT_H_
