#include "client/cli/command_table.h"

#include <vector>

#include "client/cli/command.h"
#include "client/cli/commands_device.h"
#include "client/cli/commands_dma.h"
#include "client/cli/commands_irq.h"
#include "client/cli/commands_list.h"
#include "client/cli/commands_memory.h"
#include "client/cli/commands_ownership.h"
#include "client/cli/commands_region.h"
#include "client/cli/commands_script.h"
#include "client/cli/commands_top.h"

namespace vfiod::cli {

std::vector<Command> AllCommands() {
  std::vector<Command> all;
  for (std::vector<Command> group : {
           DeviceCommands(),     // info, config, config read|write, state, reset
           RegionCommands(),     // region read, read32, write, write32, poll32
           IrqCommands(),        // irq watch, enable-watch, disable, mask, unmask, watch-start...
           MemoryCommands(),     // memory create, fill, dump, compare, unregister
           DmaCommands(),        // dma map, unmap
           OwnershipCommands(),  // claim, release
           TopCommands(),        // top
           ListCommands(),       // list
           ScriptCommands(),     // session, sleep, expect-error
       }) {
    for (Command& command : group) all.push_back(std::move(command));
  }
  return all;
}

}  // namespace vfiod::cli
