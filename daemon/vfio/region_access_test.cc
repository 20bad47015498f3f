#include "daemon/vfio/region_access.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace vfiod {
namespace {

std::vector<AccessChunk> Chunks(std::initializer_list<std::pair<uint64_t, uint32_t>> list) {
  std::vector<AccessChunk> chunks;
  for (const auto& [offset, size] : list) chunks.push_back(AccessChunk{offset, size});
  return chunks;
}

TEST(RegionAccessTest, AlignedDwordsStayWhole) {
  EXPECT_EQ(SplitRegionAccess(0, 4), Chunks({{0, 4}}));
  EXPECT_EQ(SplitRegionAccess(8, 8), Chunks({{8, 4}, {12, 4}}));  // never 8 bytes
}

TEST(RegionAccessTest, UnalignedStartsAndEnds) {
  EXPECT_EQ(SplitRegionAccess(1, 7), Chunks({{1, 1}, {2, 2}, {4, 4}}));
  EXPECT_EQ(SplitRegionAccess(3, 6), Chunks({{3, 1}, {4, 4}, {8, 1}}));
  EXPECT_EQ(SplitRegionAccess(2, 7), Chunks({{2, 2}, {4, 4}, {8, 1}}));
  EXPECT_EQ(SplitRegionAccess(0, 3), Chunks({{0, 2}, {2, 1}}));
  EXPECT_EQ(SplitRegionAccess(6, 4), Chunks({{6, 2}, {8, 2}}));
}

TEST(RegionAccessTest, SmallAccesses) {
  EXPECT_EQ(SplitRegionAccess(5, 1), Chunks({{5, 1}}));
  EXPECT_EQ(SplitRegionAccess(4, 2), Chunks({{4, 2}}));
  EXPECT_EQ(SplitRegionAccess(5, 2), Chunks({{5, 1}, {6, 1}}));
  EXPECT_EQ(SplitRegionAccess(7, 0), Chunks({}));
}

TEST(RegionAccessTest, ChunksAreNaturallyAlignedAndCoverTheRange) {
  for (uint64_t offset = 0; offset < 16; ++offset) {
    for (uint64_t size = 0; size < 40; ++size) {
      uint64_t next = offset;
      for (const AccessChunk& chunk : SplitRegionAccess(offset, size)) {
        EXPECT_EQ(chunk.offset, next);
        EXPECT_TRUE(chunk.size == 1 || chunk.size == 2 || chunk.size == 4);
        EXPECT_EQ(chunk.offset % chunk.size, 0u);
        next += chunk.size;
      }
      EXPECT_EQ(next, offset + size);
    }
  }
}

TEST(RegionAccessTest, NearTheTopOfTheAddressSpace) {
  const uint64_t top = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(SplitRegionAccess(top - 3, 3), Chunks({{top - 3, 2}, {top - 1, 1}}));
  EXPECT_EQ(NaturalAccessSize(top, 1), 1u);
}

RegionInfo Region(uint64_t size, bool readable, bool writable) {
  RegionInfo region;
  region.index = 0;
  region.size = size;
  region.readable = readable;
  region.writable = writable;
  return region;
}

TEST(RegionAccessTest, CheckBoundsWithoutOverflow) {
  const RegionInfo bar = Region(0x100000, true, true);
  EXPECT_TRUE(CheckRegionAccess("Read", bar, 0, 4, false).ok());
  EXPECT_TRUE(CheckRegionAccess("Read", bar, 0xffffc, 4, false).ok());
  EXPECT_TRUE(CheckRegionAccess("Read", bar, 0x100000, 0, false).ok());
  EXPECT_EQ(CheckRegionAccess("Read", bar, 0xffffd, 4, false).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckRegionAccess("Read", bar, 0x100001, 0, false).code(),
            absl::StatusCode::kOutOfRange);
  const uint64_t top = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(CheckRegionAccess("Read", bar, top, 2, false).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckRegionAccess("Read", bar, 4, top, false).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckRegionAccess("Read", Region(top, true, true), top - 1, 2, false).code(),
            absl::StatusCode::kOutOfRange);
}

TEST(RegionAccessTest, CheckFlags) {
  const RegionInfo rom = Region(0x1000, true, false);
  EXPECT_TRUE(CheckRegionAccess("Read", rom, 0, 4, false).ok());
  EXPECT_EQ(CheckRegionAccess("Write", rom, 0, 4, true).code(),
            absl::StatusCode::kPermissionDenied);
  const RegionInfo absent = Region(0, false, false);
  EXPECT_EQ(CheckRegionAccess("Read", absent, 0, 0, false).code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace vfiod
