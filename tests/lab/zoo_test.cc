// Lab-only test: vfiod on every device of the VM lab's zoo (real vfio-pci devices in the lab's
// guest), compared with what the guest kernel reports in sysfs. Run by tests/lab/guest_suite.sh
// inside the guest; not a Bazel test (there is no /dev/vfio on the build machines).
//
// Per device (from $LAB_DEVICES, "name=address ..."):
//   - `vfioctl --json info` and `vfioctl --json config` agree with sysfs: ids, class, config
//     size, BAR sizes and types (memory/I/O, 64-bit, prefetchable, address), the ROM, the
//     capability list (ids and offsets, in chain order), the extended capabilities (id, offset,
//     version), and the IRQ counts (INTx from the interrupt pin, MSI and MSI-X from their
//     capabilities).
//   - On a device with MSI-X: every vector enabled with eventfds (the kernel allocates them:
//     checked in /proc/interrupts), one vector masked and unmasked (emulated by the daemon),
//     then disabled (gone from /proc/interrupts).
//   - On the e1000e: a real MSI-X interrupt raised by the device reaches the owner's eventfd,
//     is held while vfiod masks the vector, and is delivered once on unmask.
//   - vfiod killed with SIGKILL and started again on the same device: the group reopens and the
//     device is described as before.
// And on every device with MSI: an owner process killed with SIGKILL while it holds DMA
// mappings and an MSI trigger; the kernel then shows no vfio interrupt for the device, and a
// new owner maps the same IOVA again.
//
// Environment: LAB_DEVICES (required), VFIOD_BINARY, VFIOCTL_BINARY, OWNER_PROCESS (paths in
// the guest).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/vfio_client.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"
#include "tests/eventfd_wait.h"
#include "tests/lab/lab_device.h"

namespace vfiod {
namespace {

using ::google::protobuf::Struct;
using ::vfiod::testing::ReadEventfdWithin;
using ::google::protobuf::Value;

using lab::CountContaining;
using lab::DeviceTestName;
using lab::Env;
using lab::kIoresourceIo;
using lab::kIoresourceMem64;
using lab::kIoresourcePrefetch;
using lab::KernelVfioIrqs;
using lab::LabDevice;
using lab::LabDevicesFromEnv;
using lab::ReadSysfs;
using lab::SysfsFacts;
using lab::SysfsResource;
using Cap = lab::Cap;

// Runs a command line (through sh) and returns its stdout; fails unless it exits 0.
absl::StatusOr<std::string> RunCommand(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("popen " + command);
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(command, ": exit status ", status, "; output: ", out));
  }
  return out;
}

absl::StatusOr<v1::DeviceState> WaitForState(VfioClient& client,
                                             bool (*predicate)(const v1::DeviceState&)) {
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  absl::StatusOr<v1::DeviceState> state;
  do {
    state = client.GetState();
    if (!state.ok() || predicate(*state)) return state;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  return absl::DeadlineExceededError("state never reached: " + state->DebugString());
}

const v1::IrqIndexState* FindIrqState(const v1::DeviceState& state, v1::IrqIndex index) {
  for (const v1::IrqIndexState& irq : state.irqs()) {
    if (irq.index() == index) return &irq;
  }
  return nullptr;
}

// A number of vfioctl's JSON: 64-bit values are decimal strings, narrower ones numbers.
double Number(const Struct& object, const std::string& key) {
  auto it = object.fields().find(key);
  if (it == object.fields().end()) return -1;
  if (it->second.has_string_value()) {
    uint64_t value;
    return absl::SimpleAtoi(it->second.string_value(), &value) ? static_cast<double>(value) : -1;
  }
  return it->second.number_value();
}

class ZooTest : public ::testing::TestWithParam<LabDevice> {
 protected:
  void SetUp() override {
    const LabDevice& device = GetParam();
    absl::StatusOr<SysfsFacts> facts = ReadSysfs(device.address);
    ASSERT_TRUE(facts.ok()) << facts.status();
    sysfs_ = *std::move(facts);
    ASSERT_NO_FATAL_FAILURE(StartDaemon());
  }

  void StartDaemon(const std::vector<std::string>& extra_args = {}) {
    client_.reset();
    daemon_.reset();
    // DaemonProcess serves $VFIOD_DEVICE.
    ::setenv("VFIOD_DEVICE", GetParam().address.c_str(), 1);
    absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
        testing::DaemonProcess::Start(extra_args);
    ASSERT_TRUE(daemon.ok()) << GetParam().address << ": " << daemon.status();
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(daemon_->socket_path());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  absl::StatusOr<std::string> Vfioctl(const std::string& args) {
    return RunCommand(absl::StrCat(Env("VFIOCTL_BINARY", "vfioctl"), " --socket ",
                                   daemon_->socket_path(), " ", args));
  }

  void TearDown() override {
    client_.reset();
    if (daemon_ != nullptr) {
      absl::StatusOr<int> status = daemon_->Terminate();
      EXPECT_TRUE(status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << "vfiod did not stop cleanly: " << (status.ok() ? absl::StrCat(*status) : "")
          << status.status();
    }
  }

  SysfsFacts sysfs_;
  std::unique_ptr<testing::DaemonProcess> daemon_;
  std::unique_ptr<VfioClient> client_;
};

TEST_P(ZooTest, VfioctlInfoAgreesWithSysfs) {
  absl::StatusOr<std::string> json = Vfioctl("--json info");
  ASSERT_TRUE(json.ok()) << json.status();
  v1::DeviceInfo info;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &info, options).ok()) << *json;

  EXPECT_EQ(info.backend(), v1::BACKEND_KIND_VFIO);
  EXPECT_EQ(info.name(), GetParam().address);
  EXPECT_EQ(info.ids().vendor_id(), sysfs_.vendor);
  EXPECT_EQ(info.ids().device_id(), sysfs_.device);
  EXPECT_EQ(info.ids().subsystem_vendor_id(), sysfs_.subsystem_vendor);
  EXPECT_EQ(info.ids().subsystem_id(), sysfs_.subsystem_device);
  EXPECT_EQ(info.ids().class_code(), sysfs_.class_code);
  EXPECT_EQ(info.ids().revision(), sysfs_.revision);
  EXPECT_EQ(info.config_size(), sysfs_.config.size());
  EXPECT_TRUE(info.flags().pci());

  ASSERT_GE(info.regions_size(), 9);
  for (int i = 0; i < 6; ++i) {
    SCOPED_TRACE(absl::StrCat("BAR", i));
    const SysfsResource& r = sysfs_.resources[i];
    const v1::Region& region = info.regions(i);
    EXPECT_EQ(region.index(), static_cast<uint32_t>(i));
    EXPECT_EQ(region.size(), r.size());
    if (r.size() == 0) {
      EXPECT_FALSE(region.has_bar()) << region.DebugString();
      continue;
    }
    ASSERT_TRUE(region.has_bar()) << region.DebugString();
    const bool io = (r.flags & kIoresourceIo) != 0;
    EXPECT_EQ(region.bar().kind(), io ? v1::Bar::KIND_IO : v1::Bar::KIND_MEMORY);
    EXPECT_EQ(region.bar().size(), r.size());
    EXPECT_EQ(region.bar().is_64bit(), (r.flags & kIoresourceMem64) != 0);
    EXPECT_EQ(region.bar().prefetchable(), (r.flags & kIoresourcePrefetch) != 0);
    EXPECT_EQ(region.bar().address(), r.start);
    EXPECT_TRUE(region.readable() && region.writable());
  }
  {
    SCOPED_TRACE("ROM");
    const v1::Region& rom = info.regions(6);
    EXPECT_EQ(rom.name(), "ROM");
    EXPECT_EQ(rom.size(), sysfs_.resources[6].size());
    if (sysfs_.resources[6].size() != 0) {
      ASSERT_TRUE(rom.has_bar());
      EXPECT_EQ(rom.bar().kind(), v1::Bar::KIND_ROM);
      EXPECT_EQ(rom.bar().size(), sysfs_.resources[6].size());
      EXPECT_TRUE(rom.readable());
      EXPECT_FALSE(rom.writable());
    }
  }
  EXPECT_EQ(info.regions(7).size(), sysfs_.config.size()) << "the config region";
  EXPECT_EQ(info.regions(8).size(), 0u) << "no VGA region on a non-VGA device";

  std::vector<Cap> caps, ext_caps;
  for (const v1::Capability& cap : info.capabilities()) caps.push_back(Cap{cap.id(), cap.offset()});
  for (const v1::Capability& cap : info.extended_capabilities()) {
    ext_caps.push_back(Cap{cap.id(), cap.offset(), cap.version()});
  }
  EXPECT_EQ(caps, sysfs_.Capabilities());
  EXPECT_EQ(ext_caps, sysfs_.ExtendedCapabilities());

  ASSERT_GE(info.irqs_size(), 3);
  EXPECT_EQ(info.irqs(0).index(), v1::IRQ_INDEX_INTX);
  EXPECT_EQ(info.irqs(0).count(), sysfs_.Config8(0x3d) != 0 ? 1u : 0u) << "interrupt pin";
  EXPECT_EQ(info.irqs(1).count(), sysfs_.MsiVectors()) << "MSI";
  EXPECT_EQ(info.irqs(2).count(), sysfs_.MsixVectors()) << "MSI-X";

  // The client library sees the same description as vfioctl.
  absl::StatusOr<v1::DeviceInfo> direct = client_->GetDeviceInfo();
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->SerializeAsString(), info.SerializeAsString());
}

TEST_P(ZooTest, VfioctlConfigAgreesWithSysfs) {
  absl::StatusOr<std::string> json = Vfioctl("--json config");
  ASSERT_TRUE(json.ok()) << json.status();
  Struct config;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &config).ok()) << *json;

  EXPECT_EQ(Number(config, "vendorId"), sysfs_.vendor);
  EXPECT_EQ(Number(config, "deviceId"), sysfs_.device);
  EXPECT_EQ(Number(config, "subsystemVendorId"), sysfs_.subsystem_vendor);
  EXPECT_EQ(Number(config, "subsystemId"), sysfs_.subsystem_device);
  EXPECT_EQ(Number(config, "classCode"), sysfs_.class_code);
  EXPECT_EQ(Number(config, "revision"), sysfs_.revision);
  EXPECT_EQ(Number(config, "interruptPin"), sysfs_.Config8(0x3d));
  EXPECT_EQ(config.fields().count("errors"), 0u) << *json;

  // Every implemented BAR, with its kind, width, prefetchability, address and size.
  std::vector<std::string> want_bars, got_bars;
  for (int i = 0; i < 6; ++i) {
    const SysfsResource& r = sysfs_.resources[i];
    if (r.size() == 0) continue;
    want_bars.push_back(absl::StrCat(i, " ", (r.flags & kIoresourceIo) ? "io" : "memory",
                                     (r.flags & kIoresourceMem64) ? " 64" : " 32",
                                     (r.flags & kIoresourcePrefetch) ? " pref" : "", " 0x",
                                     absl::Hex(r.start), " size ", r.size()));
  }
  for (const Value& bar : config.fields().at("bars").list_value().values()) {
    const Struct& b = bar.struct_value();
    got_bars.push_back(absl::StrCat(
        Number(b, "index"), " ", b.fields().at("kind").string_value(),
        b.fields().at("is64bit").bool_value() ? " 64" : " 32",
        b.fields().at("prefetchable").bool_value() ? " pref" : "", " 0x",
        absl::Hex(static_cast<uint64_t>(Number(b, "address"))), " size ",
        static_cast<uint64_t>(Number(b, "size"))));
  }
  EXPECT_EQ(got_bars, want_bars);

  std::vector<Cap> caps, ext_caps;
  for (const Value& v : config.fields().at("capabilities").list_value().values()) {
    const Struct& c = v.struct_value();
    caps.push_back(Cap{static_cast<uint32_t>(Number(c, "id")),
                       static_cast<uint32_t>(Number(c, "offset"))});
    if (caps.back().id == 0x11) {
      ASSERT_TRUE(c.fields().count("msix")) << *json;
      EXPECT_EQ(Number(c.fields().at("msix").struct_value(), "tableSize"), sysfs_.MsixVectors());
    }
  }
  for (const Value& v : config.fields().at("extendedCapabilities").list_value().values()) {
    const Struct& c = v.struct_value();
    ext_caps.push_back(Cap{static_cast<uint32_t>(Number(c, "id")),
                           static_cast<uint32_t>(Number(c, "offset")),
                           static_cast<uint32_t>(Number(c, "version"))});
  }
  EXPECT_EQ(caps, sysfs_.Capabilities());
  EXPECT_EQ(ext_caps, sysfs_.ExtendedCapabilities());
}

TEST_P(ZooTest, MsixAllVectorsMaskAndUnmask) {
  const uint32_t vectors = sysfs_.MsixVectors();
  if (vectors == 0) GTEST_SKIP() << GetParam().name << " has no MSI-X capability";
  const std::string address = GetParam().address;
  // One SET_IRQS carries every vector's eventfd (Linux 6.1 cannot add MSI-X vectors to an
  // enabled index): the daemon's default fd-token limit must cover the largest index (nvme: 65).
  ASSERT_TRUE(client_->ClaimOwnership().ok());
  // MSI-X messages are bus-master writes.
  absl::StatusOr<uint32_t> command = client_->ReadConfig(0x04, 2);
  ASSERT_TRUE(command.ok()) << command.status();
  ASSERT_TRUE(client_->WriteConfig(0x04, 2, *command | 0x6).ok());

  std::vector<int> eventfds;
  for (uint32_t i = 0; i < vectors; ++i) eventfds.push_back(::eventfd(0, EFD_CLOEXEC));
  // The fd channel takes at most 16 fds per message; the client splits larger sets.
  absl::Status enabled = client_->SetIrqEventfds(v1::IRQ_INDEX_MSIX, 0, eventfds);
  ASSERT_TRUE(enabled.ok()) << enabled;
  std::vector<std::string> irqs = KernelVfioIrqs(address);
  EXPECT_EQ(CountContaining(irqs, "vfio-msix["), vectors) << absl::StrJoin(irqs, "\n");

  const uint32_t vector = vectors > 1 ? 1 : 0;
  absl::Status masked = client_->SetIrqAction(v1::IRQ_INDEX_MSIX, vector, 1, v1::IRQ_ACTION_MASK);
  ASSERT_TRUE(masked.ok()) << masked;
  absl::StatusOr<v1::DeviceState> state = client_->GetState();
  ASSERT_TRUE(state.ok()) << state.status();
  const v1::IrqIndexState* msix = FindIrqState(*state, v1::IRQ_INDEX_MSIX);
  ASSERT_NE(msix, nullptr);
  EXPECT_TRUE(msix->enabled());
  ASSERT_EQ(msix->vectors_size(), static_cast<int>(vectors)) << msix->DebugString();
  for (const v1::IrqVectorState& v : msix->vectors()) {
    EXPECT_EQ(v.masked(), v.vector() == vector) << v.DebugString();
    EXPECT_EQ(v.trigger(), v1::IrqVectorState::TRIGGER_CLIENT_EVENTFD) << v.DebugString();
  }
  // The kernel keeps every vector allocated while one is masked (the mask is emulated).
  EXPECT_EQ(CountContaining(KernelVfioIrqs(address), "vfio-msix["), vectors);

  absl::Status unmasked =
      client_->SetIrqAction(v1::IRQ_INDEX_MSIX, vector, 1, v1::IRQ_ACTION_UNMASK);
  ASSERT_TRUE(unmasked.ok()) << unmasked;
  state = client_->GetState();
  ASSERT_TRUE(state.ok()) << state.status();
  msix = FindIrqState(*state, v1::IRQ_INDEX_MSIX);
  ASSERT_NE(msix, nullptr);
  for (const v1::IrqVectorState& v : msix->vectors()) EXPECT_FALSE(v.masked()) << v.DebugString();

  ASSERT_TRUE(client_->DisableIrqs(v1::IRQ_INDEX_MSIX).ok());
  EXPECT_EQ(CountContaining(KernelVfioIrqs(address), "vfio-msix["), 0u);
  for (int fd : eventfds) ::close(fd);
}

// A real MSI-X interrupt through vfiod, on the zoo's e1000e (Intel 82574L): the device is made
// to raise a chosen vector, which reaches the owner's eventfd; while vfiod holds the vector
// masked (emulated: Linux 6.1's vfio-pci cannot mask MSI-X) the interrupt is held, not lost,
// and unmasking delivers it exactly once.
TEST_P(ZooTest, MsixInterruptIsDeliveredAndHeldWhileMasked) {
  constexpr uint32_t kIntelVendor = 0x8086, k82574Device = 0x10d3;
  if (sysfs_.vendor != kIntelVendor || sysfs_.device != k82574Device) {
    GTEST_SKIP() << GetParam().name << ": the interrupt recipe is the 82574's";
  }
  // 82574L registers in BAR0 (datasheet section 10.2): interrupt cause read (write 1 to clear),
  // cause set, mask set, mask clear, and the MSI-X allocation (IVAR: one 4-bit entry per cause
  // group, RxQ0 in bits 3:0; bit 3 valid, bits 2:0 the vector).
  constexpr uint32_t kBar0 = 0;
  constexpr uint64_t kIcr = 0xc0, kIcs = 0xc8, kIms = 0xd0, kImc = 0xd8, kIvar = 0xe4;
  constexpr uint32_t kCauseRxq0 = 1u << 20;
  constexpr uint32_t kIvarValid = 0x8;
  constexpr uint32_t kVector = 1;
  const uint32_t vectors = sysfs_.MsixVectors();
  ASSERT_GT(vectors, kVector);

  ASSERT_TRUE(client_->ClaimOwnership().ok());
  absl::StatusOr<uint32_t> command = client_->ReadConfig(0x04, 2);
  ASSERT_TRUE(command.ok()) << command.status();
  ASSERT_TRUE(client_->WriteConfig(0x04, 2, *command | 0x6).ok());  // memory + bus master
  std::vector<int> eventfds;
  for (uint32_t i = 0; i < vectors; ++i) eventfds.push_back(::eventfd(0, EFD_CLOEXEC));
  absl::Status enabled = client_->SetIrqEventfds(v1::IRQ_INDEX_MSIX, 0, eventfds);
  ASSERT_TRUE(enabled.ok()) << enabled;

  ASSERT_TRUE(client_->WriteRegion32(kBar0, kImc, 0xffffffff).ok());
  ASSERT_TRUE(client_->WriteRegion32(kBar0, kIcr, 0xffffffff).ok());
  ASSERT_TRUE(client_->WriteRegion32(kBar0, kIvar, kIvarValid | kVector).ok());
  ASSERT_TRUE(client_->WriteRegion32(kBar0, kIms, kCauseRxq0).ok());
  auto raise = [&] { ASSERT_TRUE(client_->WriteRegion32(kBar0, kIcs, kCauseRxq0).ok()); };
  auto acknowledge = [&] { ASSERT_TRUE(client_->WriteRegion32(kBar0, kIcr, kCauseRxq0).ok()); };

  // Unmasked: delivered to the vector's eventfd, and to no other.
  raise();
  EXPECT_EQ(ReadEventfdWithin(eventfds[kVector], absl::Seconds(5)), 1u);
  acknowledge();
  for (uint32_t i = 0; i < vectors; ++i) {
    if (i != kVector) {
      EXPECT_EQ(ReadEventfdWithin(eventfds[i], absl::ZeroDuration()), 0u) << i;
    }
  }

  // Masked: held.
  absl::Status masked = client_->SetIrqAction(v1::IRQ_INDEX_MSIX, kVector, 1, v1::IRQ_ACTION_MASK);
  ASSERT_TRUE(masked.ok()) << masked;
  raise();
  acknowledge();
  EXPECT_EQ(ReadEventfdWithin(eventfds[kVector], absl::Milliseconds(500)), 0u)
      << "a masked vector's interrupt reached the owner";

  // Unmasked: the held interrupt is delivered once.
  absl::Status unmasked =
      client_->SetIrqAction(v1::IRQ_INDEX_MSIX, kVector, 1, v1::IRQ_ACTION_UNMASK);
  ASSERT_TRUE(unmasked.ok()) << unmasked;
  EXPECT_EQ(ReadEventfdWithin(eventfds[kVector], absl::Seconds(5)), 1u);
  EXPECT_EQ(ReadEventfdWithin(eventfds[kVector], absl::Milliseconds(200)), 0u);

  // And the vector delivers directly again.
  raise();
  EXPECT_EQ(ReadEventfdWithin(eventfds[kVector], absl::Seconds(5)), 1u);
  acknowledge();

  ASSERT_TRUE(client_->WriteRegion32(kBar0, kImc, 0xffffffff).ok());
  ASSERT_TRUE(client_->DisableIrqs(v1::IRQ_INDEX_MSIX).ok());
  for (int fd : eventfds) ::close(fd);
}

TEST_P(ZooTest, KilledDaemonStartsAgainOnTheSameDevice) {
  absl::StatusOr<v1::DeviceInfo> before = client_->GetDeviceInfo();
  ASSERT_TRUE(before.ok()) << before.status();
  client_.reset();
  ASSERT_EQ(::kill(daemon_->pid(), SIGKILL), 0);
  // Reaps it; SIGKILL cannot be ignored.
  absl::StatusOr<int> status = daemon_->Terminate(absl::Seconds(10));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  daemon_.reset();

  // The group, the container and the device fd were closed by the kernel with the process.
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  absl::StatusOr<v1::DeviceInfo> after = client_->GetDeviceInfo();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->SerializeAsString(), before->SerializeAsString());
  // It serves, and can be owned.
  ASSERT_TRUE(client_->ClaimOwnership().ok());
  absl::StatusOr<uint32_t> vendor = client_->ReadConfig(0x00, 2);
  ASSERT_TRUE(vendor.ok()) << vendor.status();
  EXPECT_EQ(*vendor, sysfs_.vendor);
}

// Owner loss with a process killed mid-session (tests/owner_process maps 4 x 64K of DMA at
// IOVA 0x100000, sets bus mastering, and puts an eventfd on MSI vector 0), verified in the
// kernel: its MSI is gone from /proc/interrupts, and the same IOVA maps again.
TEST_P(ZooTest, KilledOwnerLeavesNoKernelState) {
  if (sysfs_.MsiVectors() == 0) GTEST_SKIP() << GetParam().name << " has no MSI capability";
  const std::string address = GetParam().address;
  absl::StatusOr<pid_t> owner = testing::SpawnProcess(
      {Env("OWNER_PROCESS", testing::DaemonProcess::RunfilePath("tests/owner_process")),
       daemon_->socket_path()});
  ASSERT_TRUE(owner.ok()) << owner.status();
  absl::StatusOr<v1::DeviceState> held = WaitForState(*client_, [](const v1::DeviceState& s) {
    return s.dma_mappings_size() == 4 && s.irqs_size() > 1 && s.irqs(1).enabled();
  });
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(CountContaining(KernelVfioIrqs(address), "vfio-msi["), 1u);

  ::kill(*owner, SIGKILL);
  int status;
  ASSERT_EQ(::waitpid(*owner, &status, 0), *owner);
  absl::StatusOr<v1::DeviceState> after =
      WaitForState(*client_, [](const v1::DeviceState& s) { return !s.owner_attached(); });
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->dma_mappings_size(), 0);
  EXPECT_EQ(after->memory_size(), 0);
  std::vector<std::string> irqs = KernelVfioIrqs(address);
  EXPECT_TRUE(irqs.empty()) << absl::StrJoin(irqs, "\n");
  EXPECT_EQ(*client_->ReadConfig(0x04, 2) & 0x4, 0u) << "bus master must be cleared";

  ASSERT_TRUE(client_->ClaimOwnership().ok());
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("again", 0x40000);
  ASSERT_TRUE(memfd.ok());
  absl::StatusOr<v1::RegisterMemoryResponse> memory = client_->RegisterMemory(memfd->get(), 0x40000);
  ASSERT_TRUE(memory.ok()) << memory.status();
  // The kernel container refuses (EEXIST) a mapping over a live one: this proves it is gone.
  absl::Status mapped = client_->MapDma(0x100000, 0x40000, memory->memory_id(), 0);
  EXPECT_TRUE(mapped.ok()) << mapped;
}

INSTANTIATE_TEST_SUITE_P(LabZoo, ZooTest, ::testing::ValuesIn(LabDevicesFromEnv()),
                         DeviceTestName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ZooTest);

}  // namespace
}  // namespace vfiod
