#include "daemon/transport/transport.h"

#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/transport/http2_preface.h"
#include "daemon/transport/peer_credential_source.h"
#include "daemon/transport/test_util.h"
#include "daemon/transport/unix_socket.h"
#include "gtest/gtest.h"
#include "proto/vfiod/v1/fd_channel.h"

namespace vfiod {
namespace {

using v1::FdChannelHello;
using v1::FdChannelReply;
using v1::FdChannelSend;
using v1::kFdChannelMagic;
using ::vfiod::testing::CountOpenFds;
using ::vfiod::testing::ShortTempDir;
using ::vfiod::testing::WaitReadable;

constexpr absl::Duration kWait = absl::Seconds(10);

// Records every callback; tokens carry the inode of the fd and a counter so order can be checked.
class RecordingEvents : public TransportEvents {
 public:
  struct Opened {
    ConnectionId id;
    PeerCredentials peer;
    bool spawn_owner;
  };
  struct ChannelOpened {
    FdChannelId id;
    FdChannelKey key;
    PeerCredentials peer;
    std::optional<ConnectionId> bound_to;
  };

  void OnConnectionOpened(ConnectionId id, const PeerCredentials& peer, bool spawn_owner) override {
    absl::MutexLock lock(&mu_);
    opened_.push_back({id, peer, spawn_owner});
    sequence_.push_back(absl::StrCat("open:", id));
  }
  void OnConnectionClosed(ConnectionId id) override {
    absl::MutexLock lock(&mu_);
    closed_.push_back(id);
    sequence_.push_back(absl::StrCat("close:", id));
  }
  void OnFdChannelOpened(FdChannelId id, const FdChannelKey& key, const PeerCredentials& peer,
                         std::optional<ConnectionId> bound_to) override {
    absl::Notification* gate;
    {
      absl::MutexLock lock(&mu_);
      channels_opened_.push_back({id, key, peer, bound_to});
      gate = std::exchange(gate_, nullptr);
      if (gate != nullptr) blocked_ = true;
    }
    // Holds the event thread, so tests can line events up behind it.
    if (gate != nullptr) gate->WaitForNotificationWithTimeout(kWait);
  }
  absl::StatusOr<std::vector<FdTokenBytes>> OnFdsReceived(FdChannelId id,
                                                          std::vector<UniqueFd> fds) override {
    absl::MutexLock lock(&mu_);
    ++batches_;
    if (fail_next_) {
      fail_next_ = false;
      return absl::ResourceExhaustedError("too many fds in this session");
    }
    std::vector<FdTokenBytes> tokens;
    for (const UniqueFd& fd : fds) {
      struct stat st;
      ::fstat(fd.get(), &st);
      FdTokenBytes token{};
      const uint64_t ino = st.st_ino;
      const uint64_t serial = ++token_serial_;
      std::memcpy(token.data(), &ino, sizeof(ino));
      std::memcpy(token.data() + 8, &serial, sizeof(serial));
      tokens.push_back(token);
    }
    return tokens;  // the fds close here
  }
  void OnFdChannelClosed(FdChannelId id) override {
    absl::MutexLock lock(&mu_);
    channels_closed_.push_back(id);
  }
  bool IsFdChannelBound(FdChannelId id) override {
    absl::MutexLock lock(&mu_);
    return channels_bound_;
  }
  std::optional<ConnectionId> EvictableConnection(
      const std::vector<ConnectionId>& candidates) override {
    absl::MutexLock lock(&mu_);
    for (ConnectionId id : candidates) {
      if (evictable_.count(id) != 0) return id;
    }
    return std::nullopt;
  }
  // Channels read as bound (the default) or unbound; connections that may be evicted.
  void SetChannelsBound(bool bound) {
    absl::MutexLock lock(&mu_);
    channels_bound_ = bound;
  }
  void SetEvictable(ConnectionId id) {
    absl::MutexLock lock(&mu_);
    evictable_.insert(id);
  }

  // Polls `predicate` (under the lock) until true or `timeout`.
  bool WaitFor(const std::function<bool(const RecordingEvents&)>& predicate,
               absl::Duration timeout = kWait) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (predicate(*this)) return true;
      }
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  std::vector<Opened> opened() const {
    absl::MutexLock lock(&mu_);
    return opened_;
  }
  std::vector<ConnectionId> closed() const {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  std::vector<ChannelOpened> channels_opened() const {
    absl::MutexLock lock(&mu_);
    return channels_opened_;
  }
  std::vector<FdChannelId> channels_closed() const {
    absl::MutexLock lock(&mu_);
    return channels_closed_;
  }
  int batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }
  // The next OnFdChannelOpened waits (bounded) for `gate`.
  void BlockNextChannelOpen(absl::Notification* gate) {
    absl::MutexLock lock(&mu_);
    gate_ = gate;
  }
  std::vector<std::string> sequence() const {
    absl::MutexLock lock(&mu_);
    return sequence_;
  }
  bool blocked() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return blocked_; }
  void FailNext() {
    absl::MutexLock lock(&mu_);
    fail_next_ = true;
  }

  // For WaitFor predicates (called with the lock held).
  size_t opened_count() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return opened_.size(); }
  size_t closed_count() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return closed_.size(); }
  size_t channels_opened_count() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return channels_opened_.size();
  }
  size_t channels_closed_count() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return channels_closed_.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Opened> opened_ ABSL_GUARDED_BY(mu_);
  std::vector<ConnectionId> closed_ ABSL_GUARDED_BY(mu_);
  std::vector<ChannelOpened> channels_opened_ ABSL_GUARDED_BY(mu_);
  std::vector<FdChannelId> channels_closed_ ABSL_GUARDED_BY(mu_);
  bool channels_bound_ ABSL_GUARDED_BY(mu_) = true;
  std::set<ConnectionId> evictable_ ABSL_GUARDED_BY(mu_);
  int batches_ ABSL_GUARDED_BY(mu_) = 0;
  bool fail_next_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t token_serial_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> sequence_ ABSL_GUARDED_BY(mu_);
  absl::Notification* gate_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool blocked_ ABSL_GUARDED_BY(mu_) = false;
};

// A generic gRPC handler answering "<peer>|<ConnectionForPeer(peer) or none>".
class PeerService : public grpc::CallbackGenericService {
 public:
  std::atomic<Transport*> transport{nullptr};

  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      Reactor(grpc::GenericCallbackServerContext* context, Transport* transport) {
        std::string peer = context->peer();
        std::optional<ConnectionId> id;
        if (transport != nullptr) id = transport->ConnectionForPeer(peer);
        std::string text = absl::StrCat(peer, "|", id.has_value() ? std::to_string(*id) : "none");
        grpc::Slice slice(text);
        response_ = grpc::ByteBuffer(&slice, 1);
        StartRead(&request_);
      }
      void OnReadDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status(grpc::StatusCode::INTERNAL, "no request"));
          return;
        }
        StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
      }
      void OnDone() override { delete this; }

     private:
      grpc::ByteBuffer request_;
      grpc::ByteBuffer response_;
    };
    return new Reactor(context, transport.load());
  }
};

std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

struct CallResult {
  grpc::Status status;
  std::string response;
};

// A unary call with raw bytes, bounded by a deadline.
CallResult UnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& request) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  absl::Notification done;
  CallResult result;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request_buffer, &response_buffer,
                 [&](grpc::Status status) {
                   result.status = std::move(status);
                   done.Notify();
                 });
  // The deadline guarantees completion; this only bounds a broken gRPC.
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(30))) {
    context.TryCancel();
    done.WaitForNotification();
  }
  result.response = ToString(response_buffer);
  return result;
}

constexpr char kHealthCheck[] = "/grpc.health.v1.Health/Check";
constexpr char kPeerMethod[] = "/vfiod.test.Peer/Get";

// Names every peer as `result` says, counting the questions: it stands in for the launcher
// (whose real answers tests/peer_credentials_test.cc checks) to show what the transport does
// with an answer.
class FixedCredentials : public PeerCredentialSource {
 public:
  explicit FixedCredentials(absl::StatusOr<PeerCredentials> result) : result_(std::move(result)) {}
  absl::StatusOr<PeerCredentials> PeerOf(const UniqueFd& socket) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    return result_;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  const absl::StatusOr<PeerCredentials> result_;
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok()) << dir_.error();
    path_ = dir_.File("v");
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.RegisterCallbackGenericService(&peer_service_);
    server_ = builder.BuildAndStart();  // no listening port: connections come from the transport
    ASSERT_NE(server_, nullptr);
  }

  void TearDown() override {
    if (transport_ != nullptr) transport_->Shutdown();
    peer_service_.transport.store(nullptr);
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    }
  }

  TransportOptions ListenOptions() {
    TransportOptions options;
    options.listen_path = path_;
    options.allowed_uids = {::getuid()};
    options.registry = &registry_;
    return options;
  }

  // Starts a transport with `options`; a null registry means one with `quotas_`.
  void StartTransport(TransportOptions options) {
    if (options.registry == nullptr || options.registry == &registry_) {
      quota_registry_ = std::make_unique<ConnectionRegistry>(quotas_);
      options.registry = quota_registry_.get();
    }
    absl::StatusOr<std::unique_ptr<Transport>> transport =
        Transport::Create(std::move(options), &events_);
    ASSERT_TRUE(transport.ok()) << transport.status();
    transport_ = *std::move(transport);
    peer_service_.transport.store(transport_.get());
    absl::Status started = transport_->Start(server_.get(), credentials_);
    ASSERT_TRUE(started.ok()) << started;
  }

  // Connects to the fd channel socket and reads the hello.
  UniqueFd ConnectFdChannel(FdChannelHello* hello) {
    absl::StatusOr<UniqueFd> fd = ConnectUnixSocket(path_ + ".fds", UnixSocketKind::kSeqPacket);
    EXPECT_TRUE(fd.ok()) << fd.status();
    if (!fd.ok()) return UniqueFd();
    ReadHello(*fd, hello);
    return *std::move(fd);
  }

  static void ReadHello(const UniqueFd& fd, FdChannelHello* hello) {
    std::memset(hello, 0, sizeof(*hello));
    ASSERT_TRUE(WaitReadable(fd, kWait)) << "no hello";
    absl::StatusOr<UnixMessage> message = ReceiveUnixMessage(fd, 64, 0);
    ASSERT_TRUE(message.ok()) << message.status();
    ASSERT_EQ(message->kind, UnixMessage::Kind::kMessage);
    ASSERT_EQ(message->data.size(), sizeof(FdChannelHello));
    std::memcpy(hello, message->data.data(), sizeof(*hello));
  }

  struct Reply {
    FdChannelReply header;
    std::vector<FdTokenBytes> tokens;
  };

  static Reply ReadReply(const UniqueFd& fd) {
    Reply reply;
    std::memset(&reply.header, 0, sizeof(reply.header));
    EXPECT_TRUE(WaitReadable(fd, kWait)) << "no reply";
    absl::StatusOr<UnixMessage> message = ReceiveUnixMessage(fd, v1::kFdChannelMaxMessageBytes, 0);
    EXPECT_TRUE(message.ok()) << message.status();
    if (!message.ok() || message->kind != UnixMessage::Kind::kMessage ||
        message->data.size() < sizeof(FdChannelReply)) {
      ADD_FAILURE() << "bad reply";
      return reply;
    }
    std::memcpy(&reply.header, message->data.data(), sizeof(reply.header));
    const size_t tokens = (message->data.size() - sizeof(FdChannelReply)) / sizeof(v1::FdToken);
    EXPECT_EQ(tokens, reply.header.count);
    for (size_t i = 0; i < tokens; ++i) {
      FdTokenBytes token;
      std::memcpy(token.data(),
                  message->data.data() + sizeof(FdChannelReply) + i * sizeof(v1::FdToken),
                  token.size());
      reply.tokens.push_back(token);
    }
    return reply;
  }

  static absl::Status SendBatch(const UniqueFd& channel, uint32_t sequence,
                                absl::Span<const UniqueFd> fds, uint32_t magic = kFdChannelMagic) {
    FdChannelSend send{magic, sequence};
    return SendUnixMessage(
        channel, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&send), sizeof(send)),
        fds);
  }

  // A stream connection that has sent the HTTP/2 client preface, as every gRPC client does
  // first: the transport hands a connection to gRPC only after it.
  absl::StatusOr<UniqueFd> ConnectHttp2Client() { return ConnectSendingPreface(false); }

  // Like ConnectHttp2Client, for a connection the transport is expected to refuse: it may close
  // the socket before the preface is sent, so a send that fails with EPIPE or ECONNRESET is the
  // refusal arriving early, not an error of the test.
  absl::StatusOr<UniqueFd> ConnectExpectingRefusal() { return ConnectSendingPreface(true); }

  absl::StatusOr<UniqueFd> ConnectSendingPreface(bool refusal_expected) {
    absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path_, UnixSocketKind::kStream);
    if (!client.ok()) return client;
    const absl::string_view preface = kHttp2ClientPreface;
    const ssize_t sent = ::send(client->get(), preface.data(), preface.size(), MSG_NOSIGNAL);
    const bool refused_early = sent < 0 && (errno == EPIPE || errno == ECONNRESET);
    if (sent != static_cast<ssize_t>(preface.size()) && !(refusal_expected && refused_early)) {
      return absl::InternalError("sending the HTTP/2 preface failed");
    }
    return client;
  }

  // True while `fd` is open on the inode `inode` (a closed number may be reused by another).
  static bool SameInode(int fd, ino_t inode) {
    struct stat st;
    return ::fstat(fd, &st) == 0 && st.st_ino == inode;
  }

  // True when the peer closed `fd` within the wait (EOF on a stream or seqpacket socket).
  // Data the server sent first (gRPC's SETTINGS frame) is skipped.
  static bool SeesEof(const UniqueFd& fd, absl::Duration wait = kWait) {
    const absl::Time deadline = absl::Now() + wait;
    while (absl::Now() < deadline) {
      if (!WaitReadable(fd, deadline - absl::Now())) return false;
      char buffer[4096];
      ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0 && errno != EAGAIN && errno != EINTR) return errno == ECONNRESET;
    }
    return false;
  }

  ShortTempDir dir_;
  std::string path_;
  SocketPeerCredentialSource socket_credentials_;
  PeerCredentialSource* credentials_ = &socket_credentials_;  // what StartTransport uses
  RecordingEvents events_;
  PeerService peer_service_;
  ConnectionQuotas quotas_;
  ConnectionRegistry registry_{ConnectionQuotas{}};     // for options that are never started
  std::unique_ptr<ConnectionRegistry> quota_registry_;  // the started transport's
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Transport> transport_;
};

uint64_t InodeOf(const UniqueFd& fd) {
  struct stat st;
  ::fstat(fd.get(), &st);
  return st.st_ino;
}

// --- sockets ---------------------------------------------------------------------------------

TEST_F(TransportTest, SocketsAreCreatedWith0600AndRemovedAtShutdown) {
  StartTransport(ListenOptions());
  for (const std::string& path : {path_, path_ + ".fds"}) {
    struct stat st;
    ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path;
    EXPECT_TRUE(S_ISSOCK(st.st_mode)) << path;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << path;
  }
  transport_->Shutdown();
  struct stat st;
  EXPECT_NE(::lstat(path_.c_str(), &st), 0);
  EXPECT_NE(::lstat((path_ + ".fds").c_str(), &st), 0);
}

TEST_F(TransportTest, LiveSocketIsRefusedAndStaleOneReplaced) {
  StartTransport(ListenOptions());
  RecordingEvents other_events;
  absl::StatusOr<std::unique_ptr<Transport>> second =
      Transport::Create(ListenOptions(), &other_events);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_NE(second.status().message().find("another vfiod is serving"), absl::string_view::npos);

  // A stale socket (bound, then closed without unlink) is replaced.
  transport_->Shutdown();
  transport_.reset();
  for (const std::string& path : {path_, path_ + ".fds"}) {
    absl::StatusOr<UnixListener> stale = UnixListener::Bind(
        path, path == path_ ? UnixSocketKind::kStream : UnixSocketKind::kSeqPacket, 0600);
    ASSERT_TRUE(stale.ok());
    // Move the file away while closing so it stays behind.
    ASSERT_EQ(::rename(path.c_str(), (path + "x").c_str()), 0);
    stale->Close();
    ASSERT_EQ(::rename((path + "x").c_str(), path.c_str()), 0);
  }
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  EXPECT_TRUE(client.ok()) << client.status();
}

TEST_F(TransportTest, NonSocketPathIsRefused) {
  UniqueFd file(::open(path_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  ASSERT_TRUE(file.valid());
  absl::StatusOr<std::unique_ptr<Transport>> transport =
      Transport::Create(ListenOptions(), &events_);
  EXPECT_EQ(transport.status().code(), absl::StatusCode::kFailedPrecondition) << transport.status();
  struct stat st;
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST_F(TransportTest, CreateValidatesOptions) {
  TransportOptions nothing;
  nothing.registry = &registry_;
  EXPECT_EQ(Transport::Create(std::move(nothing), &events_).status().code(),
            absl::StatusCode::kInvalidArgument);
  TransportOptions too_long = ListenOptions();
  too_long.listen_path = "/tmp/" + std::string(100, 'x');  // fits, but ".fds" does not
  absl::Status status = Transport::Create(std::move(too_long), &events_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("107"), absl::string_view::npos) << status;
  EXPECT_EQ(Transport::Create(ListenOptions(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A fd channel without a connection to bind it to.
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd other(pair[1]);
  TransportOptions channel_only = ListenOptions();
  channel_only.spawn_fd_channel = UniqueFd(pair[0]);
  EXPECT_EQ(Transport::Create(std::move(channel_only), &events_).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A spawn connection of the wrong kind.
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd other2(pair[1]);
  TransportOptions wrong_kind;
  wrong_kind.registry = &registry_;
  wrong_kind.spawn_connection = UniqueFd(pair[0]);
  EXPECT_EQ(Transport::Create(std::move(wrong_kind), &events_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TransportTest, StartTwiceFails) {
  StartTransport(ListenOptions());
  EXPECT_EQ(transport_->Start(server_.get(), credentials_).code(),
            absl::StatusCode::kFailedPrecondition);
}

// --- connection admission --------------------------------------------------------------------

TEST_F(TransportTest, UidNotAllowedIsClosedBeforeGrpcSeesIt) {
  TransportOptions options = ListenOptions();
  options.allowed_uids = {::getuid() + 1};
  StartTransport(std::move(options));
  absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(SeesEof(*client));
  absl::StatusOr<UniqueFd> channel = ConnectUnixSocket(path_ + ".fds", UnixSocketKind::kSeqPacket);
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_TRUE(SeesEof(*channel));
  EXPECT_TRUE(events_.opened().empty());
  EXPECT_TRUE(events_.channels_opened().empty());
}

// The peer is whoever the credential source names, not what SO_PEERCRED says in this process.
TEST_F(TransportTest, PeerCredentialsComeFromTheSource) {
  const PeerCredentials named{4242, ::getuid() + 7, ::getgid() + 7};
  FixedCredentials source(named);
  credentials_ = &source;
  TransportOptions options = ListenOptions();
  options.allowed_uids = {named.uid};
  StartTransport(std::move(options));
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  ASSERT_TRUE(channel.valid());
  ASSERT_EQ(events_.channels_opened().size(), 1u);
  const PeerCredentials peer = events_.channels_opened()[0].peer;
  EXPECT_EQ(peer.pid, named.pid);
  EXPECT_EQ(peer.uid, named.uid);
  EXPECT_EQ(peer.gid, named.gid);
  EXPECT_EQ(source.calls(), 1);
}

// A source that cannot name the peer (a launcher that does not answer) refuses the connection.
TEST_F(TransportTest, NoCredentialsRefusesTheConnection) {
  FixedCredentials source(absl::DeadlineExceededError("launcher: no answer"));
  credentials_ = &source;
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(SeesEof(*client));
  absl::StatusOr<UniqueFd> channel = ConnectUnixSocket(path_ + ".fds", UnixSocketKind::kSeqPacket);
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_TRUE(SeesEof(*channel));
  EXPECT_TRUE(events_.opened().empty());
  EXPECT_TRUE(events_.channels_opened().empty());
  EXPECT_EQ(source.calls(), 2);
}

// The overflow uid names nobody (every unmapped uid reads as it): refused even if allowed.
TEST_F(TransportTest, OverflowUidIsRefusedEvenWhenAllowed) {
  FixedCredentials source(PeerCredentials{4242, KernelOverflowUid(), KernelOverflowUid()});
  credentials_ = &source;
  TransportOptions options = ListenOptions();
  options.allowed_uids = {::getuid(), KernelOverflowUid()};
  StartTransport(std::move(options));
  absl::StatusOr<UniqueFd> channel = ConnectUnixSocket(path_ + ".fds", UnixSocketKind::kSeqPacket);
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_TRUE(SeesEof(*channel));
  EXPECT_TRUE(events_.channels_opened().empty());
}

TEST_F(TransportTest, StartNeedsACredentialSource) {
  credentials_ = nullptr;
  absl::StatusOr<std::unique_ptr<Transport>> transport =
      Transport::Create(ListenOptions(), &events_);
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_EQ((*transport)->Start(server_.get(), nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TransportTest, ConnectionsBeyondTheLimitAreClosed) {
  TransportOptions options = ListenOptions();
  quotas_.max_grpc = 1;
  quotas_.max_fd_channels = 1;
  StartTransport(std::move(options));
  absl::StatusOr<UniqueFd> first = ConnectHttp2Client();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  absl::StatusOr<UniqueFd> second = ConnectExpectingRefusal();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(SeesEof(*second));
  EXPECT_EQ(events_.opened().size(), 1u);

  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  absl::StatusOr<UniqueFd> channel2 = ConnectUnixSocket(path_ + ".fds", UnixSocketKind::kSeqPacket);
  ASSERT_TRUE(channel2.ok());
  EXPECT_TRUE(SeesEof(*channel2));
  EXPECT_EQ(events_.channels_opened().size(), 1u);
}

TEST_F(TransportTest, RawConnectionHangUpIsReported) {
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> client = ConnectHttp2Client();
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  const RecordingEvents::Opened opened = events_.opened()[0];
  EXPECT_FALSE(opened.spawn_owner);
  EXPECT_EQ(opened.peer.uid, ::getuid());
  EXPECT_EQ(opened.peer.pid, ::getpid());
  client->Reset();
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.closed_count() == 1; }));
  EXPECT_EQ(events_.closed()[0], opened.id);
}

TEST_F(TransportTest, GarbageFromAClientEndsTheConnection) {
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> client = ConnectHttp2Client();
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  const std::string garbage(256, 'x');
  ASSERT_EQ(::send(client->get(), garbage.data(), garbage.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(garbage.size()));
  // gRPC drops the connection: the client sees EOF (our watch duplicate must not keep it alive)
  // and the transport reports it.
  EXPECT_TRUE(SeesEof(*client));
  EXPECT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.closed_count() == 1; }));
}

TEST_F(TransportTest, NonHttp2ClientIsRefusedBeforeGrpcSeesIt) {
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  ASSERT_TRUE(client.ok());
  const absl::string_view http1 = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(client->get(), http1.data(), http1.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(http1.size()));
  EXPECT_TRUE(SeesEof(*client));
  EXPECT_TRUE(events_.opened().empty());
}

TEST_F(TransportTest, PrefaceInPiecesIsAccepted) {
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  ASSERT_TRUE(client.ok());
  const absl::string_view preface = kHttp2ClientPreface;
  for (size_t cut : {0ul, 3ul, 10ul}) {
    size_t next = cut == 10 ? preface.size() : (cut == 0 ? 3 : 10);
    absl::string_view piece = preface.substr(cut, next - cut);
    ASSERT_EQ(::send(client->get(), piece.data(), piece.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(piece.size()));
    if (next < preface.size()) {
      absl::SleepFor(absl::Milliseconds(50));
      EXPECT_TRUE(events_.opened().empty()) << "registered after " << next << " bytes";
    }
  }
  EXPECT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
}

TEST_F(TransportTest, SilentClientIsDroppedAfterThePrefaceTimeout) {
  TransportOptions options = ListenOptions();
  quotas_.max_grpc = 2;
  StartTransport(std::move(options));
  absl::StatusOr<UniqueFd> silent = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  ASSERT_TRUE(silent.ok());
  // The transport closes it without a preface (5 s).
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  bool closed = false;
  while (!closed && absl::Now() < deadline) {
    if (!WaitReadable(*silent, absl::Milliseconds(500))) continue;
    char byte;
    closed = ::recv(silent->get(), &byte, 1, MSG_DONTWAIT) == 0;
  }
  EXPECT_TRUE(closed);
  EXPECT_TRUE(events_.opened().empty());
}

TEST_F(TransportTest, AtTheGrpcQuotaTheOldestSilentConnectionMakesRoom) {
  quotas_.max_grpc = 2;
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> older = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  ASSERT_TRUE(older.ok());
  absl::SleepFor(absl::Milliseconds(100));  // accepted in this order
  absl::StatusOr<UniqueFd> newer = ConnectUnixSocket(path_, UnixSocketKind::kStream);
  ASSERT_TRUE(newer.ok());
  absl::SleepFor(absl::Milliseconds(200));  // both hold a slot, waiting for a preface
  // A client that speaks HTTP/2 gets a slot at once, not after the silent ones' 5 s.
  absl::StatusOr<UniqueFd> client = ConnectHttp2Client();
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  EXPECT_TRUE(SeesEof(*older)) << "the oldest silent connection gives way";
  EXPECT_FALSE(WaitReadable(*newer, absl::Milliseconds(300))) << "the newer one keeps its slot";
}

TEST_F(TransportTest, ConnectionForPeerParsesOnlyTheExactFormat) {
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> client = ConnectHttp2Client();
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  for (const char* peer :
       {"", "fd:", "fd:-1", "fd:+3", "fd: 3", "fd:3 ", "fd:03", "fd:abc", "fd:99999999999",
        "fd:2147483648", "unix:/tmp/x", "FD:3", "ipv4:127.0.0.1:1"}) {
    EXPECT_FALSE(transport_->ConnectionForPeer(peer).has_value()) << peer;
  }
  // Exactly one of the fd numbers maps to the connection.
  int found = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    std::optional<ConnectionId> id = transport_->ConnectionForPeer(absl::StrCat("fd:", fd));
    if (id.has_value()) {
      ++found;
      EXPECT_EQ(*id, events_.opened()[0].id);
    }
  }
  EXPECT_EQ(found, 1);
}

// gRPC closes a connection's fd itself (here: after garbage) while the event thread is busy, and
// the kernel hands the same number to the next accepted connection: the old connection must be
// reported closed before the new one is opened, and "fd:N" must name the new one.
TEST_F(TransportTest, ReusedFdNumberClosesTheOldConnectionFirst) {
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> first = ConnectHttp2Client();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  const ConnectionId first_id = events_.opened()[0].id;
  std::optional<int> first_fd;
  for (int fd = 0; fd < 1024 && !first_fd.has_value(); ++fd) {
    if (transport_->ConnectionForPeer(absl::StrCat("fd:", fd)) == first_id) first_fd = fd;
  }
  ASSERT_TRUE(first_fd.has_value());
  struct stat first_stat;
  ASSERT_EQ(::fstat(*first_fd, &first_stat), 0);
  const ino_t first_inode = first_stat.st_ino;

  absl::Notification gate;
  events_.BlockNextChannelOpen(&gate);
  absl::StatusOr<UniqueFd> channel = ConnectUnixSocket(path_ + ".fds", UnixSocketKind::kSeqPacket);
  ASSERT_TRUE(channel.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.blocked(); }));
  // The event thread is held. Queue a second connection, then make gRPC drop the first.
  absl::StatusOr<UniqueFd> second = ConnectHttp2Client();
  ASSERT_TRUE(second.ok());
  const std::string garbage(256, 'x');
  ASSERT_EQ(::send(first->get(), garbage.data(), garbage.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(garbage.size()));
  EXPECT_TRUE(SeesEof(*first));
  // gRPC shuts the socket down, then closes its fd: wait for the close.
  const absl::Time deadline = absl::Now() + kWait;
  while (SameInode(*first_fd, first_inode) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_FALSE(SameInode(*first_fd, first_inode)) << "gRPC never closed the connection's fd";
  gate.Notify();

  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 2; }));
  const ConnectionId second_id = events_.opened()[1].id;
  const std::vector<std::string> sequence = events_.sequence();
  auto position = [&](const std::string& entry) {
    return std::find(sequence.begin(), sequence.end(), entry) - sequence.begin();
  };
  ASSERT_LT(position(absl::StrCat("close:", first_id)), static_cast<long>(sequence.size()))
      << "the first connection was never reported closed";
  EXPECT_LT(position(absl::StrCat("close:", first_id)), position(absl::StrCat("open:", second_id)));
  std::optional<ConnectionId> now = transport_->ConnectionForPeer(absl::StrCat("fd:", *first_fd));
  if (now.has_value()) {
    EXPECT_EQ(*now, second_id);
  }
}

// --- fd channel ------------------------------------------------------------------------------

TEST_F(TransportTest, HelloHasMagicVersionAndTheKeyGivenToTheSession) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  EXPECT_EQ(hello.magic, kFdChannelMagic);
  EXPECT_EQ(hello.version, v1::kFdChannelVersion);
  EXPECT_EQ(hello.max_fds_per_message, v1::kFdChannelMaxFdsPerMessage);
  ASSERT_EQ(events_.channels_opened().size(), 1u);
  const RecordingEvents::ChannelOpened opened = events_.channels_opened()[0];
  EXPECT_EQ(std::memcmp(hello.channel_key, opened.key.data(), opened.key.size()), 0);
  EXPECT_NE(opened.key, FdChannelKey{});
  EXPECT_FALSE(opened.bound_to.has_value());
  EXPECT_EQ(opened.peer.uid, ::getuid());

  FdChannelHello hello2;
  UniqueFd channel2 = ConnectFdChannel(&hello2);
  EXPECT_NE(std::memcmp(hello.channel_key, hello2.channel_key, sizeof(hello.channel_key)), 0);
}

TEST_F(TransportTest, ThreeFdsGetThreeTokensInOrder) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  std::vector<UniqueFd> fds;
  fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  fds.emplace_back(::memfd_create("vfiod-test", MFD_CLOEXEC));
  fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  for (const UniqueFd& fd : fds) ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(SendBatch(channel, 77, fds).ok());
  Reply reply = ReadReply(channel);
  EXPECT_EQ(reply.header.magic, kFdChannelMagic);
  EXPECT_EQ(reply.header.sequence, 77u);
  EXPECT_EQ(reply.header.status_code, 0u);
  ASSERT_EQ(reply.header.count, 3u);
  ASSERT_EQ(reply.tokens.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    uint64_t ino;
    std::memcpy(&ino, reply.tokens[i].data(), sizeof(ino));
    EXPECT_EQ(ino, InodeOf(fds[i])) << "token " << i << " is not for fd " << i;
  }
  EXPECT_NE(reply.tokens[0], reply.tokens[1]);
  EXPECT_NE(reply.tokens[1], reply.tokens[2]);
  EXPECT_NE(reply.tokens[0], reply.tokens[2]);
  // The channel keeps working.
  ASSERT_TRUE(SendBatch(channel, 78, absl::MakeConstSpan(fds).subspan(0, 1)).ok());
  EXPECT_EQ(ReadReply(channel).header.count, 1u);
}

TEST_F(TransportTest, ZeroFdsGetAnErrorReplyAndTheChannelStaysOpen) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  ASSERT_TRUE(SendBatch(channel, 5, {}).ok());
  Reply reply = ReadReply(channel);
  EXPECT_EQ(reply.header.sequence, 5u);
  EXPECT_EQ(reply.header.status_code, static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(reply.header.count, 0u);
  EXPECT_GT(std::strlen(reply.header.message), 0u);
  EXPECT_LT(std::strlen(reply.header.message), sizeof(reply.header.message));
  EXPECT_EQ(events_.batches(), 0);

  std::vector<UniqueFd> fds;
  fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(SendBatch(channel, 6, fds).ok());
  reply = ReadReply(channel);
  EXPECT_EQ(reply.header.status_code, 0u);
  EXPECT_EQ(reply.header.count, 1u);
}

TEST_F(TransportTest, SeventeenFdsGetAnErrorReplyAndNoneLeak) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  const int before = CountOpenFds();
  {
    std::vector<UniqueFd> fds;
    for (int i = 0; i < 17; ++i) fds.emplace_back(::fcntl(write_end.get(), F_DUPFD_CLOEXEC, 0));
    ASSERT_TRUE(SendBatch(channel, 9, fds).ok());
    Reply reply = ReadReply(channel);
    EXPECT_EQ(reply.header.sequence, 9u);
    EXPECT_EQ(reply.header.status_code, static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
    EXPECT_NE(std::string(reply.header.message).find("16"), std::string::npos)
        << reply.header.message;
  }
  EXPECT_EQ(CountOpenFds(), before);
  EXPECT_EQ(events_.batches(), 0);
  // If the daemon kept any copy of the write end, the read end would not see EOF.
  write_end.Reset();
  ASSERT_TRUE(WaitReadable(read_end, kWait));
  char byte;
  EXPECT_EQ(::read(read_end.get(), &byte, 1), 0);
}

TEST_F(TransportTest, BadMagicAndBadSizeGetErrorRepliesAndFdsAreClosed) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  {
    std::vector<UniqueFd> fds;
    fds.emplace_back(pipe_fds[1]);
    ASSERT_TRUE(SendBatch(channel, 3, fds, /*magic=*/0xdeadbeef).ok());
    Reply reply = ReadReply(channel);
    EXPECT_EQ(reply.header.sequence, 0u);  // the header is not trusted
    EXPECT_EQ(reply.header.status_code, static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
    EXPECT_NE(std::string(reply.header.message).find("magic"), std::string::npos);

    const uint8_t twelve[12] = {};
    ASSERT_TRUE(SendUnixMessage(channel, twelve, fds).ok());
    reply = ReadReply(channel);
    EXPECT_EQ(reply.header.status_code, static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
    const uint8_t four[4] = {};
    ASSERT_TRUE(SendUnixMessage(channel, four, fds).ok());
    reply = ReadReply(channel);
    EXPECT_EQ(reply.header.status_code, static_cast<uint32_t>(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_EQ(events_.batches(), 0);
  ASSERT_TRUE(WaitReadable(read_end, kWait));
  char byte;
  EXPECT_EQ(::read(read_end.get(), &byte, 1), 0);
}

TEST_F(TransportTest, SessionErrorIsSentBack) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  events_.FailNext();
  std::vector<UniqueFd> fds;
  fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(SendBatch(channel, 11, fds).ok());
  Reply reply = ReadReply(channel);
  EXPECT_EQ(reply.header.sequence, 11u);
  EXPECT_EQ(reply.header.status_code, static_cast<uint32_t>(absl::StatusCode::kResourceExhausted));
  EXPECT_STREQ(reply.header.message, "too many fds in this session");
}

TEST_F(TransportTest, ClientCloseReportsOnFdChannelClosed) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  ASSERT_EQ(events_.channels_opened().size(), 1u);
  channel.Reset();
  ASSERT_TRUE(
      events_.WaitFor([](const RecordingEvents& e) { return e.channels_closed_count() == 1; }));
  EXPECT_EQ(events_.channels_closed()[0], events_.channels_opened()[0].id);
}

TEST_F(TransportTest, CloseFdChannelFromAnotherThread) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  ASSERT_EQ(events_.channels_opened().size(), 1u);
  const FdChannelId id = events_.channels_opened()[0].id;
  std::thread closer([&] { transport_->CloseFdChannel(id); });
  closer.join();
  ASSERT_TRUE(
      events_.WaitFor([](const RecordingEvents& e) { return e.channels_closed_count() == 1; }));
  EXPECT_EQ(events_.channels_closed()[0], id);
  EXPECT_TRUE(SeesEof(channel));
  transport_->CloseFdChannel(id);  // unknown now: ignored
  transport_->CloseFdChannel(12345);
}

TEST_F(TransportTest, ShutdownReportsEverythingClosed) {
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  absl::StatusOr<UniqueFd> client = ConnectHttp2Client();
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  transport_->Shutdown();
  EXPECT_EQ(events_.channels_closed().size(), 1u);
  EXPECT_EQ(events_.closed().size(), 1u);
  EXPECT_TRUE(SeesEof(channel));
  transport_->Shutdown();         // idempotent
  transport_->CloseFdChannel(1);  // harmless after shutdown
  EXPECT_EQ(transport_->Start(server_.get(), credentials_).code(),
            absl::StatusCode::kFailedPrecondition);
}

// --- gRPC end to end -------------------------------------------------------------------------

TEST_F(TransportTest, GrpcHealthCheckOverTheListeningSocket) {
  StartTransport(ListenOptions());
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel("unix:" + path_, grpc::InsecureChannelCredentials());
  CallResult health = UnaryCall(channel, kHealthCheck, "");
  ASSERT_TRUE(health.status.ok()) << health.status.error_code() << " "
                                  << health.status.error_message();
  EXPECT_EQ(health.response, std::string("\x08\x01", 2));  // status: SERVING
  ASSERT_EQ(events_.opened().size(), 1u);
  const ConnectionId id = events_.opened()[0].id;
  EXPECT_FALSE(events_.opened()[0].spawn_owner);
  EXPECT_EQ(events_.opened()[0].peer.uid, ::getuid());

  // A handler maps its call back to the connection.
  CallResult peer = UnaryCall(channel, kPeerMethod, "x");
  ASSERT_TRUE(peer.status.ok()) << peer.status.error_message();
  const std::string expected_suffix = absl::StrCat("|", id);
  ASSERT_GE(peer.response.size(), expected_suffix.size());
  EXPECT_EQ(peer.response.substr(peer.response.size() - expected_suffix.size()), expected_suffix)
      << peer.response;
  EXPECT_EQ(peer.response.rfind("fd:", 0), 0u) << peer.response;
  const std::string peer_string = peer.response.substr(0, peer.response.find('|'));

  channel.reset();
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.closed_count() == 1; }))
      << "closing the client was not reported";
  EXPECT_EQ(events_.closed()[0], id);
  EXPECT_FALSE(transport_->ConnectionForPeer(peer_string).has_value());
}

TEST_F(TransportTest, SpawnModeServesTheInheritedConnectionAndFdChannel) {
  int stream_pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, stream_pair), 0);
  UniqueFd client_end(stream_pair[1]);
  int seq_pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, seq_pair), 0);
  UniqueFd client_channel(seq_pair[1]);
  TransportOptions options;
  // Blocking on purpose: the transport must make them non-blocking.
  options.spawn_connection = UniqueFd(stream_pair[0]);
  options.spawn_fd_channel = UniqueFd(seq_pair[0]);
  StartTransport(std::move(options));

  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) {
    return e.opened_count() == 1 && e.channels_opened_count() == 1;
  }));
  const RecordingEvents::Opened opened = events_.opened()[0];
  EXPECT_TRUE(opened.spawn_owner);
  EXPECT_EQ(opened.peer.uid, ::getuid());
  const RecordingEvents::ChannelOpened channel_opened = events_.channels_opened()[0];
  ASSERT_TRUE(channel_opened.bound_to.has_value());
  EXPECT_EQ(*channel_opened.bound_to, opened.id);

  FdChannelHello hello;
  ASSERT_TRUE(SetNonBlocking(client_channel).ok());
  ReadHello(client_channel, &hello);
  EXPECT_EQ(hello.magic, kFdChannelMagic);
  EXPECT_EQ(std::memcmp(hello.channel_key, channel_opened.key.data(), channel_opened.key.size()),
            0);
  std::vector<UniqueFd> fds;
  fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(SendBatch(client_channel, 1, fds).ok());
  EXPECT_EQ(ReadReply(client_channel).header.count, 1u);

  ASSERT_TRUE(SetNonBlocking(client_end).ok());
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateInsecureChannelFromFd("spawn", client_end.Release());
  CallResult health = UnaryCall(channel, kHealthCheck, "");
  EXPECT_TRUE(health.status.ok()) << health.status.error_message();
  CallResult peer = UnaryCall(channel, kPeerMethod, "x");
  ASSERT_TRUE(peer.status.ok()) << peer.status.error_message();
  EXPECT_NE(peer.response.find(absl::StrCat("|", opened.id)), std::string::npos) << peer.response;

  channel.reset();
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.closed_count() == 1; }));
  EXPECT_EQ(events_.closed()[0], opened.id);
  client_channel.Reset();
  ASSERT_TRUE(
      events_.WaitFor([](const RecordingEvents& e) { return e.channels_closed_count() == 1; }));
}

TEST_F(TransportTest, ConnectionIdsAreNeverReused) {
  StartTransport(ListenOptions());
  std::vector<ConnectionId> ids;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<UniqueFd> client = ConnectHttp2Client();
    ASSERT_TRUE(client.ok());
    ASSERT_TRUE(events_.WaitFor(
        [i](const RecordingEvents& e) { return e.opened_count() == static_cast<size_t>(i + 1); }));
    client->Reset();
    ASSERT_TRUE(events_.WaitFor(
        [i](const RecordingEvents& e) { return e.closed_count() == static_cast<size_t>(i + 1); }));
  }
  std::vector<RecordingEvents::Opened> opened = events_.opened();
  for (size_t i = 1; i < opened.size(); ++i) EXPECT_GT(opened[i].id, opened[i - 1].id);
}

TEST_F(TransportTest, AnUnboundFdChannelIsClosedAfterTheBindTimeout) {
  events_.SetChannelsBound(false);
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd channel = ConnectFdChannel(&hello);
  ASSERT_TRUE(channel.valid());
  const absl::Time start = absl::Now();
  EXPECT_TRUE(SeesEof(channel, kFdChannelBindTimeout + kWait));
  EXPECT_GE(absl::Now() - start, kFdChannelBindTimeout - absl::Milliseconds(100));
  EXPECT_TRUE(
      events_.WaitFor([](const RecordingEvents& e) { return e.channels_closed_count() == 1; }));
}

TEST_F(TransportTest, AtTheFdChannelQuotaTheOldestUnboundChannelMakesRoom) {
  events_.SetChannelsBound(false);
  quotas_.max_fd_channels = 2;
  StartTransport(ListenOptions());
  FdChannelHello hello;
  UniqueFd first = ConnectFdChannel(&hello);
  UniqueFd second = ConnectFdChannel(&hello);
  ASSERT_TRUE(first.valid() && second.valid());
  UniqueFd third = ConnectFdChannel(&hello);
  EXPECT_TRUE(third.valid()) << "a new channel got no slot";
  EXPECT_TRUE(SeesEof(first));
}

TEST_F(TransportTest, AtTheGrpcQuotaAnEvictableObserverMakesRoomAndOthersDoNot) {
  quotas_.max_grpc = 1;
  StartTransport(ListenOptions());
  absl::StatusOr<UniqueFd> first = ConnectHttp2Client();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 1; }));
  // Not evictable (the owner, or busy): the newcomer is refused.
  absl::StatusOr<UniqueFd> refused = ConnectExpectingRefusal();
  ASSERT_TRUE(refused.ok());
  EXPECT_TRUE(SeesEof(*refused));
  // Evictable: it makes room.
  events_.SetEvictable(events_.opened()[0].id);
  absl::StatusOr<UniqueFd> second = ConnectHttp2Client();
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(events_.WaitFor([](const RecordingEvents& e) { return e.opened_count() == 2; }));
  EXPECT_TRUE(SeesEof(*first));
}

}  // namespace
}  // namespace vfiod
