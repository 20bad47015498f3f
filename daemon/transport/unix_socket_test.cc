#include "daemon/transport/unix_socket.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "daemon/transport/test_util.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using ::vfiod::testing::CountOpenFds;
using ::vfiod::testing::ShortTempDir;
using ::vfiod::testing::WaitReadable;

mode_t ModeOf(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode;
}

TEST(UnixSocketTest, PathLengthIsCheckedAgainstSunPath) {
  EXPECT_TRUE(CheckUnixSocketPath(std::string(107, 'a')).ok());
  absl::Status too_long = CheckUnixSocketPath(std::string(108, 'a'));
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.message().find("108 bytes"), absl::string_view::npos) << too_long;
  EXPECT_NE(too_long.message().find("107"), absl::string_view::npos) << too_long;
  EXPECT_EQ(CheckUnixSocketPath("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckUnixSocketPath(std::string("a\0b", 3)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnixListener::Bind("/tmp/" + std::string(120, 'x'), UnixSocketKind::kStream, 0600)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(UnixSocketTest, BindCreatesSocketWithExactModeAndRemovesItOnClose) {
  ShortTempDir dir;
  ASSERT_TRUE(dir.ok()) << dir.error();
  const std::string path = dir.File("s");
  mode_t old_umask = ::umask(022);
  absl::StatusOr<UnixListener> listener = UnixListener::Bind(path, UnixSocketKind::kStream, 0600);
  ::umask(old_umask);
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_TRUE(S_ISSOCK(ModeOf(path)));
  EXPECT_EQ(ModeOf(path) & 07777, 0600u);
  listener->Close();
  EXPECT_EQ(ModeOf(path), 0u) << "socket file not removed";
}

TEST(UnixSocketTest, BindRestoresBitsTheUmaskRemoved) {
  ShortTempDir dir;
  ASSERT_TRUE(dir.ok()) << dir.error();
  const std::string path = dir.File("s");
  mode_t old_umask = ::umask(077);
  absl::StatusOr<UnixListener> listener =
      UnixListener::Bind(path, UnixSocketKind::kSeqPacket, 0660);
  ::umask(old_umask);
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_EQ(ModeOf(path) & 07777, 0660u);
}

// A socket file nobody listens on, as a crashed daemon leaves behind.
void MakeStaleSocket(const std::string& path, int type) {
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(fd.valid());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(address.sun_path));
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(fd.get(), 1), 0);
}

TEST(UnixSocketTest, StaleSocketIsReplaced) {
  ShortTempDir dir;
  ASSERT_TRUE(dir.ok()) << dir.error();
  const std::string path = dir.File("s");
  MakeStaleSocket(path, SOCK_STREAM);
  ASSERT_TRUE(S_ISSOCK(ModeOf(path)));
  absl::StatusOr<UnixListener> listener = UnixListener::Bind(path, UnixSocketKind::kStream, 0600);
  ASSERT_TRUE(listener.ok()) << listener.status();
  absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path, UnixSocketKind::kStream);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<UniqueFd> accepted = AcceptUnixConnection(listener->fd());
  ASSERT_TRUE(accepted.ok());
  EXPECT_TRUE(accepted->valid());
}

TEST(UnixSocketTest, LiveSocketIsRefused) {
  ShortTempDir dir;
  ASSERT_TRUE(dir.ok()) << dir.error();
  const std::string path = dir.File("s");
  absl::StatusOr<UnixListener> first = UnixListener::Bind(path, UnixSocketKind::kStream, 0600);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<UnixListener> second = UnixListener::Bind(path, UnixSocketKind::kStream, 0600);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_NE(second.status().message().find("another vfiod is serving " + path),
            absl::string_view::npos)
      << second.status();
  // The live socket is untouched.
  EXPECT_TRUE(ConnectUnixSocket(path, UnixSocketKind::kStream).ok());
}

TEST(UnixSocketTest, NonSocketPathIsRefusedAndLeftAlone) {
  ShortTempDir dir;
  ASSERT_TRUE(dir.ok()) << dir.error();
  const std::string path = dir.File("s");
  UniqueFd file(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  ASSERT_TRUE(file.valid());
  absl::StatusOr<UnixListener> listener = UnixListener::Bind(path, UnixSocketKind::kStream, 0600);
  EXPECT_EQ(listener.status().code(), absl::StatusCode::kFailedPrecondition) << listener.status();
  EXPECT_TRUE(S_ISREG(ModeOf(path)));
}

TEST(UnixSocketTest, UnlinkLeavesAReplacementAlone) {
  ShortTempDir dir;
  ASSERT_TRUE(dir.ok()) << dir.error();
  const std::string path = dir.File("s");
  absl::StatusOr<UnixListener> listener = UnixListener::Bind(path, UnixSocketKind::kStream, 0600);
  ASSERT_TRUE(listener.ok());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  UniqueFd file(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  ASSERT_TRUE(file.valid());
  listener->Close();
  EXPECT_TRUE(S_ISREG(ModeOf(path)));
}

TEST(UnixSocketTest, AcceptGivesPeerCredentialsAndNonBlockingFd) {
  ShortTempDir dir;
  ASSERT_TRUE(dir.ok()) << dir.error();
  const std::string path = dir.File("s");
  absl::StatusOr<UnixListener> listener = UnixListener::Bind(path, UnixSocketKind::kStream, 0600);
  ASSERT_TRUE(listener.ok());
  absl::StatusOr<UniqueFd> none = AcceptUnixConnection(listener->fd());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->valid());
  absl::StatusOr<UniqueFd> client = ConnectUnixSocket(path, UnixSocketKind::kStream);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<UniqueFd> server = AcceptUnixConnection(listener->fd());
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE(server->valid());
  EXPECT_NE(::fcntl(server->get(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(server->get(), F_GETFD) & FD_CLOEXEC, 0);
  absl::StatusOr<UnixPeerCredentials> peer = GetUnixPeerCredentials(*server);
  ASSERT_TRUE(peer.ok());
  EXPECT_EQ(peer->uid, ::getuid());
  EXPECT_EQ(peer->pid, ::getpid());
  EXPECT_TRUE(CheckUnixSocketKind(*server, UnixSocketKind::kStream).ok());
  EXPECT_EQ(CheckUnixSocketKind(*server, UnixSocketKind::kSeqPacket).code(),
            absl::StatusCode::kInvalidArgument);
}

class SeqPacketPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
    a_.Reset(fds[0]);
    b_.Reset(fds[1]);
  }
  UniqueFd a_;
  UniqueFd b_;
};

std::vector<UniqueFd> MakeEventFds(int n) {
  std::vector<UniqueFd> fds;
  for (int i = 0; i < n; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  return fds;
}

TEST_F(SeqPacketPairTest, SendAndReceiveFds) {
  std::vector<UniqueFd> sent = MakeEventFds(3);
  const uint8_t data[] = {1, 2, 3};
  ASSERT_TRUE(SendUnixMessage(a_, data, sent).ok());
  absl::StatusOr<UnixMessage> got = ReceiveUnixMessage(b_, 16, 16);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->kind, UnixMessage::Kind::kMessage);
  EXPECT_EQ(got->data, std::vector<uint8_t>({1, 2, 3}));
  EXPECT_FALSE(got->data_truncated);
  EXPECT_FALSE(got->fds_truncated);
  ASSERT_EQ(got->fds.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    struct stat s1, s2;
    ASSERT_EQ(::fstat(sent[i].get(), &s1), 0);
    ASSERT_EQ(::fstat(got->fds[i].get(), &s2), 0);
    EXPECT_EQ(s1.st_ino, s2.st_ino);
    EXPECT_NE(::fcntl(got->fds[i].get(), F_GETFD) & FD_CLOEXEC, 0);
  }
  absl::StatusOr<UnixMessage> nothing = ReceiveUnixMessage(b_, 16, 16);
  ASSERT_TRUE(nothing.ok());
  EXPECT_EQ(nothing->kind, UnixMessage::Kind::kWouldBlock);
}

TEST_F(SeqPacketPairTest, TooManyFdsAreTruncatedAndNoneLeak) {
  const int before = CountOpenFds();
  {
    std::vector<UniqueFd> sent = MakeEventFds(20);
    const uint8_t data[] = {9};
    ASSERT_TRUE(SendUnixMessage(a_, data, sent).ok());
    absl::StatusOr<UnixMessage> got = ReceiveUnixMessage(b_, 16, 4);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(got->fds_truncated);
    EXPECT_LE(got->fds.size(), 4u);
  }
  EXPECT_EQ(CountOpenFds(), before);
}

TEST_F(SeqPacketPairTest, LongMessageIsReportedTruncated) {
  std::vector<uint8_t> data(100, 7);
  ASSERT_TRUE(SendUnixMessage(a_, data).ok());
  absl::StatusOr<UnixMessage> got = ReceiveUnixMessage(b_, 8, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->data_truncated);
  EXPECT_EQ(got->data.size(), 8u);
}

TEST_F(SeqPacketPairTest, EndOfStream) {
  a_.Reset();
  ASSERT_TRUE(WaitReadable(b_, absl::Seconds(5)));
  absl::StatusOr<UnixMessage> got = ReceiveUnixMessage(b_, 8, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, UnixMessage::Kind::kEndOfStream);
}

TEST_F(SeqPacketPairTest, EmptyMessageWithFdsIsAMessage) {
  std::vector<UniqueFd> sent = MakeEventFds(1);
  ASSERT_TRUE(SendUnixMessage(a_, {}, sent).ok());
  absl::StatusOr<UnixMessage> got = ReceiveUnixMessage(b_, 8, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, UnixMessage::Kind::kMessage);
  EXPECT_EQ(got->fds.size(), 1u);
  EXPECT_TRUE(got->data.empty());
}

TEST_F(SeqPacketPairTest, SendToFullBufferDoesNotBlock) {
  std::vector<uint8_t> data(4096, 1);
  absl::Status status;
  for (int i = 0; i < 100000 && status.ok(); ++i) status = SendUnixMessage(a_, data);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
}

}  // namespace
}  // namespace vfiod
