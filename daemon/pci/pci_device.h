// PciDevice: the device model. PCI semantics and all client-value validation on top of a
// DeviceBackend; the only way the service layer touches a device.
//
// Every method validates its arguments completely (checked arithmetic, natural alignment,
// region bounds and flags, IOMMU rules) before anything reaches the backend, returns a status
// whose message names the operation and the offending value, and leaves the state unchanged
// when it fails. It never CHECKs, asserts or aborts on an argument.
//
// Owner-scoped resources (registered memory, DMA mappings, IRQ triggers) are released when the
// owner goes away: RegisterOwnerCleanup() registers their release with the daemon's
// OwnerCleanup, which the session layer runs.
//
// Thread-safety: all methods are thread-safe. Mutating calls are serialised internally; reads
// of config space and regions run concurrently with each other.
#ifndef VFIOD_DAEMON_PCI_PCI_DEVICE_H_
#define VFIOD_DAEMON_PCI_PCI_DEVICE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/owner_cleanup.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/irq_types.h"

namespace vfiod {

struct Bar {
  enum class Kind { kMemory, kIo, kRom };
  Kind kind = Kind::kMemory;
  bool is_64bit = false;
  bool prefetchable = false;
  uint64_t size = 0;
  uint64_t address = 0;
};

struct Capability {
  uint16_t id = 0;
  uint16_t offset = 0;
  uint8_t version = 0;  // extended capabilities only
  std::string name;     // "MSI", "MSI-X", "Express", "Power Management", "AER", ...
};

struct DeviceDescription {
  BackendInfo backend;
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint32_t class_code = 0;  // 24 bits
  uint8_t revision = 0;
  uint8_t header_type = 0;
  uint32_t config_size = 0;                    // the config region's size (256 or 4096)
  std::array<std::optional<Bar>, 7> bars;      // BAR0..BAR5, ROM; empty: not implemented
  std::vector<Capability> capabilities;        // chain order; a looping chain is cut
  std::vector<Capability> extended_capabilities;
};

struct DeviceLimits {
  uint64_t max_memory_bytes = uint64_t{16} << 30;  // all registered memory together
  uint32_t max_memory_regions = 64;
  uint32_t max_dma_mappings = 4096;  // also capped by the IOMMU's dma_mappings_available
  uint32_t max_region_access_bytes = 64 * 1024;
  uint32_t max_irq_watchers = 8;
};

struct MemoryInfo {
  uint64_t id = 0;
  uint64_t size = 0;
  uint32_t mappings = 0;
};

struct DmaMapRequest {
  uint64_t iova = 0;
  uint64_t size = 0;
  uint64_t memory_id = 0;
  uint64_t offset = 0;
  bool device_read = false;
  bool device_write = false;
};

struct UnmapResult {
  uint64_t bytes = 0;
  uint32_t mappings = 0;
};

// What owner loss did to the device's own state, so that the next owner inherits nothing.
enum class OwnerLossReset {
  kNone,            // no owner has been lost yet
  kReset,           // the device was reset (VFIO_DEVICE_RESET)
  kDecodeDisabled,  // no reset available (or it failed): memory and I/O decode and bus
                    // mastering were turned off; registers keep the last owner's values
};

struct DeviceSnapshot {
  std::vector<MemoryInfo> memory;
  std::vector<DmaMapRequest> mappings;  // sorted by iova
  std::vector<IrqIndexState> irqs;
  BackendCounters counters;
  OwnerLossReset last_owner_loss = OwnerLossReset::kNone;
};

class PciDevice {
 public:
  // Queries the backend, decodes the BARs by sizing them in config space (and restores them)
  // and walks the capability lists. Starts no thread and opens no fd beyond the backend's.
  static absl::StatusOr<std::unique_ptr<PciDevice>> Create(std::unique_ptr<DeviceBackend> backend,
                                                           const DeviceLimits& limits);
  // Starts the backend's threads (DeviceBackend::Start) and the IRQ manager's watcher. Call
  // once, after the daemon's jail and before serving (see docs/ARCHITECTURE.md, start-up
  // order); IRQ requests needing daemon eventfds, and a simulated device's timed work, wait
  // for it. `on_host_request`: see IrqManager::Start (called when the host asks for the device
  // back, e.g. an unbind from vfio-pci, while the owner has no REQ trigger; empty: not watched).
  absl::Status Start(std::function<void()> on_host_request = nullptr);
  ~PciDevice();

  const DeviceDescription& description() const;
  const DeviceLimits& limits() const;

  // Config space; size 1, 2 or 4, offset naturally aligned and inside config_size.
  absl::StatusOr<uint32_t> ReadConfig(uint32_t offset, uint32_t size);
  absl::Status WriteConfig(uint32_t offset, uint32_t size, uint32_t value);
  // Dword-aligned bulk read; length 0 = to the end.
  absl::StatusOr<std::vector<uint8_t>> DumpConfig(uint32_t offset, uint32_t length);

  // Regions other than config: bounds, flags and size limit checked.
  absl::StatusOr<std::vector<uint8_t>> ReadRegion(uint32_t index, uint64_t offset, uint64_t size);
  absl::Status WriteRegion(uint32_t index, uint64_t offset, absl::Span<const uint8_t> data);

  // Maps `fd` (shared, read/write) and keeps it until unregistered. `size` 0 = the file's size.
  // The fd must be a regular file or memfd sealed with F_SEAL_SHRINK, not sealed against writes
  // and open O_RDWR (DmaSpace::RegisterMemory has the codes). `fd` is closed either way.
  absl::StatusOr<MemoryInfo> RegisterMemory(UniqueFd fd, uint64_t size);
  // FAILED_PRECONDITION while any DMA mapping uses the memory.
  absl::Status UnregisterMemory(uint64_t memory_id);

  absl::Status MapDma(const DmaMapRequest& request);
  absl::StatusOr<UnmapResult> UnmapDma(uint64_t iova, uint64_t size);

  absl::Status SetIrqs(IrqRequest request);
  // RESOURCE_EXHAUSTED beyond max_irq_watchers live subscriptions. `indexes` empty = all.
  absl::StatusOr<std::shared_ptr<IrqSubscription>> WatchIrqs(std::vector<IrqIndex> indexes);

  absl::Status Reset();

  DeviceSnapshot Snapshot() const;

  // Registers the release of the owner's device state: bus mastering cleared in the command
  // register, so the device starts no more DMA (Stage::kQuiesce); every IRQ index disabled
  // (kInterrupts); every DMA mapping unmapped, then all memory unregistered (kDma); then the
  // device itself made fit for the next owner (kDevice): reset when the backend offers it,
  // otherwise (or if the reset fails) memory and I/O decode and bus mastering turned off, with
  // a warning in the log, and Snapshot().last_owner_loss saying which. Each step is attempted
  // and failures are logged. Call once; `cleanup` must not outlive the device.
  void RegisterOwnerCleanup(OwnerCleanup& cleanup);

  // All of the above at once, in that order (for callers without an OwnerCleanup: tests).
  void ReleaseOwnerResources();

 private:
  PciDevice();
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_PCI_PCI_DEVICE_H_
