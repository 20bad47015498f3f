#include "daemon/vfio/vfio_backend.h"

#include <linux/vfio.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/format.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/vfio/device_resolver.h"

namespace vfiod {

namespace {

// More regions than any vfio-pci device has (9 fixed plus a few device-specific ones); a
// larger num_regions is a kernel answer not to loop on.
constexpr uint32_t kMaxRegions = 256;

}  // namespace

VfioBackend::VfioBackend(VfioContainer container, VfioGroup group, VfioDevice device,
                         BackendInfo info, std::vector<VfioRegion> regions)
    : container_(std::move(container)),
      group_(std::move(group)),
      device_(std::move(device)),
      info_(std::move(info)),
      regions_(std::move(regions)) {}

VfioBackend::~VfioBackend() {
  if (!fds_pinned_) return;
  // Left open for the kernel to close at exit (see the header); see FdsForJail for the casts.
  (void)const_cast<UniqueFd&>(device_.fd()).Release();
  (void)const_cast<UniqueFd&>(group_.fd()).Release();
  (void)const_cast<UniqueFd&>(container_.fd()).Release();
}

DeviceBackend::JailFds VfioBackend::FdsForJail() {
  // The three objects are this backend's own non-const members, so writing through their
  // const accessors is well defined; only the jail does it, once, before any thread exists.
  fds_pinned_ = true;
  JailFds fds;
  fds.vfio_container = const_cast<UniqueFd*>(&container_.fd());
  fds.vfio_group = const_cast<UniqueFd*>(&group_.fd());
  fds.vfio_device = const_cast<UniqueFd*>(&device_.fd());
  return fds;
}

absl::StatusOr<std::unique_ptr<VfioBackend>> VfioBackend::Open(absl::string_view device,
                                                               const VfioPaths& paths) {
  const VfioDeviceResolver resolver(paths.sysfs_root, paths.dev_root);
  VFIOD_ASSIGN_OR_RETURN(const ResolvedDevice resolved, resolver.Resolve(device));
  const std::string& name = resolved.name;
  const std::string prefix = absl::StrCat(name, ": ");

  absl::StatusOr<VfioContainer> container = VfioContainer::Open(resolver.ContainerPath());
  if (!container.ok()) return Annotate(container.status(), name);

  const std::string group_path = resolver.GroupPath(resolved.iommu_group);
  absl::StatusOr<VfioGroup> group = VfioGroup::Open(group_path, resolved.iommu_group);
  if (!group.ok()) return Annotate(group.status(), name);
  absl::StatusOr<bool> viable = group->IsViable();
  if (!viable.ok()) return Annotate(viable.status(), name);
  if (!*viable) {
    return absl::FailedPreconditionError(absl::StrCat(
        prefix, "IOMMU group ", resolved.iommu_group, " (", group_path,
        ") is not viable: another device in the group is bound to a host driver; every device "
        "in it must be bound to vfio-pci or to no driver. The group's devices: ",
        resolver.DescribeGroupDevices(resolved.iommu_group)));
  }
  if (absl::Status s = group->SetContainer(*container); !s.ok()) return Annotate(s, name);
  if (absl::Status s = container->SetIommu(); !s.ok()) return Annotate(s, name);
  absl::StatusOr<ParsedIommuInfo> iommu = container->GetIommuInfo();
  if (!iommu.ok()) return Annotate(iommu.status(), name);
  absl::StatusOr<UniqueFd> device_fd = group->GetDeviceFd(name);
  if (!device_fd.ok()) return Annotate(device_fd.status(), name);
  VfioDevice vfio_device(*std::move(device_fd), name);

  BackendInfo info;
  info.kind = "vfio";
  info.name = name;
  info.iommu = iommu->info;
  if (!iommu->has_iova_ranges) {
    LogWarning("the IOMMU reports no usable IOVA ranges; assuming [0, 2^64-1]", {{"device", name}});
  }
  if (!iommu->has_dma_avail) {
    LogInfo("the IOMMU reports no DMA mapping limit; assuming the kernel default",
            {{"device", name}, {"dma_mappings", absl::StrCat(kDefaultDmaMappings)}});
  }

  absl::StatusOr<VfioDeviceInfo> device_info = vfio_device.GetInfo();
  if (!device_info.ok()) return Annotate(device_info.status(), name);
  if ((device_info->flags & VFIO_DEVICE_FLAGS_PCI) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(prefix, "VFIO_DEVICE_GET_INFO: flags 0x", absl::Hex(device_info->flags),
                     " lack VFIO_DEVICE_FLAGS_PCI: not a vfio-pci device"));
  }
  if (device_info->num_regions > kMaxRegions) {
    return absl::InternalError(absl::StrCat(prefix,
                                            "VFIO_DEVICE_GET_INFO: ", device_info->num_regions,
                                            " regions, more than ", kMaxRegions));
  }
  info.raw_flags = device_info->flags;
  info.reset_supported = (device_info->flags & VFIO_DEVICE_FLAGS_RESET) != 0;

  std::vector<VfioRegion> regions;
  const uint32_t region_count = std::max(device_info->num_regions, kNumPciRegions);
  for (uint32_t i = 0; i < region_count; ++i) {
    VfioRegion region;
    region.info.index = i;
    if (i < device_info->num_regions) {
      absl::StatusOr<VfioRegion> queried = vfio_device.GetRegionInfo(i);
      if (!queried.ok()) return Annotate(queried.status(), name);
      region = *std::move(queried);
    }
    LogDebug("vfio region", {{"device", name},
                             {"index", absl::StrCat(i)},
                             {"size", absl::StrCat("0x", absl::Hex(region.info.size))},
                             {"flags", absl::StrCat("0x", absl::Hex(region.raw_flags))},
                             {"fd_offset", absl::StrCat("0x", absl::Hex(region.fd_offset))}});
    info.regions.push_back(region.info);
    regions.push_back(std::move(region));
  }
  for (uint32_t i = 0; i < kNumPciIrqIndexes; ++i) {
    IrqInfo irq;
    irq.index = static_cast<IrqIndex>(i);
    if (i < device_info->num_irqs) {
      absl::StatusOr<IrqInfo> queried = vfio_device.GetIrqInfo(i);
      if (!queried.ok()) return Annotate(queried.status(), name);
      irq = *queried;
    }
    info.irqs.push_back(irq);
  }

  return std::unique_ptr<VfioBackend>(new VfioBackend(*std::move(container), *std::move(group),
                                                      std::move(vfio_device), std::move(info),
                                                      std::move(regions)));
}

absl::StatusOr<const VfioRegion*> VfioBackend::Region(const char* op, uint32_t index) const {
  if (index >= regions_.size()) {
    return absl::NotFoundError(
        absl::StrCat(op, ": region ", index, " does not exist (", regions_.size(), " regions)"));
  }
  return &regions_[index];
}

absl::Status VfioBackend::ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) {
  VFIOD_ASSIGN_OR_RETURN(const VfioRegion* region, Region("ReadRegion", index));
  return device_.ReadRegion(*region, offset, data);
}

absl::Status VfioBackend::WriteRegion(uint32_t index, uint64_t offset,
                                      absl::Span<const uint8_t> data) {
  VFIOD_ASSIGN_OR_RETURN(const VfioRegion* region, Region("WriteRegion", index));
  return device_.WriteRegion(*region, offset, data);
}

absl::Status VfioBackend::SetIrqs(const IrqSet& set) { return device_.SetIrqs(set); }

absl::Status VfioBackend::MapDma(const DmaMap& map) { return container_.MapDma(map); }

absl::Status VfioBackend::UnmapDma(uint64_t iova, uint64_t size) {
  VFIOD_ASSIGN_OR_RETURN(const uint64_t unmapped, container_.UnmapDma(iova, size));
  if (unmapped == size) return absl::OkStatus();
  const std::string what = absl::StrCat("VFIO_IOMMU_UNMAP_DMA iova 0x", absl::Hex(iova), " size 0x",
                                        absl::Hex(size), ": ");
  if (unmapped == 0) {
    return absl::NotFoundError(absl::StrCat(what, "nothing was mapped there"));
  }
  return absl::InternalError(absl::StrCat(what, "the kernel unmapped 0x", absl::Hex(unmapped),
                                          " bytes, not the whole range"));
}

absl::Status VfioBackend::Reset() {
  if (!info_.reset_supported) {
    return absl::FailedPreconditionError(
        absl::StrCat("Reset: ", info_.name, " does not support VFIO_DEVICE_RESET"));
  }
  return device_.Reset();
}

absl::StatusOr<std::unique_ptr<DeviceBackend>> OpenVfioBackend(absl::string_view device) {
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<VfioBackend> backend, VfioBackend::Open(device));
  return std::unique_ptr<DeviceBackend>(std::move(backend));
}

}  // namespace vfiod
