// The byte buffer of one VFIO_DEVICE_SET_IRQS call: struct vfio_irq_set followed by its data
// (one u8 per vector for DATA_BOOL, one s32 fd per vector for DATA_EVENTFD).
//
// Pure function: thread-safe, no system calls; the eventfds are only read for their numbers.
#ifndef VFIOD_DAEMON_VFIO_IRQ_SET_ENCODING_H_
#define VFIOD_DAEMON_VFIO_IRQ_SET_ENCODING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/backend/device_backend.h"

namespace vfiod {

// The buffer for `set`: argsz = sizeof(vfio_irq_set) + count * element size (checked: it must
// fit in 32 bits), flags = one DATA_* bit | one ACTION_* bit, index, start, count, then the
// data; a nullptr eventfd becomes -1. INVALID_ARGUMENT when DeviceBackend's shape rules that
// need no device facts fail (CheckIrqSetData: the data does not match the count, values
// attached to DATA_NONE, an unknown action or data kind; CheckIrqSetEnd: start + count
// reaches 2^32 - 1, which the kernel refuses); the kernel validates the rest (index, ranges,
// actions the index supports). Because the data always has `count` elements,
// the kernel never reads beyond the buffer.
absl::StatusOr<std::vector<uint8_t>> EncodeIrqSet(const IrqSet& set);

// "INTx trigger eventfd start 0 count 1", for messages.
std::string DescribeIrqSet(const IrqSet& set);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_IRQ_SET_ENCODING_H_
