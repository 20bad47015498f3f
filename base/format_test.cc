#include "base/format.h"

#include "gtest/gtest.h"

namespace vfiod {
namespace {

TEST(HexTest, LowerCaseWithPrefixNoPadding) {
  EXPECT_EQ(Hex(0), "0x0");
  EXPECT_EQ(Hex(0x1f), "0x1f");
  EXPECT_EQ(Hex(UINT64_MAX), "0xffffffffffffffff");
}

TEST(AnnotateTest, PrefixesMessageAndKeepsCode) {
  absl::Status annotated = Annotate(absl::NotFoundError("no such BAR"), "ReadRegion");
  EXPECT_EQ(annotated.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(annotated.message(), "ReadRegion: no such BAR");
}

TEST(AnnotateTest, OkStaysOk) { EXPECT_TRUE(Annotate(absl::OkStatus(), "ReadRegion").ok()); }

}  // namespace
}  // namespace vfiod
