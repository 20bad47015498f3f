// vfioctl's guest memory commands: memory create, fill, dump, compare, unregister.
#ifndef VFIOD_CLIENT_CLI_COMMANDS_MEMORY_H_
#define VFIOD_CLIENT_CLI_COMMANDS_MEMORY_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> MemoryCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_MEMORY_H_
