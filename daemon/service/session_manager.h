// SessionManager: who is calling, what they may do, and which fds they sent.
//
// A session is one client connection (ConnectionId from the transport). At most one session is
// the owner; every other session is an observer. Owner operations run inside an OwnerScope,
// which holds the owner lock shared: owner loss takes it exclusively, so an owner call that has
// started finishes before the owner's resources are released, and no owner call can start
// after the loss — nothing a lost owner did can outlive the cleanup.
//
// A session is any protocol's connection: a gRPC connection, or a vfio-user connection (which
// claims ownership at its VERSION handshake). Owner loss happens when the owner's connection
// closes, when an fd channel bound to the owner closes, or on ReleaseOwnership. It runs the
// daemon's OwnerCleanup (every owner-scoped release registered there: IRQs, DMA, memory, bus
// mastering, tokens, protocol state), then the daemon keeps serving.
//
// Fd tokens: each fd received on an fd channel gets a 128-bit random token, usable only by the
// session the channel is bound to, once (TakeFd). Unbound channels' fds are held until the
// channel is bound or closed. Fds are closed when their session or channel ends.
//
// Thread-safety: all methods are thread-safe. TransportEvents callbacks come from the transport
// thread; everything else from gRPC threads.
#ifndef VFIOD_DAEMON_SERVICE_SESSION_MANAGER_H_
#define VFIOD_DAEMON_SERVICE_SESSION_MANAGER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/base/owner_cleanup.h"
#include "daemon/base/unique_fd.h"
#include "daemon/transport/transport.h"

namespace vfiod {

enum class SessionRole { kObserver, kOwner };

struct SessionOptions {
  std::vector<uid_t> owner_uids;  // peers allowed to claim ownership
  uint32_t max_fd_tokens = 64;    // outstanding (unconsumed) fds per session (over all its
                                  // bound channels), or per channel while it is unbound
  // Called once after the spawn-mode owner is lost for good (spawn mode without a listener: no
  // one can attach again, so the daemon stops). May be empty.
  std::function<void()> on_spawn_owner_gone;
};

class SessionManager : public TransportEvents {
 public:
  // `cleanup` runs at every owner loss; the manager registers the release of the owner's
  // unused fd tokens there (Stage::kSession). It must outlive the manager.
  SessionManager(OwnerCleanup* cleanup, SessionOptions options);
  ~SessionManager() override;

  // Must be called before the transport starts; used to close fd channels of ended sessions.
  void set_transport(Transport* transport) { transport_ = transport; }

  // Held while an owner operation runs. Move-only.
  class OwnerScope {
   public:
    OwnerScope(OwnerScope&& other) noexcept : mu_(other.mu_) { other.mu_ = nullptr; }
    OwnerScope& operator=(OwnerScope&&) = delete;
    ~OwnerScope() {
      if (mu_ != nullptr) mu_->ReaderUnlock();
    }

   private:
    friend class SessionManager;
    explicit OwnerScope(absl::Mutex* mu) : mu_(mu) {}
    absl::Mutex* mu_;
  };

  // PERMISSION_DENIED unless `id` is the owner session; the message names `operation`.
  absl::StatusOr<OwnerScope> AcquireOwner(ConnectionId id, absl::string_view operation);
  SessionRole RoleOf(ConnectionId id) const;
  bool Exists(ConnectionId id) const;

  // FAILED_PRECONDITION while another session owns the device; while the last owner's
  // cleanup is still running, waits for it (up to kOwnerLossWait) first.
  absl::Status ClaimOwnership(ConnectionId id);
  static constexpr absl::Duration kOwnerLossWait = absl::Seconds(5);
  absl::Status ReleaseOwnership(ConnectionId id);
  absl::Status BindFdChannel(ConnectionId id, absl::string_view key);

  // Removes the fd for `token_hex` (kFdTokenHexLength lowercase hex digits) from the session's
  // table and returns it. INVALID_ARGUMENT for a malformed token, NOT_FOUND for an unknown one
  // (including another session's).
  absl::StatusOr<UniqueFd> TakeFd(ConnectionId id, absl::string_view token_hex,
                                  absl::string_view operation);
  // All or nothing: either every token resolves (then all are taken) or none is taken. An
  // empty token stands for "no fd" and yields nullopt in its place; a token named twice is
  // INVALID_ARGUMENT.
  absl::StatusOr<std::vector<std::optional<UniqueFd>>> TakeFds(
      ConnectionId id, const std::vector<absl::string_view>& tokens_hex,
      absl::string_view operation);

  // Activity, for choosing which observer may be evicted at a full gRPC quota: a call noted at
  // its start, and streams (WatchIrqs) for as long as they are open. Move-only.
  // Notes a call's start; false when `id` has no session.
  bool NoteCall(ConnectionId id);
  class StreamScope {
   public:
    StreamScope(StreamScope&& other) noexcept
        : manager_(std::exchange(other.manager_, nullptr)), id_(other.id_) {}
    StreamScope& operator=(StreamScope&&) = delete;
    ~StreamScope();

   private:
    friend class SessionManager;
    StreamScope(SessionManager* manager, ConnectionId id) : manager_(manager), id_(id) {}
    SessionManager* manager_;
    ConnectionId id_;
  };
  // Bounds on the streams of non-owners, so that observers cannot take every IRQ watcher the
  // device has (the owner's streams are bounded only by the device's limit).
  struct StreamLimits {
    uint32_t per_observer = 0;     // open streams of one non-owner session
    uint32_t observers_total = 0;  // open streams of all non-owner sessions together
  };
  // Notes a stream (WatchIrqs) of `id` as open until the scope ends. UNAVAILABLE when `id` has
  // no session; RESOURCE_EXHAUSTED, naming `operation` and the limit, when `id` is not the owner
  // and a bound of `limits` is reached.
  absl::StatusOr<StreamScope> BeginStream(ConnectionId id, absl::string_view operation,
                                          StreamLimits limits);

  // An observer idle this long, with no stream open, may be evicted.
  static constexpr absl::Duration kEvictableIdle = absl::Seconds(2);

  struct Summary {
    uint32_t sessions = 0;
    bool owner_attached = false;
    uint64_t owner_losses = 0;
  };
  Summary GetSummary() const;

  // TransportEvents.
  void OnConnectionOpened(ConnectionId id, const PeerCredentials& peer, bool spawn_owner) override;
  void OnConnectionClosed(ConnectionId id) override;
  void OnFdChannelOpened(FdChannelId id, const FdChannelKey& key, const PeerCredentials& peer,
                         std::optional<ConnectionId> bound_to) override;
  absl::StatusOr<std::vector<FdTokenBytes>> OnFdsReceived(FdChannelId id,
                                                          std::vector<UniqueFd> fds) override;
  void OnFdChannelClosed(FdChannelId id) override;
  bool IsFdChannelBound(FdChannelId id) override;
  std::optional<ConnectionId> EvictableConnection(
      const std::vector<ConnectionId>& candidates) override;

 private:
  struct Session {
    PeerCredentials peer;
    bool spawn_owner = false;
    absl::Time last_active;
    int open_streams = 0;
  };
  // Drops the unused fds of every channel bound to the owner (an OwnerCleanup release).
  void DropOwnerTokens();
  // Unused fds held by every channel bound to session `id`.
  size_t HeldBySessionLocked(ConnectionId id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  struct Channel {
    FdChannelKey key;
    PeerCredentials peer;
    std::optional<ConnectionId> bound_to;
    std::map<FdTokenBytes, UniqueFd> fds;
  };

  // Ends ownership of `id` if it is the owner. Takes owner_mu_ exclusively.
  void LoseOwner(ConnectionId id, absl::string_view reason);

  OwnerCleanup* const cleanup_;
  const SessionOptions options_;
  Transport* transport_ = nullptr;

  // Held shared by owner operations, exclusively while ownership changes.
  mutable absl::Mutex owner_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::optional<ConnectionId> owner_ ABSL_GUARDED_BY(mu_);
  std::map<ConnectionId, Session> sessions_ ABSL_GUARDED_BY(mu_);
  std::map<FdChannelId, Channel> channels_ ABSL_GUARDED_BY(mu_);
  uint64_t owner_losses_ ABSL_GUARDED_BY(mu_) = 0;
  bool losing_owner_ ABSL_GUARDED_BY(mu_) = false;  // the owner's cleanup is running
  bool spawn_owner_seen_ ABSL_GUARDED_BY(mu_) = false;
};

// Lowercase hex of a token, and back (nullopt unless exactly kFdTokenHexLength hex digits).
std::string FdTokenToHex(const FdTokenBytes& token);
std::optional<FdTokenBytes> FdTokenFromHex(absl::string_view hex);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_SERVICE_SESSION_MANAGER_H_
