// Interrupt types of the device model, shared by PciDevice and IrqManager (header only, so that
// both can use them without depending on each other).
#ifndef VFIOD_DAEMON_PCI_IRQ_TYPES_H_
#define VFIOD_DAEMON_PCI_IRQ_TYPES_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/event_fd.h"

namespace vfiod {

// A SET_IRQS request as the service decoded it; the eventfds are owned (already checked to be
// eventfds by EventFd::Adopt).
struct IrqRequest {
  enum class Data { kNone, kBool, kEventfd, kWatch };
  IrqIndex index = IrqIndex::kIntx;
  uint32_t start = 0;
  uint32_t count = 0;
  IrqAction action = IrqAction::kTrigger;
  Data data = Data::kNone;
  std::vector<bool> bools;                      // kBool: exactly `count` values
  std::vector<std::optional<EventFd>> eventfds;  // kEventfd: exactly `count`; nullopt = remove
};

// Maskable only because the IrqManager emulates it: MSI and MSI-X with vectors, without the
// backend's VFIO_IRQ_INFO_MASKABLE (the kernel cannot mask them).
inline bool IrqMaskEmulated(const IrqInfo& info) {
  return !info.maskable && info.count > 0 &&
         (info.index == IrqIndex::kMsi || info.index == IrqIndex::kMsix);
}
// Whether MASK/UNMASK work on `info`'s index as clients see it: the backend's flag (INTx on
// Linux) or the emulation. DeviceInfo and vfio-user's DEVICE_GET_IRQ_INFO report this.
inline bool IrqIndexMaskable(const IrqInfo& info) {
  return info.maskable || IrqMaskEmulated(info);
}

struct IrqVectorState {
  // kDaemonRequest: REQ only, no trigger of the owner's; the daemon's own eventfd, which the
  // host signals when it wants the device back (IrqManager::Start's on_host_request).
  enum class Trigger { kNone, kClientEventfd, kWatch, kDaemonRequest };
  uint32_t vector = 0;
  Trigger trigger = Trigger::kNone;
  bool masked = false;
  // MSI/MSI-X: an interrupt arrived while the vector was masked (the emulated pending bit; it
  // is delivered, and cleared, at the unmask).
  bool pending = false;
  bool unmask_eventfd = false;
  uint64_t delivered = 0;
};

struct IrqIndexState {
  IrqIndex index = IrqIndex::kIntx;
  bool enabled = false;                 // by the owner (REQ's kDaemonRequest leaves it false)
  std::vector<IrqVectorState> vectors;  // every vector the index has
};

struct IrqEvent {
  IrqIndex index = IrqIndex::kIntx;
  uint32_t vector = 0;
  uint64_t count = 0;
  uint64_t timestamp_ns = 0;  // CLOCK_MONOTONIC
};

// A WatchIrqs subscriber's queue. Thread-safe. Events are queued from the moment of
// subscription; a subscriber that falls more than 1024 events behind loses the oldest.
// A subscriber either blocks in Next(), or sets a listener and takes events with TryNext()
// when told (an asynchronous stream, which holds no thread while its reader does not read).
class IrqSubscription {
 public:
  virtual ~IrqSubscription() = default;
  // Blocks until an event is queued (returns it), `deadline` passes or the subscription is
  // closed (both return nullopt; closed() tells which).
  virtual std::optional<IrqEvent> Next(absl::Time deadline) = 0;
  // The oldest queued event, or nullopt at once when none is queued.
  virtual std::optional<IrqEvent> TryNext() = 0;
  virtual bool closed() const = 0;
  // `listener` is called, on the thread that queues events or closes the subscription, after
  // each batch of events is queued and when the subscription closes; once at once if events are
  // already queued or it is closed. It must not block, and must not call SetListener. Replacing
  // or clearing it (nullptr) waits for a call in progress, so once SetListener(nullptr) returns
  // the old listener is never called again.
  virtual void SetListener(std::function<void()> listener) = 0;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_PCI_IRQ_TYPES_H_
