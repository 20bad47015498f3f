// VfioUserServer: serves vfio-user connections (QEMU's `-device vfio-user-pci`) over the same
// device model and sessions as gRPC. The transport accepts and checks each connection and hands
// it over (ConnectionHandler); this server runs one thread per connection, blocking in recvmsg,
// so a request costs one receive and one send (message_stream.h).
//
// Each connection is a session (SessionManager): it becomes the owner at VERSION or is closed
// (vfio_user_session.h), and when it ends, for any reason, the session ends and owner loss runs
// the daemon's OwnerCleanup, where this server registered the release of its DMA windows. A
// connection that sends no VERSION within `version_timeout` is closed, so a silent peer holds
// its slot (and thread) for that long at most; the registry's vfio-user quota bounds how many
// wait at once.
//
// Thread-safety: Adopt() is called from the transport's thread; Shutdown() from any thread
// other than a connection's. Threads start only in Adopt(), after the jail.
#ifndef VFIOD_DAEMON_VFIO_USER_VFIO_USER_SERVER_H_
#define VFIOD_DAEMON_VFIO_USER_VFIO_USER_SERVER_H_

#include <atomic>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/base/owner_cleanup.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/session_manager.h"
#include "daemon/transport/transport.h"
#include "daemon/vfio_user/dma_windows.h"
#include "daemon/vfio_user/negotiation.h"

namespace vfiod::vfio_user {

struct ServerOptions {
  ServerLimits limits;
  absl::Duration version_timeout = absl::Seconds(5);
};

// The limits this server offers for `device` within the daemon's own limits: max_msg_fds 16 (the
// most QEMU accepts; a larger IRQ index arrives in pieces), the transfer size, DMA windows and
// page sizes from the device's limits and IOMMU.
ServerLimits LimitsFor(const PciDevice& device);

// The most bytes one message may have under `limits`: the largest REGION_WRITE, with room for
// the VERSION JSON and SET_IRQS bools.
size_t MaxMessageBytes(const ServerLimits& limits);

class VfioUserServer final : public ConnectionHandler {
 public:
  // Registers the release of the DMA windows with `cleanup`. Everything must outlive the server.
  VfioUserServer(PciDevice* device, SessionManager* sessions, OwnerCleanup* cleanup,
                 ServerOptions options);
  ~VfioUserServer() override;

  void Adopt(ConnectionSlot slot, UniqueFd socket, const PeerCredentials& peer,
             bool spawned) override;
  // A connection that has not completed VERSION, the oldest, is shut down and its slot freed,
  // so that peers that connect and stay silent cannot keep the owner out.
  bool EvictIdle() override;

  // Ends every connection (each ends its session) and joins their threads; later connections
  // are closed at once. Idempotent.
  void Shutdown();


  // The fds a connection may hold at once (its socket and one message's fds), for the jail's
  // RLIMIT_NOFILE.
  static uint64_t FdsPerConnection(const ServerLimits& limits);


 private:
  struct Connection {
    ConnectionSlot slot;
    UniqueFd socket;
    PeerCredentials peer;
    bool spawned = false;
    std::atomic<bool> negotiated{false};  // VERSION succeeded: a session, never evicted
  };

  void Serve(Connection* connection);
  void Finish(ConnectionId id);
  void JoinFinished();

  PciDevice* const device_;
  SessionManager* const sessions_;
  const ServerOptions options_;
  DmaWindows windows_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<ConnectionId, std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
  std::map<ConnectionId, std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> finished_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vfiod::vfio_user

#endif  // VFIOD_DAEMON_VFIO_USER_VFIO_USER_SERVER_H_
