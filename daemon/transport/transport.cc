#include "daemon/transport/transport.h"

#include <grpcpp/server_posix.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/logging.h"
#include "daemon/base/random.h"
#include "daemon/base/worker_threads.h"
#include "daemon/base/status_macros.h"
#include "daemon/transport/fd_channel_server.h"
#include "daemon/transport/http2_preface.h"
#include "daemon/transport/peer_credential_source.h"
#include "daemon/transport/unix_socket.h"

namespace vfiod {
namespace {

// What an epoll event is about: the kind in the top byte, an id below.
enum class Tag : uint64_t {
  kWake = 1,
  kListener = 2,  // id: index in listeners_
  kConnection = 4,
  kFdChannel = 5,
  kPending = 6,
};
constexpr int kTagShift = 56;
constexpr uint64_t kIdMask = (uint64_t{1} << kTagShift) - 1;

uint64_t MakeTag(Tag tag, uint64_t id = 0) {
  return (static_cast<uint64_t>(tag) << kTagShift) | (id & kIdMask);
}

// A listener that failed to accept (EMFILE and the like) rests this long, so a level-triggered
// listener cannot spin the event thread.
constexpr absl::Duration kAcceptPause = absl::Milliseconds(100);
// Fairness between busy sources within one wake-up.
constexpr int kMaxAcceptsPerWakeup = 32;
constexpr int kMaxMessagesPerWakeup = 16;
constexpr int kMaxEpollEvents = 64;

constexpr absl::string_view kFdChannelSuffix = ".fds";

// Every HTTP/2 client connection starts with this preface (RFC 9113, 3.4). A listen-mode
// connection reaches gRPC only once it has arrived, within kPrefaceTimeout: gRPC applies no
// handshake timeout to connections handed over with AddInsecureChannelFromFd, so a client that
// connects and stays silent would otherwise hold a connection slot for good.
constexpr absl::Duration kPrefaceTimeout = absl::Seconds(5);

// Parses exactly "fd:<decimal int>" (no sign, no leading zeros, no spaces), as gRPC writes it.
std::optional<int> ParsePeerFd(absl::string_view peer) {
  constexpr absl::string_view kPrefix = "fd:";
  if (peer.size() <= kPrefix.size() || peer.substr(0, kPrefix.size()) != kPrefix) {
    return std::nullopt;
  }
  absl::string_view digits = peer.substr(kPrefix.size());
  if (digits.size() > 10 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
  int64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value > INT_MAX) return std::nullopt;
  return static_cast<int>(value);
}

class TransportImpl final : public Transport {
 public:
  TransportImpl(TransportOptions options, TransportEvents* events)
      : listen_path_(std::move(options.listen_path)),
        vfio_user_path_(std::move(options.vfio_user_path)),
        socket_mode_(options.socket_mode),
        allowed_uids_(std::move(options.allowed_uids)),
        overflow_uid_(KernelOverflowUid()),
        registry_(options.registry),
        vfio_user_(options.vfio_user),
        events_(events),
        spawn_connection_(std::move(options.spawn_connection)),
        spawn_fd_channel_(std::move(options.spawn_fd_channel)),
        spawn_vfio_user_(std::move(options.spawn_vfio_user)),
        activated_{std::move(options.activated_grpc), std::move(options.activated_fd_channel),
                   std::move(options.activated_vfio_user)} {}

  ~TransportImpl() override { Shutdown(); }

  absl::Status Init();

  absl::Status Start(grpc::Server* server, PeerCredentialSource* credentials) override;
  std::vector<UniqueFd*> FdsForJail() override;
  std::optional<ConnectionId> ConnectionForPeer(absl::string_view peer) const override;
  void CloseFdChannel(FdChannelId id) override;
  void Shutdown() override;

 private:
  struct Listener {
    Listener(UnixListener socket, Protocol protocol)
        : socket(std::move(socket)), protocol(protocol) {}
    UnixListener socket;
    Protocol protocol;
    bool paused = false;
    absl::Time resume_at;
  };
  struct Connection {
    int grpc_fd;      // the number gRPC owns; the key of "fd:N"
    UniqueFd watch;   // our duplicate, watched for EPOLLRDHUP only
    ConnectionSlot slot;
  };
  struct Channel {
    UniqueFd fd;
    ConnectionSlot slot;
    std::optional<absl::Time> bind_deadline;  // nullopt: bound (or known to be)
  };
  // An accepted gRPC connection waiting for the HTTP/2 client preface.
  struct Pending {
    UniqueFd fd;
    PeerCredentials peer;
    absl::Time deadline;
    ConnectionSlot slot;
  };

  absl::Status EpollAdd(const UniqueFd& fd, uint32_t events, uint64_t tag);
  void EpollDelete(const UniqueFd& fd);
  void RequestStop();
  bool UidAllowed(uid_t uid) const;
  // The checked credentials of an accepted connection, or nullopt (logged) when it is refused.
  std::optional<PeerCredentials> CheckPeer(const UniqueFd& connection, const std::string& kind);

  // Event thread only, below.
  void Run();
  int EpollTimeoutMs() const;
  void ResumeListeners();
  bool DrainWake();
  absl::Status AddListener(const std::string& path, UnixSocketKind kind, Protocol protocol);
  void PauseListener(Listener& listener);
  void HandleListener(Listener& listener);
  // The registry entry for a new connection, or an invalid slot (logged) when a quota is full.
  ConnectionSlot Admit(Protocol protocol, const PeerCredentials& peer);
  std::optional<ConnectionId> AddConnection(UniqueFd fd, const PeerCredentials& peer,
                                            bool spawn_owner, ConnectionSlot slot);
  void AddFdChannel(UniqueFd fd, const PeerCredentials& peer,
                    std::optional<ConnectionId> bound_to);
  void AddPending(UniqueFd fd, const PeerCredentials& peer);
  void AdoptVfioUser(UniqueFd fd, const PeerCredentials& peer, bool spawned);
  void ServePending(uint64_t id, uint32_t epoll_events);
  void ExpirePending();
  void ExpireUnboundChannels();
  // Makes room at a full quota: closes an idle observer's gRPC connection, or the oldest
  // unbound fd channel. True if something was closed.
  bool EvictFor(Protocol protocol);
  void CloseConnection(ConnectionId id, absl::string_view reason);
  void CloseChannel(FdChannelId id, absl::string_view reason);
  void ServeChannel(FdChannelId id, uint32_t epoll_events);
  void CloseEverything();

  // Fixed after Init().
  const std::string listen_path_;
  const std::string vfio_user_path_;
  const mode_t socket_mode_;
  const std::vector<uid_t> allowed_uids_;
  // Read before the jail (whose root has no /proc).
  const uid_t overflow_uid_;
  ConnectionRegistry* const registry_;
  ConnectionHandler* const vfio_user_;
  TransportEvents* const events_;
  std::vector<Listener> listeners_;
  UniqueFd epoll_;
  UniqueFd wake_;

  // Handed to the event thread at its start.
  UniqueFd spawn_connection_;
  UniqueFd spawn_fd_channel_;
  UniqueFd spawn_vfio_user_;
  PeerCredentials spawn_connection_peer_;
  PeerCredentials spawn_fd_channel_peer_;
  PeerCredentials spawn_vfio_user_peer_;
  // Socket-activated listeners, by Protocol; taken in Init().
  UniqueFd activated_[kNumProtocols];

  absl::Mutex lifecycle_mu_;
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  std::thread thread_;
  std::atomic<std::thread::id> event_thread_id_{};
  // OnConnectionClosed and OnFdChannelClosed run here, in order: an owner's loss may take long
  // (unpinning its DMA memory) and must not stall the event loop that serves everyone else.
  WorkerThreads closes_;
  grpc::Server* server_ = nullptr;               // written before the event thread starts
  PeerCredentialSource* credentials_ = nullptr;  // likewise

  mutable absl::Mutex mu_;
  std::map<int, ConnectionId> connection_by_fd_ ABSL_GUARDED_BY(mu_);
  std::vector<FdChannelId> close_requests_ ABSL_GUARDED_BY(mu_);
  // gRPC fd numbers of connections whose OnConnectionClosed has not run yet.
  std::multiset<int> closing_fds_ ABSL_GUARDED_BY(mu_);
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;

  // Event thread only.
  std::map<ConnectionId, Connection> connections_;
  std::map<FdChannelId, Channel> channels_;
  std::map<ConnectionId, Pending> pending_;
};

// Spawn-mode sockets are checked in Create(), before the jail: SO_PEERCRED read by the daemon
// itself is still the host's view there.
absl::StatusOr<PeerCredentials> CheckInheritedSocket(UniqueFd& fd, UnixSocketKind kind) {
  VFIOD_RETURN_IF_ERROR(CheckUnixSocketKind(fd, kind));
  VFIOD_RETURN_IF_ERROR(SetNonBlocking(fd));
  return SocketPeerCredentialSource().PeerOf(fd);
}

absl::Status TransportImpl::AddListener(const std::string& path, UnixSocketKind kind,
                                        Protocol protocol) {
  VFIOD_RETURN_IF_ERROR(CheckUnixSocketPath(path));
  VFIOD_ASSIGN_OR_RETURN(UnixListener socket, UnixListener::Bind(path, kind, socket_mode_));
  listeners_.emplace_back(std::move(socket), protocol);
  return absl::OkStatus();
}

absl::Status TransportImpl::Init() {
  if (spawn_connection_.valid()) {
    VFIOD_ASSIGN_OR_RETURN(spawn_connection_peer_,
                           CheckInheritedSocket(spawn_connection_, UnixSocketKind::kStream));
  }
  if (spawn_fd_channel_.valid()) {
    VFIOD_ASSIGN_OR_RETURN(spawn_fd_channel_peer_,
                           CheckInheritedSocket(spawn_fd_channel_, UnixSocketKind::kSeqPacket));
  }
  if (spawn_vfio_user_.valid()) {
    VFIOD_ASSIGN_OR_RETURN(spawn_vfio_user_peer_,
                           CheckInheritedSocket(spawn_vfio_user_, UnixSocketKind::kStream));
  }
  // Every path is checked before any socket file is created.
  const std::string fd_channel_path =
      listen_path_.empty() ? "" : absl::StrCat(listen_path_, kFdChannelSuffix);
  for (const std::string* path : {&listen_path_, &fd_channel_path, &vfio_user_path_}) {
    if (!path->empty()) VFIOD_RETURN_IF_ERROR(CheckUnixSocketPath(*path));
  }
  if (!listen_path_.empty()) {
    VFIOD_RETURN_IF_ERROR(AddListener(listen_path_, UnixSocketKind::kStream, Protocol::kGrpc));
    VFIOD_RETURN_IF_ERROR(
        AddListener(fd_channel_path, UnixSocketKind::kSeqPacket, Protocol::kFdChannel));
  }
  if (!vfio_user_path_.empty()) {
    VFIOD_RETURN_IF_ERROR(
        AddListener(vfio_user_path_, UnixSocketKind::kStream, Protocol::kVfioUser));
  }
  constexpr UnixSocketKind kKinds[kNumProtocols] = {
      UnixSocketKind::kStream, UnixSocketKind::kSeqPacket, UnixSocketKind::kStream};
  for (int p = 0; p < kNumProtocols; ++p) {
    if (!activated_[p].valid()) continue;
    const Protocol protocol = static_cast<Protocol>(p);
    absl::StatusOr<UnixListener> adopted =
        UnixListener::Adopt(std::move(activated_[p]), kKinds[p]);
    if (!adopted.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("socket activation: the ",
                                                     ProtocolName(protocol), " socket: ",
                                                     adopted.status().message()));
    }
    LogInfo("listening on an activated socket", {{"kind", std::string(ProtocolName(protocol))},
                                                 {"socket", adopted->path()}});
    listeners_.emplace_back(*std::move(adopted), protocol);
  }
  if (listeners_.empty()) return absl::OkStatus();
  std::string uids;
  for (uid_t uid : allowed_uids_) absl::StrAppend(&uids, uids.empty() ? "" : ",", uid);
  LogInfo("listening", {{"socket", listen_path_.empty() ? "-" : listen_path_},
                        {"fd_channel", fd_channel_path.empty() ? "-" : fd_channel_path},
                        {"vfio_user", vfio_user_path_.empty() ? "-" : vfio_user_path_},
                        {"mode", absl::StrFormat("%04o", socket_mode_ & 07777)},
                        {"allowed_uids", uids}});
  if (allowed_uids_.empty()) {
    LogWarning("no uid is allowed to connect: every listen-mode connection will be refused");
  }
  return absl::OkStatus();
}

absl::Status TransportImpl::EpollAdd(const UniqueFd& fd, uint32_t events, uint64_t tag) {
  epoll_event event;
  event.events = events;
  event.data.u64 = tag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &event) != 0) {
    return ErrnoError(errno, "epoll_ctl(EPOLL_CTL_ADD)");
  }
  return absl::OkStatus();
}

void TransportImpl::EpollDelete(const UniqueFd& fd) {
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd.get(), nullptr) != 0) {
    LogWarning("epoll_ctl(EPOLL_CTL_DEL) failed",
               {{"fd", std::to_string(fd.get())}, {"errno", std::to_string(errno)}});
  }
}

absl::Status TransportImpl::Start(grpc::Server* server, PeerCredentialSource* credentials) {
  if (server == nullptr) return absl::InvalidArgumentError("Transport::Start: server is null");
  if (credentials == nullptr) {
    return absl::InvalidArgumentError("Transport::Start: credential source is null");
  }
  absl::MutexLock lock(&lifecycle_mu_);
  if (shut_down_) return absl::FailedPreconditionError("Transport::Start after Shutdown");
  if (started_) return absl::FailedPreconditionError("Transport::Start called twice");
  // The epoll instance and the wake eventfd are created here, not in Create(): epoll keys its
  // registrations by fd number, and the jail renumbers the sockets between the two.
  int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return ErrnoError(errno, "epoll_create1");
  epoll_.Reset(epoll_fd);
  {
    absl::MutexLock state_lock(&mu_);
    int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0) return ErrnoError(errno, "eventfd");
    wake_.Reset(wake_fd);
  }
  VFIOD_RETURN_IF_ERROR(EpollAdd(wake_, EPOLLIN, MakeTag(Tag::kWake)));
  for (size_t i = 0; i < listeners_.size(); ++i) {
    VFIOD_RETURN_IF_ERROR(EpollAdd(listeners_[i].socket.fd(), EPOLLIN, MakeTag(Tag::kListener, i)));
  }
  started_ = true;
  server_ = server;
  credentials_ = credentials;
  closes_.Start();
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

std::vector<UniqueFd*> TransportImpl::FdsForJail() {
  std::vector<UniqueFd*> fds;
  for (Listener& listener : listeners_) fds.push_back(listener.socket.mutable_fd());
  for (UniqueFd* spawned : {&spawn_connection_, &spawn_fd_channel_, &spawn_vfio_user_}) {
    if (spawned->valid()) fds.push_back(spawned);
  }
  return fds;
}

std::optional<ConnectionId> TransportImpl::ConnectionForPeer(absl::string_view peer) const {
  std::optional<int> fd = ParsePeerFd(peer);
  if (!fd.has_value()) return std::nullopt;
  absl::MutexLock lock(&mu_);
  auto it = connection_by_fd_.find(*fd);
  if (it == connection_by_fd_.end()) return std::nullopt;
  return it->second;
}

void TransportImpl::CloseFdChannel(FdChannelId id) {
  absl::MutexLock lock(&mu_);
  if (stop_requested_) return;  // everything is being closed anyway
  close_requests_.push_back(id);
  const uint64_t one = 1;
  // EAGAIN (counter saturated) still leaves the loop woken.
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

void TransportImpl::RequestStop() {
  absl::MutexLock lock(&mu_);
  if (stop_requested_) return;
  stop_requested_ = true;
  if (!wake_.valid()) return;  // never started
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

void TransportImpl::Shutdown() {
  if (std::this_thread::get_id() == event_thread_id_.load()) {
    // From a callback: the loop stops after this round; joining here would deadlock.
    RequestStop();
    return;
  }
  absl::MutexLock lock(&lifecycle_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  RequestStop();
  if (thread_.joinable()) thread_.join();
  closes_.Stop();  // every close the thread reported has been handled
  // Closes the listeners and removes their files (if still ours).
  for (Listener& listener : listeners_) listener.socket.Close();
  listeners_.clear();
  spawn_connection_.Reset();
  spawn_fd_channel_.Reset();
  spawn_vfio_user_.Reset();
  channels_.clear();
  connections_.clear();
  {
    absl::MutexLock state_lock(&mu_);
    connection_by_fd_.clear();
    close_requests_.clear();
    // wake_ is only written under mu_ while !stop_requested_, so it can go now.
    wake_.Reset();
  }
  epoll_.Reset();
  LogInfo("transport stopped");
}

bool TransportImpl::UidAllowed(uid_t uid) const {
  return std::find(allowed_uids_.begin(), allowed_uids_.end(), uid) != allowed_uids_.end();
}

std::optional<PeerCredentials> TransportImpl::CheckPeer(const UniqueFd& connection,
                                                        const std::string& kind) {
  absl::StatusOr<PeerCredentials> credentials = credentials_->PeerOf(connection);
  if (!credentials.ok()) {
    LogError("connection refused: no peer credentials",
             {{"kind", kind}, {"error", std::string(credentials.status().message())}});
    return std::nullopt;
  }
  const PeerCredentials& peer = *credentials;
  const char* refusal = nullptr;
  if (peer.uid == overflow_uid_) {
    // Any uid the reader's user namespace does not map reads as this one: it names nobody.
    refusal = "connection refused: the peer's uid is the overflow uid";
  } else if (!UidAllowed(peer.uid)) {
    refusal = "connection refused: uid not allowed";
  }
  if (refusal != nullptr) {
    LogWarning(refusal, {{"kind", kind},
                         {"uid", std::to_string(peer.uid)},
                         {"pid", std::to_string(peer.pid)},
                         {"gid", std::to_string(peer.gid)}});
    return std::nullopt;
  }
  return peer;
}

void TransportImpl::Run() {
  event_thread_id_.store(std::this_thread::get_id());
  if (spawn_vfio_user_.valid()) {
    AdoptVfioUser(std::move(spawn_vfio_user_), spawn_vfio_user_peer_, /*spawned=*/true);
  }
  if (spawn_connection_.valid()) {
    std::optional<ConnectionId> owner = std::nullopt;
    ConnectionSlot slot = Admit(Protocol::kGrpc, spawn_connection_peer_);
    if (slot.valid()) {
      owner = AddConnection(std::move(spawn_connection_), spawn_connection_peer_, true,
                            std::move(slot));
    }
    if (spawn_fd_channel_.valid()) {
      if (owner.has_value()) {
        AddFdChannel(std::move(spawn_fd_channel_), spawn_fd_channel_peer_, owner);
      } else {
        LogError("spawn fd channel closed: its connection could not be registered");
        spawn_fd_channel_.Reset();
      }
    }
  }

  epoll_event events[kMaxEpollEvents];
  bool stop = false;
  while (!stop) {
    int n = ::epoll_wait(epoll_.get(), events, kMaxEpollEvents, EpollTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      LogError("epoll_wait failed; the transport stops serving",
               {{"errno", std::to_string(errno)}});
      break;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      const uint64_t id = tag & kIdMask;
      switch (static_cast<Tag>(tag >> kTagShift)) {
        case Tag::kWake:
          stop = DrainWake() || stop;
          break;
        case Tag::kListener:
          if (id < listeners_.size()) HandleListener(listeners_[id]);
          break;
        case Tag::kConnection:
          // Only EPOLLRDHUP, EPOLLHUP or EPOLLERR are possible: the peer is gone, or gRPC shut
          // the socket down.
          CloseConnection(id, "hung up");
          break;
        case Tag::kFdChannel:
          ServeChannel(id, events[i].events);
          break;
        case Tag::kPending:
          ServePending(id, events[i].events);
          break;
      }
    }
    ResumeListeners();
    ExpirePending();
    ExpireUnboundChannels();
  }
  CloseEverything();
  event_thread_id_.store(std::thread::id());
}

int TransportImpl::EpollTimeoutMs() const {
  std::optional<absl::Time> earliest;
  for (const Listener& listener : listeners_) {
    if (listener.paused && (!earliest.has_value() || listener.resume_at < *earliest)) {
      earliest = listener.resume_at;
    }
  }
  for (const auto& [id, pending] : pending_) {
    if (!earliest.has_value() || pending.deadline < *earliest) earliest = pending.deadline;
  }
  for (const auto& [id, channel] : channels_) {
    if (channel.bind_deadline.has_value() &&
        (!earliest.has_value() || *channel.bind_deadline < *earliest)) {
      earliest = channel.bind_deadline;
    }
  }
  if (!earliest.has_value()) return -1;
  const int64_t ms = absl::ToInt64Milliseconds(*earliest - absl::Now());
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 1000));
}

void TransportImpl::ResumeListeners() {
  const absl::Time now = absl::Now();
  for (size_t i = 0; i < listeners_.size(); ++i) {
    Listener& listener = listeners_[i];
    if (!listener.paused || listener.resume_at > now) continue;
    epoll_event event;
    event.events = EPOLLIN;
    event.data.u64 = MakeTag(Tag::kListener, i);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener.socket.fd().get(), &event) == 0) {
      listener.paused = false;
    } else {
      listener.resume_at = now + kAcceptPause;
    }
  }
}

bool TransportImpl::DrainWake() {
  uint64_t value;
  [[maybe_unused]] ssize_t n = ::read(wake_.get(), &value, sizeof(value));
  std::vector<FdChannelId> requests;
  bool stop;
  {
    absl::MutexLock lock(&mu_);
    requests.swap(close_requests_);
    stop = stop_requested_;
  }
  for (FdChannelId id : requests) CloseChannel(id, "closed by the daemon");
  return stop;
}

void TransportImpl::PauseListener(Listener& listener) {
  // Level-triggered: a listener whose accept fails (EMFILE and the like) would spin the loop.
  epoll_event event;
  event.events = 0;
  event.data.u64 = MakeTag(Tag::kListener, &listener - listeners_.data());
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener.socket.fd().get(), &event);
  listener.paused = true;
  listener.resume_at = absl::Now() + kAcceptPause;
}

void TransportImpl::HandleListener(Listener& listener) {
  const std::string kind(ProtocolName(listener.protocol));
  for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
    absl::StatusOr<UniqueFd> accepted = AcceptUnixConnection(listener.socket.fd());
    if (!accepted.ok()) {
      LogWarning("accept failed; pausing the listener",
                 {{"socket", listener.socket.path()},
                  {"error", std::string(accepted.status().message())}});
      PauseListener(listener);
      return;
    }
    if (!accepted->valid()) return;  // nothing more pending
    std::optional<PeerCredentials> checked = CheckPeer(*accepted, kind);
    if (!checked.has_value()) continue;  // `accepted` closes here, before any handler sees a byte
    const PeerCredentials& peer = *checked;
    switch (listener.protocol) {
      case Protocol::kGrpc:
        AddPending(*std::move(accepted), peer);
        break;
      case Protocol::kFdChannel:
        AddFdChannel(*std::move(accepted), peer, std::nullopt);
        break;
      case Protocol::kVfioUser:
        AdoptVfioUser(*std::move(accepted), peer, /*spawned=*/false);
        break;
    }
  }
}

ConnectionSlot TransportImpl::Admit(Protocol protocol, const PeerCredentials& peer) {
  absl::StatusOr<ConnectionSlot> slot = registry_->Admit(protocol, peer);
  if (!slot.ok() && registry_->Count(protocol) >= registry_->quotas().Max(protocol) &&
      EvictFor(protocol)) {
    slot = registry_->Admit(protocol, peer);
  }
  if (slot.ok()) return *std::move(slot);
  LogWarning("connection refused", {{"kind", std::string(ProtocolName(protocol))},
                                    {"reason", std::string(slot.status().message())},
                                    {"uid", std::to_string(peer.uid)},
                                    {"pid", std::to_string(peer.pid)}});
  return ConnectionSlot();
}

void TransportImpl::AdoptVfioUser(UniqueFd fd, const PeerCredentials& peer, bool spawned) {
  ConnectionSlot slot = Admit(Protocol::kVfioUser, peer);
  if (!slot.valid()) return;
  LogInfo("connection accepted", {{"connection", std::to_string(slot.id())},
                                  {"kind", "vfio_user"},
                                  {"uid", std::to_string(peer.uid)},
                                  {"pid", std::to_string(peer.pid)},
                                  {"spawned", spawned ? "true" : "false"}});
  vfio_user_->Adopt(std::move(slot), std::move(fd), peer, spawned);
}

std::optional<ConnectionId> TransportImpl::AddConnection(UniqueFd fd, const PeerCredentials& peer,
                                                         bool spawn_owner, ConnectionSlot slot) {
  // gRPC hangs every call on a blocking fd; accept4 set it already, inherited fds were set in
  // Init(), but it costs one fcntl to be sure.
  absl::Status nonblocking = SetNonBlocking(fd);
  if (!nonblocking.ok()) {
    LogError("connection refused", {{"error", std::string(nonblocking.message())}});
    return std::nullopt;
  }
  absl::StatusOr<UniqueFd> watch = fd.Duplicate();
  if (!watch.ok()) {
    LogError("connection refused", {{"error", std::string(watch.status().message())}});
    return std::nullopt;
  }
  const int number = fd.get();
  // A previous connection with this number is over (gRPC closed it, or the kernel could not
  // have handed the number out again): end its session before the new one begins.
  std::optional<ConnectionId> stale;
  {
    absl::MutexLock lock(&mu_);
    auto it = connection_by_fd_.find(number);
    if (it != connection_by_fd_.end()) stale = it->second;
  }
  if (stale.has_value()) CloseConnection(*stale, "fd number reused");
  bool number_closing;
  {
    absl::MutexLock lock(&mu_);
    number_closing = closing_fds_.count(number) != 0;
  }
  // The session of an earlier connection with this number ends (with owner loss) before the
  // new one begins: the rare case where the event thread waits for the close thread.
  if (number_closing) closes_.Drain();

  const ConnectionId id = slot.id();
  absl::Status watched = EpollAdd(*watch, EPOLLRDHUP, MakeTag(Tag::kConnection, id));
  if (!watched.ok()) {
    LogError("connection refused", {{"error", std::string(watched.message())}});
    return std::nullopt;
  }
  connections_.emplace(id, Connection{number, *std::move(watch), std::move(slot)});
  {
    absl::MutexLock lock(&mu_);
    connection_by_fd_[number] = id;
  }
  LogInfo("connection accepted", {{"connection", std::to_string(id)},
                                  {"fd", std::to_string(number)},
                                  {"uid", std::to_string(peer.uid)},
                                  {"pid", std::to_string(peer.pid)},
                                  {"gid", std::to_string(peer.gid)},
                                  {"spawn_owner", spawn_owner ? "true" : "false"}});
  events_->OnConnectionOpened(id, peer, spawn_owner);
  // gRPC owns the fd from here and closes it when the connection ends.
  grpc::AddInsecureChannelFromFd(server_, fd.Release());
  return id;
}

void TransportImpl::AddPending(UniqueFd fd, const PeerCredentials& peer) {
  ConnectionSlot slot = Admit(Protocol::kGrpc, peer);
  if (!slot.valid()) return;
  const ConnectionId id = slot.id();
  // Edge-triggered: a partial preface must not wake the loop again until more bytes arrive.
  absl::Status watched = EpollAdd(fd, EPOLLIN | EPOLLRDHUP | EPOLLET, MakeTag(Tag::kPending, id));
  if (!watched.ok()) {
    LogError("connection refused", {{"error", std::string(watched.message())}});
    return;
  }
  pending_.emplace(id, Pending{std::move(fd), peer, absl::Now() + kPrefaceTimeout, std::move(slot)});
}

void TransportImpl::ServePending(uint64_t id, uint32_t epoll_events) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  char preface[kHttp2ClientPreface.size()];
  // recvmsg, not recv: the seccomp policy allows the one receive call serving already needs.
  struct iovec buffer = {preface, sizeof(preface)};
  struct msghdr message = {};
  message.msg_iov = &buffer;
  message.msg_iovlen = 1;
  ssize_t n = ::recvmsg(it->second.fd.get(), &message, MSG_PEEK | MSG_DONTWAIT);
  absl::string_view received(preface, n > 0 ? static_cast<size_t>(n) : 0);
  const char* refusal = nullptr;
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    refusal = "receive failed";
  } else if (received != kHttp2ClientPreface.substr(0, received.size())) {
    refusal = "not an HTTP/2 client";
  } else if (received.size() < kHttp2ClientPreface.size()) {
    if ((epoll_events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == 0) return;  // more to come
    refusal = "hung up before the HTTP/2 preface";
  }
  Pending pending = std::move(it->second);
  pending_.erase(it);
  EpollDelete(pending.fd);
  if (refusal != nullptr) {
    LogWarning("connection refused", {{"reason", refusal},
                                      {"uid", std::to_string(pending.peer.uid)},
                                      {"pid", std::to_string(pending.peer.pid)}});
    return;
  }
  // The preface stays in the socket (peeked): gRPC reads it as if it had accepted the
  // connection itself.
  AddConnection(std::move(pending.fd), pending.peer, /*spawn_owner=*/false,
                std::move(pending.slot));
}

void TransportImpl::ExpirePending() {
  const absl::Time now = absl::Now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    LogWarning("connection refused",
               {{"reason", "no HTTP/2 preface in time"},
                {"uid", std::to_string(it->second.peer.uid)},
                {"pid", std::to_string(it->second.peer.pid)},
                {"timeout", absl::FormatDuration(kPrefaceTimeout)}});
    EpollDelete(it->second.fd);
    it = pending_.erase(it);
  }
}

bool TransportImpl::EvictFor(Protocol protocol) {
  if (protocol == Protocol::kFdChannel) {
    std::optional<FdChannelId> oldest;  // ids grow with time: the smallest unbound is the oldest
    for (auto& [id, channel] : channels_) {
      if (!channel.bind_deadline.has_value()) continue;
      if (events_->IsFdChannelBound(id)) {
        channel.bind_deadline.reset();
        continue;
      }
      oldest = id;
      break;
    }
    if (!oldest.has_value()) return false;
    CloseChannel(*oldest, "evicted: unbound, and a new fd channel needed its slot");
    return true;
  }
  if (protocol == Protocol::kVfioUser) return vfio_user_ != nullptr && vfio_user_->EvictIdle();
  if (protocol == Protocol::kGrpc) {
    // A connection still waiting for its HTTP/2 preface gives way first, the oldest (ids grow
    // with time): silent connections cannot keep the owner out for their 5 s each.
    if (!pending_.empty()) {
      auto oldest = pending_.begin();
      LogWarning("connection refused",
                 {{"reason", "evicted: no HTTP/2 preface yet, and a new connection needed its slot"},
                  {"uid", std::to_string(oldest->second.peer.uid)},
                  {"pid", std::to_string(oldest->second.peer.pid)}});
      EpollDelete(oldest->second.fd);
      pending_.erase(oldest);
      return true;
    }
    std::vector<ConnectionId> candidates;
    for (const auto& [id, connection] : connections_) candidates.push_back(id);
    std::optional<ConnectionId> victim = events_->EvictableConnection(candidates);
    if (!victim.has_value()) return false;
    auto it = connections_.find(*victim);
    if (it == connections_.end()) return false;
    // gRPC owns the connection's fd; shutting the socket down through our duplicate makes gRPC
    // see the end of the stream and close it.
    ::shutdown(it->second.watch.get(), SHUT_RDWR);
    CloseConnection(*victim, "evicted: an idle observer, and a new connection needed its slot");
    return true;
  }
  return false;
}

void TransportImpl::ExpireUnboundChannels() {
  const absl::Time now = absl::Now();
  std::vector<FdChannelId> expired;
  for (auto& [id, channel] : channels_) {
    if (!channel.bind_deadline.has_value() || *channel.bind_deadline > now) continue;
    if (events_->IsFdChannelBound(id)) {
      channel.bind_deadline.reset();
    } else {
      expired.push_back(id);
    }
  }
  for (FdChannelId id : expired) CloseChannel(id, "not bound to a session in time");
}

void TransportImpl::AddFdChannel(UniqueFd fd, const PeerCredentials& peer,
                                 std::optional<ConnectionId> bound_to) {
  ConnectionSlot slot = Admit(Protocol::kFdChannel, peer);
  if (!slot.valid()) return;
  FdChannelKey key;
  absl::Status random = FillRandom(absl::MakeSpan(key));
  if (!random.ok()) {
    LogError("fd channel refused: no key", {{"error", std::string(random.message())}});
    return;
  }
  const FdChannelId id = slot.id();
  absl::Status watched = EpollAdd(fd, EPOLLIN | EPOLLRDHUP, MakeTag(Tag::kFdChannel, id));
  if (!watched.ok()) {
    LogError("fd channel refused", {{"error", std::string(watched.message())}});
    return;
  }
  std::optional<absl::Time> bind_deadline;
  if (!bound_to.has_value()) bind_deadline = absl::Now() + kFdChannelBindTimeout;
  auto [it, inserted] =
      channels_.emplace(id, Channel{std::move(fd), std::move(slot), bind_deadline});
  LogInfo("fd channel opened",
          {{"fd_channel", std::to_string(id)},
           {"uid", std::to_string(peer.uid)},
           {"pid", std::to_string(peer.pid)},
           {"bound_to", bound_to.has_value() ? std::to_string(*bound_to) : "none"}});
  // The session layer learns the key before the client can, so a BindFdChannel racing the
  // hello always finds it.
  events_->OnFdChannelOpened(id, key, peer, bound_to);
  absl::Status hello = SendFdChannelHello(it->second.fd, key);
  if (!hello.ok()) CloseChannel(id, hello.message());
}

void TransportImpl::CloseConnection(ConnectionId id, absl::string_view reason) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  EpollDelete(it->second.watch);
  const int number = it->second.grpc_fd;
  {
    absl::MutexLock lock(&mu_);
    auto by_fd = connection_by_fd_.find(number);
    if (by_fd != connection_by_fd_.end() && by_fd->second == id) connection_by_fd_.erase(by_fd);
    closing_fds_.insert(number);
  }
  connections_.erase(it);
  LogInfo("connection closed",
          {{"connection", std::to_string(id)}, {"reason", std::string(reason)}});
  closes_.Post([this, id, number] {
    events_->OnConnectionClosed(id);
    absl::MutexLock lock(&mu_);
    closing_fds_.erase(closing_fds_.find(number));
  });
}

void TransportImpl::CloseChannel(FdChannelId id, absl::string_view reason) {
  auto it = channels_.find(id);
  if (it == channels_.end()) return;
  EpollDelete(it->second.fd);
  channels_.erase(it);
  LogInfo("fd channel closed",
          {{"fd_channel", std::to_string(id)}, {"reason", std::string(reason)}});
  closes_.Post([this, id] { events_->OnFdChannelClosed(id); });
}

void TransportImpl::ServeChannel(FdChannelId id, uint32_t epoll_events) {
  auto it = channels_.find(id);
  if (it == channels_.end()) return;  // closed earlier in this round
  if ((epoll_events & EPOLLIN) == 0) {
    // EPOLLRDHUP, EPOLLHUP or EPOLLERR with nothing left to read.
    CloseChannel(id, (epoll_events & EPOLLERR) != 0 ? "socket error" : "peer closed");
    return;
  }
  // Callbacks cannot change channels_ (CloseFdChannel is deferred), so `it` stays valid.
  for (int i = 0; i < kMaxMessagesPerWakeup; ++i) {
    absl::StatusOr<FdChannelStep> step =
        ServeFdChannelMessage(it->second.fd, [this, id](std::vector<UniqueFd> fds) {
          return events_->OnFdsReceived(id, std::move(fds));
        });
    if (!step.ok()) {
      CloseChannel(id, step.status().message());
      return;
    }
    if (*step == FdChannelStep::kClosed) {
      CloseChannel(id, "peer closed");
      return;
    }
    if (*step == FdChannelStep::kIdle) return;
  }
}

void TransportImpl::CloseEverything() {
  for (auto& [id, pending] : pending_) EpollDelete(pending.fd);
  pending_.clear();
  while (!channels_.empty()) CloseChannel(channels_.begin()->first, "transport shutting down");
  while (!connections_.empty()) {
    CloseConnection(connections_.begin()->first, "transport shutting down");
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Transport>> Transport::Create(TransportOptions options,
                                                             TransportEvents* events) {
  if (events == nullptr) return absl::InvalidArgumentError("Transport::Create: events is null");
  if (options.registry == nullptr) {
    return absl::InvalidArgumentError("Transport::Create: registry is null");
  }
  if (options.listen_path.empty() && options.vfio_user_path.empty() &&
      !options.spawn_connection.valid() && !options.spawn_vfio_user.valid() &&
      !options.activated_grpc.valid() && !options.activated_vfio_user.valid()) {
    return absl::InvalidArgumentError("Transport::Create: no listen path and no spawn socket");
  }
  if ((!options.vfio_user_path.empty() || options.spawn_vfio_user.valid() ||
       options.activated_vfio_user.valid()) &&
      options.vfio_user == nullptr) {
    return absl::InvalidArgumentError("Transport::Create: vfio-user without a handler");
  }
  if (options.spawn_fd_channel.valid() && !options.spawn_connection.valid()) {
    return absl::InvalidArgumentError(
        "Transport::Create: a spawn fd channel needs a spawn connection to be bound to");
  }
  auto transport = std::make_unique<TransportImpl>(std::move(options), events);
  VFIOD_RETURN_IF_ERROR(transport->Init());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace vfiod
