#include "daemon/backend/device_backend.h"

#include <linux/vfio.h>

#include <limits>

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

IrqSetForm FormOf(const IrqSet& set) {
  IrqSetForm form;
  form.index = set.index;
  form.start = set.start;
  form.count = set.count;
  form.action = set.action;
  form.data = set.data;
  form.bools = set.bools.size();
  form.eventfds = set.eventfds.size();
  return form;
}

absl::string_view IrqSetDataName(IrqSet::Data data) {
  switch (data) {
    case IrqSet::Data::kNone:
      return "none";
    case IrqSet::Data::kBool:
      return "bool";
    case IrqSet::Data::kEventfd:
      return "eventfd";
  }
  return "unknown";
}

absl::Status CheckIrqSetIndex(const IrqSetForm& form) {
  const uint32_t raw = static_cast<uint32_t>(form.index);
  if (raw >= kNumPciIrqIndexes) {
    return absl::InvalidArgumentError(absl::StrCat("unknown IRQ index ", raw));
  }
  return absl::OkStatus();
}

absl::Status CheckIrqSetData(const IrqSetForm& form) {
  switch (form.action) {
    case IrqAction::kTrigger:
    case IrqAction::kMask:
    case IrqAction::kUnmask:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown action ", static_cast<int>(form.action)));
  }
  switch (form.data) {
    case IrqSet::Data::kNone:
    case IrqSet::Data::kBool:
    case IrqSet::Data::kEventfd:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown data form ", static_cast<int>(form.data)));
  }
  const absl::string_view name = IrqSetDataName(form.data);
  if (form.data != IrqSet::Data::kBool && form.bools != 0) {
    return absl::InvalidArgumentError(absl::StrCat(form.bools, " bools given with data ", name));
  }
  if (form.data != IrqSet::Data::kEventfd && form.eventfds != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(form.eventfds, " eventfds given with data ", name));
  }
  if (form.data == IrqSet::Data::kBool && form.bools != form.count) {
    return absl::InvalidArgumentError(
        absl::StrCat(form.bools, " bools for ", form.count, " vectors"));
  }
  if (form.data == IrqSet::Data::kEventfd && form.eventfds != form.count) {
    return absl::InvalidArgumentError(
        absl::StrCat(form.eventfds, " eventfds for ", form.count, " vectors"));
  }
  return absl::OkStatus();
}

absl::Status CheckIrqSetEnd(const IrqSetForm& form) {
  if (form.count >= std::numeric_limits<uint32_t>::max() - form.start) {
    return absl::InvalidArgumentError(
        absl::StrCat("start ", form.start, " + count ", form.count, " overflows"));
  }
  return absl::OkStatus();
}

absl::Status CheckIrqSetVectors(const IrqSetForm& form, uint32_t available) {
  const uint64_t end = uint64_t{form.start} + form.count;  // cannot wrap in 64 bits
  if (form.start >= available || end > available) {
    return absl::InvalidArgumentError(absl::StrCat("vector range [", form.start, ", ", end,
                                                   ") exceeds the ", available, " vectors of ",
                                                   IrqIndexName(form.index)));
  }
  return absl::OkStatus();
}

}  // namespace vfiod
