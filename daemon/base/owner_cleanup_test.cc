#include "daemon/base/owner_cleanup.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using ::testing::ElementsAre;
using Stage = OwnerCleanup::Stage;

TEST(OwnerCleanupTest, RunsStageByStageInRegistrationOrderWithinAStage) {
  OwnerCleanup cleanup;
  std::vector<std::string> ran;
  auto record = [&ran](const char* name) { return [&ran, name] { ran.push_back(name); }; };
  cleanup.Register(Stage::kSession, "tokens", record("tokens"));
  cleanup.Register(Stage::kDma, "dma", record("dma"));
  cleanup.Register(Stage::kQuiesce, "bus master", record("bus master"));
  cleanup.Register(Stage::kDma, "windows", record("windows"));
  cleanup.Register(Stage::kInterrupts, "irqs", record("irqs"));

  EXPECT_THAT(cleanup.Names(), ElementsAre("bus master", "irqs", "dma", "windows", "tokens"));
  cleanup.Run("test");
  EXPECT_THAT(ran, ElementsAre("bus master", "irqs", "dma", "windows", "tokens"));
  EXPECT_EQ(cleanup.runs(), 1u);
}

TEST(OwnerCleanupTest, EveryRunCallsEveryRelease) {
  OwnerCleanup cleanup;
  int calls = 0;
  cleanup.Register(Stage::kDma, "count", [&calls] { ++calls; });
  cleanup.Run("first owner");
  cleanup.Run("second owner");
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cleanup.runs(), 2u);
}

TEST(OwnerCleanupTest, AReleaseMayTakeItsOwnLocksAndReadTheRegistry) {
  OwnerCleanup cleanup;
  size_t seen = 0;
  cleanup.Register(Stage::kDevice, "reads names", [&] { seen = cleanup.Names().size(); });
  cleanup.Run("test");
  EXPECT_EQ(seen, 1u);
}

}  // namespace
}  // namespace vfiod
