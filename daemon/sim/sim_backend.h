// Simulated PCI devices behind a DeviceBackend, with the semantics of Linux 6.1 vfio-pci and
// vfio_iommu_type1 (v2) on x86 with Intel VT-d, so that a client scenario that passes here
// passes unchanged against the real device under real vfio-pci.
//
// The one device so far is QEMU 7.2's `edu` (see edu_device.h). On top of it the backend models
// what the kernel adds:
//   - Config space (region 7) virtualised like vfio_pci_config.c: vendor/device, the capability
//     pointer and list, the interrupt line and pin, the BARs and the ROM BAR are virtual; BAR0
//     sizing reads back 0xfff00000, BAR1-5 and ROM read 0; the INTx-disable bit is virtual and
//     acts as an INTx mask; other command bits reach the device (MEMORY, IO, MASTER, SERR);
//     status is read-only; the MSI flags' low byte, address and data are virtual, and the MSI
//     enable bit only sticks while MSI is enabled through SetIrqs. The bytes after the MSI
//     capability reach the device raw. Accesses are chopped into 4/2/1-byte pieces at
//     capability boundaries, as the kernel does.
//   - The state after open: what SeaBIOS and the kernel leave behind. BAR0 at 0xfeb00000 (the
//     address SeaBIOS picks for this layout; firmware-dependent, not part of the contract),
//     interrupt line 11, command = IO | MEMORY | SERR (SeaBIOS enables these on every device;
//     vfio-pci clears bus mastering on open and enables memory decode).
//   - BAR0 accesses are split into naturally aligned 4/2/1-byte device accesses
//     (vfio_pci_rdwr.c) and fail while the virtual command register has memory decode off.
//   - SetIrqs follows vfio_pci_intrs.c: level-triggered, automasked INTx with mask, unmask and a
//     resample (unmask) eventfd; MSI with one vector; INTx and MSI mutually exclusive; REQ
//     trigger stored (never fired: no unplug here); loopback triggers with DATA_NONE/BOOL.
//   - MapDma/UnmapDma follow vfio_iommu_type1 v2, with the IOMMU facts of QEMU 7.2's
//     intel-iommu under Linux 6.1: 4K|2M|1G pages, usable IOVAs [0, 0xfedfffff] and
//     [0xfef00000, 2^aw - 1] (the MSI window is reserved; aw = 39 bits by default as QEMU 7.2's
//     aw-bits, 48 with "aw=48"), 65535 mappings. Pinned pages are charged as type1 charges them
//     (vfio_pin_pages_remote): every page of every mapping counts, a map that would take the
//     total past RLIMIT_MEMLOCK (read at map time; SimEduOptions::memlock_limit) fails whole
//     with the kernel's ENOMEM, RESOURCE_EXHAUSTED, and unmap uncharges. The process's own
//     mlock()ed memory, which the kernel counts too, is not (the daemon locks none). The device reaches memory only through these
//     mappings, under the backend's lock: once UnmapDma returns, the device never touches the
//     unmapped memory again.
//
// Status codes, where the kernel's errno and DeviceBackend's contract differ, follow the
// contract: unknown region index NOT_FOUND (kernel EINVAL); a region without the read/write
// flag, including every zero-size region and a ROM write, PERMISSION_DENIED (kernel EINVAL);
// an access reaching past the region OUT_OF_RANGE (kernel EINVAL or a short transfer for BARs,
// EFAULT for config); BAR access with memory decode off FAILED_PRECONDITION (kernel EIO); Reset
// without reset support FAILED_PRECONDITION (kernel EINVAL). Everything else maps the kernel's
// errno as ErrnoError does: EINVAL INVALID_ARGUMENT, EEXIST ALREADY_EXISTS, ENOSPC
// RESOURCE_EXHAUSTED, EBUSY FAILED_PRECONDITION, ENOTTY UNIMPLEMENTED. UnmapDma of a range that
// holds no mapping succeeds, as the kernel's does (it reports 0 bytes unmapped). Disabling an
// IRQ index that is not enabled is INVALID_ARGUMENT, as in the kernel.
//
// Other deliberate differences from the kernel:
//   - The backend keeps duplicates of the eventfds it is given. The kernel drops a resample
//     (unmask) eventfd when its last fd is closed; here it stays registered until replaced or
//     torn down through SetIrqs.
//   - BAR0 is reported mmappable, as the kernel reports it, but this backend offers no mapping:
//     users go through ReadRegion/WriteRegion.
//   - MapDma cannot pin memory, so it does not check that host_address is mapped (the kernel
//     returns EFAULT); the caller must pass memory it owns, as DmaMap's contract says.
//   - A blocked DMA is all-or-nothing: nothing is copied when any byte of the transfer faults
//     (QEMU copies the accessible part).
//   - Reset ("edu,reset" only) returns edu's registers to power-on and cancels pending work;
//     config space keeps its state, as it does under the kernel's save/restore around a reset.
//
// Structure: sim_backend.cc holds the device, the region accesses and the worker; the kernel's
// parts around the device are separate classes, all guarded by the backend's one mutex:
// SimConfigSpace (sim_config_space.h, vfio_pci_config.c), SimInterrupts (sim_interrupts.h,
// vfio_pci_intrs.c) and SimIommu (sim_iommu.h, vfio_iommu_type1.c).
//
// Threading: every method is thread-safe (one absl::Mutex). One worker thread per backend completes
// the device's timed work (factorial, DMA) and watches the INTx resample eventfd; Start()
// creates it and its wake eventfd (nothing before: the daemon's jail forks and unshares, which
// needs a single-threaded process), and the destructor joins it. Before Start() every method
// works, but timed work does not complete and a resample eventfd is not watched. No method
// blocks beyond the mutex.
#ifndef VFIOD_DAEMON_SIM_SIM_BACKEND_H_
#define VFIOD_DAEMON_SIM_SIM_BACKEND_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/backend/device_backend.h"

namespace vfiod {

struct SimEduOptions {
  bool reset_supported = false;  // VFIO_DEVICE_FLAGS_RESET and a working Reset()
  int iommu_address_width = 39;  // 39 or 48: the last usable IOVA is 2^width - 1
  std::chrono::nanoseconds factorial_delay = std::chrono::milliseconds(1);
  std::chrono::nanoseconds dma_delay = std::chrono::milliseconds(2);
  // The RLIMIT_MEMLOCK, in bytes, that MapDma charges pinned pages against: the daemon passes
  // --max-dma-bytes (CreateSimulatedBackend). nullopt: the process's soft limit, read at each
  // MapDma as type1 reads it (for tests and tools outside the jail, whose seccomp policy does
  // not allow reading it).
  std::optional<uint64_t> memlock_limit;
};

// `spec` is "edu" followed by optional comma-separated flags: "reset" (advertise and implement
// VFIO_DEVICE_RESET) and "aw=39" / "aw=48" (IOMMU address width). INVALID_ARGUMENT names an
// unknown device or flag. `memlock_limit`: SimEduOptions::memlock_limit. The daemon passes
// --max-dma-bytes, the RLIMIT_MEMLOCK its jail sets: a host whose hard limit clamps the real
// rlimit below that (no CAP_SYS_RESOURCE) constrains only the kernel backend, the one that pins
// host memory, so the simulated device keeps the budget the daemon was given.
absl::StatusOr<std::unique_ptr<DeviceBackend>> CreateSimulatedBackend(
    absl::string_view spec, std::optional<uint64_t> memlock_limit = std::nullopt);

// The same device with every option spelled out (tests use the delays).
absl::StatusOr<std::unique_ptr<DeviceBackend>> CreateSimulatedEdu(const SimEduOptions& options);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_SIM_SIM_BACKEND_H_
