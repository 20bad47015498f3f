// ConnectionRegistry: every client connection the daemon holds, of every protocol, in one id
// space, with the quotas that keep any one kind of client from taking every slot.
//
// The transport admits each accepted (and uid-checked) connection here before any protocol
// handler sees it; a protocol served outside the transport (vfio-user) keeps the returned
// ConnectionSlot for as long as it serves the connection, and destroying the slot releases
// the entry. Ids start at 1 and are never reused, so a session keyed by one can never be
// confused with a later connection.
//
// Quotas, each checked at admission (RESOURCE_EXHAUSTED naming the quota):
//  - per protocol: gRPC connections (including those still waiting for their HTTP/2 preface),
//    fd channels, vfio-user connections;
//  - per peer uid across every protocol, when `max_per_uid` is not 0.
//
// Thread-safety: all methods are thread-safe. A ConnectionSlot may be destroyed on any thread;
// the registry must outlive every slot.
#ifndef VFIOD_DAEMON_TRANSPORT_CONNECTION_REGISTRY_H_
#define VFIOD_DAEMON_TRANSPORT_CONNECTION_REGISTRY_H_

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace vfiod {

using ConnectionId = uint64_t;

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The protocols a connection can speak; each has its own listener and handler.
enum class Protocol { kGrpc = 0, kFdChannel = 1, kVfioUser = 2 };
inline constexpr int kNumProtocols = 3;

// "grpc", "fd_channel", "vfio_user". For logs and messages.
absl::string_view ProtocolName(Protocol protocol);

struct ConnectionQuotas {
  uint32_t max_grpc = 64;
  uint32_t max_fd_channels = 64;
  uint32_t max_vfio_user = 4;
  uint32_t max_per_uid = 0;  // 0: no per-uid quota

  uint32_t Max(Protocol protocol) const;
};

class ConnectionRegistry;

// One admitted connection's entry; released on destruction. Move-only.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  ConnectionSlot(ConnectionSlot&& other) noexcept;
  ConnectionSlot& operator=(ConnectionSlot&& other) noexcept;
  ConnectionSlot(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(const ConnectionSlot&) = delete;
  ~ConnectionSlot();

  bool valid() const { return registry_ != nullptr; }
  ConnectionId id() const { return id_; }
  // Releases the entry now (idempotent).
  void Release();

 private:
  friend class ConnectionRegistry;
  ConnectionSlot(ConnectionRegistry* registry, ConnectionId id) : registry_(registry), id_(id) {}

  ConnectionRegistry* registry_ = nullptr;
  ConnectionId id_ = 0;
};

class ConnectionRegistry {
 public:
  explicit ConnectionRegistry(ConnectionQuotas quotas) : quotas_(quotas) {}
  ConnectionRegistry(const ConnectionRegistry&) = delete;
  ConnectionRegistry& operator=(const ConnectionRegistry&) = delete;

  // A new entry for a connection of `protocol` from `peer`, or RESOURCE_EXHAUSTED when a quota
  // is reached (nothing is recorded then).
  absl::StatusOr<ConnectionSlot> Admit(Protocol protocol, const PeerCredentials& peer);

  struct Entry {
    ConnectionId id = 0;
    Protocol protocol = Protocol::kGrpc;
    PeerCredentials peer;
  };
  std::vector<Entry> List() const;  // by id
  uint32_t Count(Protocol protocol) const;
  const ConnectionQuotas& quotas() const { return quotas_; }

 private:
  friend class ConnectionSlot;
  void Release(ConnectionId id);

  const ConnectionQuotas quotas_;
  mutable absl::Mutex mu_;
  std::map<ConnectionId, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::array<uint32_t, kNumProtocols> counts_ ABSL_GUARDED_BY(mu_) = {};
  std::map<uid_t, uint32_t> per_uid_ ABSL_GUARDED_BY(mu_);
  ConnectionId next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_TRANSPORT_CONNECTION_REGISTRY_H_
