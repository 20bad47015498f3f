// vfioctl's interrupt commands: streams (irq watch; watch-start, wait, watch-stop in a session) and
// control (enable-watch, disable, mask, unmask).
#ifndef VFIOD_CLIENT_CLI_COMMANDS_IRQ_H_
#define VFIOD_CLIENT_CLI_COMMANDS_IRQ_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> IrqCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_IRQ_H_
