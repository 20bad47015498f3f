#include "daemon/vfio/vfio_device.h"

#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/status_macros.h"
#include "daemon/vfio/irq_set_encoding.h"
#include "daemon/vfio/region_access.h"

namespace vfiod {
namespace {

// The largest vfio_region_info buffer accepted from the kernel's argsz.
constexpr uint32_t kMaxInfoBytes = 1 << 20;

}  // namespace

bool RegionAbsentOnError(uint32_t index, int error) {
  return index == VFIO_PCI_VGA_REGION_INDEX && error == EINVAL;
}

VfioRegion AbsentRegion(uint32_t index) {
  VfioRegion region;
  region.info.index = index;
  return region;
}

absl::StatusOr<VfioDeviceInfo> VfioDevice::GetInfo() const {
  vfio_device_info info = {};
  info.argsz = sizeof(info);
  if (::ioctl(fd_.get(), VFIO_DEVICE_GET_INFO, &info) != 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_DEVICE_GET_INFO on ", name_));
  }
  return VfioDeviceInfo{info.flags, info.num_regions, info.num_irqs};
}

absl::StatusOr<VfioRegion> VfioDevice::GetRegionInfo(uint32_t index) const {
  std::vector<uint8_t> buffer(sizeof(vfio_region_info));
  for (int pass = 0; pass < 2; ++pass) {
    vfio_region_info request = {};
    request.argsz = static_cast<uint32_t>(buffer.size());
    request.index = index;
    std::fill(buffer.begin(), buffer.end(), 0);
    std::memcpy(buffer.data(), &request, sizeof(request));
    if (::ioctl(fd_.get(), VFIO_DEVICE_GET_REGION_INFO, buffer.data()) != 0) {
      const int error = errno;
      if (RegionAbsentOnError(index, error)) return AbsentRegion(index);
      return ErrnoError(error,
                        absl::StrCat("VFIO_DEVICE_GET_REGION_INFO region ", index, " on ", name_));
    }
    uint32_t wanted;
    std::memcpy(&wanted, buffer.data(), sizeof(wanted));
    if (wanted <= buffer.size()) {
      VFIOD_ASSIGN_OR_RETURN(VfioRegion region, ParseRegionInfo(buffer));
      if (region.info.index != index) {
        return absl::InternalError(absl::StrCat("VFIO_DEVICE_GET_REGION_INFO region ", index,
                                                " on ", name_, " answered for region ",
                                                region.info.index));
      }
      return region;
    }
    if (wanted > kMaxInfoBytes) {
      return absl::InternalError(absl::StrCat("VFIO_DEVICE_GET_REGION_INFO region ", index, " on ",
                                              name_, ": the kernel asks for argsz ", wanted,
                                              ", more than ", kMaxInfoBytes));
    }
    buffer.resize(wanted);
  }
  return absl::InternalError(absl::StrCat("VFIO_DEVICE_GET_REGION_INFO region ", index, " on ",
                                          name_, ": argsz still grew on the second call"));
}

absl::StatusOr<IrqInfo> VfioDevice::GetIrqInfo(uint32_t index) const {
  IrqInfo result;
  result.index = static_cast<IrqIndex>(index);
  vfio_irq_info info = {};
  info.argsz = sizeof(info);
  info.index = index;
  if (::ioctl(fd_.get(), VFIO_DEVICE_GET_IRQ_INFO, &info) != 0) {
    const int error = errno;
    if (error == EINVAL && index == VFIO_PCI_ERR_IRQ_INDEX) return result;
    return ErrnoError(error, absl::StrCat("VFIO_DEVICE_GET_IRQ_INFO index ", index, " on ", name_));
  }
  result.count = info.count;
  result.eventfd = (info.flags & VFIO_IRQ_INFO_EVENTFD) != 0;
  result.maskable = (info.flags & VFIO_IRQ_INFO_MASKABLE) != 0;
  result.automasked = (info.flags & VFIO_IRQ_INFO_AUTOMASKED) != 0;
  result.noresize = (info.flags & VFIO_IRQ_INFO_NORESIZE) != 0;
  return result;
}

absl::Status VfioDevice::SetIrqs(const IrqSet& set) const {
  VFIOD_ASSIGN_OR_RETURN(std::vector<uint8_t> buffer, EncodeIrqSet(set));
  if (::ioctl(fd_.get(), VFIO_DEVICE_SET_IRQS, buffer.data()) != 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_DEVICE_SET_IRQS ", DescribeIrqSet(set)));
  }
  return absl::OkStatus();
}

absl::Status VfioDevice::Reset() const {
  if (::ioctl(fd_.get(), VFIO_DEVICE_RESET) != 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_DEVICE_RESET on ", name_));
  }
  return absl::OkStatus();
}

absl::Status VfioDevice::ReadRegion(const VfioRegion& region, uint64_t offset,
                                    absl::Span<uint8_t> data) const {
  VFIOD_RETURN_IF_ERROR(
      CheckRegionAccess("ReadRegion", region.info, offset, data.size(), /*write=*/false));
  return Access(region, offset, data.data(), nullptr, data.size());
}

absl::Status VfioDevice::WriteRegion(const VfioRegion& region, uint64_t offset,
                                     absl::Span<const uint8_t> data) const {
  VFIOD_RETURN_IF_ERROR(
      CheckRegionAccess("WriteRegion", region.info, offset, data.size(), /*write=*/true));
  return Access(region, offset, nullptr, data.data(), data.size());
}

absl::Status VfioDevice::Access(const VfioRegion& region, uint64_t offset, uint8_t* read_into,
                                const uint8_t* write_from, uint64_t size) const {
  const char* op = read_into != nullptr ? "ReadRegion" : "WriteRegion";
  constexpr uint64_t kMaxPosition = static_cast<uint64_t>(std::numeric_limits<off_t>::max());
  // CheckRegionAccess bounded offset + size by the region's size.
  if (region.fd_offset > kMaxPosition || offset + size > kMaxPosition - region.fd_offset) {
    return absl::OutOfRangeError(absl::StrCat(op, ": region ", region.info.index, " offset 0x",
                                              absl::Hex(offset), " size ", size,
                                              " lies beyond the largest file offset"));
  }
  uint64_t done = 0;
  while (done < size) {
    const uint64_t at = offset + done;
    const uint32_t chunk = NaturalAccessSize(at, size - done);
    const off_t position = static_cast<off_t>(region.fd_offset + at);
    ssize_t n;
    do {
      n = read_into != nullptr ? ::pread(fd_.get(), read_into + done, chunk, position)
                               : ::pwrite(fd_.get(), write_from + done, chunk, position);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      const int error = errno;
      const std::string call =
          absl::StrCat(read_into != nullptr ? "pread" : "pwrite", " region ", region.info.index,
                       " offset 0x", absl::Hex(at), " size ", chunk, " on ", name_);
      const absl::Status status = ErrnoError(error, call);
      if (error == EIO) {
        return absl::FailedPreconditionError(absl::StrCat(
            op, ": ", status.message(),
            ": the device refused the access (memory or I/O decode disabled in the command "
            "register?)"));
      }
      return absl::Status(status.code(), absl::StrCat(op, ": ", status.message()));
    }
    if (static_cast<uint64_t>(n) != chunk) {
      return absl::InternalError(absl::StrCat(op, ": region ", region.info.index, " offset 0x",
                                              absl::Hex(at), ": the kernel transferred ", n, " of ",
                                              chunk, " bytes"));
    }
    done += chunk;
  }
  return absl::OkStatus();
}

}  // namespace vfiod
