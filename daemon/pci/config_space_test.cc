#include "daemon/pci/config_space.h"

#include <linux/pci_regs.h>

#include <random>

#include "absl/strings/match.h"
#include "daemon/pci/fake_backend.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using Code = absl::StatusCode;

TEST(ValidateConfigAccessTest, AcceptsNaturallyAlignedAccessesInside) {
  for (uint32_t size : {1u, 2u, 4u}) {
    EXPECT_TRUE(ValidateConfigAccess("ReadConfig", 0, size, 256).ok());
    EXPECT_TRUE(ValidateConfigAccess("ReadConfig", 256 - size, size, 256).ok());
    EXPECT_TRUE(ValidateConfigAccess("ReadConfig", 4096 - size, size, 4096).ok());
  }
}

TEST(ValidateConfigAccessTest, RejectsWidthsOtherThanOneTwoFour) {
  for (uint32_t size : {0u, 3u, 5u, 8u, 0xffffffffu}) {
    absl::Status status = ValidateConfigAccess("ReadConfig", 0, size, 256);
    EXPECT_EQ(status.code(), Code::kInvalidArgument) << size;
    EXPECT_TRUE(absl::StrContains(status.message(), "ReadConfig: size")) << status;
  }
}

TEST(ValidateConfigAccessTest, RejectsUnalignedOffsets) {
  EXPECT_EQ(ValidateConfigAccess("ReadConfig", 1, 2, 256).code(), Code::kInvalidArgument);
  EXPECT_EQ(ValidateConfigAccess("ReadConfig", 2, 4, 256).code(), Code::kInvalidArgument);
  EXPECT_EQ(ValidateConfigAccess("ReadConfig", 0x41, 4, 256).code(), Code::kInvalidArgument);
  absl::Status status = ValidateConfigAccess("WriteConfig", 255, 2, 256);
  EXPECT_EQ(status.code(), Code::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "WriteConfig: offset 0xff")) << status;
}

TEST(ValidateConfigAccessTest, RejectsAccessesBeyondConfigSpace) {
  EXPECT_EQ(ValidateConfigAccess("ReadConfig", 256, 1, 256).code(), Code::kOutOfRange);
  absl::Status status = ValidateConfigAccess("ReadConfig", 4096, 4, 256);
  EXPECT_EQ(status.code(), Code::kOutOfRange);
  EXPECT_TRUE(absl::StrContains(status.message(), "0x1000")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "256-byte")) << status;
  EXPECT_EQ(ValidateConfigAccess("ReadConfig", 0xfffffffc, 4, 4096).code(), Code::kOutOfRange);
  EXPECT_EQ(ValidateConfigAccess("ReadConfig", 0xffffffff, 1, 4096).code(), Code::kOutOfRange);
}

TEST(ValidateConfigDumpTest, LengthZeroMeansToTheEnd) {
  EXPECT_EQ(*ValidateConfigDump(0, 0, 256), 256u);
  EXPECT_EQ(*ValidateConfigDump(0x40, 0, 256), 0xc0u);
  EXPECT_EQ(*ValidateConfigDump(0x100, 0x10, 4096), 0x10u);
}

TEST(ValidateConfigDumpTest, RejectsUnalignedAndOutOfRange) {
  EXPECT_EQ(ValidateConfigDump(2, 4, 256).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ValidateConfigDump(0, 6, 256).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ValidateConfigDump(256, 0, 256).status().code(), Code::kOutOfRange);
  EXPECT_EQ(ValidateConfigDump(252, 8, 256).status().code(), Code::kOutOfRange);
  EXPECT_EQ(ValidateConfigDump(0xfffffffc, 8, 4096).status().code(), Code::kOutOfRange);
  EXPECT_EQ(ValidateConfigDump(4, 0xfffffffc, 4096).status().code(), Code::kOutOfRange);
}

TEST(ConfigSpaceSizeTest, RequiresAUsableConfigRegion) {
  FakeBackend backend;
  EXPECT_EQ(*ConfigSpaceSize(backend.info()), 256u);
  backend.info().regions[kConfigRegionIndex].size = 128;
  EXPECT_EQ(ConfigSpaceSize(backend.info()).status().code(), Code::kFailedPrecondition);
  backend.info().regions[kConfigRegionIndex].size = 8192;
  EXPECT_EQ(ConfigSpaceSize(backend.info()).status().code(), Code::kFailedPrecondition);
  backend.info().regions.resize(kConfigRegionIndex);
  EXPECT_EQ(ConfigSpaceSize(backend.info()).status().code(), Code::kFailedPrecondition);
}

TEST(DecodeHeaderTest, DecodesIdsClassAndHeaderType) {
  FakeBackend backend;
  backend.SetConfig32(PCI_CLASS_REVISION, 0x00ff0010);  // class 0x00ff00, revision 0x10
  backend.SetConfig8(PCI_HEADER_TYPE, 0x80);            // multifunction, type 0
  backend.SetConfig16(PCI_SUBSYSTEM_VENDOR_ID, 0x1af4);
  backend.SetConfig16(PCI_SUBSYSTEM_ID, 0x1100);
  DeviceDescription d;
  DecodeHeader(backend.config(), &d);
  EXPECT_EQ(d.vendor_id, 0x1234);
  EXPECT_EQ(d.device_id, 0x11e8);
  EXPECT_EQ(d.class_code, 0x00ff00u);
  EXPECT_EQ(d.revision, 0x10);
  EXPECT_EQ(d.header_type, 0x80);
  EXPECT_EQ(d.subsystem_vendor_id, 0x1af4);
  EXPECT_EQ(d.subsystem_id, 0x1100);
}

TEST(SizeBarsTest, DecodesEveryKindAndRestoresTheRegisters) {
  FakeBackend backend;
  backend.AddMemoryBar(0, 0x1000, /*is_64bit=*/false, /*prefetchable=*/false);
  backend.AddMemoryBar(1, uint64_t{8} << 30, /*is_64bit=*/true, /*prefetchable=*/true);
  backend.AddIoBar(3, 0x20);
  backend.AddRom(0x10000);
  backend.SetConfig32(PCI_BASE_ADDRESS_0, 0xfebf0000);
  backend.SetConfig32(PCI_BASE_ADDRESS_1, 0x0000000c);
  backend.SetConfig32(PCI_BASE_ADDRESS_2, 0x00000002);  // 0x2'00000000
  backend.SetConfig32(PCI_BASE_ADDRESS_3, 0x0000c041);
  backend.SetConfig32(PCI_ROM_ADDRESS, 0xfeb80000);
  const std::vector<uint8_t> before = backend.config();

  absl::StatusOr<std::array<std::optional<Bar>, 7>> bars = SizeBars(backend, 0);
  ASSERT_TRUE(bars.ok()) << bars.status();
  EXPECT_EQ(backend.config(), before);

  ASSERT_TRUE((*bars)[0].has_value());
  EXPECT_EQ((*bars)[0]->kind, Bar::Kind::kMemory);
  EXPECT_FALSE((*bars)[0]->is_64bit);
  EXPECT_FALSE((*bars)[0]->prefetchable);
  EXPECT_EQ((*bars)[0]->size, 0x1000u);
  EXPECT_EQ((*bars)[0]->address, 0xfebf0000u);

  ASSERT_TRUE((*bars)[1].has_value());
  EXPECT_EQ((*bars)[1]->kind, Bar::Kind::kMemory);
  EXPECT_TRUE((*bars)[1]->is_64bit);
  EXPECT_TRUE((*bars)[1]->prefetchable);
  EXPECT_EQ((*bars)[1]->size, uint64_t{8} << 30);
  EXPECT_EQ((*bars)[1]->address, uint64_t{0x200000000});
  EXPECT_FALSE((*bars)[2].has_value());  // upper half of BAR1

  ASSERT_TRUE((*bars)[3].has_value());
  EXPECT_EQ((*bars)[3]->kind, Bar::Kind::kIo);
  EXPECT_EQ((*bars)[3]->size, 0x20u);
  EXPECT_EQ((*bars)[3]->address, 0xc040u);

  EXPECT_FALSE((*bars)[4].has_value());
  EXPECT_FALSE((*bars)[5].has_value());

  ASSERT_TRUE((*bars)[6].has_value());
  EXPECT_EQ((*bars)[6]->kind, Bar::Kind::kRom);
  EXPECT_EQ((*bars)[6]->size, 0x10000u);
  EXPECT_EQ((*bars)[6]->address, 0xfeb80000u);
}

TEST(SizeBarsTest, A64BitLastBarIsDecodedAs32Bit) {
  FakeBackend backend;
  backend.AddMemoryBar(5, 0x4000, /*is_64bit=*/false, false);
  backend.SetConfig32(PCI_BASE_ADDRESS_5, PCI_BASE_ADDRESS_MEM_TYPE_64);
  absl::StatusOr<std::array<std::optional<Bar>, 7>> bars = SizeBars(backend, 0);
  ASSERT_TRUE(bars.ok());
  ASSERT_TRUE((*bars)[5].has_value());
  EXPECT_FALSE((*bars)[5]->is_64bit);
  EXPECT_EQ((*bars)[5]->size, 0x4000u);
}

TEST(SizeBarsTest, BridgeHasTwoBarsAndOtherHeadersNone) {
  FakeBackend backend;
  backend.AddMemoryBar(0, 0x1000, false, false);
  backend.AddMemoryBar(2, 0x1000, false, false);  // not a BAR in a type-1 header
  absl::StatusOr<std::array<std::optional<Bar>, 7>> bars = SizeBars(backend, 1);
  ASSERT_TRUE(bars.ok());
  EXPECT_TRUE((*bars)[0].has_value());
  EXPECT_FALSE((*bars)[2].has_value());

  bars = SizeBars(backend, 0x7f);
  ASSERT_TRUE(bars.ok());
  for (const auto& bar : *bars) EXPECT_FALSE(bar.has_value());
}

TEST(SizeBarsTest, RegionSizeMismatchKeepsTheConfigSize) {
  FakeBackend backend;
  backend.AddMemoryBar(0, 0x1000, false, false);
  backend.info().regions[0].size = 0x2000;
  absl::StatusOr<std::array<std::optional<Bar>, 7>> bars = SizeBars(backend, 0);
  ASSERT_TRUE(bars.ok());
  EXPECT_EQ((*bars)[0]->size, 0x1000u);
}

// Builds a standard capability at `offset` pointing to `next`.
void AddCap(FakeBackend& backend, uint8_t offset, uint8_t id, uint8_t next) {
  backend.SetConfig8(offset, id);
  backend.SetConfig8(offset + 1, next);
}

void AddExtCap(FakeBackend& backend, uint16_t offset, uint16_t id, uint8_t version, uint16_t next) {
  backend.SetConfig32(offset, uint32_t{id} | uint32_t{version} << 16 | uint32_t{next} << 20);
}

void EnableCapList(FakeBackend& backend, uint8_t first) {
  backend.SetConfig16(PCI_STATUS, PCI_STATUS_CAP_LIST);
  backend.SetConfig8(PCI_CAPABILITY_LIST, first);
}

TEST(WalkCapabilitiesTest, WalksAWellFormedChain) {
  FakeBackend backend;
  EnableCapList(backend, 0x40);
  AddCap(backend, 0x40, PCI_CAP_ID_PM, 0x50);
  AddCap(backend, 0x50, PCI_CAP_ID_MSI, 0x70);
  AddCap(backend, 0x70, PCI_CAP_ID_EXP, 0xb0);
  AddCap(backend, 0xb0, PCI_CAP_ID_MSIX, 0x00);
  std::vector<Capability> caps = WalkCapabilities(backend.config());
  ASSERT_EQ(caps.size(), 4u);
  EXPECT_EQ(caps[0].offset, 0x40);
  EXPECT_EQ(caps[0].name, "Power Management");
  EXPECT_EQ(caps[1].name, "MSI");
  EXPECT_EQ(caps[2].name, "Express");
  EXPECT_EQ(caps[3].id, PCI_CAP_ID_MSIX);
  EXPECT_EQ(caps[3].offset, 0xb0);
  EXPECT_EQ(caps[3].name, "MSI-X");
}

TEST(WalkCapabilitiesTest, NoListWithoutTheStatusBit) {
  FakeBackend backend;
  EnableCapList(backend, 0x40);
  AddCap(backend, 0x40, PCI_CAP_ID_PM, 0);
  backend.SetConfig16(PCI_STATUS, 0);
  EXPECT_TRUE(WalkCapabilities(backend.config()).empty());
}

TEST(WalkCapabilitiesTest, LoopingChainIsCut) {
  FakeBackend backend;
  EnableCapList(backend, 0x40);
  AddCap(backend, 0x40, PCI_CAP_ID_PM, 0x50);
  AddCap(backend, 0x50, PCI_CAP_ID_MSI, 0x40);
  std::vector<Capability> caps = WalkCapabilities(backend.config());
  ASSERT_EQ(caps.size(), 2u);
  EXPECT_EQ(caps[1].offset, 0x50);

  AddCap(backend, 0x40, PCI_CAP_ID_PM, 0x40);  // points at itself
  EXPECT_EQ(WalkCapabilities(backend.config()).size(), 1u);
}

TEST(WalkCapabilitiesTest, BadPointersEndTheChain) {
  FakeBackend backend;
  EnableCapList(backend, 0x40);
  AddCap(backend, 0x40, PCI_CAP_ID_PM, 0x3c);  // into the header
  EXPECT_EQ(WalkCapabilities(backend.config()).size(), 1u);
  AddCap(backend, 0x40, PCI_CAP_ID_PM, 0x45);  // unaligned
  EXPECT_EQ(WalkCapabilities(backend.config()).size(), 1u);
  AddCap(backend, 0x40, PCI_CAP_ID_PM, 0xff);  // unaligned, last byte
  EXPECT_EQ(WalkCapabilities(backend.config()).size(), 1u);
  EnableCapList(backend, 0x10);  // first pointer inside the header
  EXPECT_TRUE(WalkCapabilities(backend.config()).empty());
  EnableCapList(backend, 0x43);
  EXPECT_TRUE(WalkCapabilities(backend.config()).empty());
  EnableCapList(backend, 0xfc);  // id 0xff: no device there
  backend.SetConfig8(0xfc, 0xff);
  EXPECT_TRUE(WalkCapabilities(backend.config()).empty());
}

TEST(WalkCapabilitiesTest, LongestPossibleChainIsBounded) {
  FakeBackend backend;
  EnableCapList(backend, 0xfc);
  for (uint32_t offset = 0x40; offset <= 0xfc; offset += 4) {
    AddCap(backend, static_cast<uint8_t>(offset), PCI_CAP_ID_VNDR,
           static_cast<uint8_t>(offset - 4));  // 0xfc -> 0xf8 -> ... -> 0x40 -> 0x3c (end)
  }
  std::vector<Capability> caps = WalkCapabilities(backend.config());
  EXPECT_EQ(caps.size(), kMaxStandardCapabilities);
  EXPECT_EQ(caps.front().name, "Vendor-Specific");
}

TEST(WalkCapabilitiesTest, ShortSnapshotsAreSafe) {
  std::vector<uint8_t> config(16, 0xff);
  EXPECT_TRUE(WalkCapabilities(config).empty());
  EXPECT_TRUE(WalkExtendedCapabilities(config).empty());
}

TEST(WalkExtendedCapabilitiesTest, WalksAWellFormedChain) {
  FakeBackend backend(4096);
  AddExtCap(backend, 0x100, PCI_EXT_CAP_ID_ERR, 2, 0x148);
  AddExtCap(backend, 0x148, PCI_EXT_CAP_ID_DSN, 1, 0xffc);
  AddExtCap(backend, 0xffc, PCI_EXT_CAP_ID_SRIOV, 1, 0);
  std::vector<Capability> caps = WalkExtendedCapabilities(backend.config());
  ASSERT_EQ(caps.size(), 3u);
  EXPECT_EQ(caps[0].name, "AER");
  EXPECT_EQ(caps[0].version, 2);
  EXPECT_EQ(caps[0].offset, 0x100);
  EXPECT_EQ(caps[1].name, "Device Serial Number");
  EXPECT_EQ(caps[2].offset, 0xffc);
  EXPECT_EQ(caps[2].name, "SR-IOV");
}

TEST(WalkExtendedCapabilitiesTest, NoneOnA256ByteDeviceOrAnEmptyHeader) {
  FakeBackend small(256);
  EXPECT_TRUE(WalkExtendedCapabilities(small.config()).empty());
  FakeBackend big(4096);
  EXPECT_TRUE(WalkExtendedCapabilities(big.config()).empty());
  big.SetConfig32(0x100, 0xffffffff);
  EXPECT_TRUE(WalkExtendedCapabilities(big.config()).empty());
}

TEST(WalkExtendedCapabilitiesTest, MaliciousChainsAreCut) {
  FakeBackend backend(4096);
  AddExtCap(backend, 0x100, PCI_EXT_CAP_ID_ERR, 1, 0x200);
  AddExtCap(backend, 0x200, PCI_EXT_CAP_ID_ACS, 1, 0x100);  // loop
  EXPECT_EQ(WalkExtendedCapabilities(backend.config()).size(), 2u);
  AddExtCap(backend, 0x200, PCI_EXT_CAP_ID_ACS, 1, 0x200);  // self-loop
  EXPECT_EQ(WalkExtendedCapabilities(backend.config()).size(), 2u);
  AddExtCap(backend, 0x200, PCI_EXT_CAP_ID_ACS, 1, 0x40);  // into standard space
  EXPECT_EQ(WalkExtendedCapabilities(backend.config()).size(), 2u);
  AddExtCap(backend, 0x200, PCI_EXT_CAP_ID_ACS, 1, 0x202);  // unaligned
  EXPECT_EQ(WalkExtendedCapabilities(backend.config()).size(), 2u);
  AddExtCap(backend, 0x100, PCI_EXT_CAP_ID_ERR, 1, 0x104);  // each header points at the next
  for (uint32_t offset = 0x104; offset < 0x1000; offset += 4) {
    AddExtCap(backend, static_cast<uint16_t>(offset), PCI_EXT_CAP_ID_VNDR, 1,
              static_cast<uint16_t>(offset + 4 == 0x1000 ? 0x100 : offset + 4));
  }
  EXPECT_EQ(WalkExtendedCapabilities(backend.config()).size(), (0x1000u - 0x100u) / 4);
}

TEST(WalkCapabilitiesTest, RandomConfigSpaceNeverEscapesOrLoops) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 2000; ++round) {
    std::vector<uint8_t> config(round % 2 ? 4096 : 256);
    for (uint8_t& byte : config) byte = static_cast<uint8_t>(rng());
    for (const Capability& cap : WalkCapabilities(config)) {
      EXPECT_GE(cap.offset, 0x40);
      EXPECT_LE(cap.offset, 0xfc);
    }
    std::vector<Capability> ext = WalkExtendedCapabilities(config);
    EXPECT_LE(ext.size(), (0x1000u - 0x100u) / 4);
    for (const Capability& cap : ext) {
      EXPECT_GE(cap.offset, 0x100);
      EXPECT_LE(cap.offset + 4u, config.size());
    }
  }
}

TEST(CapabilityNameTest, NamesCommonIds) {
  EXPECT_EQ(CapabilityName(PCI_CAP_ID_PM), "Power Management");
  EXPECT_EQ(CapabilityName(PCI_CAP_ID_MSI), "MSI");
  EXPECT_EQ(CapabilityName(PCI_CAP_ID_MSIX), "MSI-X");
  EXPECT_EQ(CapabilityName(PCI_CAP_ID_EXP), "Express");
  EXPECT_EQ(CapabilityName(PCI_CAP_ID_VNDR), "Vendor-Specific");
  EXPECT_EQ(CapabilityName(0x7e), "Unknown");
  EXPECT_EQ(ExtendedCapabilityName(PCI_EXT_CAP_ID_ERR), "AER");
  EXPECT_EQ(ExtendedCapabilityName(PCI_EXT_CAP_ID_SRIOV), "SR-IOV");
  EXPECT_EQ(ExtendedCapabilityName(0x7777), "Unknown");
}

TEST(DescribeDeviceTest, DescribesThroughTheBackend) {
  FakeBackend backend(4096);
  backend.SetConfig32(PCI_CLASS_REVISION, 0x02000001);
  backend.AddMemoryBar(0, 0x100000, false, false);
  EnableCapList(backend, 0x40);
  AddCap(backend, 0x40, PCI_CAP_ID_MSI, 0x40);  // a hostile self-loop
  AddExtCap(backend, 0x100, PCI_EXT_CAP_ID_ERR, 1, 0x100);
  absl::StatusOr<DeviceDescription> d = DescribeDevice(backend);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->config_size, 4096u);
  EXPECT_EQ(d->vendor_id, 0x1234);
  EXPECT_EQ(d->class_code, 0x020000u);
  EXPECT_EQ(d->revision, 1);
  ASSERT_TRUE(d->bars[0].has_value());
  EXPECT_EQ(d->bars[0]->size, 0x100000u);
  ASSERT_EQ(d->capabilities.size(), 1u);
  EXPECT_EQ(d->capabilities[0].name, "MSI");
  ASSERT_EQ(d->extended_capabilities.size(), 1u);
  EXPECT_EQ(d->backend.name, "fake");
}

TEST(DescribeDeviceTest, FailsWithoutAConfigRegion) {
  FakeBackend backend;
  backend.info().regions[kConfigRegionIndex].size = 0;
  EXPECT_EQ(DescribeDevice(backend).status().code(), Code::kFailedPrecondition);
}

}  // namespace
}  // namespace vfiod
