// vfioctl's DMA commands: dma map, dma unmap.
#ifndef VFIOD_CLIENT_CLI_COMMANDS_DMA_H_
#define VFIOD_CLIENT_CLI_COMMANDS_DMA_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> DmaCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMANDS_DMA_H_
