#include "daemon/vfio/pci_address.h"

#include <string>

#include "gtest/gtest.h"

namespace vfiod {
namespace {

TEST(PciAddressTest, ParsesTheFullForm) {
  absl::StatusOr<PciAddress> address = ParsePciAddress("0000:00:03.0");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(address->domain, 0u);
  EXPECT_EQ(address->bus, 0u);
  EXPECT_EQ(address->device, 3u);
  EXPECT_EQ(address->function, 0u);
  EXPECT_EQ(address->ToString(), "0000:00:03.0");
}

TEST(PciAddressTest, ShortFormHasDomainZero) {
  absl::StatusOr<PciAddress> address = ParsePciAddress("3a:1f.7");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(address->ToString(), "0000:3a:1f.7");
}

TEST(PciAddressTest, AcceptsEitherHexCaseAndPrintsLowerCase) {
  absl::StatusOr<PciAddress> upper = ParsePciAddress("00AB:CD:1E.5");
  ASSERT_TRUE(upper.ok()) << upper.status();
  EXPECT_EQ(upper->ToString(), "00ab:cd:1e.5");
  absl::StatusOr<PciAddress> lower = ParsePciAddress("00ab:cd:1e.5");
  ASSERT_TRUE(lower.ok());
  EXPECT_TRUE(*upper == *lower);
}

TEST(PciAddressTest, WideDomainsAsVmdUses) {
  absl::StatusOr<PciAddress> five = ParsePciAddress("10000:e1:00.0");
  ASSERT_TRUE(five.ok()) << five.status();
  EXPECT_EQ(five->domain, 0x10000u);
  EXPECT_EQ(five->ToString(), "10000:e1:00.0");
  absl::StatusOr<PciAddress> eight = ParsePciAddress("ffffffff:ff:1f.7");
  ASSERT_TRUE(eight.ok()) << eight.status();
  EXPECT_EQ(eight->domain, 0xffffffffu);
  EXPECT_EQ(eight->ToString(), "ffffffff:ff:1f.7");
}

TEST(PciAddressTest, RejectsMalformedAddresses) {
  for (const char* bad : {
           "",                   // empty
           "0000:00:03",         // no function
           "0000:00:03.",        // empty function
           "0000:00:03.8",       // function > 7
           "0000:00:03.10",      // two-digit function
           "0000:00:20.0",       // device > 0x1f
           "0000:00:3.0",        // one-digit device
           "0000:00:003.0",      // three-digit device
           "0000:0:03.0",        // one-digit bus
           "0000:000:03.0",      // three-digit bus
           "000:00:03.0",        // three-digit domain
           "123456789:00:03.0",  // nine-digit domain
           "0000:00:03.0.1",     // two dots
           "0000:00.03.0",       // dot instead of colon
           "0000:00:00:03.0",    // four fields
           "03.0",               // no bus
           " 0000:00:03.0",      // leading space
           "0000:00:03.0 ",      // trailing space
           "0000:00:03.0\n",     // trailing newline
           "0x00:00:03.0",       // prefix
           "+000:00:03.0",       // sign
           "-000:00:03.0",       // sign
           "0000:0g:03.0",       // not hex
           "0000:00:03.a",       // hex function
           "0000:00:03.-1",      // negative function
       }) {
    absl::StatusOr<PciAddress> address = ParsePciAddress(bad);
    EXPECT_FALSE(address.ok()) << "accepted \"" << bad << "\" as " << address->ToString();
    if (!address.ok()) {
      EXPECT_EQ(address.status().code(), absl::StatusCode::kInvalidArgument) << bad;
      EXPECT_NE(address.status().message().find("DDDD:BB:DD.F"), absl::string_view::npos);
    }
  }
}

TEST(PciAddressTest, RejectsEmbeddedNul) {
  const std::string text("0000:00:03.0\0", 13);
  EXPECT_FALSE(ParsePciAddress(text).ok());
}

TEST(PciAddressTest, RejectsVeryLongInput) {
  EXPECT_FALSE(ParsePciAddress(std::string(4096, '0')).ok());
}

}  // namespace
}  // namespace vfiod
