#include "daemon/backend/device_backend.h"

#include <linux/vfio.h>

#include "absl/strings/str_cat.h"
#include "base/format.h"

namespace vfiod {

static_assert(kBar0RegionIndex == VFIO_PCI_BAR0_REGION_INDEX);
static_assert(kBar5RegionIndex == VFIO_PCI_BAR5_REGION_INDEX);
static_assert(kRomRegionIndex == VFIO_PCI_ROM_REGION_INDEX);
static_assert(kConfigRegionIndex == VFIO_PCI_CONFIG_REGION_INDEX);
static_assert(kVgaRegionIndex == VFIO_PCI_VGA_REGION_INDEX);
static_assert(kNumPciRegions == VFIO_PCI_NUM_REGIONS);
static_assert(static_cast<uint32_t>(IrqIndex::kIntx) == VFIO_PCI_INTX_IRQ_INDEX);
static_assert(static_cast<uint32_t>(IrqIndex::kMsi) == VFIO_PCI_MSI_IRQ_INDEX);
static_assert(static_cast<uint32_t>(IrqIndex::kMsix) == VFIO_PCI_MSIX_IRQ_INDEX);
static_assert(static_cast<uint32_t>(IrqIndex::kErr) == VFIO_PCI_ERR_IRQ_INDEX);
static_assert(static_cast<uint32_t>(IrqIndex::kReq) == VFIO_PCI_REQ_IRQ_INDEX);
static_assert(kNumPciIrqIndexes == VFIO_PCI_NUM_IRQS);

absl::Status CheckRegionBounds(absl::string_view op, const RegionInfo& region, uint64_t offset,
                               uint64_t size) {
  if (offset > region.size || size > region.size - offset) {
    return absl::OutOfRangeError(absl::StrCat(op, ": offset ", Hex(offset), " + size ", size,
                                              " is beyond region ", region.index, " of ",
                                              Hex(region.size), " bytes"));
  }
  return absl::OkStatus();
}

std::string IrqIndexName(IrqIndex index) {
  switch (index) {
    case IrqIndex::kIntx:
      return "INTx";
    case IrqIndex::kMsi:
      return "MSI";
    case IrqIndex::kMsix:
      return "MSI-X";
    case IrqIndex::kErr:
      return "ERR";
    case IrqIndex::kReq:
      return "REQ";
  }
  return absl::StrCat("index ", static_cast<uint32_t>(index));
}

absl::string_view IrqActionName(IrqAction action) {
  switch (action) {
    case IrqAction::kTrigger:
      return "TRIGGER";
    case IrqAction::kMask:
      return "MASK";
    case IrqAction::kUnmask:
      return "UNMASK";
  }
  return "UNKNOWN";
}

}  // namespace vfiod
