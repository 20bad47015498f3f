#include "daemon/socket_activation.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/base/errno_status.h"

namespace vfiod {
namespace {

constexpr int kMaxActivatedFds = 16;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace

absl::StatusOr<ActivatedSockets> TakeActivatedSockets() {
  const std::string pid_text = Env("LISTEN_PID");
  const std::string count_text = Env("LISTEN_FDS");
  const std::string names_text = Env("LISTEN_FDNAMES");
  for (const char* name : {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}) ::unsetenv(name);
  ActivatedSockets sockets;
  int64_t pid = 0;
  if (pid_text.empty() || !absl::SimpleAtoi(pid_text, &pid) || pid != ::getpid()) {
    return sockets;
  }
  int count = 0;
  if (!absl::SimpleAtoi(count_text, &count) || count < 1 || count > kMaxActivatedFds) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket activation: LISTEN_FDS=\"", count_text, "\" is not 1..",
                     kMaxActivatedFds));
  }
  std::vector<std::string> names;
  if (!names_text.empty()) {
    names = absl::StrSplit(names_text, ':');
  } else if (count <= 2) {
    names = {"grpc", "fds"};
    names.resize(count);
  }
  if (static_cast<int>(names.size()) != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket activation: LISTEN_FDNAMES=\"", names_text, "\" does not name ", count,
        " sockets (names: grpc, fds, vfio-user)"));
  }
  for (int i = 0; i < count; ++i) {
    const int fd = kFirstActivatedFd + i;
    if (::fcntl(fd, F_GETFD) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("socket activation: fd ", fd, " (\"", names[i], "\") is not open"));
    }
    UniqueFd* slot = names[i] == "grpc"        ? &sockets.grpc
                     : names[i] == "fds"       ? &sockets.fd_channel
                     : names[i] == "vfio-user" ? &sockets.vfio_user
                                               : nullptr;
    if (slot == nullptr || slot->valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "socket activation: fd ", fd, " is named \"", names[i],
          "\": unknown or repeated (names: grpc, fds, vfio-user)"));
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    *slot = UniqueFd(fd);
  }
  return sockets;
}

absl::StatusOr<UniqueFd> OpenNotifySocket() {
  const std::string path = Env("NOTIFY_SOCKET");
  ::unsetenv("NOTIFY_SOCKET");
  if (path.empty()) return UniqueFd();
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path) || (path[0] != '/' && path[0] != '@')) {
    return absl::InvalidArgumentError(
        absl::StrCat("NOTIFY_SOCKET=\"", path, "\" is not a socket path or @name"));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  if (path[0] == '@') address.sun_path[0] = '\0';
  UniqueFd socket(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return ErrnoError(errno, "socket(NOTIFY_SOCKET)");
  const socklen_t length = offsetof(sockaddr_un, sun_path) + path.size();
  if (::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
    return ErrnoError(errno, absl::StrCat("connect(NOTIFY_SOCKET ", path, ")"));
  }
  return socket;
}

absl::Status NotifyReady(const UniqueFd& socket, absl::string_view status) {
  if (!socket.valid()) return absl::OkStatus();
  std::string message = absl::StrCat("READY=1\nSTATUS=", status, "\n");
  struct iovec io = {message.data(), message.size()};
  struct msghdr header = {};
  header.msg_iov = &io;
  header.msg_iovlen = 1;
  if (::sendmsg(socket.get(), &header, MSG_NOSIGNAL) < 0) {
    return ErrnoError(errno, "sendmsg(NOTIFY_SOCKET)");
  }
  return absl::OkStatus();
}

}  // namespace vfiod
