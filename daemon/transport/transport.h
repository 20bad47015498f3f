// Transport: how clients reach vfiod. Owns every listening socket, admits each connection to
// the ConnectionRegistry and hands it to its protocol's handler:
//  - gRPC: held until the HTTP/2 client preface arrives, then handed to a grpc::Server that has
//    no listening port of its own, and watched for the peer's hang-up (on the event thread);
//  - fd channel: served on the event thread (hello, fd batches, tokens);
//  - vfio-user: handed to a ConnectionHandler that serves it on threads of its own.
// Adding a protocol means a listener, a Protocol value and a handler; the accept path, the
// uid check and the quotas are shared.
//
// Ways in, usable together:
//  - listen mode: a UNIX stream socket at `listen_path` for gRPC and a SOCK_SEQPACKET socket at
//    `listen_path + ".fds"` for the fd channel; a UNIX stream socket at `vfio_user_path` for
//    vfio-user. All are created with `socket_mode`; a stale socket file (nothing accepts on it)
//    is replaced, a live one is refused (ALREADY_EXISTS). Every accepted connection's peer
//    credentials come from the PeerCredentialSource given to Start() (under the jail: the
//    launcher's SO_PEERCRED, in the host's namespaces); its uid must be in `allowed_uids` and
//    must not be the kernel's overflow uid, or it is closed before any handler sees a byte.
//  - spawn mode: connected sockets inherited from the VMM: a gRPC stream socket
//    (`spawn_connection`, whose peer is the owner) with optionally its fd channel
//    (`spawn_fd_channel`, bound to it from the start); and/or a vfio-user stream socket
//    (`spawn_vfio_user`). Their credentials are read (SO_PEERCRED) in Create(), before the jail.
//
// Connections get a ConnectionId from the registry (one id space for every protocol, never
// reused). gRPC identifies a call's connection only by ServerContext::peer() ("fd:N");
// ConnectionForPeer() maps it back. The transport keeps a duplicate of each gRPC connection fd
// and watches it for the peer's hang-up, so connection loss is reported directly
// (OnConnectionClosed), and a stale entry for fd number N is always closed before a new
// connection with number N is registered.
//
// Fd channels: on connect the daemon sends FdChannelHello with a fresh random key; each
// FdChannelSend batch (1..kFdChannelMaxFdsPerMessage fds) is passed to OnFdsReceived and its
// tokens (or error) are sent back. Malformed messages get an error reply and all their fds are
// closed. See proto/vfiod/v1/fd_channel.h.
//
// Details of the implementation (transport.cc) the session layer can rely on:
//  - An empty `allowed_uids` refuses every listen-mode connection (a warning is logged at
//    Create). The spawn-mode sockets are not checked: they come from the owner.
//  - The registry's quotas count the spawn-mode sockets too.
//  - A gRPC connection counts as closed as soon as its socket reports EPOLLRDHUP/EPOLLHUP: the
//    peer closed or half-closed it (shutdown(SHUT_WR)), or gRPC shut it down itself (it does
//    so on protocol errors, so such connections are reported too).
//  - OnConnectionOpened and OnFdChannelOpened are called before gRPC or the client can use the
//    connection or the key (before AddInsecureChannelFromFd and before the hello is sent).
//  - On the fd channel, an empty message without fds reads as end of stream and closes the
//    channel; a client that lets its replies fill the socket buffer has its channel closed.
//
// Threading: Create() binds the sockets and starts nothing (call it before the jail); it opens
// no fd but the sockets, which FdsForJail() lists. Start() creates the epoll instance and a wake
// eventfd and starts one event thread running an epoll loop, and a second thread for closes:
// OnConnectionClosed and OnFdChannelClosed run there, in the order the connections closed (an
// owner's loss may take long, and must not stall the loop that serves everyone else); every
// other TransportEvents callback and ConnectionHandler::Adopt run on the event thread, one at a
// time. A connection's OnConnectionOpened always precedes its OnConnectionClosed.
// ConnectionForPeer() is thread-safe. Shutdown() stops the thread and closes every socket the
// transport still owns; it is idempotent and the destructor calls it. Connections adopted by a
// ConnectionHandler belong to the handler, which stops them itself.
#ifndef VFIOD_DAEMON_TRANSPORT_TRANSPORT_H_
#define VFIOD_DAEMON_TRANSPORT_TRANSPORT_H_

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "daemon/base/unique_fd.h"
#include "daemon/transport/connection_registry.h"
#include "daemon/transport/peer_credential_source.h"
#include "proto/vfiod/v1/fd_channel.h"

namespace grpc {
class Server;
}

namespace vfiod {

// Fd channels are connections too: their ids come from the same registry.
using FdChannelId = ConnectionId;
using FdChannelKey = std::array<uint8_t, v1::kFdChannelKeyBytes>;
using FdTokenBytes = std::array<uint8_t, v1::kFdTokenBytes>;

// Implemented by the session layer. Called on the transport's event thread only.
class TransportEvents {
 public:
  virtual ~TransportEvents() = default;
  // `spawn_owner`: the connection inherited in spawn mode (its peer is the owner).
  virtual void OnConnectionOpened(ConnectionId id, const PeerCredentials& peer,
                                  bool spawn_owner) = 0;
  virtual void OnConnectionClosed(ConnectionId id) = 0;
  // `bound_to`: the spawn-mode connection, for the inherited channel; otherwise nullopt and
  // the client binds the channel with BindFdChannel(key).
  virtual void OnFdChannelOpened(FdChannelId id, const FdChannelKey& key,
                                 const PeerCredentials& peer,
                                 std::optional<ConnectionId> bound_to) = 0;
  // Takes ownership of `fds` (1..kFdChannelMaxFdsPerMessage); returns one token per fd, in
  // order, or an error (then every fd must have been closed).
  virtual absl::StatusOr<std::vector<FdTokenBytes>> OnFdsReceived(FdChannelId id,
                                                                  std::vector<UniqueFd> fds) = 0;
  virtual void OnFdChannelClosed(FdChannelId id) = 0;

  // Whether fd channel `id` is bound to a session. A channel still unbound kFdChannelBindTimeout
  // after it opened is closed, and at the fd-channel quota the oldest unbound channel makes room
  // for a new one, so unbound channels cannot hold every slot.
  virtual bool IsFdChannelBound(FdChannelId id) = 0;
  // At the gRPC quota: which of `candidates` (open gRPC connections) may be closed to admit a
  // new one: an observer that is idle (no stream open, no call for a while), the longest idle
  // first; never the owner. nullopt: none may.
  virtual std::optional<ConnectionId> EvictableConnection(
      const std::vector<ConnectionId>& candidates) = 0;
};

inline constexpr absl::Duration kFdChannelBindTimeout = absl::Seconds(5);

// A protocol served outside the transport's event thread (vfio-user).
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // Takes an admitted connection (uid checked, unless `spawned`: inherited from whoever started
  // the daemon). The handler keeps `slot` while it serves the connection; destroying it
  // releases the registry entry. Called on the transport's event thread; must not block.
  virtual void Adopt(ConnectionSlot slot, UniqueFd socket, const PeerCredentials& peer,
                     bool spawned) = 0;
  // At the protocol's quota: closes one connection whose peer has not started a session (it
  // connected and said nothing yet), the oldest, and releases its slot at once. False if there
  // is none. Called on the transport's event thread; must not block.
  virtual bool EvictIdle() { return false; }
};

struct TransportOptions {
  std::string listen_path;     // empty: no gRPC/fd-channel listening sockets
  std::string vfio_user_path;  // empty: no vfio-user listening socket
  mode_t socket_mode = 0600;
  std::vector<uid_t> allowed_uids;  // empty: every listen-mode connection is refused
  UniqueFd spawn_connection;  // invalid: none
  UniqueFd spawn_fd_channel;  // invalid: none
  UniqueFd spawn_vfio_user;   // invalid: none
  // Listening sockets inherited from a service manager (socket activation), used like the ones
  // bound at the paths above, and instead of them; each must be a listening AF_UNIX socket of
  // its protocol's kind (INVALID_ARGUMENT). Their files are the service manager's and are never
  // removed here.
  UniqueFd activated_grpc;
  UniqueFd activated_fd_channel;
  UniqueFd activated_vfio_user;
  // Required. Admits every connection; must outlive the transport.
  ConnectionRegistry* registry = nullptr;
  // Required with `vfio_user_path` or `spawn_vfio_user`; must outlive the transport.
  ConnectionHandler* vfio_user = nullptr;
};

class Transport {
 public:
  // Creates (or adopts, in spawn mode) every socket. Nothing is accepted until Start().
  static absl::StatusOr<std::unique_ptr<Transport>> Create(TransportOptions options,
                                                           TransportEvents* events);
  virtual ~Transport() = default;

  // Starts the event thread. Connections are handed to `server` with
  // grpc::AddInsecureChannelFromFd after being set non-blocking. The peer of every accepted
  // connection is named by `credentials`, on the event thread (a source that blocks delays the
  // loop that long). Both must outlive Shutdown().
  virtual absl::Status Start(grpc::Server* server, PeerCredentialSource* credentials) = 0;

  // Every fd the transport owns between Create() and Start(): the listening sockets and the
  // spawn-mode sockets (none else exists before Start()). For the jail, which moves each to a
  // fixed number in place (see daemon/jail/jail.h); call before Start() only, with no other
  // thread using the transport.
  virtual std::vector<UniqueFd*> FdsForJail() = 0;

  // The connection of a call, from ServerContext::peer(); nullopt when unknown or closed.
  virtual std::optional<ConnectionId> ConnectionForPeer(absl::string_view peer) const = 0;

  // Closes an fd channel, e.g. when its session ends (OnFdChannelClosed follows).
  virtual void CloseFdChannel(FdChannelId id) = 0;

  // Stops the event thread and waits for it. Before exiting, the thread reports every open fd
  // channel and connection closed (OnFdChannelClosed, OnConnectionClosed). Then the listening
  // sockets are closed and their files removed if the paths still name the inodes bound (gRPC
  // connections themselves belong to `server`). Returns once every close callback has run.
  // Must not be called from a TransportEvents callback: from the event thread it only requests
  // the stop (a later call from another thread waits); from the close thread it deadlocks.
  virtual void Shutdown() = 0;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_TRANSPORT_TRANSPORT_H_
