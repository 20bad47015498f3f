#include "daemon/sim/sim_backend.h"

#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <poll.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/sim/edu_device.h"
#include "daemon/sim/sim_bytes.h"
#include "daemon/sim/sim_config_space.h"
#include "daemon/sim/sim_interrupts.h"
#include "daemon/sim/sim_iommu.h"

namespace vfiod {
namespace {

using sim::AccessSize;
using sim::EduDevice;
using sim::GetLe;
using sim::Hex;
using sim::PutLe;
using Clock = EduDevice::Clock;

// What SeaBIOS leaves in the device: BAR0 at the top of the 32-bit PCI window, an ISA IRQ in
// the interrupt line, IO | MEMORY | SERR in the command register.
constexpr uint32_t kFirmwareBar0Address = 0xfeb00000;
constexpr uint8_t kFirmwareInterruptLine = 11;
constexpr uint16_t kFirmwareCommand = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_SERR;

// The device and the kernel's three parts around it: config virtualisation (SimConfigSpace),
// interrupt plumbing (SimInterrupts) and the type1 IOMMU (SimIommu), all under one mutex; this
// class owns the region accesses, the worker thread and the device's bus callbacks.
class SimEduBackend final : public DeviceBackend, private sim::EduBus {
 public:
  static absl::StatusOr<std::unique_ptr<SimEduBackend>> Create(const SimEduOptions& options);
  ~SimEduBackend() override;

  const BackendInfo& Info() const override { return info_; }
  absl::Status ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) override;
  absl::Status WriteRegion(uint32_t index, uint64_t offset,
                           absl::Span<const uint8_t> data) override;
  absl::Status SetIrqs(const IrqSet& set) override;
  absl::Status MapDma(const DmaMap& map) override;
  absl::Status UnmapDma(uint64_t iova, uint64_t size) override;
  absl::Status Reset() override;
  BackendCounters Counters() const override;
  absl::Status Start() override;

 private:
  explicit SimEduBackend(const SimEduOptions& options);

  void BuildInfo(const SimEduOptions& options) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BootAndOpen() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop();
  void WakeWorker();

  absl::Status CheckAccess(const char* op, uint32_t index, uint64_t offset, uint64_t size,
                           bool write) const;

  // sim::EduBus, called by edu_ with mu_ held.
  bool DmaRead(uint64_t address, absl::Span<uint8_t> out) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool DmaWrite(uint64_t address, absl::Span<const uint8_t> data) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendMsi() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetIntx(bool asserted) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  BackendInfo info_;
  // Both set by Start() (no thread may exist before the jail) and fixed afterwards: the worker
  // and other threads only read them after Start() returned.
  std::optional<EventFd> wake_;
  std::thread worker_;

  // Guards everything below, the calls into edu_ and the EduBus callbacks it makes.
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  EduDevice edu_ ABSL_GUARDED_BY(mu_);
  sim::SimInterrupts interrupts_ ABSL_GUARDED_BY(mu_);
  sim::SimConfigSpace config_ ABSL_GUARDED_BY(mu_);
  sim::SimIommu iommu_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<SimEduBackend>> SimEduBackend::Create(const SimEduOptions& options) {
  if (options.iommu_address_width != 39 && options.iommu_address_width != 48) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sim edu: IOMMU address width ", options.iommu_address_width, " is not 39 or 48"));
  }
  if (options.factorial_delay.count() < 0 || options.dma_delay.count() < 0) {
    return absl::InvalidArgumentError("sim edu: negative completion delay");
  }
  return std::unique_ptr<SimEduBackend>(new SimEduBackend(options));
}

SimEduBackend::SimEduBackend(const SimEduOptions& options)
    : edu_(this, sim::EduOptions{options.factorial_delay, options.dma_delay}),
      interrupts_(&edu_, [this] { WakeWorker(); }),
      config_(&edu_, &interrupts_),
      iommu_(options.iommu_address_width, options.memlock_limit) {
  absl::MutexLock lock(&mu_);
  BuildInfo(options);
  BootAndOpen();
}

SimEduBackend::~SimEduBackend() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  WakeWorker();
  if (worker_.joinable()) worker_.join();
}

absl::Status SimEduBackend::Start() {
  if (wake_.has_value()) return absl::FailedPreconditionError("sim edu: Start called twice");
  VFIOD_ASSIGN_OR_RETURN(EventFd wake, EventFd::Create());
  wake_.emplace(std::move(wake));
  worker_ = std::thread([this] { WorkerLoop(); });
  return absl::OkStatus();
}

void SimEduBackend::BuildInfo(const SimEduOptions& options) {
  info_.kind = "sim";
  info_.name = "sim:edu";
  info_.reset_supported = options.reset_supported;
  info_.raw_flags = VFIO_DEVICE_FLAGS_PCI | (options.reset_supported ? VFIO_DEVICE_FLAGS_RESET : 0);
  for (uint32_t i = 0; i < kNumPciRegions; ++i) {
    RegionInfo region;
    region.index = i;
    if (i == kBar0RegionIndex) {
      region.size = EduDevice::kBar0Size;
      region.readable = region.writable = region.mmappable = true;
    } else if (i == kConfigRegionIndex) {
      region.size = sim::SimConfigSpace::kSize;
      region.readable = region.writable = true;
    }
    info_.regions.push_back(region);
  }
  info_.irqs = sim::SimInterrupts::Info();
  info_.iommu = iommu_.Info();  // fixed at construction
}

void SimEduBackend::BootAndOpen() {
  // Firmware.
  edu_.ConfigWrite(PCI_BASE_ADDRESS_0, 4, kFirmwareBar0Address);
  edu_.ConfigWrite(PCI_INTERRUPT_LINE, 1, kFirmwareInterruptLine);
  edu_.ConfigWrite(PCI_COMMAND, 2, kFirmwareCommand);
  // vfio_pci_core_enable(): bus mastering off, the device enabled (memory decode for BAR0).
  uint32_t command = edu_.ConfigRead(PCI_COMMAND, 2);
  command = (command & ~uint32_t{PCI_COMMAND_MASTER}) | PCI_COMMAND_MEMORY;
  edu_.ConfigWrite(PCI_COMMAND, 2, command);
  config_.Open();
}

void SimEduBackend::WakeWorker() {
  if (wake_.has_value()) sim::SignalEventFd(*wake_);  // before Start(): no worker to wake
}

void SimEduBackend::WorkerLoop() {
  mu_.Lock();
  while (!stopping_) {
    const std::optional<Clock::time_point> deadline = edu_.NextDeadline();
    const std::shared_ptr<const EventFd> unmask = interrupts_.intx_unmask();
    mu_.Unlock();

    pollfd fds[2] = {{wake_->fd().get(), POLLIN, 0}, {unmask ? unmask->fd().get() : -1, POLLIN, 0}};
    timespec timeout{};
    timespec* timeout_ptr = nullptr;
    if (deadline) {
      const auto wait = std::max(Clock::duration::zero(), *deadline - Clock::now());
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
      timeout.tv_sec = static_cast<time_t>(ns / 1000000000);
      timeout.tv_nsec = static_cast<long>(ns % 1000000000);
      timeout_ptr = &timeout;
    }
    const int ready = ::ppoll(fds, unmask ? 2 : 1, timeout_ptr, nullptr);
    if (ready < 0 && errno != EINTR) {
      LogError("sim: ppoll failed", {{"errno", absl::StrCat(errno)}});
    }
    if (ready > 0 && (fds[0].revents & POLLIN)) (void)wake_->Read();
    const bool unmask_ready = ready > 0 && unmask && (fds[1].revents & POLLIN);

    mu_.Lock();
    // The virqfd: a signal on the resample eventfd unmasks INTx (and re-sends a pending one).
    if (unmask_ready && unmask == interrupts_.intx_unmask()) {
      absl::StatusOr<uint64_t> count = unmask->Read();
      if (count.ok() && *count > 0) interrupts_.IntxUnmask();
    }
    edu_.RunDue(Clock::now());
  }
  mu_.Unlock();
}

absl::Status SimEduBackend::CheckAccess(const char* op, uint32_t index, uint64_t offset,
                                        uint64_t size, bool write) const {
  if (index >= info_.regions.size()) {
    return absl::NotFoundError(absl::StrCat(op, ": region ", index, " does not exist (",
                                            info_.regions.size(), " regions)"));
  }
  const RegionInfo& region = info_.regions[index];
  if (write ? !region.writable : !region.readable) {
    return absl::PermissionDeniedError(absl::StrCat(op, ": region ", index, " is not ",
                                                    write ? "writable" : "readable", " (size ",
                                                    region.size, ")"));
  }
  return CheckRegionBounds(op, region, offset, size);
}

absl::Status SimEduBackend::ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) {
  VFIOD_RETURN_IF_ERROR(CheckAccess("ReadRegion", index, offset, data.size(), /*write=*/false));
  absl::MutexLock lock(&mu_);
  if (index == kConfigRegionIndex) {
    config_.Access(static_cast<uint32_t>(offset), data.size(), data.data(), nullptr);
    return absl::OkStatus();
  }
  if (!data.empty() && !config_.MemoryDecodeEnabled()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ReadRegion: BAR", index, " offset ", Hex(offset), ": memory decode disabled (EIO)"));
  }
  for (size_t done = 0; done < data.size();) {
    const uint64_t at = offset + done;
    const unsigned size = AccessSize(at, data.size() - done);
    PutLe(&data[done], size, edu_.MmioRead(at, size));
    done += size;
  }
  return absl::OkStatus();
}

absl::Status SimEduBackend::WriteRegion(uint32_t index, uint64_t offset,
                                        absl::Span<const uint8_t> data) {
  VFIOD_RETURN_IF_ERROR(CheckAccess("WriteRegion", index, offset, data.size(), /*write=*/true));
  absl::MutexLock lock(&mu_);
  if (index == kConfigRegionIndex) {
    config_.Access(static_cast<uint32_t>(offset), data.size(), nullptr, data.data());
    return absl::OkStatus();
  }
  if (!data.empty() && !config_.MemoryDecodeEnabled()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "WriteRegion: BAR", index, " offset ", Hex(offset), ": memory decode disabled (EIO)"));
  }
  const std::optional<Clock::time_point> before = edu_.NextDeadline();
  const Clock::time_point now = Clock::now();
  for (size_t done = 0; done < data.size();) {
    const uint64_t at = offset + done;
    const unsigned size = AccessSize(at, data.size() - done);
    edu_.MmioWrite(at, size, GetLe(&data[done], size), now);
    done += size;
  }
  if (edu_.NextDeadline() != before) WakeWorker();
  return absl::OkStatus();
}

absl::Status SimEduBackend::SetIrqs(const IrqSet& set) {
  absl::MutexLock lock(&mu_);
  return interrupts_.SetIrqs(set);
}

absl::Status SimEduBackend::MapDma(const DmaMap& map) {
  absl::MutexLock lock(&mu_);
  return iommu_.Map(map);
}

absl::Status SimEduBackend::UnmapDma(uint64_t iova, uint64_t size) {
  absl::MutexLock lock(&mu_);
  return iommu_.Unmap(iova, size);
}

bool SimEduBackend::DmaRead(uint64_t address, absl::Span<uint8_t> out) {
  return iommu_.DeviceRead(address, out);
}

bool SimEduBackend::DmaWrite(uint64_t address, absl::Span<const uint8_t> data) {
  return iommu_.DeviceWrite(address, data);
}

void SimEduBackend::SendMsi() { interrupts_.SendMsi(); }

void SimEduBackend::SetIntx(bool asserted) { interrupts_.SetIntx(asserted); }

absl::Status SimEduBackend::Reset() {
  if (!info_.reset_supported) {
    return absl::FailedPreconditionError("Reset: the device does not support reset");
  }
  absl::MutexLock lock(&mu_);
  edu_.Reset();
  WakeWorker();
  return absl::OkStatus();
}

BackendCounters SimEduBackend::Counters() const {
  absl::MutexLock lock(&mu_);
  BackendCounters counters;
  counters.dma_faults = iommu_.faults() + edu_.stats().dma_without_bus_master;
  counters.interrupts = interrupts_.interrupts();
  return counters;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceBackend>> CreateSimulatedEdu(const SimEduOptions& options) {
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<SimEduBackend> backend, SimEduBackend::Create(options));
  return std::unique_ptr<DeviceBackend>(std::move(backend));
}

absl::StatusOr<std::unique_ptr<DeviceBackend>> CreateSimulatedBackend(
    absl::string_view spec, std::optional<uint64_t> memlock_limit) {
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ',');
  if (parts[0] != "edu") {
    return absl::InvalidArgumentError(
        absl::StrCat("simulated device \"", parts[0], "\" is unknown (known: edu)"));
  }
  SimEduOptions options;
  options.memlock_limit = memlock_limit;
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "reset") {
      options.reset_supported = true;
    } else if (parts[i] == "aw=39") {
      options.iommu_address_width = 39;
    } else if (parts[i] == "aw=48") {
      options.iommu_address_width = 48;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("simulated device \"", spec,
                                                     "\": unknown flag \"", parts[i],
                                                     "\" (known: reset, aw=39, aw=48)"));
    }
  }
  return CreateSimulatedEdu(options);
}

}  // namespace vfiod
