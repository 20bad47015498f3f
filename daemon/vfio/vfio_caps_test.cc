#include "daemon/vfio/vfio_caps.h"

#include <linux/vfio.h>

#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace vfiod {
namespace {

// Byte buffer builder; buffers are deliberately unaligned-agnostic (memcpy only).
class Bytes {
 public:
  template <typename T>
  void Put(size_t offset, const T& value) {
    if (bytes_.size() < offset + sizeof(T)) bytes_.resize(offset + sizeof(T));
    std::memcpy(bytes_.data() + offset, &value, sizeof(T));
  }
  void Resize(size_t size) { bytes_.resize(size); }
  void SetArgsz(uint32_t argsz) { Put<uint32_t>(0, argsz); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

vfio_info_cap_header Cap(uint16_t id, uint32_t next) { return {id, 1, next}; }

constexpr uint32_t kRegionFixed = sizeof(vfio_region_info);  // 32
constexpr uint32_t kSparseAt = kRegionFixed;                 // 32: header, nr, reserved, 2 areas
constexpr uint32_t kTypeAt = kSparseAt + 16 + 2 * 16;        // 80
constexpr uint32_t kUnknownAt = kTypeAt + 16;                // 96
constexpr uint32_t kMsixAt = kUnknownAt + 24;                // 120
constexpr uint32_t kRegionEnd = kMsixAt + 8;                 // 128

// BAR0 of 1 MiB with an MSI-X table at 0x2000: sparse areas around it, a type capability, an
// unknown capability, and MSIX_MAPPABLE, as vfio-pci would lay them out.
Bytes ValidRegion() {
  Bytes b;
  vfio_region_info info = {};
  info.argsz = kRegionEnd;
  info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
               VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS;
  info.index = 0;
  info.cap_offset = kSparseAt;
  info.size = 0x100000;
  info.offset = 0;
  b.Put(0, info);
  b.Put(kSparseAt, Cap(VFIO_REGION_INFO_CAP_SPARSE_MMAP, kTypeAt));
  b.Put<uint32_t>(kSparseAt + 8, 2);
  b.Put<uint32_t>(kSparseAt + 12, 0);
  b.Put(kSparseAt + 16, vfio_region_sparse_mmap_area{0, 0x2000});
  b.Put(kSparseAt + 32, vfio_region_sparse_mmap_area{0x3000, 0xfd000});
  b.Put(kTypeAt, Cap(VFIO_REGION_INFO_CAP_TYPE, kUnknownAt));
  b.Put<uint32_t>(kTypeAt + 8, 0x80000001);
  b.Put<uint32_t>(kTypeAt + 12, 7);
  b.Put(kUnknownAt, Cap(0x7777, kMsixAt));
  b.Put(kMsixAt, Cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 0));
  b.Resize(kRegionEnd);
  return b;
}

TEST(VfioCapsTest, ParsesAValidRegionChain) {
  Bytes b = ValidRegion();
  absl::StatusOr<VfioRegion> region = ParseRegionInfo(b.bytes());
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ(region->info.index, 0u);
  EXPECT_EQ(region->info.size, 0x100000u);
  EXPECT_TRUE(region->info.readable);
  EXPECT_TRUE(region->info.writable);
  EXPECT_TRUE(region->info.mmappable);
  ASSERT_EQ(region->info.sparse_mmap.size(), 2u);
  EXPECT_EQ(region->info.sparse_mmap[0].offset, 0u);
  EXPECT_EQ(region->info.sparse_mmap[0].size, 0x2000u);
  EXPECT_EQ(region->info.sparse_mmap[1].offset, 0x3000u);
  EXPECT_EQ(region->info.sparse_mmap[1].size, 0xfd000u);
  EXPECT_EQ(region->info.type, 0x80000001u);
  EXPECT_EQ(region->info.subtype, 7u);
  EXPECT_TRUE(region->info.msix_mappable);
}

TEST(VfioCapsTest, WalkReportsEachCapabilityAndItsExtent) {
  Bytes b = ValidRegion();
  absl::StatusOr<std::vector<VfioCap>> caps =
      WalkCapChain(b.bytes(), kRegionEnd, kSparseAt, kRegionFixed);
  ASSERT_TRUE(caps.ok()) << caps.status();
  ASSERT_EQ(caps->size(), 4u);
  EXPECT_EQ((*caps)[0].offset, kSparseAt);
  EXPECT_EQ((*caps)[0].extent, kTypeAt - kSparseAt);
  EXPECT_EQ((*caps)[2].id, 0x7777);
  EXPECT_EQ((*caps)[3].offset, kMsixAt);
  EXPECT_EQ((*caps)[3].extent, 8u);
}

TEST(VfioCapsTest, RegionWithoutCapabilities) {
  Bytes b;
  vfio_region_info info = {};
  info.argsz = sizeof(info);
  info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
  info.index = 7;
  info.size = 256;
  info.offset = uint64_t{7} << 40;
  b.Put(0, info);
  absl::StatusOr<VfioRegion> region = ParseRegionInfo(b.bytes());
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ(region->info.index, 7u);
  EXPECT_EQ(region->fd_offset, uint64_t{7} << 40);
  EXPECT_TRUE(region->info.sparse_mmap.empty());
  EXPECT_FALSE(region->info.type.has_value());
  EXPECT_FALSE(region->info.msix_mappable);
}

void ExpectMalformed(Bytes& b, const char* why) {
  absl::StatusOr<VfioRegion> region = ParseRegionInfo(b.bytes());
  EXPECT_FALSE(region.ok()) << why;
  if (!region.ok()) {
    EXPECT_EQ(region.status().code(), absl::StatusCode::kInternal) << why;
  }
}

TEST(VfioCapsTest, RejectsNextPointingBackwards) {
  Bytes b = ValidRegion();
  b.Put(kTypeAt, Cap(VFIO_REGION_INFO_CAP_TYPE, kSparseAt));
  ExpectMalformed(b, "backwards");
}

TEST(VfioCapsTest, RejectsSelfLoopAndTwoCapabilityLoop) {
  Bytes self = ValidRegion();
  self.Put(kTypeAt, Cap(VFIO_REGION_INFO_CAP_TYPE, kTypeAt));
  ExpectMalformed(self, "self loop");
  Bytes pair = ValidRegion();
  pair.Put(kMsixAt, Cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, kUnknownAt));
  ExpectMalformed(pair, "loop back to an earlier capability");
}

TEST(VfioCapsTest, RejectsNextInsideTheCurrentHeader) {
  Bytes b = ValidRegion();
  b.Put(kTypeAt, Cap(VFIO_REGION_INFO_CAP_TYPE, kTypeAt + 4));
  ExpectMalformed(b, "overlapping header");
}

TEST(VfioCapsTest, RejectsNextBeyondArgsz) {
  Bytes b = ValidRegion();
  b.Put(kMsixAt, Cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, kRegionEnd + 8));
  ExpectMalformed(b, "beyond argsz");
  Bytes huge = ValidRegion();
  huge.Put(kMsixAt, Cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 0xfffffff8));
  ExpectMalformed(huge, "next near 2^32");
}

TEST(VfioCapsTest, RejectsAHeaderStraddlingTheEnd) {
  Bytes b = ValidRegion();
  b.Put(kMsixAt, Cap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, kRegionEnd - 4));
  ExpectMalformed(b, "header straddles the end");
}

TEST(VfioCapsTest, RejectsABodyThatDoesNotFit) {
  Bytes many = ValidRegion();
  many.Put<uint32_t>(kSparseAt + 8, 3);  // a third area would overlap the type capability
  ExpectMalformed(many, "sparse areas beyond the capability");
  Bytes max = ValidRegion();
  max.Put<uint32_t>(kSparseAt + 8, std::numeric_limits<uint32_t>::max());
  ExpectMalformed(max, "nr_areas 2^32-1");
  Bytes type = ValidRegion();  // the type capability squeezed to its header
  type.Put(kTypeAt, Cap(VFIO_REGION_INFO_CAP_TYPE, kTypeAt + 8));
  type.Put(kTypeAt + 8, Cap(0x7777, kUnknownAt));
  ExpectMalformed(type, "type capability without its body");
  // The last capability reaches the end of the valid bytes.
  Bytes last = ValidRegion();
  last.Put(kTypeAt, Cap(0x7778, kUnknownAt));
  last.Put(kMsixAt, Cap(VFIO_REGION_INFO_CAP_TYPE, 0));
  ExpectMalformed(last, "type capability cut by the end");
}

TEST(VfioCapsTest, RejectsSparseAreasOutsideTheRegion) {
  Bytes beyond = ValidRegion();
  beyond.Put(kSparseAt + 32, vfio_region_sparse_mmap_area{0x3000, 0xfe000});
  ExpectMalformed(beyond, "area beyond the region");
  Bytes wrap = ValidRegion();
  wrap.Put(kSparseAt + 32,
           vfio_region_sparse_mmap_area{0x3000, std::numeric_limits<uint64_t>::max()});
  ExpectMalformed(wrap, "area wraps");
}

TEST(VfioCapsTest, RejectsAChainStartingInsideTheFixedStruct) {
  Bytes b = ValidRegion();
  b.Put<uint32_t>(offsetof(vfio_region_info, cap_offset), 8);
  ExpectMalformed(b, "cap_offset inside the struct");
}

TEST(VfioCapsTest, RejectsAChainThatWasNotReturned) {
  Bytes zero = ValidRegion();
  zero.Put<uint32_t>(offsetof(vfio_region_info, cap_offset), 0);
  ExpectMalformed(zero, "CAPS flag but cap_offset 0");
  Bytes small = ValidRegion();
  small.SetArgsz(kRegionEnd + 64);
  ExpectMalformed(small, "argsz larger than the buffer");
}

TEST(VfioCapsTest, ArgszBoundsTheWalkEvenWhenTheBufferIsLarger) {
  Bytes b = ValidRegion();
  b.Resize(kRegionEnd + 64);
  b.SetArgsz(kMsixAt + 4);  // the last header lies across argsz
  ExpectMalformed(b, "header across argsz");
}

TEST(VfioCapsTest, ZeroLengthAndTinyBuffers) {
  std::vector<uint8_t> empty;
  EXPECT_FALSE(ParseRegionInfo(empty).ok());
  EXPECT_FALSE(ParseIommuInfo(empty).ok());
  absl::StatusOr<std::vector<VfioCap>> none = WalkCapChain(empty, 0, 0, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(WalkCapChain(empty, 0, 8, 0).ok());
  std::vector<uint8_t> short_buffer(sizeof(vfio_region_info) - 1);
  EXPECT_FALSE(ParseRegionInfo(short_buffer).ok());
  // More valid bytes than the buffer holds is the caller's bug, refused.
  std::vector<uint8_t> eight(8);
  EXPECT_FALSE(WalkCapChain(eight, 16, 8, 0).ok());
}

// Every value of every next field and of cap_offset near the edges: no crash, no read out of
// bounds (this test runs under ASan too), and any accepted chain is inside the buffer.
TEST(VfioCapsTest, MutatedChainsNeverReadOutOfBounds) {
  const uint32_t fields[] = {offsetof(vfio_region_info, cap_offset), kSparseAt + 4, kTypeAt + 4,
                             kUnknownAt + 4, kMsixAt + 4};
  for (uint32_t field : fields) {
    for (uint32_t value = 0; value < kRegionEnd + 16; ++value) {
      Bytes b = ValidRegion();
      b.Put<uint32_t>(field, value);
      // An exact-size heap copy, so ASan sees any read past the end.
      std::vector<uint8_t> exact(b.bytes());
      absl::StatusOr<VfioRegion> region = ParseRegionInfo(exact);
      if (region.ok()) {
        for (const SparseMmapArea& area : region->info.sparse_mmap) {
          EXPECT_LE(area.offset + area.size, region->info.size);
        }
      }
      absl::StatusOr<std::vector<VfioCap>> caps =
          WalkCapChain(exact, static_cast<uint32_t>(exact.size()), value, 0);
      if (caps.ok()) {
        for (const VfioCap& cap : *caps) {
          EXPECT_LE(uint64_t{cap.offset} + cap.extent, exact.size());
          EXPECT_GE(cap.extent, sizeof(vfio_info_cap_header));
        }
      }
    }
  }
}

constexpr uint32_t kIommuFixed = sizeof(vfio_iommu_type1_info);  // 24
constexpr uint32_t kMigrationAt = kIommuFixed;                   // 24, 32 bytes
constexpr uint32_t kAvailAt = kMigrationAt + 32;                 // 56, 12 bytes padded to 16
constexpr uint32_t kIovaAt = kAvailAt + 16;                      // 72, 16 + 2 * 16 bytes
constexpr uint32_t kIommuEnd = kIovaAt + 16 + 2 * 16;            // 120

// What Linux 6.1's type1 reports under QEMU's intel-iommu: migration, DMA_AVAIL, IOVA ranges
// (the MSI window excluded), in the kernel's order.
Bytes ValidIommu() {
  Bytes b;
  vfio_iommu_type1_info info = {};
  info.argsz = kIommuEnd;
  info.flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;
  info.iova_pgsizes = 0x40201000;
  info.cap_offset = kMigrationAt;
  b.Put(0, info);
  b.Put(kMigrationAt, Cap(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, kAvailAt));
  b.Put(kAvailAt, Cap(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, kIovaAt));
  b.Put<uint32_t>(kAvailAt + 8, 65000);
  b.Put(kIovaAt, Cap(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0));
  b.Put<uint32_t>(kIovaAt + 8, 2);
  b.Put(kIovaAt + 16, vfio_iova_range{0, 0xfedfffff});
  b.Put(kIovaAt + 32, vfio_iova_range{0xfef00000, (uint64_t{1} << 39) - 1});
  b.Resize(kIommuEnd);
  return b;
}

TEST(VfioCapsTest, ParsesIommuInfo) {
  Bytes b = ValidIommu();
  absl::StatusOr<ParsedIommuInfo> parsed = ParseIommuInfo(b.bytes());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->info.page_size_bitmap, 0x40201000u);
  EXPECT_TRUE(parsed->has_dma_avail);
  EXPECT_EQ(parsed->info.dma_mappings_available, 65000u);
  EXPECT_TRUE(parsed->has_iova_ranges);
  ASSERT_EQ(parsed->info.usable_ranges.size(), 2u);
  EXPECT_EQ(parsed->info.usable_ranges[0].start, 0u);
  EXPECT_EQ(parsed->info.usable_ranges[0].last, 0xfedfffffu);
  EXPECT_EQ(parsed->info.usable_ranges[1].start, 0xfef00000u);
  EXPECT_EQ(parsed->info.usable_ranges[1].last, (uint64_t{1} << 39) - 1);
}

TEST(VfioCapsTest, IommuInfoWithoutCapabilitiesGetsDefaults) {
  Bytes b;
  vfio_iommu_type1_info info = {};
  info.argsz = sizeof(info);
  info.flags = VFIO_IOMMU_INFO_PGSIZES;
  info.iova_pgsizes = 0x1000;
  b.Put(0, info);
  absl::StatusOr<ParsedIommuInfo> parsed = ParseIommuInfo(b.bytes());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->has_iova_ranges);
  EXPECT_FALSE(parsed->has_dma_avail);
  EXPECT_EQ(parsed->info.page_size_bitmap, 0x1000u);
  EXPECT_EQ(parsed->info.dma_mappings_available, kDefaultDmaMappings);
  ASSERT_EQ(parsed->info.usable_ranges.size(), 1u);
  EXPECT_EQ(parsed->info.usable_ranges[0].start, 0u);
  EXPECT_EQ(parsed->info.usable_ranges[0].last, std::numeric_limits<uint64_t>::max());
}

TEST(VfioCapsTest, RejectsMalformedIommuCapabilities) {
  Bytes inverted = ValidIommu();
  inverted.Put(kIovaAt + 32, vfio_iova_range{0xfef00000, 0xfeefffff});
  EXPECT_FALSE(ParseIommuInfo(inverted.bytes()).ok());

  Bytes too_many = ValidIommu();
  too_many.Put<uint32_t>(kIovaAt + 8, 3);
  EXPECT_FALSE(ParseIommuInfo(too_many.bytes()).ok());

  Bytes short_avail = ValidIommu();  // DMA_AVAIL squeezed to its header
  short_avail.Put(kMigrationAt, Cap(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, kAvailAt + 8));
  short_avail.Put(kAvailAt + 8, Cap(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, kIovaAt));
  short_avail.Put(kAvailAt, Cap(0x7777, kAvailAt + 8));
  EXPECT_FALSE(ParseIommuInfo(short_avail.bytes()).ok());

  Bytes backwards = ValidIommu();
  backwards.Put(kIovaAt, Cap(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, kMigrationAt));
  EXPECT_FALSE(ParseIommuInfo(backwards.bytes()).ok());

  Bytes not_returned = ValidIommu();
  not_returned.Put<uint32_t>(offsetof(vfio_iommu_type1_info, cap_offset), 0);
  EXPECT_FALSE(ParseIommuInfo(not_returned.bytes()).ok());
}

TEST(VfioCapsTest, MutatedIommuChainsNeverReadOutOfBounds) {
  const uint32_t fields[] = {offsetof(vfio_iommu_type1_info, cap_offset), kMigrationAt + 4,
                             kAvailAt + 4, kIovaAt + 4, kIovaAt + 8};
  for (uint32_t field : fields) {
    for (uint32_t value = 0; value < kIommuEnd + 16; ++value) {
      Bytes b = ValidIommu();
      b.Put<uint32_t>(field, value);
      std::vector<uint8_t> exact(b.bytes());
      (void)ParseIommuInfo(exact);
    }
  }
}

}  // namespace
}  // namespace vfiod
