// VfioDevice: an open VFIO device fd (from VFIO_GROUP_GET_DEVICE_FD).
//
// Queries (device, region and IRQ info), VFIO_DEVICE_SET_IRQS, VFIO_DEVICE_RESET, and region
// access with pread/pwrite at the region's fd offset, split into naturally aligned 4/2/1-byte
// accesses (region_access.h). Works on any fd: tests use a memfd or /dev/null.
//
// Move-only; owns the fd. Every method is const and thread-safe: pread/pwrite carry their own
// position and the kernel serialises the ioctls. Region accesses block for as long as the
// device takes to answer.
#ifndef VFIOD_DAEMON_VFIO_VFIO_DEVICE_H_
#define VFIOD_DAEMON_VFIO_VFIO_DEVICE_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/unique_fd.h"
#include "daemon/vfio/vfio_caps.h"

namespace vfiod {

struct VfioDeviceInfo {
  uint32_t flags = 0;  // VFIO_DEVICE_FLAGS_*
  uint32_t num_regions = 0;
  uint32_t num_irqs = 0;
};

// Whether VFIO_DEVICE_GET_REGION_INFO failing with `error` for `index` means "this region is
// not implemented" rather than a failure: vfio-pci counts the VGA region in num_regions on
// every device but answers EINVAL for it unless the device is a VGA device with VGA support
// built in (Linux 6.1, vfio_pci_ioctl_get_region_info).
bool RegionAbsentOnError(uint32_t index, int error);

// The region as reported when it is absent: `index`, size 0, no flags.
VfioRegion AbsentRegion(uint32_t index);

class VfioDevice {
 public:
  // `name` ("0000:00:03.0") is for messages.
  VfioDevice(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}

  VfioDevice(VfioDevice&&) = default;
  VfioDevice& operator=(VfioDevice&&) = default;

  // VFIO_DEVICE_GET_INFO.
  absl::StatusOr<VfioDeviceInfo> GetInfo() const;
  // VFIO_DEVICE_GET_REGION_INFO for `index`, in two passes when the capability chain does not
  // fit, parsed by ParseRegionInfo. A region the kernel counts in num_regions but refuses to
  // describe (RegionAbsentOnError) is reported absent: size 0, no flags.
  absl::StatusOr<VfioRegion> GetRegionInfo(uint32_t index) const;
  // VFIO_DEVICE_GET_IRQ_INFO for `index`. EINVAL for the ERR index (which vfio-pci offers only
  // on PCIe devices) gives count 0.
  absl::StatusOr<IrqInfo> GetIrqInfo(uint32_t index) const;

  // VFIO_DEVICE_SET_IRQS with EncodeIrqSet's buffer.
  absl::Status SetIrqs(const IrqSet& set) const;
  // VFIO_DEVICE_RESET.
  absl::Status Reset() const;

  // Region accesses with DeviceBackend's contract (CheckRegionAccess, then one pread/pwrite
  // per naturally aligned chunk). EIO from the kernel (BAR with memory or I/O decode off) is
  // FAILED_PRECONDITION; other errors keep their errno; a short transfer is INTERNAL. Bytes
  // of a failed read are unspecified; chunks before a failed write were written.
  absl::Status ReadRegion(const VfioRegion& region, uint64_t offset,
                          absl::Span<uint8_t> data) const;
  absl::Status WriteRegion(const VfioRegion& region, uint64_t offset,
                           absl::Span<const uint8_t> data) const;

  const UniqueFd& fd() const { return fd_; }
  const std::string& name() const { return name_; }

 private:
  absl::Status Access(const VfioRegion& region, uint64_t offset, uint8_t* read_into,
                      const uint8_t* write_from, uint64_t size) const;

  UniqueFd fd_;
  std::string name_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_VFIO_DEVICE_H_
