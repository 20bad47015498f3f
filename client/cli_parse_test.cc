#include "client/cli_parse.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vfiod::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

uint64_t Number(const char* text) {
  absl::StatusOr<uint64_t> value = ParseNumber(text, "N");
  EXPECT_TRUE(value.ok()) << text << ": " << value.status();
  return value.value_or(~uint64_t{0});
}

TEST(ParseNumberTest, DecimalHexAndSuffixes) {
  EXPECT_EQ(Number("0"), 0u);
  EXPECT_EQ(Number("4096"), 4096u);
  EXPECT_EQ(Number("0x1000"), 0x1000u);
  EXPECT_EQ(Number("0X1f"), 0x1fu);
  EXPECT_EQ(Number("64K"), 64u * 1024);
  EXPECT_EQ(Number("64k"), 64u * 1024);
  EXPECT_EQ(Number("2M"), 2u << 20);
  EXPECT_EQ(Number("1G"), 1u << 30);
  EXPECT_EQ(Number("0x10K"), 16u * 1024);
  EXPECT_EQ(Number("0xffffffffffffffff"), UINT64_MAX);
  EXPECT_EQ(Number("16777215G"), uint64_t{16777215} << 30);
}

TEST(ParseNumberTest, RejectsMalformed) {
  for (const char* bad : {"", "K", "0x", "0xK", "-1", "+1", "1.5", "12abc", "0x1g0", "1KK",
                          "0x12345678901234567", "18446744073709551616", " 1", "1 ", "4KB"}) {
    absl::StatusOr<uint64_t> value = ParseNumber(bad, "OFFSET");
    EXPECT_FALSE(value.ok()) << "\"" << bad << "\" parsed as " << *value;
    if (!value.ok()) {
      EXPECT_EQ(value.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(value.status().message(), HasSubstr("OFFSET"));
    }
  }
}

TEST(ParseNumberTest, SuffixOverflow) {
  EXPECT_FALSE(ParseNumber("0xffffffffffffffffK", "N").ok());
  EXPECT_FALSE(ParseNumber("17179869184G", "N").ok());  // 2^34 GiB
}

TEST(ParseNumber32Test, Limits) {
  EXPECT_EQ(ParseNumber32("0xffffffff", "V").value(), UINT32_MAX);
  EXPECT_EQ(ParseNumber32("4M", "V").value(), 4u << 20);
  EXPECT_FALSE(ParseNumber32("0x100000000", "V").ok());
  EXPECT_FALSE(ParseNumber32("4G", "V").ok());
}

TEST(ParseIrqIndexTest, NamesAndNumbers) {
  EXPECT_EQ(ParseIrqIndex("intx").value(), v1::IRQ_INDEX_INTX);
  EXPECT_EQ(ParseIrqIndex("MSI").value(), v1::IRQ_INDEX_MSI);
  EXPECT_EQ(ParseIrqIndex("msi-x").value(), v1::IRQ_INDEX_MSIX);
  EXPECT_EQ(ParseIrqIndex("2").value(), v1::IRQ_INDEX_MSIX);
  EXPECT_EQ(ParseIrqIndex("req").value(), v1::IRQ_INDEX_REQ);
  EXPECT_FALSE(ParseIrqIndex("5").ok());
  EXPECT_FALSE(ParseIrqIndex("msi2").ok());
  EXPECT_FALSE(ParseIrqIndex("").ok());
}

TEST(ParseHexBytesTest, Bytes) {
  EXPECT_EQ(ParseHexBytes("0102a0FF").value(), std::string("\x01\x02\xa0\xff", 4));
  EXPECT_EQ(ParseHexBytes("0x00").value(), std::string(1, '\0'));
  EXPECT_FALSE(ParseHexBytes("").ok());
  EXPECT_FALSE(ParseHexBytes("0x").ok());
  EXPECT_FALSE(ParseHexBytes("123").ok());
  EXPECT_FALSE(ParseHexBytes("zz").ok());
}

TEST(ParseDmaAccessTest, Flags) {
  EXPECT_TRUE(ParseDmaAccess("r")->device_read);
  EXPECT_FALSE(ParseDmaAccess("r")->device_write);
  EXPECT_FALSE(ParseDmaAccess("w")->device_read);
  EXPECT_TRUE(ParseDmaAccess("w")->device_write);
  EXPECT_TRUE(ParseDmaAccess("RW")->device_read);
  EXPECT_TRUE(ParseDmaAccess("wr")->device_write);
  EXPECT_FALSE(ParseDmaAccess("").ok());
  EXPECT_FALSE(ParseDmaAccess("x").ok());
  EXPECT_FALSE(ParseDmaAccess("rwx").ok());
}

TEST(ParseStatusCodeNameTest, Names) {
  EXPECT_EQ(ParseStatusCodeName("PERMISSION_DENIED").value(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ParseStatusCodeName("not_found").value(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseStatusCodeName("UNAUTHENTICATED").value(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ParseStatusCodeName("CANCELLED").value(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(ParseStatusCodeName("OK").ok());
  EXPECT_FALSE(ParseStatusCodeName("7").ok());
  EXPECT_FALSE(ParseStatusCodeName("DENIED").ok());
}

TEST(SplitSessionLineTest, WordsAndComments) {
  EXPECT_THAT(SplitSessionLine(""), IsEmpty());
  EXPECT_THAT(SplitSessionLine("   \t "), IsEmpty());
  EXPECT_THAT(SplitSessionLine("# a comment"), IsEmpty());
  EXPECT_THAT(SplitSessionLine("   # indented comment"), IsEmpty());
  EXPECT_THAT(SplitSessionLine("region read32 0 0x00"),
              ElementsAre("region", "read32", "0", "0x00"));
  EXPECT_THAT(SplitSessionLine("\tregion  write32\t0 0x04 1  \r"),
              ElementsAre("region", "write32", "0", "0x04", "1"));
  EXPECT_THAT(SplitSessionLine("sleep 10ms # wait a bit"), ElementsAre("sleep", "10ms"));
  // '#' inside a word is not a comment.
  EXPECT_THAT(SplitSessionLine("info a#b"), ElementsAre("info", "a#b"));
}

}  // namespace
}  // namespace vfiod::client
