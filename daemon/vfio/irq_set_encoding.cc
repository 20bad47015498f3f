#include "daemon/vfio/irq_set_encoding.h"

#include <linux/vfio.h>

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace vfiod {
std::string DescribeIrqSet(const IrqSet& set) {
  return absl::StrCat(IrqIndexName(set.index), " ", IrqActionName(set.action), " data ",
                      IrqSetDataName(set.data), " start ", set.start, " count ", set.count);
}

absl::StatusOr<std::vector<uint8_t>> EncodeIrqSet(const IrqSet& set) {
  const std::string what = absl::StrCat("SetIrqs ", DescribeIrqSet(set), ": ");
  // DeviceBackend's shape rules that need no device facts; the kernel judges the index and
  // the range. Because the data always has `count` elements, the kernel never reads beyond the
  // buffer.
  const IrqSetForm form = FormOf(set);
  absl::Status status = CheckIrqSetData(form);
  if (status.ok()) status = CheckIrqSetEnd(form);
  if (!status.ok()) return absl::InvalidArgumentError(absl::StrCat(what, status.message()));
  uint32_t flags = 0;
  switch (set.action) {
    case IrqAction::kTrigger:
      flags |= VFIO_IRQ_SET_ACTION_TRIGGER;
      break;
    case IrqAction::kMask:
      flags |= VFIO_IRQ_SET_ACTION_MASK;
      break;
    case IrqAction::kUnmask:
      flags |= VFIO_IRQ_SET_ACTION_UNMASK;
      break;
  }
  uint64_t element = 0;
  switch (set.data) {
    case IrqSet::Data::kNone:
      flags |= VFIO_IRQ_SET_DATA_NONE;
      break;
    case IrqSet::Data::kBool:
      flags |= VFIO_IRQ_SET_DATA_BOOL;
      element = sizeof(uint8_t);
      break;
    case IrqSet::Data::kEventfd:
      flags |= VFIO_IRQ_SET_DATA_EVENTFD;
      element = sizeof(int32_t);
      break;
  }
  const uint64_t data_size = element * set.count;
  const uint64_t argsz = sizeof(vfio_irq_set) + data_size;
  if (argsz > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(what, "argsz ", argsz, " exceeds 32 bits"));
  }

  std::vector<uint8_t> buffer(static_cast<size_t>(argsz));
  vfio_irq_set header = {};
  header.argsz = static_cast<uint32_t>(argsz);
  header.flags = flags;
  header.index = static_cast<uint32_t>(set.index);
  header.start = set.start;
  header.count = set.count;
  std::memcpy(buffer.data(), &header, sizeof(header));
  uint8_t* data = buffer.data() + sizeof(vfio_irq_set);
  if (set.data == IrqSet::Data::kBool) {
    for (uint32_t i = 0; i < set.count; ++i) data[i] = set.bools[i] ? 1 : 0;
  } else if (set.data == IrqSet::Data::kEventfd) {
    for (uint32_t i = 0; i < set.count; ++i) {
      const int32_t fd = set.eventfds[i] == nullptr ? -1 : set.eventfds[i]->fd().get();
      std::memcpy(data + sizeof(int32_t) * i, &fd, sizeof(fd));
    }
  }
  return buffer;
}

}  // namespace vfiod
