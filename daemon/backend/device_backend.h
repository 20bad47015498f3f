// DeviceBackend: one PCI device, in the terms of Linux VFIO.
//
// The device model (daemon/pci) drives a device only through this interface. Two
// implementations exist: daemon/vfio (the kernel's vfio-pci) and daemon/sim (software devices
// with the same observable behaviour). The semantics are the kernel's, so that a test that
// passes on one passes on the other:
//   - Regions are numbered as VFIO_PCI_*_REGION_INDEX (BAR0..BAR5 = 0..5, ROM = 6, CONFIG = 7,
//     VGA = 8, device-specific regions after). Config space is region 7.
//   - Region accesses are split into naturally aligned 4/2/1-byte device accesses, as vfio-pci
//     does on Linux 6.1 (no 8-byte accesses).
//   - BAR accesses while memory (or I/O) decode is off in the command register fail with EIO.
//   - SET_IRQS follows VFIO_DEVICE_SET_IRQS: INTx is level-triggered and automasked after each
//     trigger; MSI/MSI-X vectors cannot be masked (UNIMPLEMENTED, the kernel's ENOTTY).
//   - DMA map/unmap follow VFIO_IOMMU_MAP_DMA/UNMAP_DMA on a Type1v2 container.
//
// Backends validate what the kernel validates and return the kernel's error; the device model
// validates every client value before it gets here, so a backend error on a client value is a
// bug upstream, never a crash here.
//
// Thread-safety: every method may be called from any thread, concurrently. Info() is immutable.
#ifndef VFIOD_DAEMON_BACKEND_DEVICE_BACKEND_H_
#define VFIOD_DAEMON_BACKEND_DEVICE_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/unique_fd.h"

namespace vfiod {

// VFIO's fixed PCI region and IRQ numbering (linux/vfio.h), restated as plain constants so that
// users of this header need not include kernel headers; device_backend.cc static_asserts they
// match.
inline constexpr uint32_t kBar0RegionIndex = 0;
inline constexpr uint32_t kBar5RegionIndex = 5;
inline constexpr uint32_t kRomRegionIndex = 6;
inline constexpr uint32_t kConfigRegionIndex = 7;
inline constexpr uint32_t kVgaRegionIndex = 8;
inline constexpr uint32_t kNumPciRegions = 9;

enum class IrqIndex : uint32_t { kIntx = 0, kMsi = 1, kMsix = 2, kErr = 3, kReq = 4 };
inline constexpr uint32_t kNumPciIrqIndexes = 5;

// "INTx", "MSI", "MSI-X", "ERR", "REQ"; "index <n>" for a value outside the enum. For messages.
std::string IrqIndexName(IrqIndex index);

struct SparseMmapArea {
  uint64_t offset = 0;
  uint64_t size = 0;
};

struct RegionInfo {
  uint32_t index = 0;
  uint64_t size = 0;  // 0: the region is not implemented
  bool readable = false;
  bool writable = false;
  bool mmappable = false;
  std::vector<SparseMmapArea> sparse_mmap;  // VFIO_REGION_INFO_CAP_SPARSE_MMAP
  std::optional<uint32_t> type;             // VFIO_REGION_INFO_CAP_TYPE
  std::optional<uint32_t> subtype;
  bool msix_mappable = false;  // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE
};

// The bounds rule of every region access, in one place for the backends, the device model and
// vfio-user: OK when [offset, offset + size) lies inside `region` (computed without overflow);
// otherwise OUT_OF_RANGE "<op>: offset 0x.. + size N is beyond region I of 0x.. bytes".
absl::Status CheckRegionBounds(absl::string_view op, const RegionInfo& region, uint64_t offset,
                               uint64_t size);

struct IrqInfo {
  IrqIndex index = IrqIndex::kIntx;
  uint32_t count = 0;  // 0: the index does not exist on this device
  bool eventfd = false;
  bool maskable = false;
  bool automasked = false;
  bool noresize = false;
};

struct IovaRange {
  uint64_t start = 0;
  uint64_t last = 0;  // inclusive
};

struct IommuInfo {
  uint64_t page_size_bitmap = 0;  // bit n set: 2^n-byte IOMMU pages are supported
  std::vector<IovaRange> usable_ranges;
  uint32_t dma_mappings_available = 0;  // VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL at setup
};

// Everything immutable about the device, queried once before serving.
struct BackendInfo {
  std::string kind;                 // "vfio" or "sim"
  std::string name;                 // "0000:00:03.0" or "sim:edu"
  bool reset_supported = false;     // VFIO_DEVICE_FLAGS_RESET
  uint32_t raw_flags = 0;           // vfio_device_info.flags
  std::vector<RegionInfo> regions;  // index i at position i
  std::vector<IrqInfo> irqs;        // index i at position i (kNumPciIrqIndexes entries)
  IommuInfo iommu;
};

enum class IrqAction { kTrigger, kMask, kUnmask };

// "TRIGGER", "MASK", "UNMASK" (VFIO_IRQ_SET_ACTION_*). For messages.
absl::string_view IrqActionName(IrqAction action);

// One VFIO_DEVICE_SET_IRQS call. Exactly one of the data forms applies:
//  - none: `bools` and `eventfds` both empty and count may be 0 (TRIGGER, count 0: disable).
//  - bools: one value per vector in [start, start + count).
//  - eventfds: one entry per vector; nullptr tears that vector's eventfd down (the kernel's -1).
//    The backend does not take ownership: the kernel takes its own reference, and the simulated
//    device duplicates the fd. With kUnmask on INTx, the single eventfd is the unmask
//    (resample) eventfd.
struct IrqSet {
  enum class Data { kNone, kBool, kEventfd };
  IrqIndex index = IrqIndex::kIntx;
  uint32_t start = 0;
  uint32_t count = 0;
  IrqAction action = IrqAction::kTrigger;
  Data data = Data::kNone;
  std::vector<bool> bools;
  std::vector<const EventFd*> eventfds;
};

// The VFIO rules for the shape of a SET_IRQS request (vfio_set_irqs_validate_and_prepare()),
// defined here once for every layer that builds or checks one: the device model (IrqManager,
// which adds its own policy), the simulated backend (which adds the kernel's per-index rules)
// and the kernel encoding (which leaves the index and range to the kernel). Each check returns
// INVALID_ARGUMENT with a message naming the rule and without an operation prefix, which the
// caller adds ("SetIrqs: ...").
//
// A request's form: what the rules look at, without its values. FormOf(set) for an IrqSet; a
// layer with its own request type fills it in.
struct IrqSetForm {
  IrqIndex index = IrqIndex::kIntx;
  uint32_t start = 0;
  uint32_t count = 0;
  IrqAction action = IrqAction::kTrigger;
  IrqSet::Data data = IrqSet::Data::kNone;
  size_t bools = 0;     // number of bool values given
  size_t eventfds = 0;  // number of eventfd entries given
};
IrqSetForm FormOf(const IrqSet& set);

// "none", "bool", "eventfd" (VFIO_IRQ_SET_DATA_*); "unknown" otherwise. For messages.
absl::string_view IrqSetDataName(IrqSet::Data data);

// A known index (below kNumPciIrqIndexes): "unknown IRQ index 7".
absl::Status CheckIrqSetIndex(const IrqSetForm& form);
// A known action ("unknown action 9") and data form ("unknown data form 9"); values only of the
// data form's kind ("2 eventfds given with data none") and exactly `count` of them ("1 bools
// for 2 vectors", "2 eventfds for 3 vectors").
absl::Status CheckIrqSetData(const IrqSetForm& form);
// The kernel's overflow rule, count < U32_MAX - start: "start 4294967295 + count 1 overflows".
absl::Status CheckIrqSetEnd(const IrqSetForm& form);
// start < `available` and start + count <= `available` (the index's vector count; computed in
// 64 bits, so it holds for any start and count): "vector range [7, 9) exceeds the 8 vectors of
// MSI-X".
absl::Status CheckIrqSetVectors(const IrqSetForm& form, uint32_t available);

// One VFIO_IOMMU_MAP_DMA: `size` bytes of this process's memory at `host_address` become
// visible to the device at `iova`. The caller keeps the memory mapped until the range is
// unmapped.
struct DmaMap {
  uint64_t iova = 0;
  uint64_t size = 0;
  void* host_address = nullptr;
  bool device_read = false;
  bool device_write = false;
};

// What a simulated device observed; zero for the kernel backend, which cannot see these.
struct BackendCounters {
  uint64_t dma_faults = 0;  // device DMA to an unmapped or forbidden IOVA (blocked, not done)
  uint64_t interrupts = 0;  // interrupts the device raised
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  virtual const BackendInfo& Info() const = 0;

  // Reads/writes `data.size()` bytes of region `index` at `offset`, as the kernel's region
  // read/write would (split into 4/2/1-byte device accesses). OUT_OF_RANGE beyond the region;
  // PERMISSION_DENIED when the region lacks the read/write flag; FAILED_PRECONDITION (EIO) for
  // a BAR whose decode is disabled.
  virtual absl::Status ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) = 0;
  virtual absl::Status WriteRegion(uint32_t index, uint64_t offset,
                                   absl::Span<const uint8_t> data) = 0;

  virtual absl::Status SetIrqs(const IrqSet& set) = 0;

  virtual absl::Status MapDma(const DmaMap& map) = 0;
  // Unmaps exactly the mapping(s) in [iova, iova + size); must not split a mapping.
  virtual absl::Status UnmapDma(uint64_t iova, uint64_t size) = 0;

  // VFIO_DEVICE_RESET. FAILED_PRECONDITION when Info().reset_supported is false.
  virtual absl::Status Reset() = 0;

  virtual BackendCounters Counters() const { return {}; }

  // Starts whatever the backend runs on its own (the simulated device's worker thread and its
  // fds; nothing for the kernel backend). Called once, after the daemon's jail and before
  // serving: the jail forks and unshares namespaces, which needs a single-threaded process.
  // Every other method works before Start(); a backend may defer work that needs its thread.
  virtual absl::Status Start() { return absl::OkStatus(); }

  // The fds a backend holds from creation on and needs while serving, by role: the jail moves
  // each to the fixed number the seccomp policy names for that role (seccomp/fd_layout.h) and
  // updates the UniqueFd in place; every fd not kept is closed. Null: the backend has none. The
  // policy forbids closing those numbers: from this call on, the backend must never close them
  // (not even when destroyed; the kernel closes them at exit).
  // Called once, before Start(), with no other thread using the backend.
  struct JailFds {
    UniqueFd* vfio_container = nullptr;
    UniqueFd* vfio_group = nullptr;
    UniqueFd* vfio_device = nullptr;
  };
  virtual JailFds FdsForJail() { return {}; }
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BACKEND_DEVICE_BACKEND_H_
