// The command table's invariants, and the dispatcher's parsing, help and completion, without
// a daemon.
#include "client/cli/command_table.h"

#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/dispatch.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vfiod::cli {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

TEST(CommandTableTest, NamesAreUniqueAndSummarized) {
  std::set<std::string> names;
  for (const Command& command : AllCommands()) {
    EXPECT_TRUE(names.insert(command.name).second) << "duplicate: " << command.name;
    EXPECT_FALSE(command.summary.empty()) << command.name;
    EXPECT_TRUE(command.define != nullptr) << command.name;
  }
}

// The synopsis in each row is what its `define` declares, so --help's list cannot drift.
TEST(CommandTableTest, SynopsisMatchesDeclaredOperands) {
  for (const Command& command : AllCommands()) {
    EXPECT_EQ(command.synopsis, Dispatcher::DeclaredSynopsis(command)) << command.name;
  }
}

TEST(CommandTableTest, HelpListsEveryCommandAndTheExitCodes) {
  Dispatcher dispatcher(AllCommands());
  const std::string help = dispatcher.Help();
  for (const Command& command : AllCommands()) {
    EXPECT_THAT(help, HasSubstr("  " + command.name)) << command.name;
  }
  EXPECT_THAT(help, HasSubstr("Exit codes: 0 success; 1"));
  EXPECT_THAT(help, HasSubstr("--socket PATH"));
}

// A LineRunner for contexts that run no nested command.
class NoRunner : public LineRunner {
 public:
  absl::Status Run(Context&, const std::vector<std::string>&) override {
    return absl::UnimplementedError("");
  }
  int RunAndReport(Context&, const std::vector<std::string>&, absl::string_view) override {
    return kExitFailure;
  }
};

// Usage errors name the command and the operand, and never need a daemon.
TEST(DispatchTest, UsageErrorsNameTheCommandAndOperand) {
  Dispatcher dispatcher(AllCommands());
  std::ostringstream out;
  Context ctx(GlobalOptions{}, dispatcher, out);
  struct Case {
    std::vector<std::string> words;
    std::string message;
  } cases[] = {
      {{"region", "read32", "0", "0xzz"}, "region read32: bad OFFSET \"0xzz\""},
      {{"region", "read32", "0"}, "region read32: OFFSET is required"},
      {{"region", "read32", "0", "0", "9"}, "region read32: unexpected argument \"9\""},
      {{"irq", "watch", "--count", "x"}, "irq watch: bad --count \"x\""},
      {{"irq", "watch", "--enable", "0:1"}, "irq watch: --enable needs an INDEX"},
      {{"irq", "watch", "--bogus"}, "irq watch: unknown flag --bogus"},
      {{"region", "poll32", "0", "0", "1", "3"}, "region poll32: VALUE 0x3 has bits outside"},
      {{"bogus"}, "unknown command \"bogus\""},
      {{"region", "bogus"}, "unknown command \"region bogus\""},
      {{"region"}, "region: which one? region read|read32|write|write32|poll32"},
      {{"memory", "create", "0"}, "memory create: SIZE must be > 0"},
      {{"expect-error", "NOPE", "info"}, "expect-error: bad status code \"NOPE\""},
      {{"expect-error", "NOT_FOUND"}, "expect-error: COMMAND is required"},
      // Parsed fine; the connection needs a socket, which this context lacks.
      {{"info"}, "info: no --socket"},
  };
  for (const Case& c : cases) {
    const absl::Status status = dispatcher.Run(ctx, c.words);
    EXPECT_TRUE(IsUsageError(status)) << c.message << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
  }
}

TEST(DispatchTest, HelpOfACommandIsPrintedNotRun) {
  Dispatcher dispatcher(AllCommands());
  std::ostringstream out;
  Context ctx(GlobalOptions{}, dispatcher, out);
  EXPECT_TRUE(dispatcher.Run(ctx, {"region", "poll32", "--help"}).ok());
  EXPECT_THAT(out.str(), HasSubstr("Usage: vfioctl region poll32"));
  EXPECT_THAT(out.str(), HasSubstr("MASK"));
}

TEST(DispatchTest, CompletesCommandsSubcommandsFlagsAndCodes) {
  Dispatcher dispatcher(AllCommands());
  EXPECT_THAT(dispatcher.Complete({}), Contains("region"));
  EXPECT_THAT(dispatcher.Complete({}), Contains("--socket"));
  EXPECT_THAT(dispatcher.Complete({"--socket", "/x", "--json"}), Contains("top"));
  EXPECT_THAT(dispatcher.Complete({"--socket"}), IsEmpty());
  EXPECT_THAT(dispatcher.Complete({"region"}), Contains("poll32"));
  EXPECT_THAT(dispatcher.Complete({"irq", "watch"}), Contains("--enable"));
  EXPECT_THAT(dispatcher.Complete({"irq", "watch", "--count"}), IsEmpty());
  EXPECT_THAT(dispatcher.Complete({"config"}), Contains("--raw"));
  EXPECT_THAT(dispatcher.Complete({"config"}), Contains("read"));
  EXPECT_THAT(dispatcher.Complete({"expect-error"}), Contains("PERMISSION_DENIED"));
  EXPECT_THAT(dispatcher.Complete({"expect-error", "NOT_FOUND"}), Contains("memory"));
  EXPECT_THAT(dispatcher.Complete({"expect-error", "NOT_FOUND", "memory"}), Contains("dump"));
  EXPECT_THAT(dispatcher.Complete({"info"}), Not(Contains("region")));
}

}  // namespace
}  // namespace vfiod::cli
