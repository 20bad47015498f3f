#include "daemon/sim/sim_backend.h"

#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/sim/edu_device.h"

namespace vfiod {
namespace {

using sim::EduDevice;
using Clock = EduDevice::Clock;

// Intel VT-d under Linux 6.1 with QEMU 7.2's intel-iommu: second-level 4 KiB pages with 2 MiB
// and 1 GiB superpages, the interrupt (MSI) window reserved, vfio_iommu_type1's default
// dma_entry_limit.
constexpr uint64_t kIommuPageSize = 4096;
constexpr uint64_t kIommuPageSizeBitmap =
    (uint64_t{1} << 12) | (uint64_t{1} << 21) | (uint64_t{1} << 30);
constexpr uint64_t kMsiWindowStart = 0xfee00000;
constexpr uint64_t kMsiWindowLast = 0xfeefffff;
constexpr uint32_t kDmaEntryLimit = 65535;

// What SeaBIOS leaves in the device: BAR0 at the top of the 32-bit PCI window, an ISA IRQ in
// the interrupt line, IO | MEMORY | SERR in the command register.
constexpr uint32_t kFirmwareBar0Address = 0xfeb00000;
constexpr uint8_t kFirmwareInterruptLine = 11;
constexpr uint16_t kFirmwareCommand = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_SERR;

constexpr uint32_t kMsiCap = EduDevice::kMsiCapOffset;
constexpr uint32_t kMsiFlags = kMsiCap + PCI_MSI_FLAGS;
constexpr uint32_t kConfigSize = EduDevice::kConfigSize;

// Which permission table of vfio_pci_config.c governs a config byte.
enum class ConfigKind : uint8_t { kBasic, kMsi, kUnassigned };

bool IsBarOffset(uint32_t offset) {
  return (offset >= PCI_BASE_ADDRESS_0 && offset < PCI_BASE_ADDRESS_5 + 4) ||
         (offset >= PCI_ROM_ADDRESS && offset < PCI_ROM_ADDRESS + 4);
}

void PutLe(uint8_t* p, unsigned size, uint32_t value) {
  for (unsigned i = 0; i < size; ++i) p[i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t GetLe(const uint8_t* p, unsigned size) {
  uint32_t value = 0;
  for (unsigned i = 0; i < size; ++i) value |= static_cast<uint32_t>(p[i]) << (8 * i);
  return value;
}

uint32_t ByteMask(unsigned size) { return size >= 4 ? 0xffffffffu : (1u << (8 * size)) - 1; }

// The largest naturally aligned access of at most 4 bytes at `offset` within `remaining`.
unsigned AccessSize(uint64_t offset, uint64_t remaining) {
  if (remaining >= 4 && offset % 4 == 0) return 4;
  if (remaining >= 2 && offset % 2 == 0) return 2;
  return 1;
}

std::string Hex(uint64_t value) { return absl::StrCat("0x", absl::Hex(value)); }

void SignalEventFd(const EventFd& fd) {
  absl::Status status = fd.Signal();
  if (!status.ok()) LogWarning("sim: eventfd signal failed", {{"error", status.ToString()}});
}

absl::StatusOr<std::optional<EventFd>> DuplicateOrNone(const EventFd* fd) {
  if (fd == nullptr) return std::optional<EventFd>();
  VFIOD_ASSIGN_OR_RETURN(EventFd copy, fd->Duplicate());
  return std::optional<EventFd>(std::move(copy));
}

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
  enum class IrqMode { kNone, kIntx, kMsi };

  struct Mapping {
    uint64_t size = 0;
    uint8_t* host = nullptr;
    bool device_read = false;
    bool device_write = false;
  };
  struct HostPiece {
    uint8_t* host;
    size_t size;
  };

  explicit SimEduBackend(const SimEduOptions& options);

  void BuildInfo(const SimEduOptions& options);
  void BootAndOpen();
  void WorkerLoop();
  void WakeWorker();

  absl::Status CheckAccess(const char* op, uint32_t index, uint64_t offset, uint64_t size,
                           bool write) const;
  bool MemoryDecodeEnabled() const;

  // vfio_pci_config.c.
  // Exactly one of `read_out` and `write_in` is set; both hold `size` bytes.
  void ConfigAccess(uint32_t offset, size_t size, uint8_t* read_out, const uint8_t* write_in);
  uint32_t ConfigReadPiece(uint32_t pos, unsigned count);
  void ConfigWritePiece(uint32_t pos, unsigned count, uint32_t value);
  uint32_t DefaultConfigRead(uint32_t pos, unsigned count);
  void DefaultConfigWrite(uint32_t pos, unsigned count, uint32_t value);
  void BasicConfigWrite(uint32_t pos, unsigned count, uint32_t value);
  void MsiConfigWrite(uint32_t pos, unsigned count, uint32_t value);
  void BarFixup();

  // vfio_pci_intrs.c.
  absl::Status IntxTrigger(const IrqSet& set);
  absl::Status IntxMaskAction(const IrqSet& set);
  absl::Status IntxUnmaskAction(const IrqSet& set);
  absl::Status MsiTrigger(const IrqSet& set);
  absl::Status ReqTrigger(const IrqSet& set);
  void IntxMask();
  bool IntxUnmaskHandler();
  void IntxUnmask();
  void SendIntxEventfd();
  void IntxFireIfPending();
  void IntxDisable();
  void SetDeviceMsiEnable(bool enable);

  // The IOMMU: splits [iova, iova + size) into host pieces, or fails without side effects.
  bool Translate(uint64_t iova, size_t size, bool device_write,
                 absl::InlinedVector<HostPiece, 4>* pieces);
  bool WithinUsableRange(uint64_t iova, uint64_t last) const;

  // sim::EduBus, called by edu_ with mu_ held.
  bool DmaRead(uint64_t address, absl::Span<uint8_t> out) override;
  bool DmaWrite(uint64_t address, absl::Span<const uint8_t> data) override;
  void SendMsi() override;
  void SetIntx(bool asserted) override;

  // The pages the kernel would let this process pin: RLIMIT_MEMLOCK's soft limit (or the
  // injected one) in pages; no limit for RLIM_INFINITY. The errno status when it cannot be read.
  absl::StatusOr<uint64_t> MemlockLimitPages() const;

  BackendInfo info_;
  const std::optional<uint64_t> memlock_limit_;
  // Both set by Start() (no thread may exist before the jail) and fixed afterwards: the worker
  // and other threads only read them after Start() returned.
  std::optional<EventFd> wake_;
  std::thread worker_;
  // vfio's permission tables for this device: fixed after construction.
  std::array<uint8_t, kConfigSize> perm_virt_{};
  std::array<uint8_t, kConfigSize> perm_write_{};
  std::array<ConfigKind, kConfigSize> config_kind_{};

  // Everything below is guarded by mu_ (std::mutex, so that ThreadSanitizer sees it), as are
  // the calls into edu_ and the EduBus callbacks it makes.
  mutable std::mutex mu_;
  bool stopping_ = false;
  EduDevice edu_;

  std::array<uint8_t, kConfigSize> vconfig_{};

  IrqMode irq_mode_ = IrqMode::kNone;
  std::optional<EventFd> intx_trigger_;
  bool intx_masked_ = false;
  bool virq_disabled_ = false;
  bool intx_asserted_ = false;
  // Shared with the worker while it polls, so that the fd stays open until it stops looking.
  std::shared_ptr<const EventFd> intx_unmask_;
  std::optional<EventFd> msi_trigger_;
  uint32_t msi_vectors_ = 0;
  uint8_t msi_qmax_ = 0;
  std::optional<EventFd> req_trigger_;

  std::map<uint64_t, Mapping> mappings_;  // by IOVA
  uint32_t dma_avail_ = kDmaEntryLimit;
  uint64_t pinned_pages_ = 0;  // of kIommuPageSize (the host page), over all mappings

  uint64_t iommu_faults_ = 0;
  uint64_t interrupts_ = 0;
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
    : memlock_limit_(options.memlock_limit),
      edu_(this, sim::EduOptions{options.factorial_delay, options.dma_delay}) {
  BuildInfo(options);
  std::lock_guard<std::mutex> lock(mu_);
  BootAndOpen();
}

SimEduBackend::~SimEduBackend() {
  {
    std::lock_guard<std::mutex> lock(mu_);
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
      region.size = kConfigSize;
      region.readable = region.writable = true;
    }
    info_.regions.push_back(region);
  }
  // vfio_pci_ioctl_get_irq_info(): every index but ERR (refused for conventional PCI) has the
  // eventfd flag; INTx is maskable and automasked, the others do not resize.
  for (uint32_t i = 0; i < kNumPciIrqIndexes; ++i) {
    IrqInfo irq;
    irq.index = static_cast<IrqIndex>(i);
    switch (irq.index) {
      case IrqIndex::kIntx:
        irq.count = 1;
        irq.eventfd = irq.maskable = irq.automasked = true;
        break;
      case IrqIndex::kMsi:
      case IrqIndex::kReq:
        irq.count = 1;
        irq.eventfd = irq.noresize = true;
        break;
      case IrqIndex::kMsix:
        irq.eventfd = irq.noresize = true;
        break;
      case IrqIndex::kErr:
        break;
    }
    info_.irqs.push_back(irq);
  }
  info_.iommu.page_size_bitmap = kIommuPageSizeBitmap;
  const uint64_t last = (uint64_t{1} << options.iommu_address_width) - 1;
  info_.iommu.usable_ranges = {{0, kMsiWindowStart - 1}, {kMsiWindowLast + 1, last}};
  info_.iommu.dma_mappings_available = kDmaEntryLimit;
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

  // vfio_config_init(): vconfig starts as a copy of the device's config space.
  for (uint32_t i = 0; i < kConfigSize; i += 4) PutLe(&vconfig_[i], 4, edu_.ConfigRead(i, 4));
  std::fill(config_kind_.begin(), config_kind_.end(), ConfigKind::kUnassigned);
  std::fill(config_kind_.begin(), config_kind_.begin() + PCI_STD_HEADER_SIZEOF, ConfigKind::kBasic);
  std::fill(config_kind_.begin() + kMsiCap, config_kind_.begin() + kMsiCap + EduDevice::kMsiCapSize,
            ConfigKind::kMsi);

  auto set = [this](uint32_t offset, unsigned size, uint32_t virt, uint32_t write) {
    PutLe(&perm_virt_[offset], size, virt);
    PutLe(&perm_write_[offset], size, write);
  };
  // init_pci_cap_basic_perm().
  set(PCI_VENDOR_ID, 2, 0xffff, 0);
  set(PCI_DEVICE_ID, 2, 0xffff, 0);
  set(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE, 0xffff);
  set(PCI_STATUS, 2, PCI_STATUS_CAP_LIST, 0);
  set(PCI_CACHE_LINE_SIZE, 1, 0, 0xff);
  set(PCI_LATENCY_TIMER, 1, 0, 0xff);
  set(PCI_BIST, 1, 0, 0xff);
  for (uint32_t bar = PCI_BASE_ADDRESS_0; bar <= PCI_BASE_ADDRESS_5; bar += 4) {
    set(bar, 4, 0xffffffff, 0xffffffff);
  }
  set(PCI_ROM_ADDRESS, 4, 0xffffffff, 0xffffffff);
  set(PCI_CAPABILITY_LIST, 1, 0xff, 0);
  set(PCI_INTERRUPT_LINE, 1, 0xff, 0xff);
  set(PCI_INTERRUPT_PIN, 1, 0xff, 0);
  // init_pci_cap_msi_perm() for a 64-bit capability without per-vector masking.
  set(kMsiCap + PCI_CAP_LIST_NEXT, 1, 0xff, 0);
  set(kMsiFlags, 1, 0xff, 0xff);
  set(kMsiCap + PCI_MSI_ADDRESS_LO, 4, 0xffffffff, 0xffffffff);
  set(kMsiCap + PCI_MSI_ADDRESS_HI, 4, 0xffffffff, 0xffffffff);
  set(kMsiCap + PCI_MSI_DATA_64, 2, 0xffff, 0xffff);
}

void SimEduBackend::WakeWorker() {
  if (wake_.has_value()) SignalEventFd(*wake_);  // before Start(): no worker to wake
}

void SimEduBackend::WorkerLoop() {
  mu_.lock();
  while (!stopping_) {
    const std::optional<Clock::time_point> deadline = edu_.NextDeadline();
    const std::shared_ptr<const EventFd> unmask = intx_unmask_;
    mu_.unlock();

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

    mu_.lock();
    // The virqfd: a signal on the resample eventfd unmasks INTx (and re-sends a pending one).
    if (unmask_ready && unmask == intx_unmask_) {
      absl::StatusOr<uint64_t> count = unmask->Read();
      if (count.ok() && *count > 0) IntxUnmask();
    }
    edu_.RunDue(Clock::now());
  }
  mu_.unlock();
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
  if (offset > region.size || size > region.size - offset) {
    return absl::OutOfRangeError(absl::StrCat(op, ": region ", index, " offset ", Hex(offset),
                                              " size ", size, " is beyond its size ",
                                              Hex(region.size)));
  }
  return absl::OkStatus();
}

bool SimEduBackend::MemoryDecodeEnabled() const {
  return GetLe(&vconfig_[PCI_COMMAND], 2) & PCI_COMMAND_MEMORY;
}

absl::Status SimEduBackend::ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) {
  VFIOD_RETURN_IF_ERROR(CheckAccess("ReadRegion", index, offset, data.size(), /*write=*/false));
  std::lock_guard<std::mutex> lock(mu_);
  if (index == kConfigRegionIndex) {
    ConfigAccess(static_cast<uint32_t>(offset), data.size(), data.data(), nullptr);
    return absl::OkStatus();
  }
  if (!data.empty() && !MemoryDecodeEnabled()) {
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
  std::lock_guard<std::mutex> lock(mu_);
  if (index == kConfigRegionIndex) {
    ConfigAccess(static_cast<uint32_t>(offset), data.size(), nullptr, data.data());
    return absl::OkStatus();
  }
  if (!data.empty() && !MemoryDecodeEnabled()) {
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

// vfio_config_do_rw(): chunks never cross a capability boundary within a dword.
void SimEduBackend::ConfigAccess(uint32_t offset, size_t size, uint8_t* read_out,
                                 const uint8_t* write_in) {
  size_t done = 0;
  while (done < size) {
    const uint32_t pos = offset + static_cast<uint32_t>(done);
    const ConfigKind kind = config_kind_[pos];
    size_t same = 1;
    while ((pos + same) % 4 != 0 && config_kind_[pos + same] == kind) ++same;
    const unsigned count = AccessSize(pos, std::min(size - done, same));
    if (write_in != nullptr) {
      ConfigWritePiece(pos, count, GetLe(write_in + done, count));
    } else {
      PutLe(read_out + done, count, ConfigReadPiece(pos, count));
    }
    done += count;
  }
}

uint32_t SimEduBackend::ConfigReadPiece(uint32_t pos, unsigned count) {
  switch (config_kind_[pos]) {
    case ConfigKind::kBasic:
      if (IsBarOffset(pos)) BarFixup();
      return DefaultConfigRead(pos, count);
    case ConfigKind::kMsi: {
      // vfio_msi_config_read(): the multiple-message-capable field shows what SET_IRQS allows.
      const uint32_t cap_offset = pos - kMsiCap;
      if (cap_offset <= PCI_MSI_FLAGS && cap_offset + count >= PCI_MSI_FLAGS) {
        uint32_t flags = GetLe(&vconfig_[kMsiFlags], 2);
        flags = (flags & ~uint32_t{PCI_MSI_FLAGS_QMASK}) | (uint32_t{msi_qmax_} << 1);
        PutLe(&vconfig_[kMsiFlags], 2, flags);
      }
      return DefaultConfigRead(pos, count);
    }
    case ConfigKind::kUnassigned:
      return edu_.ConfigRead(pos, count);
  }
  return ByteMask(count);
}

void SimEduBackend::ConfigWritePiece(uint32_t pos, unsigned count, uint32_t value) {
  switch (config_kind_[pos]) {
    case ConfigKind::kBasic:
      BasicConfigWrite(pos, count, value);
      return;
    case ConfigKind::kMsi:
      MsiConfigWrite(pos, count, value);
      return;
    case ConfigKind::kUnassigned:
      edu_.ConfigWrite(pos, count, value);
      return;
  }
}

uint32_t SimEduBackend::DefaultConfigRead(uint32_t pos, unsigned count) {
  uint32_t value = GetLe(&vconfig_[pos], count);
  const uint32_t virt = GetLe(&perm_virt_[pos], count);
  if (virt != ByteMask(count)) {
    value = (edu_.ConfigRead(pos, count) & ~virt) | (value & virt);
  }
  return value & ByteMask(count);
}

void SimEduBackend::DefaultConfigWrite(uint32_t pos, unsigned count, uint32_t value) {
  const uint32_t write = GetLe(&perm_write_[pos], count);
  if (write == 0) return;
  const uint32_t virt = GetLe(&perm_virt_[pos], count);
  if (write & virt) {
    uint32_t virt_value = GetLe(&vconfig_[pos], count);
    virt_value = (virt_value & ~(write & virt)) | (value & write & virt);
    PutLe(&vconfig_[pos], count, virt_value);
  }
  if (write & ~virt) {
    uint32_t phys = edu_.ConfigRead(pos, count);
    phys = (phys & ~(write & ~virt)) | (value & write & ~virt);
    edu_.ConfigWrite(pos, count, phys);
  }
}

// vfio_basic_config_write().
void SimEduBackend::BasicConfigWrite(uint32_t pos, unsigned count, uint32_t value) {
  DefaultConfigWrite(pos, count, value);
  if (pos == PCI_COMMAND) {
    // The virtual memory/IO enables follow every write of the register's low byte; BAR access
    // checks the virtual memory enable.
    constexpr uint32_t kDecode = PCI_COMMAND_MEMORY | PCI_COMMAND_IO;
    uint32_t command = GetLe(&vconfig_[PCI_COMMAND], 2);
    command = (command & ~kDecode) | (value & kDecode);
    PutLe(&vconfig_[PCI_COMMAND], 2, command);
  }
  if (pos <= PCI_COMMAND + 1 && pos + count > PCI_COMMAND) {
    // The virtual INTx-disable bit masks INTx.
    const bool virt_intx_disable = GetLe(&vconfig_[PCI_COMMAND], 2) & PCI_COMMAND_INTX_DISABLE;
    if (virt_intx_disable && !virq_disabled_) {
      virq_disabled_ = true;
      IntxMask();
    } else if (!virt_intx_disable && virq_disabled_) {
      virq_disabled_ = false;
      IntxUnmask();
    }
  }
}

// vfio_msi_config_write(): MSI is enabled by SET_IRQS only; the flags go to the device too.
void SimEduBackend::MsiConfigWrite(uint32_t pos, unsigned count, uint32_t value) {
  DefaultConfigWrite(pos, count, value);
  const uint32_t cap_offset = pos - kMsiCap;
  if (cap_offset <= PCI_MSI_FLAGS && cap_offset + count >= PCI_MSI_FLAGS) {
    uint32_t flags = GetLe(&vconfig_[kMsiFlags], 2);
    if (irq_mode_ != IrqMode::kMsi) flags &= ~uint32_t{PCI_MSI_FLAGS_ENABLE};
    if (((flags & PCI_MSI_FLAGS_QSIZE) >> 4) > msi_qmax_) {
      flags = (flags & ~uint32_t{PCI_MSI_FLAGS_QSIZE}) | (uint32_t{msi_qmax_} << 4);
    }
    PutLe(&vconfig_[kMsiFlags], 2, flags);
    edu_.ConfigWrite(kMsiFlags, 2, flags);
  }
}

// vfio_bar_fixup(): BAR0 reads back its size mask with its type bits (32-bit, non-prefetchable
// memory: all zero); unimplemented BARs and the absent ROM read 0.
void SimEduBackend::BarFixup() {
  const uint32_t bar0 =
      GetLe(&vconfig_[PCI_BASE_ADDRESS_0], 4) & ~static_cast<uint32_t>(EduDevice::kBar0Size - 1);
  PutLe(&vconfig_[PCI_BASE_ADDRESS_0], 4,
        bar0 | PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_32);
  for (uint32_t bar = PCI_BASE_ADDRESS_1; bar <= PCI_BASE_ADDRESS_5; bar += 4) {
    PutLe(&vconfig_[bar], 4, 0);
  }
  PutLe(&vconfig_[PCI_ROM_ADDRESS], 4, 0);
}

absl::Status SimEduBackend::SetIrqs(const IrqSet& set) {
  const uint32_t raw_index = static_cast<uint32_t>(set.index);
  if (raw_index >= kNumPciIrqIndexes) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs: IRQ index ", raw_index, " does not exist"));
  }
  if (set.action != IrqAction::kTrigger && set.action != IrqAction::kMask &&
      set.action != IrqAction::kUnmask) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs: unknown action ", static_cast<int>(set.action)));
  }
  const std::string name = IrqIndexName(set.index);
  // vfio_set_irqs_validate_and_prepare().
  const uint32_t available = info_.irqs[raw_index].count;
  if (set.count >= std::numeric_limits<uint32_t>::max() - set.start) {
    return absl::InvalidArgumentError(absl::StrCat("SetIrqs ", name, ": start ", set.start,
                                                   " + count ", set.count, " overflows"));
  }
  if (set.start >= available || set.start + set.count > available) {
    return absl::InvalidArgumentError(absl::StrCat("SetIrqs ", name, ": vectors [", set.start, ", ",
                                                   set.start + set.count, ") are beyond the ",
                                                   available, " the device has"));
  }
  switch (set.data) {
    case IrqSet::Data::kNone:
      if (!set.bools.empty() || !set.eventfds.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("SetIrqs ", name, ": data none with values attached"));
      }
      break;
    case IrqSet::Data::kBool:
      if (set.bools.size() != set.count || !set.eventfds.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("SetIrqs ", name, ": ", set.bools.size(), " bools for count ", set.count));
      }
      break;
    case IrqSet::Data::kEventfd:
      if (set.eventfds.size() != set.count || !set.bools.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("SetIrqs ", name, ": ", set.eventfds.size(),
                                                       " eventfds for count ", set.count));
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("SetIrqs ", name, ": unknown data type ", static_cast<int>(set.data)));
  }

  std::lock_guard<std::mutex> lock(mu_);
  // vfio_pci_set_irqs_ioctl().
  switch (set.index) {
    case IrqIndex::kIntx:
      if (set.action == IrqAction::kMask) return IntxMaskAction(set);
      if (set.action == IrqAction::kUnmask) return IntxUnmaskAction(set);
      return IntxTrigger(set);
    case IrqIndex::kMsi:
      if (set.action == IrqAction::kTrigger) return MsiTrigger(set);
      break;
    case IrqIndex::kReq:
      if (set.action == IrqAction::kTrigger) return ReqTrigger(set);
      break;
    case IrqIndex::kMsix:
    case IrqIndex::kErr:
      break;
  }
  return absl::UnimplementedError(absl::StrCat("SetIrqs ", name, ": action ",
                                               set.action == IrqAction::kMask     ? "mask"
                                               : set.action == IrqAction::kUnmask ? "unmask"
                                                                                  : "trigger",
                                               " is not supported (ENOTTY)"));
}

absl::Status SimEduBackend::IntxTrigger(const IrqSet& set) {
  if (irq_mode_ == IrqMode::kIntx && set.count == 0 && set.data == IrqSet::Data::kNone) {
    IntxDisable();
    return absl::OkStatus();
  }
  if (irq_mode_ == IrqMode::kMsi) {
    return absl::InvalidArgumentError("SetIrqs INTx trigger: MSI is enabled");
  }
  if (set.start != 0 || set.count != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs INTx trigger: start ", set.start, " count ", set.count,
                     irq_mode_ == IrqMode::kNone && set.count == 0 ? " (INTx is not enabled)"
                                                                   : " (need start 0 count 1)"));
  }
  if (set.data == IrqSet::Data::kEventfd) {
    VFIOD_ASSIGN_OR_RETURN(std::optional<EventFd> trigger, DuplicateOrNone(set.eventfds[0]));
    if (irq_mode_ == IrqMode::kNone) {
      // vfio_intx_enable(): the virtual INTx-disable bit carries over as the mask.
      irq_mode_ = IrqMode::kIntx;
      intx_masked_ = virq_disabled_;
    }
    intx_trigger_ = std::move(trigger);
    // request_irq() on a line that is already asserted fires at once.
    IntxFireIfPending();
    return absl::OkStatus();
  }
  if (irq_mode_ != IrqMode::kIntx) {
    return absl::InvalidArgumentError("SetIrqs INTx loopback trigger: INTx is not enabled");
  }
  if (set.data == IrqSet::Data::kNone || set.bools[0]) SendIntxEventfd();
  return absl::OkStatus();
}

absl::Status SimEduBackend::IntxMaskAction(const IrqSet& set) {
  if (irq_mode_ != IrqMode::kIntx || set.start != 0 || set.count != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SetIrqs INTx mask: start ", set.start, " count ", set.count,
        irq_mode_ != IrqMode::kIntx ? " (INTx is not enabled)" : " (need start 0 count 1)"));
  }
  switch (set.data) {
    case IrqSet::Data::kNone:
      IntxMask();
      break;
    case IrqSet::Data::kBool:
      if (set.bools[0]) IntxMask();
      break;
    case IrqSet::Data::kEventfd:
      return absl::UnimplementedError("SetIrqs INTx mask: eventfd masking (ENOTTY)");
  }
  return absl::OkStatus();
}

absl::Status SimEduBackend::IntxUnmaskAction(const IrqSet& set) {
  if (irq_mode_ != IrqMode::kIntx || set.start != 0 || set.count != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SetIrqs INTx unmask: start ", set.start, " count ", set.count,
        irq_mode_ != IrqMode::kIntx ? " (INTx is not enabled)" : " (need start 0 count 1)"));
  }
  switch (set.data) {
    case IrqSet::Data::kNone:
      IntxUnmask();
      break;
    case IrqSet::Data::kBool:
      if (set.bools[0]) IntxUnmask();
      break;
    case IrqSet::Data::kEventfd:
      if (set.eventfds[0] == nullptr) {
        intx_unmask_.reset();
      } else {
        if (intx_unmask_) {
          return absl::FailedPreconditionError(
              "SetIrqs INTx unmask: an unmask eventfd is already registered (EBUSY)");
        }
        VFIOD_ASSIGN_OR_RETURN(EventFd unmask, set.eventfds[0]->Duplicate());
        intx_unmask_ = std::make_shared<const EventFd>(std::move(unmask));
      }
      WakeWorker();
      break;
  }
  return absl::OkStatus();
}

absl::Status SimEduBackend::MsiTrigger(const IrqSet& set) {
  if (irq_mode_ == IrqMode::kMsi && set.count == 0 && set.data == IrqSet::Data::kNone) {
    // vfio_msi_disable().
    msi_trigger_.reset();
    msi_vectors_ = 0;
    irq_mode_ = IrqMode::kNone;
    SetDeviceMsiEnable(false);
    return absl::OkStatus();
  }
  if (irq_mode_ == IrqMode::kIntx) {
    return absl::InvalidArgumentError("SetIrqs MSI trigger: INTx is enabled");
  }
  if (set.data == IrqSet::Data::kEventfd) {
    if (irq_mode_ == IrqMode::kMsi &&
        (set.start >= msi_vectors_ || set.start + set.count > msi_vectors_)) {
      return absl::InvalidArgumentError(
          absl::StrCat("SetIrqs MSI trigger: vectors [", set.start, ", ", set.start + set.count,
                       ") are beyond the ", msi_vectors_, " enabled"));
    }
    if (irq_mode_ == IrqMode::kNone && set.start + set.count == 0) {
      return absl::InvalidArgumentError("SetIrqs MSI trigger: enabling needs at least 1 vector");
    }
    // Only vector 0 exists (validated above), so the block is at most that one.
    std::optional<EventFd> trigger;
    if (set.count == 1) {
      VFIOD_ASSIGN_OR_RETURN(trigger, DuplicateOrNone(set.eventfds[0]));
    }
    if (irq_mode_ == IrqMode::kNone) {
      // vfio_msi_enable(): the kernel programs and enables MSI in the device.
      irq_mode_ = IrqMode::kMsi;
      msi_vectors_ = set.start + set.count;
      msi_qmax_ = 0;  // fls(nvec * 2 - 1) - 1 for one vector
      SetDeviceMsiEnable(true);
    }
    if (set.count == 1) msi_trigger_ = std::move(trigger);
    return absl::OkStatus();
  }
  if (irq_mode_ != IrqMode::kMsi || set.start + set.count > msi_vectors_) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs MSI loopback trigger: ",
                     irq_mode_ != IrqMode::kMsi ? "MSI is not enabled" : "vectors beyond enabled"));
  }
  for (uint32_t i = set.start; i < set.start + set.count; ++i) {
    if (msi_trigger_ && (set.data == IrqSet::Data::kNone || set.bools[i - set.start])) {
      SignalEventFd(*msi_trigger_);
    }
  }
  return absl::OkStatus();
}

// vfio_pci_set_req_trigger() / vfio_pci_set_ctx_trigger_single().
absl::Status SimEduBackend::ReqTrigger(const IrqSet& set) {
  switch (set.data) {
    case IrqSet::Data::kNone:
      if (!req_trigger_) {
        return absl::InvalidArgumentError("SetIrqs REQ trigger: no eventfd is registered");
      }
      if (set.count != 0) {
        SignalEventFd(*req_trigger_);
      } else {
        req_trigger_.reset();
      }
      return absl::OkStatus();
    case IrqSet::Data::kBool:
      if (set.count == 0) return absl::InvalidArgumentError("SetIrqs REQ trigger: count 0");
      if (set.bools[0] && req_trigger_) SignalEventFd(*req_trigger_);
      return absl::OkStatus();
    case IrqSet::Data::kEventfd: {
      if (set.count == 0) return absl::InvalidArgumentError("SetIrqs REQ trigger: count 0");
      VFIOD_ASSIGN_OR_RETURN(req_trigger_, DuplicateOrNone(set.eventfds[0]));
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError("SetIrqs REQ trigger: unknown data type");
}

void SimEduBackend::SetDeviceMsiEnable(bool enable) {
  uint32_t flags = edu_.ConfigRead(kMsiFlags, 2);
  flags &= ~uint32_t{PCI_MSI_FLAGS_QSIZE};
  flags = enable ? (flags | PCI_MSI_FLAGS_ENABLE) : (flags & ~uint32_t{PCI_MSI_FLAGS_ENABLE});
  edu_.ConfigWrite(kMsiFlags, 2, flags);
}

// vfio_pci_intx_mask().
void SimEduBackend::IntxMask() {
  if (irq_mode_ == IrqMode::kIntx && !intx_masked_) intx_masked_ = true;
}

// vfio_pci_intx_unmask_handler(): true when the line is still asserted, so the interrupt must
// be sent again and INTx stays masked.
bool SimEduBackend::IntxUnmaskHandler() {
  if (irq_mode_ != IrqMode::kIntx || !intx_masked_ || virq_disabled_) return false;
  if (intx_asserted_) return true;
  intx_masked_ = false;
  return false;
}

void SimEduBackend::IntxUnmask() {
  if (IntxUnmaskHandler()) SendIntxEventfd();
}

// vfio_send_intx_eventfd().
void SimEduBackend::SendIntxEventfd() {
  if (irq_mode_ == IrqMode::kIntx && !virq_disabled_ && intx_trigger_) {
    SignalEventFd(*intx_trigger_);
  }
}

// vfio_intx_handler(): an asserted, unmasked line is masked and signalled.
void SimEduBackend::IntxFireIfPending() {
  if (irq_mode_ != IrqMode::kIntx || !intx_trigger_ || intx_masked_ || !intx_asserted_) return;
  intx_masked_ = true;
  SendIntxEventfd();
}

void SimEduBackend::IntxDisable() {
  intx_unmask_.reset();
  intx_trigger_.reset();
  intx_masked_ = false;
  irq_mode_ = IrqMode::kNone;
  WakeWorker();
}

bool SimEduBackend::WithinUsableRange(uint64_t iova, uint64_t last) const {
  for (const IovaRange& range : info_.iommu.usable_ranges) {
    if (iova >= range.start && last <= range.last) return true;
  }
  return false;
}

// vfio_dma_do_map() for a Type1v2 container.
absl::Status SimEduBackend::MapDma(const DmaMap& map) {
  const uint64_t vaddr = reinterpret_cast<uintptr_t>(map.host_address);
  const std::string what =
      absl::StrCat("MapDma iova ", Hex(map.iova), " size ", Hex(map.size), ": ");
  if (!map.device_read && !map.device_write) {
    return absl::InvalidArgumentError(absl::StrCat(what, "no read or write permission"));
  }
  if (map.size == 0 || ((map.size | map.iova | vaddr) & (kIommuPageSize - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "size 0 or iova, size or host address not aligned to ", kIommuPageSize));
  }
  if (map.iova + map.size - 1 < map.iova || vaddr + map.size - 1 < vaddr) {
    return absl::InvalidArgumentError(absl::StrCat(what, "range wraps around"));
  }
  const uint64_t last = map.iova + map.size - 1;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = mappings_.upper_bound(last);
  if (it != mappings_.begin()) {
    --it;
    if (it->first + it->second.size - 1 >= map.iova) {
      return absl::AlreadyExistsError(absl::StrCat(what, "overlaps the mapping at ", Hex(it->first),
                                                   " size ", Hex(it->second.size)));
    }
  }
  if (dma_avail_ == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, "all ", kDmaEntryLimit, " DMA mappings are in use"));
  }
  if (!WithinUsableRange(map.iova, last)) {
    return absl::InvalidArgumentError(absl::StrCat(what, "not inside one usable IOVA range"));
  }
  if (map.host_address == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, "no host memory (EFAULT)"));
  }
  // vfio_pin_pages_remote(): locked_vm + the new pages must stay within RLIMIT_MEMLOCK.
  const uint64_t pages = map.size / kIommuPageSize;
  VFIOD_ASSIGN_OR_RETURN(const uint64_t limit_pages, MemlockLimitPages());
  if (pages > limit_pages || pinned_pages_ > limit_pages - pages) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, "pinning ", pages, " more pages on top of ", pinned_pages_,
        " exceeds RLIMIT_MEMLOCK of ", limit_pages, " pages (ENOMEM)"));
  }
  mappings_[map.iova] =
      Mapping{map.size, static_cast<uint8_t*>(map.host_address), map.device_read, map.device_write};
  --dma_avail_;
  pinned_pages_ += pages;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> SimEduBackend::MemlockLimitPages() const {
  uint64_t bytes;
  if (memlock_limit_.has_value()) {
    bytes = *memlock_limit_;
  } else {
    struct rlimit limit;
    if (::prlimit(0, RLIMIT_MEMLOCK, nullptr, &limit) != 0) {
      return ErrnoError(errno, "MapDma: prlimit(RLIMIT_MEMLOCK)");
    }
    if (limit.rlim_cur == RLIM_INFINITY) return std::numeric_limits<uint64_t>::max();
    bytes = limit.rlim_cur;
  }
  return bytes / kIommuPageSize;
}

// vfio_dma_do_unmap() for a Type1v2 container.
absl::Status SimEduBackend::UnmapDma(uint64_t iova, uint64_t size) {
  const std::string what = absl::StrCat("UnmapDma iova ", Hex(iova), " size ", Hex(size), ": ");
  if (size == 0 || ((iova | size) & (kIommuPageSize - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "size 0 or iova or size not aligned to ", kIommuPageSize));
  }
  if (iova + size - 1 < iova) {
    return absl::InvalidArgumentError(absl::StrCat(what, "range wraps around"));
  }
  const uint64_t last = iova + size - 1;
  std::lock_guard<std::mutex> lock(mu_);
  // No mapping may be cut by either end of the range.
  auto containing = [this](uint64_t address) -> std::map<uint64_t, Mapping>::const_iterator {
    auto it = mappings_.upper_bound(address);
    if (it == mappings_.begin()) return mappings_.end();
    --it;
    return address - it->first < it->second.size ? it : mappings_.end();
  };
  auto first = containing(iova);
  if (first != mappings_.end() && first->first != iova) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "would split the mapping at ", Hex(first->first)));
  }
  auto final = containing(last);
  if (final != mappings_.end() && final->first + final->second.size - 1 != last) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "would split the mapping at ", Hex(final->first)));
  }
  auto begin = mappings_.lower_bound(iova);
  auto end = mappings_.upper_bound(last);
  dma_avail_ += static_cast<uint32_t>(std::distance(begin, end));
  for (auto it = begin; it != end; ++it) pinned_pages_ -= it->second.size / kIommuPageSize;
  mappings_.erase(begin, end);
  return absl::OkStatus();
}

bool SimEduBackend::Translate(uint64_t iova, size_t size, bool device_write,
                              absl::InlinedVector<HostPiece, 4>* pieces) {
  if (size == 0) return true;
  if (iova + (size - 1) < iova) return false;
  uint64_t at = iova;
  size_t left = size;
  while (left > 0) {
    auto it = mappings_.upper_bound(at);
    if (it == mappings_.begin()) return false;
    --it;
    const Mapping& mapping = it->second;
    const uint64_t offset = at - it->first;
    if (offset >= mapping.size) return false;
    if (device_write ? !mapping.device_write : !mapping.device_read) return false;
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(left, mapping.size - offset));
    pieces->push_back(HostPiece{mapping.host + offset, piece});
    at += piece;
    left -= piece;
  }
  return true;
}

bool SimEduBackend::DmaRead(uint64_t address, absl::Span<uint8_t> out) {
  absl::InlinedVector<HostPiece, 4> pieces;
  if (!Translate(address, out.size(), /*device_write=*/false, &pieces)) {
    ++iommu_faults_;
    LogDebug("sim: IOMMU blocked a device read",
             {{"iova", Hex(address)}, {"size", absl::StrCat(out.size())}});
    return false;
  }
  size_t done = 0;
  for (const HostPiece& piece : pieces) {
    std::memcpy(out.data() + done, piece.host, piece.size);
    done += piece.size;
  }
  return true;
}

bool SimEduBackend::DmaWrite(uint64_t address, absl::Span<const uint8_t> data) {
  absl::InlinedVector<HostPiece, 4> pieces;
  if (!Translate(address, data.size(), /*device_write=*/true, &pieces)) {
    ++iommu_faults_;
    LogDebug("sim: IOMMU blocked a device write",
             {{"iova", Hex(address)}, {"size", absl::StrCat(data.size())}});
    return false;
  }
  size_t done = 0;
  for (const HostPiece& piece : pieces) {
    std::memcpy(piece.host, data.data() + done, piece.size);
    done += piece.size;
  }
  return true;
}

void SimEduBackend::SendMsi() {
  ++interrupts_;
  // vfio_msihandler(): the vector's trigger, if one is set.
  if (irq_mode_ == IrqMode::kMsi && msi_trigger_) SignalEventFd(*msi_trigger_);
}

void SimEduBackend::SetIntx(bool asserted) {
  intx_asserted_ = asserted;
  if (!asserted) return;
  ++interrupts_;
  IntxFireIfPending();
}

absl::Status SimEduBackend::Reset() {
  if (!info_.reset_supported) {
    return absl::FailedPreconditionError("Reset: the device does not support reset");
  }
  std::lock_guard<std::mutex> lock(mu_);
  edu_.Reset();
  WakeWorker();
  return absl::OkStatus();
}

BackendCounters SimEduBackend::Counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  BackendCounters counters;
  counters.dma_faults = iommu_faults_ + edu_.stats().dma_without_bus_master;
  counters.interrupts = interrupts_;
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
