#include "client/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "client/unique_fd.h"
#include "gtest/gtest.h"

namespace vfiod::client {
namespace {

std::vector<uint8_t> Generate(const FillPattern& pattern, size_t size) {
  std::vector<uint8_t> out(size, 0xee);
  GeneratePattern(pattern, absl::MakeSpan(out));
  return out;
}

TEST(FillPatternTest, Parse) {
  absl::StatusOr<FillPattern> byte = ParseFillPattern("0x5a");
  ASSERT_TRUE(byte.ok()) << byte.status();
  EXPECT_EQ(byte->kind, FillPattern::Kind::kByte);
  EXPECT_EQ(byte->value, 0x5au);
  EXPECT_EQ(ParseFillPattern("255")->value, 255u);
  EXPECT_EQ(ParseFillPattern("seq")->kind, FillPattern::Kind::kSeq);
  absl::StatusOr<FillPattern> random = ParseFillPattern("random:0x2a");
  ASSERT_TRUE(random.ok()) << random.status();
  EXPECT_EQ(random->kind, FillPattern::Kind::kRandom);
  EXPECT_EQ(random->value, 42u);
  for (const char* bad : {"", "0x100", "256", "seq2", "random:", "random:x", "zz", "-1"}) {
    EXPECT_FALSE(ParseFillPattern(bad).ok()) << bad;
  }
}

TEST(FillPatternTest, Names) {
  EXPECT_EQ(FillPatternName(*ParseFillPattern("0x5a")), "0x5a");
  EXPECT_EQ(FillPatternName(*ParseFillPattern("seq")), "seq");
  EXPECT_EQ(FillPatternName(*ParseFillPattern("random:7")), "random:7");
}

TEST(FillPatternTest, Bytes) {
  EXPECT_EQ(Generate({FillPattern::Kind::kByte, 0x5a}, 3),
            (std::vector<uint8_t>{0x5a, 0x5a, 0x5a}));
  const std::vector<uint8_t> seq = Generate({FillPattern::Kind::kSeq, 0}, 300);
  EXPECT_EQ(seq[0], 3);
  EXPECT_EQ(seq[1], 10);
  EXPECT_EQ(seq[2], 17);
  EXPECT_EQ(seq[36], static_cast<uint8_t>(36 * 7 + 3));  // wraps mod 256
  EXPECT_EQ(seq[299], static_cast<uint8_t>(299 * 7 + 3));
}

TEST(FillPatternTest, RandomIsReproducibleAndSeeded) {
  const std::vector<uint8_t> a = Generate({FillPattern::Kind::kRandom, 1}, 64);
  EXPECT_EQ(a, Generate({FillPattern::Kind::kRandom, 1}, 64));
  EXPECT_NE(a, Generate({FillPattern::Kind::kRandom, 2}, 64));
  // A prefix of a longer fill is the shorter fill.
  const std::vector<uint8_t> b = Generate({FillPattern::Kind::kRandom, 1}, 13);
  EXPECT_TRUE(std::equal(b.begin(), b.end(), a.begin()));
  // Not a constant stream.
  EXPECT_NE(std::count(a.begin(), a.end(), a[0]), 64);
}

TEST(CheckRangeTest, Bounds) {
  EXPECT_TRUE(CheckRange(0, 16, 16, "x").ok());
  EXPECT_TRUE(CheckRange(16, 0, 16, "x").ok());
  EXPECT_EQ(CheckRange(1, 16, 16, "x").code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckRange(17, 0, 16, "x").code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckRange(8, UINT64_MAX, 16, "x").code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckRange(UINT64_MAX, 2, 16, "x").code(), absl::StatusCode::kOutOfRange);
}

GuestMemory MapMemfd(uint64_t size) {
  UniqueFd fd(::memfd_create("guest_memory_test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  absl::StatusOr<GuestMemory> memory = GuestMemory::Map(std::move(fd), size);
  EXPECT_TRUE(memory.ok()) << memory.status();
  return *std::move(memory);
}

TEST(GuestMemoryTest, FillReadCompare) {
  GuestMemory memory = MapMemfd(8192);
  EXPECT_EQ(memory.size(), 8192u);
  ASSERT_TRUE(memory.Fill(0, 1024, {FillPattern::Kind::kSeq, 0}).ok());
  absl::StatusOr<std::string> head = memory.Read(0, 4);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, std::string("\x03\x0a\x11\x18", 4));
  // Unwritten memory reads as zero.
  EXPECT_EQ(*memory.Read(4096, 2), std::string(2, '\0'));

  absl::StatusOr<std::optional<uint64_t>> diff = memory.Compare(0, 4096, 1024);
  ASSERT_TRUE(diff.ok());
  ASSERT_TRUE(diff->has_value());
  EXPECT_EQ(**diff, 0u);

  // The same pattern at another offset starts over at byte 0.
  ASSERT_TRUE(memory.Fill(4096, 1024, {FillPattern::Kind::kSeq, 0}).ok());
  diff = memory.Compare(0, 4096, 1024);
  ASSERT_TRUE(diff.ok());
  EXPECT_FALSE(diff->has_value());

  ASSERT_TRUE(memory.Fill(4096 + 100, 1, {FillPattern::Kind::kByte, 0}).ok());
  diff = memory.Compare(0, 4096, 1024);
  ASSERT_TRUE(diff->has_value());
  EXPECT_EQ(**diff, 100u);
}

TEST(GuestMemoryTest, SharedWithTheFd) {
  GuestMemory memory = MapMemfd(4096);
  ASSERT_TRUE(memory.Fill(10, 2, {FillPattern::Kind::kByte, 0xab}).ok());
  char bytes[3] = {};
  ASSERT_EQ(::pread(memory.fd(), bytes, 3, 9), 3);
  EXPECT_EQ(std::string(bytes, 3), std::string("\x00\xab\xab", 3));
  ASSERT_EQ(::pwrite(memory.fd(), "\x42", 1, 20), 1);
  EXPECT_EQ(*memory.Read(20, 1), "\x42");
}

TEST(GuestMemoryTest, RangeErrors) {
  GuestMemory memory = MapMemfd(4096);
  EXPECT_EQ(memory.Fill(4000, 97, {}).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(memory.Read(4096, 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(memory.Compare(0, 4000, 100).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(memory.Read(4096, 0).ok());
}

TEST(GuestMemoryTest, MoveKeepsTheMapping) {
  GuestMemory a = MapMemfd(4096);
  ASSERT_TRUE(a.Fill(0, 1, {FillPattern::Kind::kByte, 7}).ok());
  GuestMemory b = std::move(a);
  EXPECT_EQ(*b.Read(0, 1), "\x07");
  GuestMemory c = MapMemfd(4096);
  c = std::move(b);
  EXPECT_EQ(*c.Read(0, 1), "\x07");
}

TEST(GuestMemoryTest, MapErrors) {
  EXPECT_FALSE(GuestMemory::Map(UniqueFd(), 4096).ok());
  UniqueFd fd(::memfd_create("guest_memory_test", MFD_CLOEXEC));
  EXPECT_FALSE(GuestMemory::Map(std::move(fd), 0).ok());
}

}  // namespace
}  // namespace vfiod::client
