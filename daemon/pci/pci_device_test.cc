#include "daemon/pci/pci_device.h"

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "daemon/pci/fake_backend.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using Code = absl::StatusCode;

constexpr uint64_t kPage = 4096;

UniqueFd MakeMemfd(uint64_t size) {
  int fd = ::memfd_create("pci_device_test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return UniqueFd();
  }
  return UniqueFd(fd);
}

// Everything a snapshot holds, as text, so that "unchanged" is one comparison.
std::string Describe(const DeviceSnapshot& s) {
  std::string out;
  for (const MemoryInfo& m : s.memory)
    absl::StrAppend(&out, "mem ", m.id, " ", m.size, " ", m.mappings, ";");
  for (const DmaMapRequest& m : s.mappings) {
    absl::StrAppend(&out, "map ", m.iova, " ", m.size, " ", m.memory_id, " ", m.offset, " ",
                    m.device_read, m.device_write, ";");
  }
  for (const IrqIndexState& irq : s.irqs) {
    absl::StrAppend(&out, "irq ", static_cast<int>(irq.index), " ", irq.enabled, ":");
    for (const IrqVectorState& v : irq.vectors) {
      absl::StrAppend(&out, v.vector, "/", static_cast<int>(v.trigger), "/", v.masked, "/",
                      v.unmask_eventfd, ",");
    }
    out += ";";
  }
  return out;
}

class PciDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = std::make_unique<FakeBackend>(256);
    backend_ = backend.get();
    backend->AddMemoryBar(0, 0x1000, false, false);
    backend->AddMemoryBar(2, 0x100000, true, true);
    backend->AddRom(0x8000);
    backend->SetConfig16(PCI_STATUS, PCI_STATUS_CAP_LIST);
    backend->SetConfig8(PCI_CAPABILITY_LIST, 0x40);
    backend->SetConfig8(0x40, PCI_CAP_ID_MSI);
    backend->SetConfig8(0x41, 0x00);
    backend->SetConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    limits_.max_region_access_bytes = 256;
    limits_.max_irq_watchers = 2;
    absl::StatusOr<std::unique_ptr<PciDevice>> device =
        PciDevice::Create(std::move(backend), limits_);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = *std::move(device);
    ASSERT_TRUE(device_->Start().ok());
  }

  // Runs `call` (expected to fail with `code`, the message starting with `operation`) and
  // checks that the device's state did not change.
  template <typename Call>
  void ExpectRejected(Code code, absl::string_view operation, Call call) {
    const std::string before = Describe(device_->Snapshot());
    const std::vector<uint8_t> config = backend_->config();
    absl::Status status = call();
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_TRUE(absl::StartsWith(status.message(), operation)) << status;
    EXPECT_EQ(Describe(device_->Snapshot()), before);
    EXPECT_EQ(backend_->config(), config);
  }

  FakeBackend* backend_ = nullptr;
  DeviceLimits limits_;
  std::unique_ptr<PciDevice> device_;
};

TEST_F(PciDeviceTest, CreateDescribesTheDevice) {
  const DeviceDescription& d = device_->description();
  EXPECT_EQ(d.vendor_id, 0x1234);
  EXPECT_EQ(d.device_id, 0x11e8);
  EXPECT_EQ(d.config_size, 256u);
  ASSERT_TRUE(d.bars[0].has_value());
  EXPECT_EQ(d.bars[0]->size, 0x1000u);
  ASSERT_TRUE(d.bars[2].has_value());
  EXPECT_TRUE(d.bars[2]->is_64bit);
  EXPECT_FALSE(d.bars[3].has_value());
  ASSERT_TRUE(d.bars[6].has_value());
  EXPECT_EQ(d.bars[6]->kind, Bar::Kind::kRom);
  ASSERT_EQ(d.capabilities.size(), 1u);
  EXPECT_EQ(d.capabilities[0].name, "MSI");
  EXPECT_EQ(d.backend.name, "fake");
  EXPECT_EQ(device_->limits().max_region_access_bytes, 256u);
}

TEST(PciDeviceCreateTest, RejectsMissingBackendAndConfigRegion) {
  EXPECT_EQ(PciDevice::Create(nullptr, DeviceLimits()).status().code(), Code::kInvalidArgument);
  auto backend = std::make_unique<FakeBackend>();
  backend->info().regions[kConfigRegionIndex].readable = false;
  EXPECT_EQ(PciDevice::Create(std::move(backend), DeviceLimits()).status().code(),
            Code::kFailedPrecondition);
}

TEST_F(PciDeviceTest, ConfigReadsAndWritesGoToTheBackend) {
  EXPECT_EQ(*device_->ReadConfig(PCI_VENDOR_ID, 2), 0x1234u);
  EXPECT_EQ(*device_->ReadConfig(PCI_VENDOR_ID, 4), 0x11e81234u);
  EXPECT_EQ(*device_->ReadConfig(PCI_DEVICE_ID + 1, 1), 0x11u);
  ASSERT_TRUE(device_->WriteConfig(PCI_COMMAND, 2, PCI_COMMAND_MEMORY).ok());
  EXPECT_EQ(*device_->ReadConfig(PCI_COMMAND, 2), uint32_t{PCI_COMMAND_MEMORY});
  std::vector<uint8_t> dump = *device_->DumpConfig(0, 0);
  ASSERT_EQ(dump.size(), 256u);
  EXPECT_EQ(dump, backend_->config());
  EXPECT_EQ(device_->DumpConfig(0x40, 8)->size(), 8u);
}

TEST_F(PciDeviceTest, ConfigAccessValidation) {
  for (uint32_t size : {0u, 3u, 5u, 8u}) {
    ExpectRejected(Code::kInvalidArgument, "ReadConfig",
                   [&] { return device_->ReadConfig(0, size).status(); });
    ExpectRejected(Code::kInvalidArgument, "WriteConfig",
                   [&] { return device_->WriteConfig(0, size, 0); });
  }
  ExpectRejected(Code::kInvalidArgument, "ReadConfig",
                 [&] { return device_->ReadConfig(1, 2).status(); });
  ExpectRejected(Code::kInvalidArgument, "WriteConfig",
                 [&] { return device_->WriteConfig(255, 2, 0); });
  ExpectRejected(Code::kOutOfRange, "ReadConfig",
                 [&] { return device_->ReadConfig(4096, 4).status(); });
  ExpectRejected(Code::kOutOfRange, "WriteConfig",
                 [&] { return device_->WriteConfig(0x100, 4, 0); });
  ExpectRejected(Code::kOutOfRange, "ReadConfig",
                 [&] { return device_->ReadConfig(0xfffffffc, 4).status(); });
  ExpectRejected(Code::kInvalidArgument, "WriteConfig",
                 [&] { return device_->WriteConfig(PCI_COMMAND, 1, 0x100); });
  ExpectRejected(Code::kInvalidArgument, "WriteConfig",
                 [&] { return device_->WriteConfig(PCI_COMMAND, 2, 0x10000); });
  ExpectRejected(Code::kInvalidArgument, "DumpConfig",
                 [&] { return device_->DumpConfig(2, 0).status(); });
  ExpectRejected(Code::kOutOfRange, "DumpConfig",
                 [&] { return device_->DumpConfig(0xfc, 8).status(); });
}

TEST_F(PciDeviceTest, RegionAccess) {
  const std::vector<uint8_t> data = {1, 2, 3, 4, 5};
  ASSERT_TRUE(device_->WriteRegion(0, 0xffb, data).ok());
  EXPECT_EQ(*device_->ReadRegion(0, 0xffb, 5), data);
  ASSERT_TRUE(device_->WriteRegion(2, 0xfff00, data).ok());
  EXPECT_EQ(*device_->ReadRegion(2, 0xfff00, 5), data);
  EXPECT_EQ(device_->ReadRegion(kRomRegionIndex, 0, 4)->size(), 4u);
}

TEST_F(PciDeviceTest, RegionAccessValidation) {
  const std::vector<uint8_t> four(4, 0xaa);
  absl::StatusOr<std::vector<uint8_t>> read = device_->ReadRegion(kConfigRegionIndex, 0, 4);
  EXPECT_EQ(read.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(read.status().message(), "ReadConfig")) << read.status();
  ExpectRejected(Code::kInvalidArgument, "WriteRegion",
                 [&] { return device_->WriteRegion(kConfigRegionIndex, 0, four); });
  for (uint32_t index : {1u, 3u, 5u, kVgaRegionIndex, 9u, 0xffffffffu}) {
    ExpectRejected(Code::kNotFound, "ReadRegion",
                   [&] { return device_->ReadRegion(index, 0, 4).status(); });
    ExpectRejected(Code::kNotFound, "WriteRegion",
                   [&] { return device_->WriteRegion(index, 0, four); });
  }
  ExpectRejected(Code::kPermissionDenied, "WriteRegion",
                 [&] { return device_->WriteRegion(kRomRegionIndex, 0, four); });
  ExpectRejected(Code::kInvalidArgument, "ReadRegion",
                 [&] { return device_->ReadRegion(0, 0, 0).status(); });
  ExpectRejected(Code::kInvalidArgument, "WriteRegion",
                 [&] { return device_->WriteRegion(0, 0, {}); });
  ExpectRejected(Code::kInvalidArgument, "ReadRegion",
                 [&] { return device_->ReadRegion(0, 0, 257).status(); });
  ExpectRejected(Code::kInvalidArgument, "ReadRegion",
                 [&] { return device_->ReadRegion(0, 0, ~uint64_t{0}).status(); });
  ExpectRejected(Code::kOutOfRange, "ReadRegion",
                 [&] { return device_->ReadRegion(0, 0xffd, 4).status(); });
  ExpectRejected(Code::kOutOfRange, "WriteRegion",
                 [&] { return device_->WriteRegion(0, 0x1000, four); });
  ExpectRejected(Code::kOutOfRange, "ReadRegion",
                 [&] { return device_->ReadRegion(0, ~uint64_t{0} - 1, 4).status(); });
  ExpectRejected(Code::kOutOfRange, "WriteRegion",
                 [&] { return device_->WriteRegion(2, ~uint64_t{0}, four); });
}

TEST_F(PciDeviceTest, DmaErrorsLeaveTheStateUnchanged) {
  absl::StatusOr<MemoryInfo> memory = device_->RegisterMemory(MakeMemfd(1 << 20), 0);
  ASSERT_TRUE(memory.ok()) << memory.status();
  DmaMapRequest request;
  request.iova = 0x100000;
  request.size = 0x10000;
  request.memory_id = memory->id;
  request.device_read = true;
  ASSERT_TRUE(device_->MapDma(request).ok());

  DmaMapRequest bad = request;
  ExpectRejected(Code::kAlreadyExists, "MapDma", [&] { return device_->MapDma(bad); });
  bad.iova = 0xfee00000;
  ExpectRejected(Code::kOutOfRange, "MapDma", [&] { return device_->MapDma(bad); });
  bad.iova = 0x1001;
  ExpectRejected(Code::kInvalidArgument, "MapDma", [&] { return device_->MapDma(bad); });
  ExpectRejected(Code::kInvalidArgument, "UnmapDma",
                 [&] { return device_->UnmapDma(0x100000, 0x1000).status(); });
  ExpectRejected(Code::kNotFound, "UnmapDma",
                 [&] { return device_->UnmapDma(0x0, 0x1000).status(); });
  ExpectRejected(Code::kFailedPrecondition, "UnregisterMemory",
                 [&] { return device_->UnregisterMemory(memory->id); });
  ExpectRejected(Code::kFailedPrecondition, "RegisterMemory", [&] {
    int fd = ::memfd_create("unsealed", MFD_CLOEXEC);
    return device_->RegisterMemory(UniqueFd(fd), 0).status();
  });
  EXPECT_EQ(device_->Snapshot().mappings.size(), 1u);
}

TEST_F(PciDeviceTest, IrqErrorsLeaveTheStateUnchanged) {
  IrqRequest msi;
  msi.index = IrqIndex::kMsi;  // the fake device has INTx only
  msi.count = 1;
  msi.data = IrqRequest::Data::kBool;
  msi.bools = {true};
  const std::string before = Describe(device_->Snapshot());
  EXPECT_FALSE(device_->SetIrqs(std::move(msi)).ok());
  EXPECT_EQ(Describe(device_->Snapshot()), before);
}

TEST_F(PciDeviceTest, WatchIrqsIsLimited) {
  absl::StatusOr<std::shared_ptr<IrqSubscription>> a = device_->WatchIrqs({});
  absl::StatusOr<std::shared_ptr<IrqSubscription>> b = device_->WatchIrqs({IrqIndex::kIntx});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(device_->WatchIrqs({}).status().code(), Code::kResourceExhausted);
}

TEST_F(PciDeviceTest, ResetNeedsBackendSupport) {
  absl::Status status = device_->Reset();
  EXPECT_EQ(status.code(), Code::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(status.message(), "Reset")) << status;
  EXPECT_EQ(backend_->reset_calls(), 0);
}

// VFIO_DEVICE_RESET in Linux 6.1 (vfio_pci_ioctl_reset: memory lock, D0,
// pci_try_reset_function) leaves the interrupt configuration alone, so Reset does too.
TEST(PciDeviceResetTest, ResetKeepsIrqTriggersAsTheKernelDoes) {
  auto backend = std::make_unique<FakeBackend>();
  backend->info().reset_supported = true;
  FakeBackend* fake = backend.get();
  absl::StatusOr<std::unique_ptr<PciDevice>> device =
      PciDevice::Create(std::move(backend), DeviceLimits());
  ASSERT_TRUE(device.ok());
  ASSERT_TRUE((*device)->Start().ok());
  absl::StatusOr<EventFd> trigger = EventFd::Create();
  ASSERT_TRUE(trigger.ok());
  IrqRequest intx;
  intx.index = IrqIndex::kIntx;
  intx.count = 1;
  intx.data = IrqRequest::Data::kEventfd;
  intx.eventfds.push_back(*std::move(trigger));
  ASSERT_TRUE((*device)->SetIrqs(std::move(intx)).ok());
  ASSERT_TRUE((*device)->Snapshot().irqs.at(0).enabled);
  const size_t set_calls = fake->irq_set_calls().size();
  EXPECT_TRUE((*device)->Reset().ok());
  EXPECT_EQ(fake->reset_calls(), 1);
  EXPECT_TRUE((*device)->Snapshot().irqs.at(0).enabled);
  EXPECT_EQ(fake->irq_set_calls().size(), set_calls);  // no SET_IRQS around the reset
}

// A backend whose BAR writes wait (up to 5 s) until `expected` writers are inside at once
// (config writes, e.g. BAR sizing at Create, pass straight through).
class RendezvousBackend : public FakeBackend {
 public:
  explicit RendezvousBackend(int expected) : expected_(expected) {}
  absl::Status WriteRegion(uint32_t index, uint64_t offset,
                           absl::Span<const uint8_t> data) override {
    if (index == kConfigRegionIndex) return FakeBackend::WriteRegion(index, offset, data);
    {
      absl::MutexLock lock(&rendezvous_mu_);
      ++inside_;
      max_inside_ = std::max(max_inside_, inside_);
      auto all_in = [this]() ABSL_SHARED_LOCKS_REQUIRED(rendezvous_mu_) {
        return max_inside_ >= expected_;
      };
      rendezvous_mu_.AwaitWithTimeout(absl::Condition(&all_in), absl::Seconds(5));
      --inside_;
    }
    return FakeBackend::WriteRegion(index, offset, data);
  }
  int max_inside() {
    absl::MutexLock lock(&rendezvous_mu_);
    return max_inside_;
  }

 private:
  const int expected_;
  absl::Mutex rendezvous_mu_;
  int inside_ ABSL_GUARDED_BY(rendezvous_mu_) = 0;
  int max_inside_ ABSL_GUARDED_BY(rendezvous_mu_) = 0;
};

// BAR writes from several threads (vCPUs' doorbells) reach the device in parallel, as under
// kernel VFIO; they used to take the device lock exclusively and serialise.
TEST(PciDeviceConcurrencyTest, BarWritesRunInParallel) {
  auto backend = std::make_unique<RendezvousBackend>(2);
  RendezvousBackend* fake = backend.get();
  backend->AddMemoryBar(0, 0x1000, false, false);
  backend->SetConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY);
  absl::StatusOr<std::unique_ptr<PciDevice>> device =
      PciDevice::Create(std::move(backend), DeviceLimits());
  ASSERT_TRUE(device.ok()) << device.status();
  ASSERT_TRUE((*device)->Start().ok());
  const uint8_t doorbell[4] = {1, 0, 0, 0};
  std::vector<std::thread> vcpus;
  for (int i = 0; i < 2; ++i) {
    vcpus.emplace_back([&, i] {
      EXPECT_TRUE((*device)->WriteRegion(0, 4 * i, doorbell).ok());
    });
  }
  for (std::thread& vcpu : vcpus) vcpu.join();
  EXPECT_EQ(fake->max_inside(), 2) << "the second BAR write waited for the first";
}

TEST_F(PciDeviceTest, ReleaseOwnerResourcesClearsEverything) {
  absl::StatusOr<MemoryInfo> memory = device_->RegisterMemory(MakeMemfd(1 << 20), 0);
  ASSERT_TRUE(memory.ok());
  DmaMapRequest request;
  request.iova = 0x100000;
  request.size = 0x10000;
  request.memory_id = memory->id;
  request.device_write = true;
  ASSERT_TRUE(device_->MapDma(request).ok());
  ASSERT_TRUE(device_->RegisterMemory(MakeMemfd(kPage), 0).ok());

  device_->ReleaseOwnerResources();
  DeviceSnapshot snapshot = device_->Snapshot();
  EXPECT_TRUE(snapshot.memory.empty());
  EXPECT_TRUE(snapshot.mappings.empty());
  EXPECT_TRUE(backend_->mappings().empty());
  // No reset on this device: decode and bus mastering are off for the next owner.
  EXPECT_EQ(*device_->ReadConfig(PCI_COMMAND, 2), 0u);
  EXPECT_EQ(snapshot.last_owner_loss, OwnerLossReset::kDecodeDisabled);
}

TEST_F(PciDeviceTest, OwnerCleanupResetsADeviceThatOffersReset) {
  auto fake = std::make_unique<FakeBackend>();
  FakeBackend* backend = fake.get();
  backend->info().reset_supported = true;
  backend->SetConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  absl::StatusOr<std::unique_ptr<PciDevice>> device =
      PciDevice::Create(std::move(fake), DeviceLimits());
  ASSERT_TRUE(device.ok());
  OwnerCleanup cleanup;
  (*device)->RegisterOwnerCleanup(cleanup);
  EXPECT_EQ((*device)->Snapshot().last_owner_loss, OwnerLossReset::kNone);
  cleanup.Run("test");
  EXPECT_EQ(backend->reset_calls(), 1);
  EXPECT_EQ((*device)->Snapshot().last_owner_loss, OwnerLossReset::kReset);
  // Bus mastering was cleared before the reset; decode is left to the reset.
  EXPECT_EQ(*(*device)->ReadConfig(PCI_COMMAND, 2) & PCI_COMMAND_MASTER, 0u);
}

}  // namespace
}  // namespace vfiod
