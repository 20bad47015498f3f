#include "daemon/pci/pci_device.h"

#include <linux/pci_regs.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/format.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/pci/config_space.h"
#include "daemon/pci/dma_space.h"
#include "daemon/pci/irq_manager.h"

namespace vfiod {

// Lock order: device_mu, then the DmaSpace's and the IrqManager's own locks. device_mu is
// shared by config reads and by BAR/ROM reads and writes, and exclusive for config writes (which
// can turn decode or bus mastering off), SET_IRQS, reset and owner-loss cleanup, so that a reset
// never interleaves with an access or an IRQ change. BAR writes share it with each other, as
// vCPUs' doorbell writes go to the device in parallel under kernel VFIO (the backends serialise
// what they must themselves: the kernel, the simulated device's own mutex).
struct PciDevice::State {
  // Declared first so that it is destroyed last: dma and irqs call it until they are gone.
  std::unique_ptr<DeviceBackend> backend;
  DeviceDescription description;
  DeviceLimits limits;
  std::unique_ptr<DmaSpace> dma;
  std::unique_ptr<IrqManager> irqs;
  mutable absl::Mutex device_mu;

  // Stops the device from starting DMA (and MSI writes), so no transfer races the teardown of
  // the mappings it would use. Failures are logged.
  void ClearBusMaster();
  // Clears `bits` in the command register; the status of the read or write.
  absl::Status ClearCommandBits(uint16_t bits) ABSL_EXCLUSIVE_LOCKS_REQUIRED(device_mu);
  // Owner loss, last device step: reset, or decode off when there is no reset.
  void ResetForNextOwner();
  OwnerLossReset last_owner_loss ABSL_GUARDED_BY(device_mu) = OwnerLossReset::kNone;

  // The region `index` for a client access of `size` bytes at `offset`.
  absl::StatusOr<const RegionInfo*> CheckRegionAccess(absl::string_view operation, uint32_t index,
                                                      uint64_t offset, uint64_t size,
                                                      bool write) const;
};

absl::StatusOr<const RegionInfo*> PciDevice::State::CheckRegionAccess(
    absl::string_view operation, uint32_t index, uint64_t offset, uint64_t size, bool write) const {
  if (index == kConfigRegionIndex) {
    return absl::InvalidArgumentError(absl::StrCat(operation, ": region ", index,
                                                   " is config space; use ",
                                                   write ? "WriteConfig" : "ReadConfig"));
  }
  const std::vector<RegionInfo>& regions = description.backend.regions;
  if (index >= regions.size() || regions[index].size == 0) {
    return absl::NotFoundError(
        absl::StrCat(operation, ": region ", index, " does not exist on this device"));
  }
  const RegionInfo& region = regions[index];
  if (write ? !region.writable : !region.readable) {
    return absl::PermissionDeniedError(
        absl::StrCat(operation, ": region ", index, " is not ", write ? "writable" : "readable"));
  }
  if (size == 0 || size > limits.max_region_access_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(operation, ": size ", size,
                                                   " is not between 1 and ",
                                                   limits.max_region_access_bytes, " bytes"));
  }
  VFIOD_RETURN_IF_ERROR(CheckRegionBounds(operation, region, offset, size));
  return &region;
}

absl::Status PciDevice::State::ClearCommandBits(uint16_t bits) {
  absl::StatusOr<uint32_t> command = ReadConfigRegister(*backend, PCI_COMMAND, 2);
  if (!command.ok()) return command.status();
  if ((*command & bits) == 0) return absl::OkStatus();
  return WriteConfigRegister(*backend, PCI_COMMAND, 2, *command & ~uint32_t{bits});
}

void PciDevice::State::ClearBusMaster() {
  absl::WriterMutexLock lock(&device_mu);
  absl::Status status = ClearCommandBits(PCI_COMMAND_MASTER);
  if (!status.ok()) {
    LogError("owner loss: clearing bus mastering failed", {{"error", status.ToString()}});
  }
}

void PciDevice::State::ResetForNextOwner() {
  absl::WriterMutexLock lock(&device_mu);
  if (description.backend.reset_supported) {
    absl::Status reset = backend->Reset();
    if (reset.ok()) {
      last_owner_loss = OwnerLossReset::kReset;
      LogInfo("owner loss: device reset", {{"device", description.backend.name}});
      return;
    }
    LogError("owner loss: device reset failed; disabling decode instead",
             {{"error", reset.ToString()}});
  }
  absl::Status cleared =
      ClearCommandBits(PCI_COMMAND_MEMORY | PCI_COMMAND_IO | PCI_COMMAND_MASTER);
  last_owner_loss = OwnerLossReset::kDecodeDisabled;
  LogWarning(
      "owner loss: the device has no usable reset; memory and I/O decode and bus mastering are "
      "off, and its registers keep the last owner's values until the next owner resets it",
      {{"device", description.backend.name},
       {"status", cleared.ok() ? "ok" : cleared.ToString()}});
}

PciDevice::PciDevice() : state_(std::make_unique<State>()) {}

PciDevice::~PciDevice() = default;

absl::StatusOr<std::unique_ptr<PciDevice>> PciDevice::Create(std::unique_ptr<DeviceBackend> backend,
                                                             const DeviceLimits& limits) {
  if (backend == nullptr) return absl::InvalidArgumentError("PciDevice: no backend");
  std::unique_ptr<PciDevice> device(new PciDevice());
  State& s = *device->state_;
  s.backend = std::move(backend);
  s.limits = limits;
  absl::StatusOr<DeviceDescription> description = DescribeDevice(*s.backend);
  if (!description.ok()) {
    return Annotate(description.status(), absl::StrCat("describing ", s.backend->Info().name));
  }
  s.description = *std::move(description);
  VFIOD_ASSIGN_OR_RETURN(s.irqs, IrqManager::Create(s.backend.get(), limits.max_irq_watchers));
  s.dma = std::make_unique<DmaSpace>(s.backend.get(), limits);
  return device;
}

absl::Status PciDevice::Start(std::function<void()> on_host_request) {
  State& s = *state_;
  VFIOD_RETURN_IF_ERROR(s.backend->Start());
  return s.irqs->Start(std::move(on_host_request));
}

const DeviceDescription& PciDevice::description() const { return state_->description; }

const DeviceLimits& PciDevice::limits() const { return state_->limits; }

absl::StatusOr<uint32_t> PciDevice::ReadConfig(uint32_t offset, uint32_t size) {
  State& s = *state_;
  VFIOD_RETURN_IF_ERROR(
      ValidateConfigAccess("ReadConfig", offset, size, s.description.config_size));
  absl::ReaderMutexLock lock(&s.device_mu);
  absl::StatusOr<uint32_t> value = ReadConfigRegister(*s.backend, offset, size);
  if (!value.ok()) return Annotate(value.status(), "ReadConfig");
  return value;
}

absl::Status PciDevice::WriteConfig(uint32_t offset, uint32_t size, uint32_t value) {
  State& s = *state_;
  VFIOD_RETURN_IF_ERROR(
      ValidateConfigAccess("WriteConfig", offset, size, s.description.config_size));
  if (size < 4 && value >> (8 * size) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteConfig: value ", Hex(value), " does not fit in ", size, " byte(s)"));
  }
  absl::WriterMutexLock lock(&s.device_mu);
  return Annotate(WriteConfigRegister(*s.backend, offset, size, value), "WriteConfig");
}

absl::StatusOr<std::vector<uint8_t>> PciDevice::DumpConfig(uint32_t offset, uint32_t length) {
  State& s = *state_;
  VFIOD_ASSIGN_OR_RETURN(uint32_t bytes,
                         ValidateConfigDump(offset, length, s.description.config_size));
  std::vector<uint8_t> data(bytes);
  absl::ReaderMutexLock lock(&s.device_mu);
  VFIOD_RETURN_IF_ERROR(Annotate(
      s.backend->ReadRegion(kConfigRegionIndex, offset, absl::MakeSpan(data)), "DumpConfig"));
  return data;
}

absl::StatusOr<std::vector<uint8_t>> PciDevice::ReadRegion(uint32_t index, uint64_t offset,
                                                           uint64_t size) {
  State& s = *state_;
  VFIOD_RETURN_IF_ERROR(
      s.CheckRegionAccess("ReadRegion", index, offset, size, /*write=*/false).status());
  std::vector<uint8_t> data(size);
  absl::ReaderMutexLock lock(&s.device_mu);
  VFIOD_RETURN_IF_ERROR(
      Annotate(s.backend->ReadRegion(index, offset, absl::MakeSpan(data)),
               absl::StrCat("ReadRegion: region ", index, " offset ", Hex(offset))));
  return data;
}

absl::Status PciDevice::WriteRegion(uint32_t index, uint64_t offset,
                                    absl::Span<const uint8_t> data) {
  State& s = *state_;
  VFIOD_RETURN_IF_ERROR(
      s.CheckRegionAccess("WriteRegion", index, offset, data.size(), /*write=*/true).status());
  absl::ReaderMutexLock lock(&s.device_mu);
  return Annotate(s.backend->WriteRegion(index, offset, data),
                  absl::StrCat("WriteRegion: region ", index, " offset ", Hex(offset)));
}

absl::StatusOr<MemoryInfo> PciDevice::RegisterMemory(UniqueFd fd, uint64_t size) {
  return state_->dma->RegisterMemory(std::move(fd), size);
}

absl::Status PciDevice::UnregisterMemory(uint64_t memory_id) {
  return state_->dma->UnregisterMemory(memory_id);
}

absl::Status PciDevice::MapDma(const DmaMapRequest& request) {
  return state_->dma->MapDma(request);
}

absl::StatusOr<UnmapResult> PciDevice::UnmapDma(uint64_t iova, uint64_t size) {
  return state_->dma->UnmapDma(iova, size);
}

absl::Status PciDevice::SetIrqs(IrqRequest request) {
  absl::WriterMutexLock lock(&state_->device_mu);
  return state_->irqs->SetIrqs(std::move(request));
}

absl::StatusOr<std::shared_ptr<IrqSubscription>> PciDevice::WatchIrqs(
    std::vector<IrqIndex> indexes) {
  return state_->irqs->Watch(std::move(indexes));
}

absl::Status PciDevice::Reset() {
  State& s = *state_;
  if (!s.description.backend.reset_supported) {
    return absl::FailedPreconditionError(
        absl::StrCat("Reset: device ", s.description.backend.name, " does not support reset"));
  }
  // As VFIO_DEVICE_RESET in Linux 6.1: the interrupt configuration stays (a VMM disables its
  // interrupts itself before a reset, as QEMU's vfio_pci_pre_reset does).
  absl::WriterMutexLock lock(&s.device_mu);
  return Annotate(s.backend->Reset(), "Reset");
}

DeviceSnapshot PciDevice::Snapshot() const {
  const State& s = *state_;
  DeviceSnapshot snapshot;
  snapshot.memory = s.dma->Memory();
  snapshot.mappings = s.dma->Mappings();
  snapshot.irqs = s.irqs->State();
  snapshot.counters = s.backend->Counters();
  {
    absl::ReaderMutexLock lock(&s.device_mu);
    snapshot.last_owner_loss = s.last_owner_loss;
  }
  return snapshot;
}

void PciDevice::RegisterOwnerCleanup(OwnerCleanup& cleanup) {
  State* s = state_.get();
  cleanup.Register(OwnerCleanup::Stage::kQuiesce, "bus mastering off",
                   [s] { s->ClearBusMaster(); });
  cleanup.Register(OwnerCleanup::Stage::kInterrupts, "IRQ triggers", [s] {
    absl::WriterMutexLock lock(&s->device_mu);
    s->irqs->DisableAll();
  });
  cleanup.Register(OwnerCleanup::Stage::kDma, "DMA mappings and memory",
                   [s] { s->dma->ReleaseAll(); });
  cleanup.Register(OwnerCleanup::Stage::kDevice, "device reset (or decode off)",
                   [s] { s->ResetForNextOwner(); });
}

void PciDevice::ReleaseOwnerResources() {
  State& s = *state_;
  s.ClearBusMaster();
  {
    absl::WriterMutexLock lock(&s.device_mu);
    s.irqs->DisableAll();
  }
  s.dma->ReleaseAll();
  s.ResetForNextOwner();
}

}  // namespace vfiod
