// An unmodified QEMU 11 as vfiod's VMM: `-device vfio-user-pci` attached to
// `vfiod --device=sim:edu --vfio-user=SOCK --listen=GRPC` (jailed, enforcing seccomp), driven
// through qtest (tests/vmm/qtest_vmm.h) in the role of the guest, with a gRPC observer (the
// client library, as vfioctl uses it) checking vfiod's side.
//
// The device sits at 00:04.0. Everything the test does is what a guest driver does: config
// space through 0xcf8/0xcfc, a BAR programmed by hand, MMIO to it, DMA into guest RAM (a shared
// memfd that QEMU passes to vfiod in DMA_MAP), INTx seen at the IOAPIC's input, MSI seen as
// the message QEMU writes to the programmed address (a guest RAM address here, so the write is
// visible in memory instead of reaching a CPU that qtest does not run).
//
// Skips, printing why, when $VFIOD_QEMU11 names no QEMU 11 or vfiod has no --vfio-user.
#include <signal.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/vfio_client.h"
#include "gtest/gtest.h"
#include "tests/vmm/qtest_vmm.h"
#include "tests/vmm/vfio_user_daemon.h"

namespace vfiod::vmm {
namespace {

// QEMU's edu (docs/specs/edu.rst; vfiod's model: daemon/sim/edu_device.h).
constexpr uint32_t kEduIds = 0x11e81234;
constexpr uint64_t kRegIdent = 0x00, kRegLiveness = 0x04, kRegFactorial = 0x08,
                   kRegStatus = 0x20, kRegIrqStatus = 0x24, kRegIrqRaise = 0x60,
                   kRegIrqAck = 0x64, kRegDmaSrc = 0x80, kRegDmaDst = 0x88, kRegDmaCount = 0x90,
                   kRegDmaCmd = 0x98;
constexpr uint32_t kIdentValue = 0x010000ed;
constexpr uint32_t kDmaRun = 0x1, kDmaToRam = 0x2;
constexpr uint64_t kEduBuffer = 0x40000;
constexpr uint8_t kMsiCap = 0x40;

// PCI config space.
constexpr uint32_t kCommand = 0x04, kBar0Reg = 0x10, kCapPtr = 0x34, kInterruptPin = 0x3d;
constexpr uint16_t kCmdMemory = 0x2, kCmdMaster = 0x4;

// Where the test puts things in the 6 MiB guest. BAR0 (1 MiB) in q35's PCI hole; the guest
// buffers below 256 MiB (edu's 28-bit DMA mask).
constexpr PciBdf kEdu = {0, 4, 0};
constexpr uint64_t kBar0 = 0xe0000000;
constexpr uint64_t kGuestSource = 0x200000, kGuestBack = 0x300000, kGuestMsi = 0x400000;
constexpr uint32_t kDmaBytes = 1024;

class QemuSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Qemu11> qemu = FindQemu11();
    if (!qemu.ok()) {
      fprintf(stderr, "SKIP: %s\n", std::string(qemu.status().message()).c_str());
      GTEST_SKIP() << qemu.status().message();
    }
    qemu_ = *qemu;
    // Asked once per process (vfiod --help costs about 80 ms).
    static const absl::Status supported = VfioUserDaemon::CheckSupported();
    if (!supported.ok()) {
      fprintf(stderr, "SKIP: %s\n", std::string(supported.message()).c_str());
      GTEST_SKIP() << supported.message();
    }
    absl::StatusOr<std::unique_ptr<VfioUserDaemon>> daemon = VfioUserDaemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    absl::StatusOr<std::unique_ptr<VfioClient>> observer = daemon_->Observer();
    ASSERT_TRUE(observer.ok()) << observer.status();
    observer_ = std::move(*observer);
    vmm_ = StartQemu();
    ASSERT_NE(vmm_, nullptr);
  }

  // A QEMU attached to the daemon; null (with a test failure) when it does not start.
  std::unique_ptr<QtestVmm> StartQemu() {
    QtestVmmOptions options;
    options.qemu_path = qemu_.path;
    options.vfio_user_socket = daemon_->vfio_user_socket();
    // vfiod's simulated IOMMU charges QEMU's mapped RAM against RLIMIT_MEMLOCK as type1 does,
    // and a root without CAP_SYS_RESOURCE (the development machines, CI) keeps the hard limit,
    // 8 MiB here: 6 MiB of RAM holds the test's buffers (up to 0x400000) and fits.
    options.memory_mb = 6;
    absl::StatusOr<std::unique_ptr<QtestVmm>> vmm = QtestVmm::Start(options);
    EXPECT_TRUE(vmm.ok()) << vmm.status();
    if (!vmm.ok()) return nullptr;
    fprintf(stderr, "QEMU 11 attached to vfiod and answered qtest %s after it was started\n",
            absl::FormatDuration((*vmm)->start_duration()).c_str());
    return std::move(*vmm);
  }

  // BAR0 at kBar0, memory decoding and bus mastering on.
  static void EnableDevice(QtestVmm& q) {
    ASSERT_TRUE(q.ConfigWrite(kEdu, kBar0Reg, 4, static_cast<uint32_t>(kBar0)).ok());
    ASSERT_TRUE(q.ConfigWrite(kEdu, kCommand, 2, kCmdMemory | kCmdMaster).ok());
  }

  // Polls BAR0 register `offset` until (value & mask) == want.
  static absl::Status PollBar(QtestVmm& q, uint64_t offset, uint32_t mask, uint32_t want,
                              absl::Duration timeout = absl::Seconds(5)) {
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      absl::StatusOr<uint32_t> v = q.Readl(kBar0 + offset);
      if (!v.ok()) return v.status();
      if ((*v & mask) == want) return absl::OkStatus();
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrFormat(
            "BAR0+0x%x = 0x%08x, waited for (v & 0x%x) == 0x%x", offset, *v, mask, want));
      }
      absl::SleepFor(absl::Milliseconds(1));
    }
  }

  // One edu DMA transfer: program, start, wait for the run bit to clear.
  static absl::Status Dma(QtestVmm& q, uint64_t src, uint64_t dst, uint32_t count,
                          uint32_t cmd) {
    for (auto [reg, value] : {std::pair<uint64_t, uint32_t>{kRegDmaSrc, src},
                              {kRegDmaDst, dst},
                              {kRegDmaCount, count},
                              {kRegDmaCmd, cmd}}) {
      absl::Status s = q.Writel(kBar0 + reg, value);
      if (!s.ok()) return s;
    }
    return PollBar(q, kRegDmaCmd, kDmaRun, 0);
  }

  v1::DeviceState State() {
    absl::StatusOr<v1::DeviceState> state = observer_->GetState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : v1::DeviceState();
  }

  // Whether a DMA mapping covers [iova, iova + size) for device reads and writes.
  static bool Mapped(const v1::DeviceState& state, uint64_t iova, uint64_t size) {
    for (const v1::DmaMappingState& m : state.dma_mappings()) {
      if (m.iova() <= iova && iova + size <= m.iova() + m.size() && m.device_read() &&
          m.device_write()) {
        return true;
      }
    }
    return false;
  }

  static bool AnyIrqEnabled(const v1::DeviceState& state) {
    for (const v1::IrqIndexState& irq : state.irqs()) {
      if (irq.enabled()) return true;
    }
    return false;
  }

  static bool IrqEnabled(const v1::DeviceState& state, v1::IrqIndex index) {
    for (const v1::IrqIndexState& irq : state.irqs()) {
      if (irq.index() == index) return irq.enabled();
    }
    return false;
  }

  static std::string Describe(const v1::DeviceState& state) {
    std::string out = absl::StrCat("owner_attached=", state.owner_attached(),
                                   " owner_losses=", state.owner_losses(), " mappings=[");
    for (const v1::DmaMappingState& m : state.dma_mappings()) {
      absl::StrAppendFormat(&out, " 0x%x+0x%x%s%s", m.iova(), m.size(),
                            m.device_read() ? "r" : "", m.device_write() ? "w" : "");
    }
    out += " ] irqs=[";
    for (const v1::IrqIndexState& irq : state.irqs()) {
      absl::StrAppend(&out, " ", v1::IrqIndex_Name(irq.index()), irq.enabled() ? ":on" : ":off");
    }
    return out + " ]";
  }

  Qemu11 qemu_;
  std::unique_ptr<VfioUserDaemon> daemon_;
  std::unique_ptr<VfioClient> observer_;
  std::unique_ptr<QtestVmm> vmm_;
};

TEST_F(QemuSimTest, ConfigSpaceThroughCf8) {
  QtestVmm& q = *vmm_;
  EXPECT_EQ(*q.ConfigRead(kEdu, 0x00, 4), kEduIds);
  EXPECT_EQ(*q.ConfigRead(kEdu, 0x00, 2), 0x1234u);
  EXPECT_EQ(*q.ConfigRead(kEdu, 0x02, 2), 0x11e8u);
  EXPECT_EQ(*q.ConfigRead(kEdu, 0x08, 4) >> 8, 0x00ff00u);  // class "other"
  EXPECT_EQ(*q.ConfigRead(kEdu, kInterruptPin, 1), 1u);      // INTA#
  // BAR0 sizing: 1 MiB of 32-bit non-prefetchable memory.
  ASSERT_TRUE(q.ConfigWrite(kEdu, kBar0Reg, 4, 0xffffffff).ok());
  EXPECT_EQ(*q.ConfigRead(kEdu, kBar0Reg, 4), 0xfff00000u);
  ASSERT_TRUE(q.ConfigWrite(kEdu, kBar0Reg, 4, static_cast<uint32_t>(kBar0)).ok());
  EXPECT_EQ(*q.ConfigRead(kEdu, kBar0Reg, 4), static_cast<uint32_t>(kBar0));
  // The capability list: MSI at 0x40.
  EXPECT_EQ(*q.ConfigRead(kEdu, kCapPtr, 1), kMsiCap);
  EXPECT_EQ(*q.ConfigRead(kEdu, kMsiCap, 1), 0x05u);
  // The observer reads the same ids from vfiod.
  absl::StatusOr<uint32_t> ids = observer_->ReadConfig(0, 4);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, kEduIds);
}

TEST_F(QemuSimTest, BarRegistersAndFactorial) {
  QtestVmm& q = *vmm_;
  EnableDevice(q);
  EXPECT_EQ(*q.Readl(kBar0 + kRegIdent), kIdentValue);
  ASSERT_TRUE(q.Writel(kBar0 + kRegLiveness, 0x12345678).ok());
  EXPECT_EQ(*q.Readl(kBar0 + kRegLiveness), ~0x12345678u);

  ASSERT_TRUE(q.Writel(kBar0 + kRegFactorial, 5).ok());
  ASSERT_TRUE(PollBar(q, kRegStatus, 0x1, 0).ok());
  EXPECT_EQ(*q.Readl(kBar0 + kRegFactorial), 120u);
  ASSERT_TRUE(q.Writel(kBar0 + kRegFactorial, 10).ok());
  ASSERT_TRUE(PollBar(q, kRegStatus, 0x1, 0).ok());
  EXPECT_EQ(*q.Readl(kBar0 + kRegFactorial), 3628800u);

  // The cost of one BAR read: qtest -> QEMU -> vfio-user REGION_READ -> vfiod and back.
  constexpr int kRounds = 300;
  absl::Time t0 = absl::Now();
  for (int i = 0; i < kRounds; ++i) ASSERT_TRUE(q.Readl(kBar0 + kRegIdent).ok());
  double read_us = absl::ToDoubleMicroseconds((absl::Now() - t0) / kRounds);
  t0 = absl::Now();
  for (int i = 0; i < kRounds; ++i) ASSERT_TRUE(q.Writel(kBar0 + kRegLiveness, i).ok());
  double write_us = absl::ToDoubleMicroseconds((absl::Now() - t0) / kRounds);
  t0 = absl::Now();
  for (int i = 0; i < kRounds; ++i) ASSERT_TRUE(q.Readl(0x10000).ok());
  double ram_us = absl::ToDoubleMicroseconds((absl::Now() - t0) / kRounds);
  fprintf(stderr,
          "qtest per access (%d each): edu BAR readl %.1f us, BAR writel %.1f us, "
          "guest RAM readl %.1f us (the protocol floor)\n",
          kRounds, read_us, write_us, ram_us);
}

TEST_F(QemuSimTest, DmaRoundTripThroughGuestRam) {
  QtestVmm& q = *vmm_;
  EnableDevice(q);
  std::string pattern(kDmaBytes, '\0');
  for (uint32_t i = 0; i < kDmaBytes; ++i) pattern[i] = static_cast<char>((i * 13 + 7) ^ (i >> 8));
  ASSERT_TRUE(q.MemWrite(kGuestSource, pattern).ok());
  ASSERT_TRUE(q.MemWrite(kGuestBack, std::string(kDmaBytes, '\0')).ok());

  // vfiod holds QEMU's mappings of guest RAM, which cover both buffers.
  v1::DeviceState state = State();
  EXPECT_TRUE(state.owner_attached()) << Describe(state);
  EXPECT_TRUE(Mapped(state, kGuestSource, kDmaBytes)) << Describe(state);
  EXPECT_TRUE(Mapped(state, kGuestBack, kDmaBytes)) << Describe(state);

  // RAM -> device buffer, then device buffer -> another RAM address.
  ASSERT_TRUE(Dma(q, kGuestSource, kEduBuffer, kDmaBytes, kDmaRun).ok());
  ASSERT_TRUE(Dma(q, kEduBuffer, kGuestBack, kDmaBytes, kDmaRun | kDmaToRam).ok());
  absl::StatusOr<std::string> back = q.MemRead(kGuestBack, kDmaBytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, pattern);
  // Nothing beyond the transfer was written.
  EXPECT_EQ(*q.Readl(kGuestBack + kDmaBytes), 0u);
}

TEST_F(QemuSimTest, IntxReachesTheIoapic) {
  QtestVmm& q = *vmm_;
  EnableDevice(q);
  ASSERT_TRUE(q.InterceptIrqIn("ioapic").ok());
  EXPECT_TRUE(IrqEnabled(State(), v1::IRQ_INDEX_INTX)) << Describe(State());

  ASSERT_TRUE(q.Writel(kBar0 + kRegIrqRaise, 0x1).ok());
  // q35 routes INTA# of slot 4 to PIRQE, IOAPIC input 20; any PIRQ input (16..23) is accepted.
  absl::StatusOr<int> line = q.WaitAnyIrq(16, 23, true, absl::Seconds(5));
  ASSERT_TRUE(line.ok()) << line.status();
  fprintf(stderr, "edu's INTx raised IOAPIC input %d\n", *line);
  EXPECT_EQ(*q.Readl(kBar0 + kRegIrqStatus), 0x1u);
  // Acknowledged, the line goes down (QEMU lowers it on the BAR access and unmasks).
  ASSERT_TRUE(q.Writel(kBar0 + kRegIrqAck, 0x1).ok());
  ASSERT_TRUE(q.WaitIrq(*line, false, absl::Seconds(5)).ok());
  EXPECT_EQ(*q.Readl(kBar0 + kRegIrqStatus), 0x0u);
  // And a second interrupt is delivered again.
  ASSERT_TRUE(q.Writel(kBar0 + kRegIrqRaise, 0x2).ok());
  ASSERT_TRUE(q.WaitIrq(*line, true, absl::Seconds(5)).ok());
  ASSERT_TRUE(q.Writel(kBar0 + kRegIrqAck, 0x2).ok());
  ASSERT_TRUE(q.WaitIrq(*line, false, absl::Seconds(5)).ok());
  EXPECT_GE(State().device().interrupts(), 2u);
}

TEST_F(QemuSimTest, MsiWritesTheMessageIntoGuestRam) {
  QtestVmm& q = *vmm_;
  EnableDevice(q);
  constexpr uint32_t kData = 0x4321;
  ASSERT_TRUE(q.Writel(kGuestMsi, 0).ok());
  // MSI: 64-bit address (0x44, 0x48), data (0x4c), then enable (control 0x42 bit 0).
  ASSERT_TRUE(q.ConfigWrite(kEdu, kMsiCap + 0x4, 4, static_cast<uint32_t>(kGuestMsi)).ok());
  ASSERT_TRUE(q.ConfigWrite(kEdu, kMsiCap + 0x8, 4, 0).ok());
  ASSERT_TRUE(q.ConfigWrite(kEdu, kMsiCap + 0xc, 2, kData).ok());
  absl::StatusOr<uint32_t> control = q.ConfigRead(kEdu, kMsiCap + 0x2, 2);
  ASSERT_TRUE(control.ok()) << control.status();
  ASSERT_TRUE(q.ConfigWrite(kEdu, kMsiCap + 0x2, 2, *control | 0x1).ok());
  EXPECT_TRUE(IrqEnabled(State(), v1::IRQ_INDEX_MSI)) << Describe(State());

  ASSERT_TRUE(q.Writel(kBar0 + kRegIrqRaise, 0x1).ok());
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  uint32_t seen = 0;
  while ((seen = *q.Readl(kGuestMsi)) != kData && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(seen, kData) << "the MSI message never reached guest memory";
  ASSERT_TRUE(q.Writel(kBar0 + kRegIrqAck, 0x1).ok());

  // The factorial's completion interrupt arrives the same way.
  ASSERT_TRUE(q.Writel(kGuestMsi, 0).ok());
  ASSERT_TRUE(q.Writel(kBar0 + kRegStatus, 0x80).ok());
  ASSERT_TRUE(q.Writel(kBar0 + kRegFactorial, 6).ok());
  deadline = absl::Now() + absl::Seconds(5);
  while ((seen = *q.Readl(kGuestMsi)) != kData && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(seen, kData) << "the factorial's MSI never reached guest memory";
  EXPECT_EQ(*q.Readl(kBar0 + kRegFactorial), 720u);
}

TEST_F(QemuSimTest, OwnerKilledThenNewQemuAttaches) {
  QtestVmm& q = *vmm_;
  EnableDevice(q);
  // Some state to clean up: RAM mapped, bus mastering, INTx, and MSI enabled.
  ASSERT_TRUE(q.ConfigWrite(kEdu, kMsiCap + 0x4, 4, static_cast<uint32_t>(kGuestMsi)).ok());
  ASSERT_TRUE(q.ConfigWrite(kEdu, kMsiCap + 0x2, 2, 0x1).ok());
  v1::DeviceState before = State();
  fprintf(stderr, "vfiod with QEMU attached: %s\n", Describe(before).c_str());
  EXPECT_TRUE(before.owner_attached());
  EXPECT_GT(before.dma_mappings_size(), 0);
  EXPECT_TRUE(Mapped(before, kGuestSource, kDmaBytes)) << Describe(before);
  EXPECT_TRUE(AnyIrqEnabled(before)) << Describe(before);
  absl::StatusOr<uint32_t> command = observer_->ReadConfig(kCommand, 2);
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_TRUE(*command & kCmdMaster) << "QEMU's command write did not reach vfiod";

  absl::StatusOr<int> status = q.Kill(SIGKILL);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL);

  // vfiod notices the closed socket and cleans up.
  absl::Time t0 = absl::Now();
  v1::DeviceState after = State();
  while ((after.owner_attached() || after.dma_mappings_size() > 0 || AnyIrqEnabled(after)) &&
         absl::Now() - t0 < absl::Seconds(5)) {
    absl::SleepFor(absl::Milliseconds(10));
    after = State();
  }
  fprintf(stderr, "vfiod %s after QEMU's SIGKILL: %s\n",
          absl::FormatDuration(absl::Now() - t0).c_str(), Describe(after).c_str());
  EXPECT_FALSE(after.owner_attached());
  EXPECT_EQ(after.dma_mappings_size(), 0) << Describe(after);
  EXPECT_FALSE(AnyIrqEnabled(after)) << Describe(after);
  EXPECT_EQ(after.memory_size(), 0) << "memory still registered";
  EXPECT_GE(after.owner_losses(), before.owner_losses() + 1);
  command = observer_->ReadConfig(kCommand, 2);
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_FALSE(*command & kCmdMaster) << "bus mastering still on after the owner's loss";
  EXPECT_TRUE(daemon_->process().Running());

  // A new QEMU attaches and drives the device.
  vmm_.reset();
  vmm_ = StartQemu();
  ASSERT_NE(vmm_, nullptr);
  QtestVmm& q2 = *vmm_;
  EXPECT_EQ(*q2.ConfigRead(kEdu, 0x00, 4), kEduIds);
  EnableDevice(q2);
  ASSERT_TRUE(q2.Writel(kBar0 + kRegFactorial, 4).ok());
  ASSERT_TRUE(PollBar(q2, kRegStatus, 0x1, 0).ok());
  EXPECT_EQ(*q2.Readl(kBar0 + kRegFactorial), 24u);
  v1::DeviceState again = State();
  EXPECT_TRUE(again.owner_attached()) << Describe(again);
  EXPECT_TRUE(Mapped(again, kGuestSource, kDmaBytes)) << Describe(again);
}

}  // namespace
}  // namespace vfiod::vmm
