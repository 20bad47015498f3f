#include "daemon/jail/launcher_credentials.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "daemon/base/fd_count_for_test.h"
#include "daemon/base/unique_fd.h"
#include "daemon/jail/credential_query.h"
#include "gtest/gtest.h"

namespace vfiod::jail {
namespace {

// Both ends of a credential channel.
struct Channel {
  UniqueFd daemon;
  UniqueFd launcher;
};

Channel MakeChannel() {
  int pair[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0)
      << std::strerror(errno);
  return {UniqueFd(pair[0]), UniqueFd(pair[1])};
}

bool Readable(const UniqueFd& fd, int timeout_ms) {
  struct pollfd wait = {fd.get(), POLLIN, 0};
  return ::poll(&wait, 1, timeout_ms) == 1;
}

// The launcher's loop in a thread: answers every request until the channel is finished or
// `stop` is set.
class Launcher {
 public:
  explicit Launcher(UniqueFd channel) : channel_(std::move(channel)) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        if (Readable(channel_, 20) && !AnswerCredentialQuery(channel_)) return;
      }
    });
  }
  ~Launcher() {
    stop_.store(true);
    thread_.join();
  }

 private:
  UniqueFd channel_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A process that connects to `path` and waits until the test closes the pipe; returns its pid.
pid_t ConnectFromChild(const std::string& path, int* hold_write_end) {
  int hold[2];
  EXPECT_EQ(::pipe2(hold, O_CLOEXEC), 0);
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(hold[1]);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ::_exit(1);
    }
    char byte;
    (void)!::read(hold[0], &byte, 1);  // until the test is done
    ::_exit(0);
  }
  ::close(hold[0]);
  *hold_write_end = hold[1];
  return pid;
}

// The launcher names the process at the other end of the connection: another process's pid.
TEST(LauncherCredentialsTest, NamesThePeerOfAConnection) {
  char dir_template[] = "/tmp/vfiodc.XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr) << std::strerror(errno);
  const std::string path = std::string(dir_template) + "/s";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener.get(), 1), 0);
  int hold = -1;
  const pid_t child = ConnectFromChild(path, &hold);
  UniqueFd connection(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(connection.valid()) << std::strerror(errno);

  Channel channel = MakeChannel();
  const int fds_before = testing::CountOpenFds();
  absl::StatusOr<HostCredentials> peer;
  {
    Launcher launcher(std::move(channel.launcher));
    LauncherCredentialClient client(std::move(channel.daemon));
    peer = client.Query(connection);
  }
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->pid, child);
  EXPECT_EQ(peer->uid, ::getuid());
  EXPECT_EQ(peer->gid, ::getgid());
  // Both channel ends are gone, and the launcher kept no copy of the connection.
  EXPECT_EQ(testing::CountOpenFds(), fds_before - 2);

  ::close(hold);
  int status;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ::unlink(path.c_str());
  ::rmdir(dir_template);
}

// Sends `request` with `fds` from the daemon's end, lets the launcher answer, returns the reply.
CredentialReply Exchange(Channel& channel, const void* request, size_t size,
                         const std::vector<int>& fds) {
  struct iovec data = {const_cast<void*>(request), size};
  alignas(cmsghdr) char control[CMSG_SPACE(8 * sizeof(int))] = {};
  msghdr message = {};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* rights = CMSG_FIRSTHDR(&message);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(rights), fds.data(), fds.size() * sizeof(int));
  }
  EXPECT_EQ(::sendmsg(channel.daemon.get(), &message, MSG_NOSIGNAL), static_cast<ssize_t>(size))
      << std::strerror(errno);
  EXPECT_TRUE(AnswerCredentialQuery(channel.launcher));
  CredentialReply reply;
  reply.magic = 0;
  EXPECT_TRUE(Readable(channel.daemon, 1000));
  EXPECT_EQ(::recv(channel.daemon.get(), &reply, sizeof(reply), MSG_DONTWAIT),
            static_cast<ssize_t>(sizeof(reply)));
  EXPECT_EQ(reply.magic, kCredentialReplyMagic);
  return reply;
}

// Whatever the daemon sends, the launcher answers with an errno and keeps no fd.
TEST(LauncherCredentialsTest, LauncherRefusesMalformedRequestsAndClosesEveryFd) {
  Channel channel = MakeChannel();
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd unix_a(pair[0]), unix_b(pair[1]);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd pipe_read(pipe_fds[0]), pipe_write(pipe_fds[1]);
  UniqueFd inet(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(inet.valid()) << std::strerror(errno);
  const int fds_before = testing::CountOpenFds();

  CredentialRequest good;
  good.sequence = 7;
  struct Case {
    const char* what;
    CredentialRequest request;
    size_t size;
    std::vector<int> fds;
    int error;
    uint64_t sequence;
  };
  CredentialRequest bad_magic = good;
  bad_magic.magic = 0x12345678;
  CredentialRequest bad_reserved = good;
  bad_reserved.reserved = 1;
  const Case cases[] = {
      {"no fd", good, sizeof(good), {}, EINVAL, 7},
      {"two fds", good, sizeof(good), {unix_a.get(), unix_b.get()}, EINVAL, 7},
      {"five fds (more than fit)",
       good,
       sizeof(good),
       {unix_a.get(), unix_b.get(), unix_a.get(), unix_b.get(), unix_a.get()},
       EINVAL,
       0},
      {"a pipe", good, sizeof(good), {pipe_read.get()}, ENOTSOCK, 7},
      {"an AF_INET socket", good, sizeof(good), {inet.get()}, EAFNOSUPPORT, 7},
      {"short", good, sizeof(good) - 1, {unix_a.get()}, EINVAL, 0},
      {"bad magic", bad_magic, sizeof(good), {unix_a.get()}, EINVAL, 0},
      {"reserved set", bad_reserved, sizeof(good), {unix_a.get()}, EINVAL, 0},
  };
  for (const Case& c : cases) {
    CredentialReply reply = Exchange(channel, &c.request, c.size, c.fds);
    EXPECT_EQ(reply.error, c.error) << c.what;
    EXPECT_EQ(reply.sequence, c.sequence) << c.what;
    EXPECT_EQ(reply.uid, 0u) << c.what;
    EXPECT_EQ(testing::CountOpenFds(), fds_before) << c.what;
  }
  // A longer message is refused too.
  char longer[sizeof(good) + 8] = {};
  std::memcpy(longer, &good, sizeof(good));
  CredentialReply reply = Exchange(channel, longer, sizeof(longer), {unix_a.get()});
  EXPECT_EQ(reply.error, EINVAL);
  // And a good one is answered: a socketpair's peer is its creator.
  reply = Exchange(channel, &good, sizeof(good), {unix_a.get()});
  EXPECT_EQ(reply.error, 0);
  EXPECT_EQ(reply.sequence, 7u);
  EXPECT_EQ(reply.pid, ::getpid());
  EXPECT_EQ(reply.uid, ::getuid());
  EXPECT_EQ(testing::CountOpenFds(), fds_before);
}

TEST(LauncherCredentialsTest, LauncherStopsWhenTheDaemonClosesItsEnd) {
  Channel channel = MakeChannel();
  channel.daemon.Reset();
  EXPECT_FALSE(AnswerCredentialQuery(channel.launcher));
}

// A launcher that does not answer costs the timeout and an error, never a hang; its late answer
// is skipped by the next query, which gets its own.
TEST(LauncherCredentialsTest, TimeoutThenLateAnswerIsSkipped) {
  Channel channel = MakeChannel();
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  LauncherCredentialClient client(std::move(channel.daemon), absl::Milliseconds(100));
  absl::StatusOr<HostCredentials> first = client.Query(a);
  EXPECT_EQ(first.status().code(), absl::StatusCode::kDeadlineExceeded) << first.status();
  // The launcher wakes up: it answers the first (late) and then the second request.
  Launcher launcher(std::move(channel.launcher));
  absl::StatusOr<HostCredentials> second = client.Query(a);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->pid, ::getpid());
}

TEST(LauncherCredentialsTest, ErrorsOfTheLauncherAndOfTheChannel) {
  Channel channel = MakeChannel();
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd pipe_read(pipe_fds[0]), pipe_write(pipe_fds[1]);
  UniqueFd launcher_end = std::move(channel.launcher);
  LauncherCredentialClient client(std::move(channel.daemon), absl::Seconds(5));
  {
    Launcher launcher(std::move(launcher_end));
    absl::StatusOr<HostCredentials> not_socket = client.Query(pipe_read);
    EXPECT_FALSE(not_socket.ok());
    EXPECT_NE(not_socket.status().message().find("launcher"), absl::string_view::npos)
        << not_socket.status();
    EXPECT_NE(not_socket.status().message().find("errno 88"), absl::string_view::npos)
        << not_socket.status();  // ENOTSOCK
    EXPECT_EQ(client.Query(UniqueFd()).status().code(), absl::StatusCode::kInvalidArgument);
  }
  // The launcher's end is closed with it: the channel is gone.
  absl::StatusOr<HostCredentials> gone = client.Query(pipe_read);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kUnavailable) << gone.status();
}

}  // namespace
}  // namespace vfiod::jail
