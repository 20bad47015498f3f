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
#include "daemon/base/status_macros.h"
#include "daemon/transport/fd_channel_server.h"
#include "daemon/transport/unix_socket.h"

namespace vfiod {
namespace {

// What an epoll event is about: the kind in the top byte, an id below.
enum class Tag : uint64_t {
  kWake = 1,
  kStreamListener = 2,
  kSeqPacketListener = 3,
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
constexpr absl::string_view kHttp2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr absl::Duration kPrefaceTimeout = absl::Seconds(5);

PeerCredentials ToPeer(const UnixPeerCredentials& credentials) {
  PeerCredentials peer;
  peer.pid = credentials.pid;
  peer.uid = credentials.uid;
  peer.gid = credentials.gid;
  return peer;
}

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
        socket_mode_(options.socket_mode),
        allowed_uids_(std::move(options.allowed_uids)),
        max_connections_(options.max_connections),
        max_fd_channels_(options.max_fd_channels),
        events_(events),
        spawn_connection_(std::move(options.spawn_connection)),
        spawn_fd_channel_(std::move(options.spawn_fd_channel)) {}

  ~TransportImpl() override { Shutdown(); }

  absl::Status Init();

  absl::Status Start(grpc::Server* server) override;
  std::vector<UniqueFd*> FdsForJail() override;
  std::optional<ConnectionId> ConnectionForPeer(absl::string_view peer) const override;
  void CloseFdChannel(FdChannelId id) override;
  void Shutdown() override;

 private:
  struct Listener {
    explicit Listener(UnixListener socket, Tag tag) : socket(std::move(socket)), tag(tag) {}
    UnixListener socket;
    Tag tag;
    bool paused = false;
    absl::Time resume_at;
  };
  struct Connection {
    int grpc_fd;      // the number gRPC owns; the key of "fd:N"
    UniqueFd watch;   // our duplicate, watched for EPOLLRDHUP only
  };
  struct Channel {
    UniqueFd fd;
  };
  // An accepted connection waiting for the HTTP/2 client preface.
  struct Pending {
    UniqueFd fd;
    PeerCredentials peer;
    absl::Time deadline;
  };

  absl::Status EpollAdd(const UniqueFd& fd, uint32_t events, uint64_t tag);
  void EpollDelete(const UniqueFd& fd);
  void RequestStop();
  bool UidAllowed(uid_t uid) const;

  // Event thread only, below.
  void Run();
  int EpollTimeoutMs() const;
  void ResumeListeners();
  bool DrainWake();
  void HandleListener(Listener& listener);
  std::optional<ConnectionId> AddConnection(UniqueFd fd, const PeerCredentials& peer,
                                            bool spawn_owner);
  void AddFdChannel(UniqueFd fd, const PeerCredentials& peer,
                    std::optional<ConnectionId> bound_to);
  void AddPending(UniqueFd fd, const PeerCredentials& peer);
  void ServePending(uint64_t id, uint32_t epoll_events);
  void ExpirePending();
  void CloseConnection(ConnectionId id, absl::string_view reason);
  void CloseChannel(FdChannelId id, absl::string_view reason);
  void ServeChannel(FdChannelId id, uint32_t epoll_events);
  void CloseEverything();

  // Fixed after Init().
  const std::string listen_path_;
  const mode_t socket_mode_;
  const std::vector<uid_t> allowed_uids_;
  const uint32_t max_connections_;
  const uint32_t max_fd_channels_;
  TransportEvents* const events_;
  std::optional<Listener> stream_listener_;
  std::optional<Listener> seqpacket_listener_;
  UniqueFd epoll_;
  UniqueFd wake_;

  // Handed to the event thread at its start.
  UniqueFd spawn_connection_;
  UniqueFd spawn_fd_channel_;
  PeerCredentials spawn_connection_peer_;
  PeerCredentials spawn_fd_channel_peer_;

  absl::Mutex lifecycle_mu_;
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  std::thread thread_;
  std::atomic<std::thread::id> event_thread_id_{};
  grpc::Server* server_ = nullptr;  // written before the event thread starts

  mutable absl::Mutex mu_;
  std::map<int, ConnectionId> connection_by_fd_ ABSL_GUARDED_BY(mu_);
  std::vector<FdChannelId> close_requests_ ABSL_GUARDED_BY(mu_);
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;

  // Event thread only.
  std::map<ConnectionId, Connection> connections_;
  std::map<FdChannelId, Channel> channels_;
  std::map<uint64_t, Pending> pending_;
  uint64_t next_pending_id_ = 1;
  ConnectionId next_connection_id_ = 1;
  FdChannelId next_channel_id_ = 1;
};

absl::Status TransportImpl::Init() {
  if (spawn_connection_.valid()) {
    VFIOD_RETURN_IF_ERROR(CheckUnixSocketKind(spawn_connection_, UnixSocketKind::kStream));
    VFIOD_RETURN_IF_ERROR(SetNonBlocking(spawn_connection_));
    VFIOD_ASSIGN_OR_RETURN(UnixPeerCredentials credentials,
                           GetUnixPeerCredentials(spawn_connection_));
    spawn_connection_peer_ = ToPeer(credentials);
  }
  if (spawn_fd_channel_.valid()) {
    VFIOD_RETURN_IF_ERROR(CheckUnixSocketKind(spawn_fd_channel_, UnixSocketKind::kSeqPacket));
    VFIOD_RETURN_IF_ERROR(SetNonBlocking(spawn_fd_channel_));
    VFIOD_ASSIGN_OR_RETURN(UnixPeerCredentials credentials,
                           GetUnixPeerCredentials(spawn_fd_channel_));
    spawn_fd_channel_peer_ = ToPeer(credentials);
  }

  if (!listen_path_.empty()) {
    const std::string fd_channel_path = absl::StrCat(listen_path_, kFdChannelSuffix);
    VFIOD_RETURN_IF_ERROR(CheckUnixSocketPath(listen_path_));
    VFIOD_RETURN_IF_ERROR(CheckUnixSocketPath(fd_channel_path));
    VFIOD_ASSIGN_OR_RETURN(UnixListener stream,
                           UnixListener::Bind(listen_path_, UnixSocketKind::kStream,
                                              socket_mode_));
    VFIOD_ASSIGN_OR_RETURN(UnixListener seqpacket,
                           UnixListener::Bind(fd_channel_path, UnixSocketKind::kSeqPacket,
                                              socket_mode_));
    stream_listener_.emplace(std::move(stream), Tag::kStreamListener);
    seqpacket_listener_.emplace(std::move(seqpacket), Tag::kSeqPacketListener);
    std::string uids;
    for (uid_t uid : allowed_uids_) absl::StrAppend(&uids, uids.empty() ? "" : ",", uid);
    LogInfo("listening", {{"socket", listen_path_},
                          {"fd_channel", fd_channel_path},
                          {"mode", absl::StrFormat("%04o", socket_mode_ & 07777)},
                          {"allowed_uids", uids}});
    if (allowed_uids_.empty()) {
      LogWarning("no uid is allowed to connect: every listen-mode connection will be refused",
                 {{"socket", listen_path_}});
    }
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

absl::Status TransportImpl::Start(grpc::Server* server) {
  if (server == nullptr) return absl::InvalidArgumentError("Transport::Start: server is null");
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
  if (stream_listener_.has_value()) {
    VFIOD_RETURN_IF_ERROR(
        EpollAdd(stream_listener_->socket.fd(), EPOLLIN, MakeTag(Tag::kStreamListener)));
  }
  if (seqpacket_listener_.has_value()) {
    VFIOD_RETURN_IF_ERROR(
        EpollAdd(seqpacket_listener_->socket.fd(), EPOLLIN, MakeTag(Tag::kSeqPacketListener)));
  }
  started_ = true;
  server_ = server;
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

std::vector<UniqueFd*> TransportImpl::FdsForJail() {
  std::vector<UniqueFd*> fds;
  if (stream_listener_.has_value()) fds.push_back(stream_listener_->socket.mutable_fd());
  if (seqpacket_listener_.has_value()) fds.push_back(seqpacket_listener_->socket.mutable_fd());
  if (spawn_connection_.valid()) fds.push_back(&spawn_connection_);
  if (spawn_fd_channel_.valid()) fds.push_back(&spawn_fd_channel_);
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
  // Closes the listeners and removes their files (if still ours).
  if (stream_listener_.has_value()) stream_listener_->socket.Close();
  if (seqpacket_listener_.has_value()) seqpacket_listener_->socket.Close();
  stream_listener_.reset();
  seqpacket_listener_.reset();
  spawn_connection_.Reset();
  spawn_fd_channel_.Reset();
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
  if (!listen_path_.empty()) LogInfo("transport stopped", {{"socket", listen_path_}});
}

bool TransportImpl::UidAllowed(uid_t uid) const {
  return std::find(allowed_uids_.begin(), allowed_uids_.end(), uid) != allowed_uids_.end();
}

void TransportImpl::Run() {
  event_thread_id_.store(std::this_thread::get_id());
  if (spawn_connection_.valid()) {
    std::optional<ConnectionId> owner =
        AddConnection(std::move(spawn_connection_), spawn_connection_peer_, true);
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
        case Tag::kStreamListener:
          if (stream_listener_.has_value()) HandleListener(*stream_listener_);
          break;
        case Tag::kSeqPacketListener:
          if (seqpacket_listener_.has_value()) HandleListener(*seqpacket_listener_);
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
  }
  CloseEverything();
  event_thread_id_.store(std::thread::id());
}

int TransportImpl::EpollTimeoutMs() const {
  std::optional<absl::Time> earliest;
  for (const std::optional<Listener>* l : {&stream_listener_, &seqpacket_listener_}) {
    if (l->has_value() && (*l)->paused) {
      if (!earliest.has_value() || (*l)->resume_at < *earliest) earliest = (*l)->resume_at;
    }
  }
  for (const auto& [id, pending] : pending_) {
    if (!earliest.has_value() || pending.deadline < *earliest) earliest = pending.deadline;
  }
  if (!earliest.has_value()) return -1;
  const int64_t ms = absl::ToInt64Milliseconds(*earliest - absl::Now());
  return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 1000));
}

void TransportImpl::ResumeListeners() {
  const absl::Time now = absl::Now();
  for (std::optional<Listener>* l : {&stream_listener_, &seqpacket_listener_}) {
    if (!l->has_value() || !(*l)->paused || (*l)->resume_at > now) continue;
    epoll_event event;
    event.events = EPOLLIN;
    event.data.u64 = MakeTag((*l)->tag);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, (*l)->socket.fd().get(), &event) == 0) {
      (*l)->paused = false;
    } else {
      (*l)->resume_at = now + kAcceptPause;
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

void TransportImpl::HandleListener(Listener& listener) {
  const bool is_stream = listener.tag == Tag::kStreamListener;
  const char* kind = is_stream ? "grpc" : "fd_channel";
  for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
    absl::StatusOr<UniqueFd> accepted = AcceptUnixConnection(listener.socket.fd());
    if (!accepted.ok()) {
      LogWarning("accept failed; pausing the listener",
                 {{"socket", listener.socket.path()},
                  {"error", std::string(accepted.status().message())}});
      epoll_event event;
      event.events = 0;
      event.data.u64 = MakeTag(listener.tag);
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener.socket.fd().get(), &event);
      listener.paused = true;
      listener.resume_at = absl::Now() + kAcceptPause;
      return;
    }
    if (!accepted->valid()) return;  // nothing more pending
    absl::StatusOr<UnixPeerCredentials> credentials = GetUnixPeerCredentials(*accepted);
    if (!credentials.ok()) {
      LogWarning("connection refused: no peer credentials",
                 {{"kind", kind}, {"error", std::string(credentials.status().message())}});
      continue;
    }
    const PeerCredentials peer = ToPeer(*credentials);
    if (!UidAllowed(peer.uid)) {
      LogWarning("connection refused: uid not allowed",
                 {{"kind", kind},
                  {"uid", std::to_string(peer.uid)},
                  {"pid", std::to_string(peer.pid)},
                  {"gid", std::to_string(peer.gid)}});
      continue;  // `accepted` closes here, before gRPC sees a byte
    }
    if (is_stream) {
      AddPending(*std::move(accepted), peer);
    } else {
      AddFdChannel(*std::move(accepted), peer, std::nullopt);
    }
  }
}

std::optional<ConnectionId> TransportImpl::AddConnection(UniqueFd fd, const PeerCredentials& peer,
                                                         bool spawn_owner) {
  if (connections_.size() >= max_connections_) {
    LogWarning("connection refused: too many connections",
               {{"uid", std::to_string(peer.uid)},
                {"pid", std::to_string(peer.pid)},
                {"max_connections", std::to_string(max_connections_)}});
    return std::nullopt;
  }
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

  const ConnectionId id = next_connection_id_++;
  absl::Status watched = EpollAdd(*watch, EPOLLRDHUP, MakeTag(Tag::kConnection, id));
  if (!watched.ok()) {
    LogError("connection refused", {{"error", std::string(watched.message())}});
    return std::nullopt;
  }
  connections_.emplace(id, Connection{number, *std::move(watch)});
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
  if (connections_.size() + pending_.size() >= max_connections_) {
    LogWarning("connection refused: too many connections",
               {{"uid", std::to_string(peer.uid)},
                {"pid", std::to_string(peer.pid)},
                {"max_connections", std::to_string(max_connections_)}});
    return;
  }
  const uint64_t id = next_pending_id_++;
  // Edge-triggered: a partial preface must not wake the loop again until more bytes arrive.
  absl::Status watched = EpollAdd(fd, EPOLLIN | EPOLLRDHUP | EPOLLET, MakeTag(Tag::kPending, id));
  if (!watched.ok()) {
    LogError("connection refused", {{"error", std::string(watched.message())}});
    return;
  }
  pending_.emplace(id, Pending{std::move(fd), peer, absl::Now() + kPrefaceTimeout});
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
  AddConnection(std::move(pending.fd), pending.peer, /*spawn_owner=*/false);
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

void TransportImpl::AddFdChannel(UniqueFd fd, const PeerCredentials& peer,
                                 std::optional<ConnectionId> bound_to) {
  if (channels_.size() >= max_fd_channels_) {
    LogWarning("fd channel refused: too many fd channels",
               {{"uid", std::to_string(peer.uid)},
                {"pid", std::to_string(peer.pid)},
                {"max_fd_channels", std::to_string(max_fd_channels_)}});
    return;
  }
  FdChannelKey key;
  absl::Status random = FillRandom(absl::MakeSpan(key));
  if (!random.ok()) {
    LogError("fd channel refused: no key", {{"error", std::string(random.message())}});
    return;
  }
  const FdChannelId id = next_channel_id_++;
  absl::Status watched = EpollAdd(fd, EPOLLIN | EPOLLRDHUP, MakeTag(Tag::kFdChannel, id));
  if (!watched.ok()) {
    LogError("fd channel refused", {{"error", std::string(watched.message())}});
    return;
  }
  auto [it, inserted] = channels_.emplace(id, Channel{std::move(fd)});
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
  {
    absl::MutexLock lock(&mu_);
    auto by_fd = connection_by_fd_.find(it->second.grpc_fd);
    if (by_fd != connection_by_fd_.end() && by_fd->second == id) connection_by_fd_.erase(by_fd);
  }
  connections_.erase(it);
  LogInfo("connection closed",
          {{"connection", std::to_string(id)}, {"reason", std::string(reason)}});
  events_->OnConnectionClosed(id);
}

void TransportImpl::CloseChannel(FdChannelId id, absl::string_view reason) {
  auto it = channels_.find(id);
  if (it == channels_.end()) return;
  EpollDelete(it->second.fd);
  channels_.erase(it);
  LogInfo("fd channel closed",
          {{"fd_channel", std::to_string(id)}, {"reason", std::string(reason)}});
  events_->OnFdChannelClosed(id);
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
  if (options.listen_path.empty() && !options.spawn_connection.valid()) {
    return absl::InvalidArgumentError(
        "Transport::Create: neither a listen path nor a spawn connection");
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
