#include "client/config_decode.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vfiod::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

void Put(std::string& config, size_t offset, uint32_t value, size_t size) {
  for (size_t i = 0; i < size; ++i) config[offset + i] = static_cast<char>(value >> (8 * i));
}

// QEMU's edu device as a guest sees it after BIOS assignment.
std::string EduConfig() {
  std::string config(256, '\0');
  Put(config, 0x00, 0x1234, 2);      // vendor
  Put(config, 0x02, 0x11e8, 2);      // device
  Put(config, 0x04, 0x0002, 2);      // command: Mem+
  Put(config, 0x06, 0x0010, 2);      // status: Cap+
  Put(config, 0x08, 0x10, 1);        // revision
  Put(config, 0x09, 0x00ff00, 3);    // class
  Put(config, 0x10, 0xfea00000, 4);  // BAR0: 32-bit memory, non-prefetchable
  Put(config, 0x2c, 0x1af4, 2);      // subsystem vendor
  Put(config, 0x2e, 0x1100, 2);      // subsystem
  Put(config, 0x34, 0x40, 1);        // capabilities pointer
  Put(config, 0x3c, 11, 1);          // interrupt line
  Put(config, 0x3d, 1, 1);           // interrupt pin A
  Put(config, 0x40, 0x05, 1);        // MSI
  Put(config, 0x41, 0x00, 1);        // end of list
  Put(config, 0x42, 0x0080, 2);      // 64-bit, 1 vector, disabled
  return config;
}

TEST(ConfigDecodeTest, EduHeader) {
  const ConfigHeader h = DecodeHeader(EduConfig());
  EXPECT_EQ(h.vendor_id, 0x1234);
  EXPECT_EQ(h.device_id, 0x11e8);
  EXPECT_EQ(h.revision, 0x10);
  EXPECT_EQ(h.class_code, 0x00ff00u);
  EXPECT_EQ(h.subsystem_vendor_id, 0x1af4);
  EXPECT_EQ(h.subsystem_id, 0x1100);
  EXPECT_EQ(h.header_type, 0);
  EXPECT_FALSE(h.multifunction);
  EXPECT_EQ(h.capabilities_pointer, 0x40);
  EXPECT_EQ(h.interrupt_pin, 1);
  EXPECT_EQ(h.interrupt_line, 11);
  EXPECT_EQ(ClassName(h.class_code), "Unclassified device");
}

TEST(ConfigDecodeTest, EduBars) {
  std::array<uint64_t, 6> sizes = {1 << 20};
  const std::vector<BarDecode> bars = DecodeBars(EduConfig(), sizes);
  ASSERT_EQ(bars.size(), 1u);
  EXPECT_EQ(bars[0].index, 0);
  EXPECT_FALSE(bars[0].io);
  EXPECT_FALSE(bars[0].is_64bit);
  EXPECT_FALSE(bars[0].prefetchable);
  EXPECT_EQ(bars[0].address, 0xfea00000u);
  EXPECT_EQ(bars[0].size, 1u << 20);
}

TEST(ConfigDecodeTest, EduCapabilities) {
  const std::string config = EduConfig();
  const CapabilityWalk walk = WalkCapabilities(config);
  EXPECT_EQ(walk.error, "");
  ASSERT_EQ(walk.capabilities.size(), 1u);
  EXPECT_EQ(walk.capabilities[0].id, 0x05);
  EXPECT_EQ(walk.capabilities[0].offset, 0x40);
  EXPECT_EQ(walk.capabilities[0].name, "MSI");
  EXPECT_TRUE(WalkExtendedCapabilities(config).capabilities.empty());

  const std::optional<MsiDecode> msi = DecodeMsi(config, 0x40);
  ASSERT_TRUE(msi.has_value());
  EXPECT_FALSE(msi->enable);
  EXPECT_TRUE(msi->is_64bit);
  EXPECT_FALSE(msi->per_vector_masking);
  EXPECT_EQ(msi->vectors_capable, 1u);
  EXPECT_EQ(msi->vectors_enabled, 1u);
}

TEST(ConfigDecodeTest, EduFormatted) {
  FormatOptions options;
  options.bar_sizes[0] = 1 << 20;
  const std::string text = FormatConfig(EduConfig(), options);
  EXPECT_THAT(text, HasSubstr("Vendor 1234 Device 11e8 (rev 10)\n"));
  EXPECT_THAT(text, HasSubstr("Class 00ff00: Unclassified device\n"));
  EXPECT_THAT(text, HasSubstr("Subsystem: 1af4:1100\n"));
  EXPECT_THAT(text, HasSubstr("Control: I/O- Mem+ BusMaster- SpecCycle-"));
  EXPECT_THAT(text, HasSubstr("Status: Cap+ 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast"));
  EXPECT_THAT(text, HasSubstr("Interrupt: pin A routed to IRQ 11\n"));
  EXPECT_THAT(text,
              HasSubstr("Region 0: Memory at fea00000 (32-bit, non-prefetchable) [size=1M]\n"));
  EXPECT_THAT(text, HasSubstr("Capabilities: [40] MSI: Enable- Count=1/1 Maskable- 64bit+\n"));
  EXPECT_THAT(text, HasSubstr("Address: 0000000000000000  Data: 0000"));
  EXPECT_THAT(text, Not(HasSubstr("Expansion ROM")));
}

TEST(ConfigDecodeTest, EduJson) {
  FormatOptions options;
  options.bar_sizes[0] = 1 << 20;
  const std::string json = ConfigToJson(EduConfig(), options);
  EXPECT_THAT(json, HasSubstr("\"vendorId\":4660,\"deviceId\":4584,\"revision\":16"));
  EXPECT_THAT(json, HasSubstr("\"bars\":[{\"index\":0,\"kind\":\"memory\",\"is64bit\":false"));
  EXPECT_THAT(json, HasSubstr("\"size\":\"1048576\""));
  EXPECT_THAT(json, HasSubstr("\"name\":\"MSI\",\"msi\":{\"enable\":false"));
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.back(), '}');
}

TEST(ConfigDecodeTest, CommandAndStatusBits) {
  EXPECT_EQ(DecodeCommand(0x0407),
            "I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR- "
            "FastB2B- DisINTx+");
  EXPECT_EQ(DecodeStatus(0x0218),
            "Cap+ 66MHz- UDF- FastB2B- ParErr- DEVSEL=medium >TAbort- <TAbort- <MAbort- >SERR- "
            "<PERR- INTx+");
}

TEST(ConfigDecodeTest, LoopingCapabilityChainTerminates) {
  std::string config = EduConfig();
  Put(config, 0x41, 0x50, 1);  // MSI -> 0x50
  Put(config, 0x50, 0x09, 1);  // vendor specific -> 0x40 again
  Put(config, 0x51, 0x40, 1);
  const CapabilityWalk walk = WalkCapabilities(config);
  ASSERT_EQ(walk.capabilities.size(), 2u);
  EXPECT_EQ(walk.capabilities[0].offset, 0x40);
  EXPECT_EQ(walk.capabilities[1].offset, 0x50);
  EXPECT_EQ(walk.error, "loop at 0x40");
  EXPECT_THAT(FormatConfig(config), HasSubstr("Capabilities: <loop at 0x40>"));
}

TEST(ConfigDecodeTest, SelfLoopAndHeaderPointer) {
  std::string config = EduConfig();
  Put(config, 0x41, 0x40, 1);
  EXPECT_EQ(WalkCapabilities(config).capabilities.size(), 1u);
  Put(config, 0x41, 0x10, 1);
  EXPECT_EQ(WalkCapabilities(config).error, "pointer 0x10 points into the header");
}

TEST(ConfigDecodeTest, EveryChainTerminates) {
  // Every byte in the capability area points somewhere: the walk must still end.
  std::string config = EduConfig();
  for (size_t i = 0x40; i < 0x100; ++i) config[i] = static_cast<char>(0xff - (i & 0xff) + 0x40);
  const CapabilityWalk walk = WalkCapabilities(config);
  EXPECT_LE(walk.capabilities.size(), 48u);
  EXPECT_FALSE(walk.error.empty());
}

TEST(ConfigDecodeTest, NoCapabilityListWithoutStatusBit) {
  std::string config = EduConfig();
  Put(config, 0x06, 0x0000, 2);
  EXPECT_TRUE(WalkCapabilities(config).capabilities.empty());
}

TEST(ConfigDecodeTest, TruncatedDataIsSafe) {
  const std::string config = EduConfig().substr(0, 0x42);
  EXPECT_FALSE(DecodeMsi(config, 0x40).has_value());
  EXPECT_FALSE(FormatConfig(config).empty());
  EXPECT_FALSE(FormatConfig("").empty());
  EXPECT_EQ(WalkCapabilities("").capabilities.size(), 0u);
}

TEST(ConfigDecodeTest, Bar64AndIo) {
  std::string config = EduConfig();
  Put(config, 0x10, 0x0000000c, 4);  // 64-bit prefetchable
  Put(config, 0x14, 0x00000001, 4);  // high dword: 0x1_0000_0000
  Put(config, 0x18, 0x0000c001, 4);  // I/O at 0xc000
  const std::vector<BarDecode> bars = DecodeBars(config);
  ASSERT_EQ(bars.size(), 2u);
  EXPECT_TRUE(bars[0].is_64bit);
  EXPECT_TRUE(bars[0].prefetchable);
  EXPECT_EQ(bars[0].address, 0x100000000ull);
  EXPECT_EQ(bars[1].index, 2);
  EXPECT_TRUE(bars[1].io);
  EXPECT_EQ(bars[1].address, 0xc000u);
}

TEST(ConfigDecodeTest, MsixAndExtendedCapabilities) {
  std::string config(4096, '\0');
  Put(config, 0x06, 0x0010, 2);
  Put(config, 0x34, 0x70, 1);
  Put(config, 0x70, 0x11, 1);
  Put(config, 0x72, 0x8004, 2);  // enabled, 5 vectors
  Put(config, 0x74, 0x00000001, 4);
  Put(config, 0x78, 0x00000801, 4);
  Put(config, 0x100, 0x00010001 | (0x148u << 20), 4);  // AER v1 -> 0x148
  Put(config, 0x148, 0x00010003 | (0x100u << 20), 4);  // DSN v1 -> 0x100: loop
  const std::optional<MsixDecode> msix = DecodeMsix(config, 0x70);
  ASSERT_TRUE(msix.has_value());
  EXPECT_TRUE(msix->enable);
  EXPECT_EQ(msix->table_size, 5u);
  EXPECT_EQ(msix->table_bir, 1);
  EXPECT_EQ(msix->pba_offset, 0x800u);
  const CapabilityWalk extended = WalkExtendedCapabilities(config);
  ASSERT_EQ(extended.capabilities.size(), 2u);
  EXPECT_EQ(extended.capabilities[0].name, "Advanced Error Reporting");
  EXPECT_EQ(extended.capabilities[1].name, "Device Serial Number");
  EXPECT_EQ(extended.error, "loop at 0x100");
  const std::string text = FormatConfig(config);
  EXPECT_THAT(text, HasSubstr("Capabilities: [70] MSI-X: Enable+ Count=5 Masked-\n"));
  EXPECT_THAT(text, HasSubstr("Vector table: BAR=1 offset=00000000"));
  EXPECT_THAT(text, HasSubstr("Capabilities: [100 v1] Advanced Error Reporting\n"));
}

TEST(ConfigDecodeTest, HexDumpAndSizes) {
  const std::string dump = HexDump(EduConfig().substr(0, 32));
  EXPECT_EQ(dump,
            "00: 34 12 e8 11 02 00 10 00 10 00 ff 00 00 00 00 00\n"
            "10: 00 00 a0 fe 00 00 00 00 00 00 00 00 00 00 00 00\n");
  EXPECT_EQ(HexDump(std::string(4, '\0'), 0x100), "100: 00 00 00 00\n");
  EXPECT_EQ(FormatSize(1 << 20), "1M");
  EXPECT_EQ(FormatSize(4096), "4K");
  EXPECT_EQ(FormatSize(256), "256");
  EXPECT_EQ(FormatSize(3 << 10), "3K");
  EXPECT_EQ(FormatSize(1536), "1536");
}

}  // namespace
}  // namespace vfiod::client
