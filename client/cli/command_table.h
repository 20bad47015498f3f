// vfioctl's command table: every command, in the order `vfioctl --help` lists them. Each group
// file (commands_*.cc) defines its own rows; this is the one place that lists the groups.
//
// To add a command to a group, add a row (and its handler) to that group's file. To add a
// group, write commands_<group>.h/.cc like the others, add its library to BUILD.bazel and one
// line to AllCommands().
#ifndef VFIOD_CLIENT_CLI_COMMAND_TABLE_H_
#define VFIOD_CLIENT_CLI_COMMAND_TABLE_H_

#include <vector>

#include "client/cli/command.h"

namespace vfiod::cli {

std::vector<Command> AllCommands();

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMAND_TABLE_H_
