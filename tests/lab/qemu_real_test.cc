// Lab-only test: an unmodified QEMU 11 attached over vfio-user to vfiod serving the lab's REAL
// vfio-pci devices. Run by tests/lab/guest_suite.sh inside the lab's guest, where
// `tools/lab/lab.sh run --qemu11` put QEMU 11 (/opt/qemu11/qemu11, $VFIOD_QEMU11); not a Bazel
// test (there is no /dev/vfio on the build machines).
//
// Per device (from $LAB_DEVICES, "name=address ..."), vfiod runs as by default (jailed, enforcing
// seccomp) with --vfio-user for QEMU, --listen for a gRPC observer (the client library, as
// vfioctl uses it) and --observer-bar-reads so that the observer can read the same BAR
// registers as QEMU (only the harmless ones below are read). QEMU runs `-machine q35 -accel
// qtest` (no guest CPU: the test plays the guest through tests/vmm/qtest_vmm.h) with 64 MiB of
// shared memfd RAM, `-device vfio-user-pci` at 00:04.0. Then, in one test per device (one daemon,
// two QEMU starts: about 4 s per device in the lab), in order:
//   - ConfigSpaceMatchesSysfs: config space read through QEMU (0xcf8/0xcfc) against the guest
//     kernel's sysfs `config` of the real device: ids, revision, class, subsystem, header type,
//     interrupt pin, the capability list (ids and offsets, in order), MSI and MSI-X capability
//     fields, and each BAR's kind, width, prefetchability and size by sizing. Fields that QEMU's
//     vfio-pci virtualises are left out, each with its reason at the check.
//   - BarsMatchReadRegion: harmless BAR registers (edu ident; e1000e CTRL, STATUS; nvme CAP, VS)
//     read through QEMU (BAR programmed, memory decode on, readl) equal vfiod's gRPC ReadRegion.
//   - EduFactorialAndDma (edu): factorials and a DMA round trip RAM -> device -> RAM through the
//     guest RAM QEMU registered with vfiod (DMA_MAP of its memfd), on the real device behind the
//     lab's emulated IOMMU.
//   - KilledQemuLeavesNothing: QEMU SIGKILLed with DMA mapped, bus mastering on and interrupts
//     enabled (INTx, and MSI or an unmasked MSI-X vector); vfiod's observer then shows no owner,
//     no mapping, no memory, no enabled interrupt and bus mastering off, the guest kernel shows
//     no vfio interrupt line for the device, and a new QEMU attaches to the same daemon and reads
//     the ids again.
// Lines starting "qemu_real:" carry timings and what was compared; the lab suite's summary shows
// them. Environment: LAB_DEVICES (required), VFIOD_QEMU11, VFIOD_BINARY.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/vfio_client.h"
#include "gtest/gtest.h"
#include "tests/lab/lab_device.h"
#include "tests/vmm/qtest_vmm.h"
#include "tests/vmm/vfio_user_daemon.h"

namespace vfiod::lab {
namespace {

using vmm::PciBdf;
using vmm::QtestVmm;

// Where the device and the test's buffers are in QEMU's machine.
constexpr PciBdf kSlot = {0, 4, 0};
constexpr uint64_t kMemoryMb = 64;
constexpr uint64_t kBarWindow = 0xe0000000;  // q35's 32-bit PCI hole
constexpr uint64_t kGuestSource = 0x200000, kGuestBack = 0x300000, kGuestMsi = 0x400000;
constexpr uint32_t kMsiData = 0x4321;

// PCI config space.
constexpr uint32_t kCommand = 0x04, kStatus = 0x06, kBar0Reg = 0x10, kRomReg = 0x30,
                   kCapPtr = 0x34, kInterruptPin = 0x3d;
constexpr uint16_t kCmdMemory = 0x2, kCmdMaster = 0x4;
constexpr uint8_t kCapMsi = 0x05, kCapMsix = 0x11;

// The edu device (QEMU docs/specs/edu.rst).
constexpr uint32_t kEduVendor = 0x1234, kEduDevice = 0x11e8;
constexpr uint64_t kEduIdent = 0x00, kEduFactorial = 0x08, kEduStatus = 0x20, kEduDmaSrc = 0x80,
                   kEduDmaDst = 0x88, kEduDmaCount = 0x90, kEduDmaCmd = 0x98;
constexpr uint64_t kEduBuffer = 0x40000;
constexpr uint32_t kDmaRun = 0x1, kDmaToRam = 0x2;
constexpr uint32_t kDmaBytes = 1024;  // below 4096 (vm-lab.md pitfall 4)

// BAR registers whose read has no side effect, per device: what both QEMU and vfiod's gRPC
// observer read. (e1000e's ICR at 0xc0 clears on read; never read here.)
struct HarmlessRegister {
  uint32_t bar;
  uint64_t offset;
  const char* name;
};
std::vector<HarmlessRegister> HarmlessRegisters(const SysfsFacts& facts) {
  if (facts.vendor == kEduVendor && facts.device == kEduDevice) {
    return {{0, kEduIdent, "ident"}};
  }
  if (facts.vendor == 0x8086 && facts.device == 0x10d3) {  // e1000e (82574L)
    return {{0, 0x00, "CTRL"}, {0, 0x08, "STATUS"}};
  }
  if (facts.vendor == 0x1b36 && facts.device == 0x0010) {  // QEMU's NVMe controller
    return {{0, 0x00, "CAP[31:0]"}, {0, 0x04, "CAP[63:32]"}, {0, 0x08, "VS"}};
  }
  return {};
}

bool IsEdu(const SysfsFacts& facts) {
  return facts.vendor == kEduVendor && facts.device == kEduDevice;
}

const v1::IrqIndexState* FindIrq(const v1::DeviceState& state, v1::IrqIndex index) {
  for (const v1::IrqIndexState& irq : state.irqs()) {
    if (irq.index() == index) return &irq;
  }
  return nullptr;
}

bool IrqEnabled(const v1::DeviceState& state, v1::IrqIndex index) {
  const v1::IrqIndexState* irq = FindIrq(state, index);
  return irq != nullptr && irq->enabled();
}

bool AnyIrqEnabled(const v1::DeviceState& state) {
  for (const v1::IrqIndexState& irq : state.irqs()) {
    if (irq.enabled()) return true;
  }
  return false;
}

// Whether one DMA mapping covers [iova, iova + size) for device reads and writes.
bool Mapped(const v1::DeviceState& state, uint64_t iova, uint64_t size) {
  for (const v1::DmaMappingState& m : state.dma_mappings()) {
    if (m.iova() <= iova && iova + size <= m.iova() + m.size() && m.device_read() &&
        m.device_write()) {
      return true;
    }
  }
  return false;
}

std::string Describe(const v1::DeviceState& state) {
  std::string out = absl::StrCat("owner_attached=", state.owner_attached(),
                                 " memory=", state.memory_size(), " mappings=[");
  for (const v1::DmaMappingState& m : state.dma_mappings()) {
    absl::StrAppendFormat(&out, " 0x%x+0x%x%s%s", m.iova(), m.size(), m.device_read() ? "r" : "",
                          m.device_write() ? "w" : "");
  }
  out += " ] irqs=[";
  for (const v1::IrqIndexState& irq : state.irqs()) {
    absl::StrAppend(&out, " ", v1::IrqIndex_Name(irq.index()), irq.enabled() ? ":on" : ":off");
  }
  return out + " ]";
}

// One BAR as a sizing shows it: the value read back after writing all ones.
struct SizedBar {
  bool io = false, is64 = false, prefetchable = false;
  uint64_t size = 0;
  bool operator==(const SizedBar& o) const {
    return io == o.io && is64 == o.is64 && prefetchable == o.prefetchable && size == o.size;
  }
};
std::string ToString(const SizedBar& b) {
  if (b.size == 0) return "none";
  return absl::StrCat(b.io ? "io" : "mem", b.is64 ? "64" : "", b.prefetchable ? " pref" : "",
                      " 0x", absl::Hex(b.size));
}
std::ostream& operator<<(std::ostream& os, const SizedBar& b) { return os << ToString(b); }

class QemuRealTest : public ::testing::TestWithParam<LabDevice> {
 protected:
  void SetUp() override {
    absl::StatusOr<vmm::Qemu11> qemu = vmm::FindQemu11();
    if (!qemu.ok()) GTEST_SKIP() << qemu.status().message();
    qemu_ = *qemu;
    absl::StatusOr<SysfsFacts> facts = ReadSysfs(GetParam().address);
    ASSERT_TRUE(facts.ok()) << facts.status();
    sysfs_ = *std::move(facts);
    // DaemonProcess serves $VFIOD_DEVICE: the real device, jailed and filtered as by default.
    ::setenv("VFIOD_DEVICE", GetParam().address.c_str(), 1);
    absl::StatusOr<std::unique_ptr<vmm::VfioUserDaemon>> daemon =
        vmm::VfioUserDaemon::Start({"--observer-bar-reads"});
    ASSERT_TRUE(daemon.ok()) << GetParam().address << ": " << daemon.status();
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<VfioClient>> observer = daemon_->Observer();
    ASSERT_TRUE(observer.ok()) << observer.status();
    observer_ = *std::move(observer);
    vmm_ = StartQemu();
    ASSERT_NE(vmm_, nullptr);
  }

  void TearDown() override {
    vmm_.reset();
    observer_.reset();
    if (daemon_ != nullptr) {
      absl::StatusOr<int> status = daemon_->process().Terminate();
      EXPECT_TRUE(status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << "vfiod did not stop cleanly: " << (status.ok() ? absl::StrCat(*status) : "")
          << status.status();
    }
  }

  // A QEMU attached to the daemon; null (with a test failure) when it does not start.
  std::unique_ptr<QtestVmm> StartQemu() {
    vmm::QtestVmmOptions options;
    options.qemu_path = qemu_.path;
    options.vfio_user_socket = daemon_->vfio_user_socket();
    options.memory_mb = kMemoryMb;
    // Under TCG in the lab's guest QEMU starts in about a second; leave room for a loaded host.
    options.start_timeout = absl::Seconds(60);
    options.command_timeout = absl::Seconds(30);
    absl::StatusOr<std::unique_ptr<QtestVmm>> vmm = QtestVmm::Start(options);
    EXPECT_TRUE(vmm.ok()) << vmm.status();
    if (!vmm.ok()) return nullptr;
    printf("qemu_real: %s: QEMU 11 attached to vfiod (vfio-user) and answered qtest in %s\n",
           GetParam().name.c_str(), absl::FormatDuration((*vmm)->start_duration()).c_str());
    return *std::move(vmm);
  }

  v1::DeviceState State() {
    absl::StatusOr<v1::DeviceState> state = observer_->GetState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : v1::DeviceState();
  }

  // Waits (15 s at most) until `predicate` holds for the observer's state; returns the last one.
  template <typename Predicate>
  v1::DeviceState WaitForState(Predicate predicate) {
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    v1::DeviceState state = State();
    while (!predicate(state) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
      state = State();
    }
    return state;
  }

  uint32_t Config(QtestVmm& q, uint32_t offset, uint32_t size) {
    absl::StatusOr<uint32_t> v = q.ConfigRead(kSlot, offset, size);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : 0xdeadbeef;
  }

  // The standard capability list as QEMU's config space shows it.
  std::vector<Cap> QemuCapabilities(QtestVmm& q) {
    std::vector<Cap> caps;
    if ((Config(q, kStatus, 2) & 0x10) == 0) return caps;
    uint32_t at = Config(q, kCapPtr, 1) & 0xfc;
    for (int ttl = 48; at >= 0x40 && ttl > 0; --ttl) {
      const uint32_t id = Config(q, at, 1);
      if (id == 0xff) break;
      caps.push_back(Cap{id, at, 0});
      at = Config(q, at + 1, 1) & 0xfc;
    }
    return caps;
  }

  // Sizes BAR `index` through QEMU (writes all ones, reads, restores).
  SizedBar SizeBar(QtestVmm& q, int index) {
    const uint32_t reg = kBar0Reg + 4 * index;
    const uint32_t old = Config(q, reg, 4);
    EXPECT_TRUE(q.ConfigWrite(kSlot, reg, 4, 0xffffffff).ok());
    const uint32_t low = Config(q, reg, 4);
    EXPECT_TRUE(q.ConfigWrite(kSlot, reg, 4, old).ok());
    SizedBar bar;
    if (low == 0) return bar;
    bar.io = (low & 0x1) != 0;
    if (bar.io) {
      bar.size = (~(low & ~0x3u) + 1) & 0xffff;
      return bar;
    }
    bar.is64 = ((low >> 1) & 0x3) == 0x2;
    bar.prefetchable = (low & 0x8) != 0;
    uint64_t mask = low & ~0xfu;
    if (bar.is64 && index < 5) {
      const uint32_t old_high = Config(q, reg + 4, 4);
      EXPECT_TRUE(q.ConfigWrite(kSlot, reg + 4, 4, 0xffffffff).ok());
      mask |= uint64_t{Config(q, reg + 4, 4)} << 32;
      EXPECT_TRUE(q.ConfigWrite(kSlot, reg + 4, 4, old_high).ok());
    } else {
      mask |= 0xffffffff00000000ull;
    }
    bar.size = ~mask + 1;
    return bar;
  }

  // The same from sysfs.
  SizedBar SysfsBar(int index) const {
    const SysfsResource& r = sysfs_.resources[index];
    SizedBar bar;
    bar.size = r.size();
    if (bar.size == 0) return bar;
    bar.io = (r.flags & kIoresourceIo) != 0;
    bar.is64 = (r.flags & kIoresourceMem64) != 0;
    bar.prefetchable = (r.flags & kIoresourcePrefetch) != 0;
    return bar;
  }

  // Gives every memory BAR an address in the PCI hole (naturally aligned) and turns on memory
  // decoding, plus bus mastering with `master`; remembers the addresses.
  void EnableDevice(QtestVmm& q, bool master) {
    uint64_t next = kBarWindow;
    for (int i = 0; i < 6; ++i) {
      const SizedBar bar = SysfsBar(i);
      if (bar.size == 0 || bar.io) continue;
      const uint64_t size = std::max<uint64_t>(bar.size, 0x1000);
      next = (next + size - 1) & ~(size - 1);
      bar_address_[i] = next;
      ASSERT_TRUE(q.ConfigWrite(kSlot, kBar0Reg + 4 * i, 4, static_cast<uint32_t>(next)).ok());
      if (bar.is64) {
        ASSERT_TRUE(q.ConfigWrite(kSlot, kBar0Reg + 4 * (i + 1), 4, 0).ok());
        ++i;
      }
      next += size;
    }
    const uint32_t command = Config(q, kCommand, 2);
    ASSERT_TRUE(q.ConfigWrite(kSlot, kCommand, 2,
                              command | kCmdMemory | (master ? kCmdMaster : 0))
                    .ok());
  }

  // Polls BAR0 register `offset` until (value & mask) == want.
  absl::Status PollBar0(QtestVmm& q, uint64_t offset, uint32_t mask, uint32_t want) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (true) {
      absl::StatusOr<uint32_t> v = q.Readl(bar_address_[0] + offset);
      if (!v.ok()) return v.status();
      if ((*v & mask) == want) return absl::OkStatus();
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrFormat(
            "BAR0+0x%x = 0x%08x, waited for (v & 0x%x) == 0x%x", offset, *v, mask, want));
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
  }

  // Turns on the device's interrupts the way a guest driver would, through QEMU: MSI with the
  // message aimed at guest RAM, or MSI-X with vector 0 unmasked in the (QEMU-emulated) table.
  // Without either, INTx stays as QEMU enabled it at attach. Returns the index enabled.
  v1::IrqIndex EnableInterrupts(QtestVmm& q) {
    if (std::optional<uint32_t> msix = sysfs_.FindCap(kCapMsix)) {
      const uint32_t table = sysfs_.Config32(*msix + 4);
      const uint64_t entry0 = bar_address_[table & 0x7] + (table & ~0x7u);
      const uint32_t control = Config(q, *msix + 2, 2);
      EXPECT_TRUE(q.ConfigWrite(kSlot, *msix + 2, 2, (control | 0x8000) & ~0x4000).ok());
      EXPECT_TRUE(q.Writel(entry0 + 0x0, static_cast<uint32_t>(kGuestMsi)).ok());
      EXPECT_TRUE(q.Writel(entry0 + 0x4, 0).ok());
      EXPECT_TRUE(q.Writel(entry0 + 0x8, kMsiData).ok());
      EXPECT_TRUE(q.Writel(entry0 + 0xc, 0).ok());  // unmasked
      return v1::IRQ_INDEX_MSIX;
    }
    if (std::optional<uint32_t> msi = sysfs_.FindCap(kCapMsi)) {
      const uint32_t control = Config(q, *msi + 2, 2);
      const bool is64 = (control & 0x80) != 0;
      EXPECT_TRUE(q.ConfigWrite(kSlot, *msi + 4, 4, static_cast<uint32_t>(kGuestMsi)).ok());
      if (is64) {
        EXPECT_TRUE(q.ConfigWrite(kSlot, *msi + 8, 4, 0).ok());
      }
      EXPECT_TRUE(q.ConfigWrite(kSlot, *msi + (is64 ? 0xc : 0x8), 2, kMsiData).ok());
      EXPECT_TRUE(q.ConfigWrite(kSlot, *msi + 2, 2, control | 0x1).ok());
      return v1::IRQ_INDEX_MSI;
    }
    return v1::IRQ_INDEX_INTX;
  }

  // The steps of the test, in order (each on vmm_).
  void ConfigSpaceMatchesSysfs();
  void BarsMatchReadRegion();
  void EduFactorialAndDma();
  void KilledQemuLeavesNothing();

  vmm::Qemu11 qemu_;
  SysfsFacts sysfs_;
  std::unique_ptr<vmm::VfioUserDaemon> daemon_;
  std::unique_ptr<VfioClient> observer_;
  std::unique_ptr<QtestVmm> vmm_;
  std::map<int, uint64_t> bar_address_;
};

void QemuRealTest::ConfigSpaceMatchesSysfs() {
  QtestVmm& q = *vmm_;
  // Identity: passed through unchanged.
  EXPECT_EQ(Config(q, 0x00, 2), sysfs_.vendor);
  EXPECT_EQ(Config(q, 0x02, 2), sysfs_.device);
  EXPECT_EQ(Config(q, 0x08, 4), sysfs_.Config32(0x08)) << "revision and class";
  EXPECT_EQ(Config(q, 0x08, 4) >> 8, sysfs_.class_code);
  EXPECT_EQ(Config(q, 0x2c, 2), sysfs_.subsystem_vendor);
  EXPECT_EQ(Config(q, 0x2e, 2), sysfs_.subsystem_device);
  // Header type without the multi-function bit, which QEMU's vfio-pci emulates (the function is
  // alone at 00:04.0 whatever the host device is).
  EXPECT_EQ(Config(q, 0x0e, 1) & 0x7f, sysfs_.Config8(0x0e) & 0x7f);
  EXPECT_EQ(Config(q, kInterruptPin, 1), sysfs_.Config8(kInterruptPin)) << "interrupt pin";
  // Status: only the capability-list bit; the rest reports live device and bus state.
  EXPECT_EQ(Config(q, kStatus, 2) & 0x10, sysfs_.Config16(kStatus) & 0x10);
  // Left out: command (QEMU and the guest own it: vfio-pci emulates INTx-disable, the guest
  // sets decode and mastering), BAR and ROM BAR registers (QEMU emulates them: the guest
  // programs its own addresses; their sizes are compared below), interrupt line (0x3c, the
  // guest's routing), cache line size and latency timer (0x0c, 0x0d: the guest's settings).

  // The capability list: same ids at the same offsets, in the same order. QEMU re-creates the
  // MSI, MSI-X, PM and PCI Express capabilities in place and copies the others.
  const std::vector<Cap> caps = QemuCapabilities(q);
  EXPECT_EQ(caps, sysfs_.Capabilities());
  std::vector<std::string> names;
  for (const Cap& cap : caps) names.push_back(absl::StrFormat("0x%02x@0x%02x", cap.id, cap.offset));

  // MSI: vector count, 64-bit and per-vector masking, as QEMU's msi_init re-creates them from
  // the device's control word.
  if (std::optional<uint32_t> msi = sysfs_.FindCap(kCapMsi)) {
    EXPECT_EQ(Config(q, *msi + 2, 2) & 0x18e, sysfs_.Config16(*msi + 2) & 0x18e) << "MSI control";
  }
  // MSI-X: table size, and the table's and PBA's BAR and offset (QEMU emulates the table at the
  // device's own location unless told to relocate it).
  if (std::optional<uint32_t> msix = sysfs_.FindCap(kCapMsix)) {
    EXPECT_EQ(Config(q, *msix + 2, 2) & 0x7ff, sysfs_.Config16(*msix + 2) & 0x7ff) << "table size";
    EXPECT_EQ(Config(q, *msix + 4, 4), sysfs_.Config32(*msix + 4)) << "table BIR/offset";
    EXPECT_EQ(Config(q, *msix + 8, 4), sysfs_.Config32(*msix + 8)) << "PBA BIR/offset";
  }
  // PCI Express: the capability's version (its device/port type is virtualised: QEMU turns an
  // endpoint on q35's root bus into a root-complex integrated endpoint).
  if (std::optional<uint32_t> pcie = sysfs_.FindCap(0x10)) {
    EXPECT_EQ(Config(q, *pcie + 2, 2) & 0xf, sysfs_.Config16(*pcie + 2) & 0xf) << "PCIe version";
  }

  // Every BAR's kind, width, prefetchability and size, by sizing through QEMU.
  std::vector<std::string> bars;
  for (int i = 0; i < 6; ++i) {
    const SizedBar want = SysfsBar(i);
    const SizedBar got = SizeBar(q, i);
    EXPECT_EQ(got, want) << "BAR" << i;
    if (want.size != 0) bars.push_back(absl::StrCat(i, ": ", ToString(got)));
    if (want.is64) ++i;
  }
  // The expansion ROM: QEMU sizes vfiod's region 6 (the device's ROM) into its own ROM BAR.
  ASSERT_TRUE(q.ConfigWrite(kSlot, kRomReg, 4, 0xfffff800).ok());
  const uint32_t rom = Config(q, kRomReg, 4);
  ASSERT_TRUE(q.ConfigWrite(kSlot, kRomReg, 4, 0).ok());
  const uint64_t rom_size = (rom & 0xfffff800) == 0 ? 0 : (~(rom & 0xfffff800) + 1) & 0xffffffff;
  EXPECT_EQ(rom_size, sysfs_.resources[6].size()) << "ROM BAR read 0x" << std::hex << rom;

  // vfiod's observer reads the same ids.
  absl::StatusOr<uint32_t> ids = observer_->ReadConfig(0, 4);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, Config(q, 0, 4));
  printf("qemu_real: %s: config through QEMU = sysfs: %04x:%04x class %06x, caps [%s], BARs "
         "[%s], ROM 0x%llx\n",
         GetParam().name.c_str(), sysfs_.vendor, sysfs_.device, sysfs_.class_code,
         absl::StrJoin(names, " ").c_str(), absl::StrJoin(bars, ", ").c_str(),
         static_cast<unsigned long long>(rom_size));
}

void QemuRealTest::BarsMatchReadRegion() {
  const std::vector<HarmlessRegister> registers = HarmlessRegisters(sysfs_);
  if (registers.empty()) {
    printf("qemu_real: %s: no BAR register known to be harmless to read; BAR reads left out\n",
           GetParam().name.c_str());
    return;
  }
  QtestVmm& q = *vmm_;
  ASSERT_NO_FATAL_FAILURE(EnableDevice(q, /*master=*/false));
  std::vector<std::string> seen;
  for (const HarmlessRegister& r : registers) {
    SCOPED_TRACE(r.name);
    absl::StatusOr<uint32_t> through_qemu = q.Readl(bar_address_[r.bar] + r.offset);
    ASSERT_TRUE(through_qemu.ok()) << through_qemu.status();
    absl::StatusOr<uint32_t> through_grpc = observer_->ReadRegion32(r.bar, r.offset);
    ASSERT_TRUE(through_grpc.ok()) << through_grpc.status();
    EXPECT_EQ(*through_qemu, *through_grpc);
    seen.push_back(absl::StrFormat("BAR%d+0x%x %s=0x%08x", r.bar, r.offset, r.name, *through_qemu));
  }
  if (IsEdu(sysfs_)) {
    EXPECT_EQ(*q.Readl(bar_address_[0] + kEduIdent) & 0xff, 0xedu) << "edu's ident";
  }
  printf("qemu_real: %s: BAR reads through QEMU = gRPC ReadRegion: %s\n", GetParam().name.c_str(),
         absl::StrJoin(seen, ", ").c_str());
}

void QemuRealTest::EduFactorialAndDma() {
  QtestVmm& q = *vmm_;
  ASSERT_NO_FATAL_FAILURE(EnableDevice(q, /*master=*/true));
  const uint64_t bar0 = bar_address_[0];
  for (auto [n, want] : {std::pair<uint32_t, uint32_t>{5, 120}, {10, 3628800}}) {
    ASSERT_TRUE(q.Writel(bar0 + kEduFactorial, n).ok());
    ASSERT_TRUE(PollBar0(q, kEduStatus, 0x1, 0).ok());
    EXPECT_EQ(*q.Readl(bar0 + kEduFactorial), want) << n << "!";
  }

  std::string pattern(kDmaBytes, '\0');
  for (uint32_t i = 0; i < kDmaBytes; ++i) pattern[i] = static_cast<char>((i * 29 + 3) ^ (i >> 7));
  ASSERT_TRUE(q.MemWrite(kGuestSource, pattern).ok());
  ASSERT_TRUE(q.MemWrite(kGuestBack, std::string(kDmaBytes + 16, '\0')).ok());
  // QEMU registered its guest RAM with vfiod (DMA_MAP with the memfd), which mapped it in the
  // real IOMMU at IOVA = guest-physical address.
  const v1::DeviceState state = State();
  EXPECT_TRUE(Mapped(state, kGuestSource, kDmaBytes)) << Describe(state);
  EXPECT_TRUE(Mapped(state, kGuestBack, kDmaBytes)) << Describe(state);

  const absl::Time t0 = absl::Now();
  auto dma = [&](uint64_t src, uint64_t dst, uint32_t cmd) {
    ASSERT_TRUE(q.Writel(bar0 + kEduDmaSrc, static_cast<uint32_t>(src)).ok());
    ASSERT_TRUE(q.Writel(bar0 + kEduDmaDst, static_cast<uint32_t>(dst)).ok());
    ASSERT_TRUE(q.Writel(bar0 + kEduDmaCount, kDmaBytes).ok());
    ASSERT_TRUE(q.Writel(bar0 + kEduDmaCmd, cmd).ok());
    absl::Status done = PollBar0(q, kEduDmaCmd, kDmaRun, 0);
    ASSERT_TRUE(done.ok()) << done;
  };
  ASSERT_NO_FATAL_FAILURE(dma(kGuestSource, kEduBuffer, kDmaRun));              // RAM -> device
  ASSERT_NO_FATAL_FAILURE(dma(kEduBuffer, kGuestBack, kDmaRun | kDmaToRam));   // device -> RAM
  const absl::Duration took = absl::Now() - t0;
  absl::StatusOr<std::string> back = q.MemRead(kGuestBack, kDmaBytes + 16);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->substr(0, kDmaBytes), pattern) << "the round trip changed the data";
  EXPECT_EQ(back->substr(kDmaBytes), std::string(16, '\0')) << "DMA wrote past the transfer";
  printf("qemu_real: %s: factorials 5! 10! and a %u-byte DMA round trip through QEMU's guest RAM "
         "(%d DMA windows in vfiod) in %s\n",
         GetParam().name.c_str(), kDmaBytes, state.dma_mappings_size(),
         absl::FormatDuration(took).c_str());
}

void QemuRealTest::KilledQemuLeavesNothing() {
  QtestVmm& q = *vmm_;
  const std::string address = GetParam().address;
  ASSERT_NO_FATAL_FAILURE(EnableDevice(q, /*master=*/true));
  const v1::IrqIndex index = EnableInterrupts(q);
  v1::DeviceState before = WaitForState([&](const v1::DeviceState& s) {
    return IrqEnabled(s, index) && s.dma_mappings_size() > 0;
  });
  EXPECT_TRUE(before.owner_attached()) << Describe(before);
  EXPECT_TRUE(Mapped(before, kGuestSource, kDmaBytes)) << Describe(before);
  EXPECT_TRUE(IrqEnabled(before, index)) << v1::IrqIndex_Name(index) << ": " << Describe(before);
  absl::StatusOr<uint32_t> command = observer_->ReadConfig(kCommand, 2);
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_TRUE(*command & kCmdMaster) << "QEMU's command write did not reach the device";
  const std::vector<std::string> irqs_before = KernelVfioIrqs(address);
  EXPECT_FALSE(irqs_before.empty()) << "no vfio interrupt in /proc/interrupts while QEMU ran";

  absl::StatusOr<int> status = q.Kill(SIGKILL);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
  const absl::Time t0 = absl::Now();
  v1::DeviceState after = WaitForState([](const v1::DeviceState& s) {
    return !s.owner_attached() && s.dma_mappings_size() == 0 && !AnyIrqEnabled(s);
  });
  const absl::Duration cleanup = absl::Now() - t0;
  EXPECT_FALSE(after.owner_attached()) << Describe(after);
  EXPECT_EQ(after.dma_mappings_size(), 0) << Describe(after);
  EXPECT_EQ(after.memory_size(), 0) << "memory still registered: " << Describe(after);
  EXPECT_FALSE(AnyIrqEnabled(after)) << Describe(after);
  EXPECT_GE(after.owner_losses(), before.owner_losses() + 1);
  command = observer_->ReadConfig(kCommand, 2);
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_FALSE(*command & kCmdMaster) << "bus mastering still on after QEMU's SIGKILL";
  const std::vector<std::string> irqs_after = KernelVfioIrqs(address);
  EXPECT_TRUE(irqs_after.empty()) << absl::StrJoin(irqs_after, "\n");
  EXPECT_TRUE(daemon_->process().Running());
  printf("qemu_real: %s: QEMU SIGKILLed holding %d DMA windows, %s and %zu kernel vfio IRQ "
         "line(s); vfiod cleaned up in %s (no owner, mapping, memory, IRQ, bus master; "
         "/proc/interrupts clean)\n",
         GetParam().name.c_str(), before.dma_mappings_size(), v1::IrqIndex_Name(index).c_str(),
         irqs_before.size(), absl::FormatDuration(cleanup).c_str());

  // A new QEMU on the same daemon.
  vmm_.reset();
  vmm_ = StartQemu();
  ASSERT_NE(vmm_, nullptr);
  QtestVmm& q2 = *vmm_;
  EXPECT_EQ(Config(q2, 0x00, 2), sysfs_.vendor);
  EXPECT_EQ(Config(q2, 0x02, 2), sysfs_.device);
  EXPECT_EQ(Config(q2, 0x08, 4) >> 8, sysfs_.class_code);
  const v1::DeviceState again = WaitForState(
      [](const v1::DeviceState& s) { return s.owner_attached() && s.dma_mappings_size() > 0; });
  EXPECT_TRUE(again.owner_attached()) << Describe(again);
  EXPECT_TRUE(Mapped(again, kGuestSource, kDmaBytes)) << Describe(again);
  if (IsEdu(sysfs_)) {
    ASSERT_NO_FATAL_FAILURE(EnableDevice(q2, /*master=*/false));
    ASSERT_TRUE(q2.Writel(bar_address_[0] + kEduFactorial, 4).ok());
    ASSERT_TRUE(PollBar0(q2, kEduStatus, 0x1, 0).ok());
    EXPECT_EQ(*q2.Readl(bar_address_[0] + kEduFactorial), 24u);
  }
}

// One daemon and one QEMU per device, the steps in order (a failed step does not stop the later
// ones), then the SIGKILL and a second QEMU: 2 QEMU starts per device, about 4 s in the lab.
TEST_P(QemuRealTest, AttachCompareUseKillReattach) {
  {
    SCOPED_TRACE("config space through QEMU vs sysfs");
    ConfigSpaceMatchesSysfs();
  }
  {
    SCOPED_TRACE("BAR registers through QEMU vs gRPC ReadRegion");
    BarsMatchReadRegion();
  }
  if (IsEdu(sysfs_)) {
    SCOPED_TRACE("edu factorial and DMA through QEMU");
    EduFactorialAndDma();
  }
  SCOPED_TRACE("QEMU SIGKILLed, then a new QEMU");
  KilledQemuLeavesNothing();
}

INSTANTIATE_TEST_SUITE_P(LabZoo, QemuRealTest, ::testing::ValuesIn(LabDevicesFromEnv()),
                         DeviceTestName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(QemuRealTest);

}  // namespace
}  // namespace vfiod::lab
