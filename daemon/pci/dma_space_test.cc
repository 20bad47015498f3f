#include "daemon/pci/dma_space.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "daemon/base/fd_count_for_test.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/fake_backend.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using Code = absl::StatusCode;
using ::vfiod::testing::CountOpenFds;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;

UniqueFd MakeMemfd(uint64_t size, int seals = F_SEAL_SHRINK) {
  int fd = ::memfd_create("dma_space_test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return UniqueFd();
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return UniqueFd();
  if (seals != 0 && ::fcntl(fd, F_ADD_SEALS, seals) != 0) return UniqueFd();
  return UniqueFd(fd);
}

// The number of mappings of this process, from /proc/self/maps; like CountOpenFds(), a test
// failure and -1 where that file cannot be read.
int CountMappings() {
  std::ifstream maps("/proc/self/maps");
  if (!maps.is_open()) {
    ADD_FAILURE() << "cannot count mappings for a leak check: /proc/self/maps: "
                  << std::strerror(errno) << " (the mapping-leak checks need procfs at /proc)";
    return -1;
  }
  std::string line;
  int count = 0;
  while (std::getline(maps, line)) ++count;
  return count;
}

class DmaSpaceTest : public ::testing::Test {
 protected:
  DmaSpaceTest() { limits_.max_dma_mappings = 16; }

  DmaSpace& dma() {
    if (dma_ == nullptr) dma_ = std::make_unique<DmaSpace>(&backend_, limits_);
    return *dma_;
  }

  uint64_t Register(uint64_t size) {
    absl::StatusOr<MemoryInfo> info = dma().RegisterMemory(MakeMemfd(size), 0);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->id : 0;
  }

  static DmaMapRequest Req(uint64_t iova, uint64_t size, uint64_t memory_id, uint64_t offset = 0) {
    DmaMapRequest r;
    r.iova = iova;
    r.size = size;
    r.memory_id = memory_id;
    r.offset = offset;
    r.device_read = true;
    r.device_write = true;
    return r;
  }

  // Expects `request` to fail with `code` (and `text` in the message) without reaching the
  // backend or changing anything.
  void ExpectMapRejected(const DmaMapRequest& request, Code code, const std::string& text = "") {
    const std::vector<MemoryInfo> memory = dma().Memory();
    const std::vector<DmaMapRequest> mappings = dma().Mappings();
    const int calls = backend_.map_calls();
    absl::Status status = dma().MapDma(request);
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_TRUE(absl::StartsWith(status.message(), "MapDma: ")) << status;
    if (!text.empty()) {
      EXPECT_TRUE(absl::StrContains(status.message(), text)) << status;
    }
    EXPECT_EQ(backend_.map_calls(), calls);
    EXPECT_EQ(dma().Mappings().size(), mappings.size());
    std::vector<MemoryInfo> after = dma().Memory();
    ASSERT_EQ(after.size(), memory.size());
    for (size_t i = 0; i < after.size(); ++i) {
      EXPECT_EQ(after[i].id, memory[i].id);
      EXPECT_EQ(after[i].mappings, memory[i].mappings);
    }
  }

  FakeBackend backend_;
  DeviceLimits limits_;
  std::unique_ptr<DmaSpace> dma_;
};

TEST_F(DmaSpaceTest, RegistersASealedMemfdAndClosesTheFd) {
  const int fds = CountOpenFds();
  absl::StatusOr<MemoryInfo> info = dma().RegisterMemory(MakeMemfd(kMiB), 0);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->id, 1u);
  EXPECT_EQ(info->size, kMiB);
  EXPECT_EQ(CountOpenFds(), fds);
  absl::StatusOr<MemoryInfo> second = dma().RegisterMemory(MakeMemfd(kMiB), 2 * kPage);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->id, 2u);
  EXPECT_EQ(second->size, 2 * kPage);
  ASSERT_EQ(dma().Memory().size(), 2u);
}

TEST_F(DmaSpaceTest, RejectsUnsuitableFds) {
  const int fds = CountOpenFds();
  absl::Status status = dma().RegisterMemory(MakeMemfd(kMiB, /*seals=*/0), 0).status();
  EXPECT_EQ(status.code(), Code::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "F_SEAL_SHRINK")) << status;

  status = dma().RegisterMemory(MakeMemfd(kMiB, F_SEAL_SHRINK | F_SEAL_WRITE), 0).status();
  EXPECT_EQ(status.code(), Code::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "F_SEAL_WRITE")) << status;

  // The shared writable mapping would fail with EPERM: refused first, as a property of the fd.
  status = dma().RegisterMemory(MakeMemfd(kMiB, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE), 0).status();
  EXPECT_EQ(status.code(), Code::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "F_SEAL_FUTURE_WRITE")) << status;

  // A sealed memfd reopened read-only (mmap would fail with EACCES), and write-only.
  UniqueFd sealed = MakeMemfd(kMiB);
  ASSERT_TRUE(sealed.valid());
  const std::string reopen = "/proc/self/fd/" + std::to_string(sealed.get());
  for (int mode : {O_RDONLY, O_WRONLY}) {
    UniqueFd reopened(::open(reopen.c_str(), mode | O_CLOEXEC));
    ASSERT_TRUE(reopened.valid()) << mode;
    status = dma().RegisterMemory(std::move(reopened), 0).status();
    EXPECT_EQ(status.code(), Code::kFailedPrecondition) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), mode == O_RDONLY ? "read-only" : "write-only"))
        << status;
  }
  sealed.Reset();

  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd write_end(pipe_fds[1]);
  status = dma().RegisterMemory(UniqueFd(pipe_fds[0]), kPage).status();
  EXPECT_EQ(status.code(), Code::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "RegisterMemory")) << status;
  write_end.Reset();

  char path[] = "/tmp/dma_space_test_XXXXXX";
  int file = ::mkstemp(path);
  ASSERT_GE(file, 0) << "mkstemp(/tmp/...): " << std::strerror(errno);
  ::unlink(path);
  ASSERT_EQ(::ftruncate(file, kMiB), 0);
  EXPECT_EQ(dma().RegisterMemory(UniqueFd(file), 0).status().code(), Code::kFailedPrecondition);

  EXPECT_EQ(dma().RegisterMemory(UniqueFd(), 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_TRUE(dma().Memory().empty());
}

TEST_F(DmaSpaceTest, RejectsBadSizes) {
  absl::Status status = dma().RegisterMemory(MakeMemfd(kMiB), 2 * kMiB).status();
  EXPECT_EQ(status.code(), Code::kOutOfRange);
  EXPECT_TRUE(absl::StrContains(status.message(), "0x200000")) << status;
  EXPECT_EQ(dma().RegisterMemory(MakeMemfd(kMiB), 100).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(dma().RegisterMemory(MakeMemfd(0), 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(dma().RegisterMemory(MakeMemfd(kPage + 1), 0).status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(dma().Memory().empty());
}

TEST_F(DmaSpaceTest, EnforcesMemoryLimits) {
  limits_.max_memory_regions = 2;
  limits_.max_memory_bytes = 3 * kMiB;
  Register(kMiB);
  EXPECT_EQ(dma().RegisterMemory(MakeMemfd(4 * kMiB), 0).status().code(), Code::kResourceExhausted);
  Register(2 * kMiB);
  EXPECT_EQ(dma().RegisterMemory(MakeMemfd(kPage), 0).status().code(), Code::kResourceExhausted);
  ASSERT_TRUE(dma().UnregisterMemory(1).ok());
  Register(kPage);
}

TEST_F(DmaSpaceTest, MapsInsideTheRegisteredMemory) {
  UniqueFd fd = MakeMemfd(kMiB);
  absl::StatusOr<UniqueFd> dup = fd.Duplicate();
  ASSERT_TRUE(dup.ok());
  absl::StatusOr<MemoryInfo> info = dma().RegisterMemory(std::move(fd), 0);
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(dma().MapDma(Req(0x100000, 2 * kPage, info->id, 3 * kPage)).ok());

  std::map<uint64_t, DmaMap> seen = backend_.mappings();
  ASSERT_EQ(seen.size(), 1u);
  const DmaMap& map = seen.at(0x100000);
  EXPECT_EQ(map.size, 2 * kPage);
  std::memcpy(static_cast<uint8_t*>(map.host_address) + 5, "dma", 3);
  char buffer[3];
  ASSERT_EQ(::pread(dup->get(), buffer, 3, 3 * kPage + 5), 3);
  EXPECT_EQ(std::string(buffer, 3), "dma");

  ASSERT_EQ(dma().Mappings().size(), 1u);
  EXPECT_EQ(dma().Mappings()[0].offset, 3 * kPage);
  EXPECT_EQ(dma().Memory()[0].mappings, 1u);
}

TEST_F(DmaSpaceTest, RejectsInvalidMapsBeforeTheBackend) {
  const uint64_t id = Register(kMiB);
  ExpectMapRejected(Req(0x100000, 0, id), Code::kInvalidArgument, "size 0");
  DmaMapRequest no_permission = Req(0x100000, kPage, id);
  no_permission.device_read = no_permission.device_write = false;
  ExpectMapRejected(no_permission, Code::kInvalidArgument, "device_read");
  ExpectMapRejected(Req(0x1001, kPage, id), Code::kInvalidArgument,
                    "MapDma: iova 0x1001 is not aligned to the 4096-byte IOMMU page");
  ExpectMapRejected(Req(0x1000, kPage + 1, id), Code::kInvalidArgument, "size 0x1001");
  ExpectMapRejected(Req(0x1000, kPage, id, 0x800), Code::kInvalidArgument, "offset 0x800");
  ExpectMapRejected(Req(0xfffffffffffff000, 2 * kPage, id), Code::kOutOfRange, "overflows");
  ExpectMapRejected(Req(0x1000, 2 * kPage, id, 0xfffffffffffff000), Code::kOutOfRange, "overflows");
  ExpectMapRejected(Req(0x1000, kPage, id + 7), Code::kNotFound, "memory id 8");
  ExpectMapRejected(Req(0x1000, kMiB, id, kPage), Code::kOutOfRange, "beyond memory id 1");
  ExpectMapRejected(Req(0x1000, 2 * kMiB, id), Code::kOutOfRange, "beyond memory id 1");
  // The x86 MSI window, a range straddling it, and beyond the IOMMU's address width.
  ExpectMapRejected(Req(0xfee00000, kPage, id), Code::kOutOfRange, "0xfee00000");
  ExpectMapRejected(Req(0xfedff000, 2 * kPage, id), Code::kOutOfRange, "usable IOVA range");
  ExpectMapRejected(Req(uint64_t{1} << 48, kPage, id), Code::kOutOfRange, "usable");
  EXPECT_TRUE(dma().Mappings().empty());
  EXPECT_EQ(backend_.map_calls(), 0);
}

TEST_F(DmaSpaceTest, RejectsEveryKindOfOverlap) {
  const uint64_t id = Register(kMiB);
  ASSERT_TRUE(dma().MapDma(Req(0x10000, 0x10000, id)).ok());
  ExpectMapRejected(Req(0x10000, 0x10000, id), Code::kAlreadyExists, "duplicates");
  ExpectMapRejected(Req(0xf000, 0x12000, id), Code::kAlreadyExists, "contains");
  ExpectMapRejected(Req(0x11000, 0x1000, id), Code::kAlreadyExists, "is inside");
  ExpectMapRejected(Req(0xf000, 0x2000, id), Code::kAlreadyExists, "partially overlaps");
  ExpectMapRejected(Req(0x1f000, 0x2000, id), Code::kAlreadyExists, "partially overlaps");
  ExpectMapRejected(Req(0x10000, 0x1000, id), Code::kAlreadyExists);
  ExpectMapRejected(Req(0x1f000, 0x1000, id), Code::kAlreadyExists);
  EXPECT_TRUE(dma().MapDma(Req(0xf000, 0x1000, id)).ok());   // adjacent below
  EXPECT_TRUE(dma().MapDma(Req(0x20000, 0x1000, id)).ok());  // adjacent above
  ExpectMapRejected(Req(0x0, 0x100000, id), Code::kAlreadyExists, "contains");
  EXPECT_EQ(dma().Mappings().size(), 3u);
}

TEST_F(DmaSpaceTest, LimitsTheNumberOfMappings) {
  limits_.max_dma_mappings = 3;
  const uint64_t id = Register(kMiB);
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(dma().MapDma(Req(i * kPage, kPage, id)).ok());
  ExpectMapRejected(Req(3 * kPage, kPage, id), Code::kResourceExhausted, "limit is 3");
}

TEST_F(DmaSpaceTest, TheIommuMappingLimitAppliesToo) {
  backend_.info().iommu.dma_mappings_available = 2;
  const uint64_t id = Register(kMiB);
  for (uint64_t i = 0; i < 2; ++i) ASSERT_TRUE(dma().MapDma(Req(i * kPage, kPage, id)).ok());
  ExpectMapRejected(Req(3 * kPage, kPage, id), Code::kResourceExhausted, "limit is 2");
}

TEST_F(DmaSpaceTest, UsesTheSmallestIommuPage) {
  backend_.info().iommu.page_size_bitmap = 0x200000 | 0x40000000;  // 2 MiB and 1 GiB
  const uint64_t id = Register(4 * kMiB);
  ExpectMapRejected(Req(0x1000, 2 * kMiB, id), Code::kInvalidArgument, "2097152-byte");
  EXPECT_TRUE(dma().MapDma(Req(2 * kMiB, 2 * kMiB, id, 2 * kMiB)).ok());
}

TEST_F(DmaSpaceTest, BackendFailureLeavesNoState) {
  const uint64_t id = Register(kMiB);
  backend_.FailNextMapDma(absl::ResourceExhaustedError("VFIO_IOMMU_MAP_DMA: ENOSPC"));
  absl::Status status = dma().MapDma(Req(0x1000, kPage, id));
  EXPECT_EQ(status.code(), Code::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(status.message(), "MapDma")) << status;
  EXPECT_TRUE(dma().Mappings().empty());
  EXPECT_EQ(dma().Memory()[0].mappings, 0u);
  EXPECT_TRUE(dma().UnregisterMemory(id).ok());
}

TEST_F(DmaSpaceTest, UnmapMustCoverWholeMappings) {
  const uint64_t id = Register(kMiB);
  ASSERT_TRUE(dma().MapDma(Req(0x10000, 0x4000, id)).ok());
  ASSERT_TRUE(dma().MapDma(Req(0x20000, 0x1000, id)).ok());
  ASSERT_TRUE(dma().MapDma(Req(0x30000, 0x1000, id)).ok());

  absl::StatusOr<UnmapResult> result = dma().UnmapDma(0x10000, 0x2000);  // first half
  EXPECT_EQ(result.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "split")) << result.status();
  EXPECT_EQ(dma().UnmapDma(0x12000, 0x2000).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(dma().UnmapDma(0x0, 0x11000).status().code(), Code::kInvalidArgument);
  // Whole mapping 0x20000 but half of 0x30000: nothing is unmapped.
  EXPECT_EQ(dma().UnmapDma(0x20000, 0x10800).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(dma().UnmapDma(0x40000, 0x1000).status().code(), Code::kNotFound);
  EXPECT_EQ(dma().UnmapDma(0x14000, 0xc000).status().code(), Code::kNotFound);
  EXPECT_EQ(dma().UnmapDma(0x10000, 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(dma().UnmapDma(0xfffffffffffff000, 0x2000).status().code(), Code::kOutOfRange);
  // Unaligned iova or size, as for MapDma (type1's EINVAL), even when it would cover whole
  // mappings.
  for (const auto& [iova, size] : {std::pair<uint64_t, uint64_t>{0x20000, 0x1001},
                                   {0x20000, 0x10001}, {0x1ffff, 0x2000}, {0x10000, 0x3fff}}) {
    result = dma().UnmapDma(iova, size);
    EXPECT_EQ(result.status().code(), Code::kInvalidArgument) << iova << " " << size;
    EXPECT_TRUE(absl::StrContains(result.status().message(), "UnmapDma: ")) << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "not aligned")) << result.status();
  }
  EXPECT_EQ(dma().Mappings().size(), 3u);
  EXPECT_EQ(backend_.unmap_calls(), 0);

  result = dma().UnmapDma(0x10000, 0x11000);  // two mappings and the gap between them
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->bytes, 0x5000u);
  EXPECT_EQ(result->mappings, 2u);
  ASSERT_EQ(dma().Mappings().size(), 1u);
  EXPECT_EQ(dma().Mappings()[0].iova, 0x30000u);

  result = dma().UnmapDma(0, ~uint64_t{0} - (kPage - 1));  // everything but the last page
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->mappings, 1u);
  EXPECT_TRUE(backend_.mappings().empty());
}

TEST_F(DmaSpaceTest, UnregisterRefusesWhileMapped) {
  const uint64_t id = Register(kMiB);
  ASSERT_TRUE(dma().MapDma(Req(0x10000, 0x1000, id)).ok());
  absl::Status status = dma().UnregisterMemory(id);
  EXPECT_EQ(status.code(), Code::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "memory id 1")) << status;
  EXPECT_EQ(dma().UnregisterMemory(42).code(), Code::kNotFound);
  ASSERT_TRUE(dma().UnmapDma(0x10000, 0x1000).ok());
  EXPECT_TRUE(dma().UnregisterMemory(id).ok());
  EXPECT_EQ(dma().UnregisterMemory(id).code(), Code::kNotFound);
}

TEST_F(DmaSpaceTest, ReleaseAllUnmapsThenUnregisters) {
  const uint64_t a = Register(kMiB);
  const uint64_t b = Register(kMiB);
  ASSERT_TRUE(dma().MapDma(Req(0x100000, kMiB, a)).ok());
  ASSERT_TRUE(dma().MapDma(Req(0x200000, kPage, b)).ok());
  ASSERT_TRUE(dma().MapDma(Req(0x300000, kPage, b, kPage)).ok());
  dma().ReleaseAll();
  EXPECT_TRUE(backend_.mappings().empty());
  EXPECT_TRUE(dma().Mappings().empty());
  EXPECT_TRUE(dma().Memory().empty());
  EXPECT_EQ(Register(kPage), 3u);  // ids are not reused
}

TEST_F(DmaSpaceTest, ReleaseAllKeepsMemoryWhoseUnmapFailed) {
  const uint64_t a = Register(kMiB);
  const uint64_t b = Register(kMiB);
  ASSERT_TRUE(dma().MapDma(Req(0x100000, kPage, a)).ok());
  ASSERT_TRUE(dma().MapDma(Req(0x200000, kPage, b)).ok());
  backend_.FailNextUnmapDma(absl::InternalError("VFIO_IOMMU_UNMAP_DMA: EIO"));
  dma().ReleaseAll();
  ASSERT_EQ(dma().Memory().size(), 1u);
  EXPECT_EQ(dma().Memory()[0].id, a);
  ASSERT_EQ(dma().Mappings().size(), 1u);
  dma().ReleaseAll();
  EXPECT_TRUE(dma().Memory().empty());
}

TEST_F(DmaSpaceTest, MapUnmapLoopLeaksNothing) {
  // Warm up whatever the first iteration allocates lazily.
  for (int i = 0; i < 2; ++i) {
    const uint64_t id = Register(kMiB);
    ASSERT_TRUE(dma().MapDma(Req(0x100000, kMiB, id)).ok());
    ASSERT_TRUE(dma().UnmapDma(0x100000, kMiB).ok());
    ASSERT_TRUE(dma().UnregisterMemory(id).ok());
  }
  const int fds = CountOpenFds();
  const int maps = CountMappings();
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<MemoryInfo> info = dma().RegisterMemory(MakeMemfd(kMiB), 0);
    ASSERT_TRUE(info.ok()) << info.status();
    ASSERT_TRUE(dma().MapDma(Req(0x100000, kMiB, info->id)).ok());
    ASSERT_TRUE(dma().MapDma(Req(0x400000, kPage, info->id, kPage)).ok());
    absl::StatusOr<UnmapResult> result = dma().UnmapDma(0, 0x1000000);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->mappings, 2u);
    ASSERT_TRUE(dma().UnregisterMemory(info->id).ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(CountMappings(), maps);
  EXPECT_EQ(backend_.map_calls(), backend_.unmap_calls());
}

// A backend whose unmaps wait until the test lets them go, like type1 unpinning a large guest.
class SlowUnmapBackend : public FakeBackend {
 public:
  absl::Status UnmapDma(uint64_t iova, uint64_t size) override {
    entered_.Notify();
    release_.WaitForNotification();
    return FakeBackend::UnmapDma(iova, size);
  }
  absl::Notification entered_;
  absl::Notification release_;
};

// Runs `read` on a thread (added to `threads`, joined by the caller once the unmap is let go);
// whether it returned within 5 s.
bool ReturnsDuringUnmap(std::function<void()> read, std::vector<std::thread>& threads) {
  auto done = std::make_shared<absl::Notification>();
  threads.emplace_back([read = std::move(read), done] {
    read();
    done->Notify();
  });
  return done->WaitForNotificationWithTimeout(absl::Seconds(5));
}

TEST(DmaSpaceReadersTest, ReadersAreNotDelayedByAnUnmapInTheBackend) {
  SlowUnmapBackend backend;
  DeviceLimits limits;
  DmaSpace dma(&backend, limits);
  absl::StatusOr<MemoryInfo> memory = dma.RegisterMemory(MakeMemfd(kMiB), 0);
  ASSERT_TRUE(memory.ok()) << memory.status();
  DmaMapRequest map;
  map.iova = 0x100000;
  map.size = kMiB;
  map.memory_id = memory->id;
  map.device_read = map.device_write = true;
  ASSERT_TRUE(dma.MapDma(map).ok());

  std::thread release([&dma] { dma.ReleaseAll(); });  // owner loss
  backend.entered_.WaitForNotification();
  std::vector<std::thread> readers;
  EXPECT_TRUE(ReturnsDuringUnmap([&dma] { EXPECT_EQ(dma.Mappings().size(), 1u); }, readers))
      << "Mappings() waited for the backend's unmap";
  EXPECT_TRUE(ReturnsDuringUnmap([&dma] { EXPECT_EQ(dma.Memory().size(), 1u); }, readers))
      << "Memory() waited for the backend's unmap";
  backend.release_.Notify();
  release.join();
  for (std::thread& reader : readers) reader.join();
  EXPECT_TRUE(dma.Mappings().empty());
  EXPECT_TRUE(dma.Memory().empty());
}

}  // namespace
}  // namespace vfiod
