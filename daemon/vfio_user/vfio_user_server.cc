#include "daemon/vfio_user/vfio_user_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/logging.h"
#include "daemon/transport/unix_socket.h"
#include "daemon/vfio_user/message_stream.h"
#include "daemon/vfio_user/protocol.h"
#include "daemon/vfio_user/vfio_user_session.h"

namespace vfiod::vfio_user {
namespace {

// The fds this server takes in one message. QEMU (hw/vfio-user: VFIO_USER_MAX_MAX_FDS) refuses
// a server that offers more than 16 ("malformed max_msg_fds") and ends the attach, so a larger
// offer (nvme's 65 MSI-X vectors) would lock QEMU out; QEMU sends a larger eventfd array in
// pieces of at most this many, which the session assembles (vfio_user_session.h).
constexpr uint32_t kMaxMsgFds = 16;
// Room for the VERSION JSON and SET_IRQS bools beyond the largest region access.
constexpr size_t kMessageSlack = 4096;

}  // namespace

ServerLimits LimitsFor(const PciDevice& device) {
  ServerLimits limits;
  limits.max_msg_fds = kMaxMsgFds;
  limits.max_data_xfer_size = device.limits().max_region_access_bytes;
  const uint32_t iommu_maps = device.description().backend.iommu.dma_mappings_available;
  limits.max_dma_maps = iommu_maps == 0 ? device.limits().max_dma_mappings
                                        : std::min(iommu_maps, device.limits().max_dma_mappings);
  limits.page_sizes = device.description().backend.iommu.page_size_bitmap;
  return limits;
}

uint64_t VfioUserServer::FdsPerConnection(const ServerLimits& limits) {
  return 1 + uint64_t{limits.max_msg_fds};
}

VfioUserServer::VfioUserServer(PciDevice* device, SessionManager* sessions,
                               OwnerCleanup* cleanup, ServerOptions options)
    : device_(device), sessions_(sessions), options_(options), windows_(device) {
  cleanup->Register(OwnerCleanup::Stage::kDma, "vfio-user DMA windows",
                    [this] { windows_.Clear(); });
}

VfioUserServer::~VfioUserServer() { Shutdown(); }

size_t MaxMessageBytes(const ServerLimits& limits) {
  return sizeof(Header) + sizeof(RegionAccessPayload) + limits.max_data_xfer_size +
         kMessageSlack;
}

void VfioUserServer::Adopt(ConnectionSlot slot, UniqueFd socket, const PeerCredentials& peer,
                           bool spawned) {
  // A thread that has ended keeps its stack until it is joined: reap before starting another.
  JoinFinished();
  absl::MutexLock lock(&mu_);
  if (stopping_) return;  // closes the socket and releases the slot
  const ConnectionId id = slot.id();
  auto connection = std::make_unique<Connection>();
  connection->slot = std::move(slot);
  connection->socket = std::move(socket);
  connection->peer = peer;
  connection->spawned = spawned;
  Connection* raw = connection.get();
  connections_.emplace(id, std::move(connection));
  threads_.emplace(id, std::thread([this, raw] { Serve(raw); }));
}

void VfioUserServer::Serve(Connection* connection) {
  const ConnectionId id = connection->slot.id();
  const std::string id_text = absl::StrCat(id);
  sessions_->OnConnectionOpened(id, connection->peer, connection->spawned);
  std::string reason = "peer closed";
  absl::Status blocking = SetBlocking(connection->socket);
  MessageStream stream(connection->socket, MaxMessageBytes(options_.limits),
                       options_.limits.max_msg_fds);
  VfioUserSession session(device_, sessions_, &windows_, id, options_.limits);
  absl::StatusOr<bool> readable = stream.WaitReadable(options_.version_timeout);
  if (!blocking.ok()) {
    reason = std::string(blocking.message());
  } else if (!readable.ok() || !*readable) {
    reason = "no VERSION in time";
  } else {
    while (true) {
      absl::StatusOr<std::optional<Message>> message = stream.Next();
      if (!message.ok()) {
        reason = std::string(message.status().message());
        break;
      }
      if (!message->has_value()) break;
      Message& request = **message;
      if ((request.header.flags & kFlagTypeMask) != kTypeCommand) {
        LogDebug("vfio-user: ignoring a message that is not a command",
                 {{"connection", id_text}, {"flags", absl::StrCat(request.header.flags)}});
        continue;
      }
      VfioUserSession::Reply reply = session.Handle(request);
      if (session.negotiated().has_value()) connection->negotiated = true;
      if (reply.error != 0) {
        LogDebug("vfio-user: command failed",
                 {{"connection", id_text},
                  {"command", CommandName(request.header.command)},
                  {"errno", absl::StrCat(reply.error)}});
      }
      if ((request.header.flags & kFlagNoReply) == 0) {
        Header header{request.header.message_id, request.header.command, 0,
                      kTypeReply | (reply.error != 0 ? kFlagError : 0), reply.error};
        absl::Status sent = stream.Send(
            header, reply.error != 0 ? absl::Span<const uint8_t>() : reply.payload);
        if (!sent.ok()) {
          reason = std::string(sent.message());
          break;
        }
      }
      if (reply.close) {
        reason = absl::StrCat(CommandName(request.header.command), " failed (errno ",
                              reply.error, ")");
        break;
      }
    }
  }
  LogInfo("vfio-user connection ended", {{"connection", id_text}, {"reason", reason}});
  // Ends the session: when it owned the device, owner loss runs here, before the slot is free.
  sessions_->OnConnectionClosed(id);
  Finish(id);
}

bool VfioUserServer::EvictIdle() {
  absl::MutexLock lock(&mu_);
  // Ids grow with time: the first one found is the oldest.
  for (auto& [id, connection] : connections_) {
    if (connection->negotiated || connection->spawned || !connection->slot.valid()) continue;
    ::shutdown(connection->socket.get(), SHUT_RDWR);  // its thread ends and cleans up
    connection->slot.Release();
    LogInfo("vfio-user connection evicted: no VERSION yet, and a new connection needed its slot",
            {{"connection", absl::StrCat(id)}});
    return true;
  }
  return false;
}

void VfioUserServer::Finish(ConnectionId id) {
  absl::MutexLock lock(&mu_);
  auto thread = threads_.find(id);
  if (thread != threads_.end()) {
    finished_.push_back(std::move(thread->second));
    threads_.erase(thread);
  }
  connections_.erase(id);  // closes the socket and releases the slot, under mu_ (see Shutdown)
}

void VfioUserServer::JoinFinished() {
  std::vector<std::thread> finished;
  {
    absl::MutexLock lock(&mu_);
    finished.swap(finished_);
  }
  for (std::thread& thread : finished) thread.join();
}

void VfioUserServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    // Under mu_, so that no socket is closed (Finish) while it is shut down here.
    for (auto& [id, connection] : connections_) {
      ::shutdown(connection->socket.get(), SHUT_RDWR);
    }
    mu_.Await(absl::Condition(
        +[](std::map<ConnectionId, std::unique_ptr<Connection>>* c) { return c->empty(); },
        &connections_));
  }
  JoinFinished();
}

}  // namespace vfiod::vfio_user
