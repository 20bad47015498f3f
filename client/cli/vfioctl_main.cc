// vfioctl: the operator CLI of vfiod. `vfioctl --help` lists the commands; each is a row of
// client/cli/command_table.h, defined in its group's file (client/cli/commands_*.cc).
#include <string>
#include <vector>

#include "client/cli/command_table.h"
#include "client/cli/dispatch.h"

int main(int argc, char** argv) {
  vfiod::cli::Dispatcher dispatcher(vfiod::cli::AllCommands());
  return dispatcher.Main(std::vector<std::string>(argv + 1, argv + argc));
}
