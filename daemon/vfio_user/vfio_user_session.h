// VfioUserSession: one vfio-user connection's commands, answered through the device model.
//
// The first command must be VERSION: it negotiates the capabilities (negotiation.h) and makes
// the connection the device's owner (SessionManager::ClaimOwnership; a spawned connection is
// the owner from the start). A connection that cannot own the device gets EBUSY (another
// session owns it) or EPERM (its uid may not own it) and is closed; so is one whose first
// command is not a valid VERSION. Every later command runs as an owner operation
// (SessionManager::OwnerScope), so owner loss never interleaves with it.
//
// Commands served, with the kernel's VFIO semantics (the device model validates every value):
// DMA_MAP/DMA_UNMAP (dma_windows.h), DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (with the region
// type capability; never mmap: no region fd is given out), DEVICE_GET_REGION_IO_FDS (none),
// DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS (eventfds passed as fds, bools inline), REGION_READ and
// REGION_WRITE on BARs, the ROM and config space as region 7, DEVICE_RESET. QEMU sends one
// VFIO eventfd array in pieces (runs of valid fds and of -1 entries, at most max_msg_fds
// each); for MSI and MSI-X, whose vectors vfio-pci enables as one block, a piece that reaches
// beyond the enabled block is applied as QEMU would apply the whole array to the kernel: the
// index is disabled and enabled again with every vector so far (the earlier pieces' eventfds
// are kept as duplicates for this). Anything else
// (commands not negotiated, server-to-client commands, unknown numbers) is answered with an
// error. Every payload size, argsz, fd count, offset and count is checked before the device
// model is called; a failed command changes nothing and closes the fds it carried.
//
// Thread-safety: not thread-safe; one connection thread drives it. The objects passed in must
// outlive it.
#ifndef VFIOD_DAEMON_VFIO_USER_VFIO_USER_SESSION_H_
#define VFIOD_DAEMON_VFIO_USER_VFIO_USER_SESSION_H_

#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "daemon/base/event_fd.h"
#include "daemon/pci/irq_types.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/session_manager.h"
#include "daemon/transport/connection_registry.h"
#include "daemon/vfio_user/dma_windows.h"
#include "daemon/vfio_user/message_stream.h"
#include "daemon/vfio_user/negotiation.h"

namespace vfiod::vfio_user {

// The errno a status stands for in an error reply: the errno a failed system call recorded in
// the message ("(errno N)"), else one that matches the code the way the kernel's VFIO would.
uint32_t ErrnoFor(const absl::Status& status);

class VfioUserSession {
 public:
  VfioUserSession(PciDevice* device, SessionManager* sessions, DmaWindows* windows,
                  ConnectionId id, const ServerLimits& limits);

  // What to send back for one command.
  struct Reply {
    uint32_t error = 0;                 // 0: success; else an errno (the reply has no payload)
    absl::Span<const uint8_t> payload;  // valid until the next Handle()
    bool close = false;                 // end the connection after replying
  };
  Reply Handle(Message& message);

  // After a successful VERSION; nullopt before.
  const std::optional<Negotiated>& negotiated() const { return negotiated_; }

 private:
  // Each returns the reply payload (in reply_) or the error.
  absl::Status Version(const Message& message);
  absl::Status DmaMap(Message& message);
  absl::Status DmaUnmap(const Message& message);
  absl::Status GetDeviceInfo(const Message& message);
  absl::Status GetRegionInfo(const Message& message);
  absl::Status GetRegionIoFds(const Message& message);
  absl::Status GetIrqInfo(const Message& message);
  absl::Status SetIrqs(Message& message);
  absl::Status RegionRead(const Message& message);
  absl::Status RegionWrite(const Message& message);
  absl::Status Reset(const Message& message);

  absl::Status Dispatch(Message& message);
  // The region access's target after its checks: the payload header and the region.
  absl::StatusOr<RegionAccessPayload> CheckRegionAccess(const char* operation,
                                                        absl::Span<const uint8_t> payload,
                                                        bool write) const;
  absl::Status ReadConfigRange(uint64_t offset, absl::Span<uint8_t> data);
  absl::Status WriteConfigRange(uint64_t offset, absl::Span<const uint8_t> data);

  // SET_IRQS for MSI/MSI-X triggers with eventfds (see the file comment).
  absl::Status SetMsiTriggers(IrqRequest request);

  template <typename T>
  void SetReply(const T& value) {
    reply_.resize(sizeof(T));
    std::memcpy(reply_.data(), &value, sizeof(T));
  }

  PciDevice* const device_;
  SessionManager* const sessions_;
  DmaWindows* const windows_;
  const ConnectionId id_;
  const ServerLimits limits_;
  std::optional<Negotiated> negotiated_;
  std::vector<uint8_t> reply_;
  // Per MSI (0) and MSI-X (1): the vectors this session enabled and a duplicate of each one's
  // trigger eventfd.
  struct MsiTriggers {
    uint32_t enabled = 0;
    std::vector<std::optional<EventFd>> eventfds;
  };
  MsiTriggers msi_[2];
};

}  // namespace vfiod::vfio_user

#endif  // VFIOD_DAEMON_VFIO_USER_VFIO_USER_SESSION_H_
