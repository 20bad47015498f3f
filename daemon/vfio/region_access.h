// How a region access becomes device accesses: the rules of Linux 6.1's vfio_pci_rdwr.c,
// applied by the daemon itself so that the device sees the same 4/2/1-byte accesses on every
// kernel and on the simulated backend. Checked against the source: 6.1's do_io_rw issues 4-, 2-
// and 1-byte accesses only (its ioread64/iowrite64 serve ioeventfds alone), so an aligned
// 8-byte access is two 4-byte ones, as here. vfio_pci_core_do_io_rw gained 8-byte accesses
// (ioread64/iowrite64 on 64-bit) in later kernels; vfiod keeps 6.1's split, the lab's kernel,
// and says so in ReadRegion's documentation (proto/vfiod/v1/vfiod.proto).
//
// Pure functions: thread-safe, no system calls.
#ifndef VFIOD_DAEMON_VFIO_REGION_ACCESS_H_
#define VFIOD_DAEMON_VFIO_REGION_ACCESS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "daemon/backend/device_backend.h"

namespace vfiod {

// The size of the next device access at `offset` with `remaining` bytes (> 0) to go: 4 when
// at least 4 remain and offset is 4-aligned, else 2 when at least 2 remain and offset is
// 2-aligned, else 1.
uint32_t NaturalAccessSize(uint64_t offset, uint64_t remaining);

struct AccessChunk {
  uint64_t offset = 0;  // region offset
  uint32_t size = 0;    // 1, 2 or 4

  friend bool operator==(const AccessChunk& a, const AccessChunk& b) {
    return a.offset == b.offset && a.size == b.size;
  }
};

// The device accesses for [offset, offset + size), in order. The caller has checked that the
// range does not wrap (CheckRegionAccess).
std::vector<AccessChunk> SplitRegionAccess(uint64_t offset, uint64_t size);

// DeviceBackend's rules for an access to `region`: PERMISSION_DENIED without the read (write)
// flag, which covers every zero-size (unimplemented) region; then CheckRegionBounds
// (device_backend.h): OUT_OF_RANGE when [offset, offset + size) is not inside the region. `op`
// starts the message ("ReadRegion").
absl::Status CheckRegionAccess(absl::string_view op, const RegionInfo& region, uint64_t offset,
                               uint64_t size, bool write);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_REGION_ACCESS_H_
