#include "daemon/transport/unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/logging.h"
#include "daemon/base/scm_rights.h"

namespace vfiod {
namespace {

// The kernel's SCM_MAX_FD: no message carries more.
constexpr size_t kKernelMaxFdsPerMessage = 253;

int SocketType(UnixSocketKind kind) {
  return kind == UnixSocketKind::kStream ? SOCK_STREAM : SOCK_SEQPACKET;
}

const char* KindName(UnixSocketKind kind) {
  return kind == UnixSocketKind::kStream ? "SOCK_STREAM" : "SOCK_SEQPACKET";
}

// `path` must have passed CheckUnixSocketPath.
sockaddr_un MakeAddress(absl::string_view path, socklen_t* length) {
  sockaddr_un address;
  std::memset(&address, 0, sizeof(address));
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  *length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return address;
}

absl::StatusOr<UniqueFd> NewSocket(UnixSocketKind kind) {
  int fd = ::socket(AF_UNIX, SocketType(kind) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return ErrnoError(errno, "socket(AF_UNIX)");
  return UniqueFd(fd);
}

// Connects `socket` to `path`; 0 or the errno.
int ConnectErrno(const UniqueFd& socket, absl::string_view path) {
  socklen_t length;
  sockaddr_un address = MakeAddress(path, &length);
  while (true) {
    if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&address), length) == 0) {
      return 0;
    }
    if (errno != EINTR) return errno;
  }
}

// What is at `path` now: a live server, a stale socket (removed here), or an error.
absl::Status ClearStaleSocket(const std::string& path, UnixSocketKind kind) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoError(errno, absl::StrCat("lstat(", path, ")"));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
  }
  absl::StatusOr<UniqueFd> probe = NewSocket(kind);
  if (!probe.ok()) return probe.status();
  int error = ConnectErrno(*probe, path);
  switch (error) {
    case 0:
    case EAGAIN:  // a full backlog: someone is listening
      return absl::AlreadyExistsError(absl::StrCat("another vfiod is serving ", path));
    case ECONNREFUSED:
      LogInfo("replacing stale socket", {{"path", path}});
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoError(errno, absl::StrCat("unlink(stale socket ", path, ")"));
      }
      return absl::OkStatus();
    case ENOENT:  // removed meanwhile
      return absl::OkStatus();
    default:
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is a socket that cannot be checked (", std::strerror(error),
                       ", errno ", error, "); refusing to replace it"));
  }
}

}  // namespace

absl::Status CheckUnixSocketPath(absl::string_view path) {
  if (path.empty()) return absl::InvalidArgumentError("socket path is empty");
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("socket path contains a NUL byte");
  }
  if (path.size() > kMaxUnixSocketPathLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path ", path, " is ", path.size(), " bytes; a UNIX socket path is at most ",
        kMaxUnixSocketPathLength, " bytes (sun_path is ", sizeof(sockaddr_un::sun_path), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<UnixListener> UnixListener::Bind(absl::string_view path_view,
                                                UnixSocketKind kind, mode_t mode,
                                                int backlog) {
  const absl::Status path_status = CheckUnixSocketPath(path_view);
  if (!path_status.ok()) return path_status;
  const std::string path(path_view.data(), path_view.size());
  mode &= 07777;

  absl::Status stale = ClearStaleSocket(path, kind);
  if (!stale.ok()) return stale;

  absl::StatusOr<UniqueFd> fd = NewSocket(kind);
  if (!fd.ok()) return fd.status();
  // bind(2) creates the file with the socket inode's mode minus the umask; sockfs inodes start
  // at 0777, so narrow it first.
  if (::fchmod(fd->get(), mode) != 0) return ErrnoError(errno, "fchmod(socket)");
  socklen_t length;
  sockaddr_un address = MakeAddress(path, &length);
  if (::bind(fd->get(), reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    if (errno == EADDRINUSE) {
      return absl::AlreadyExistsError(
          absl::StrCat("another vfiod is serving ", path, " (it was bound concurrently)"));
    }
    return ErrnoError(errno, absl::StrCat("bind(", path, ")"));
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    absl::Status status = ErrnoError(errno, absl::StrCat("lstat(", path, ") after bind"));
    return status;
  }
  // From here on the listener owns the file and removes it on every error path.
  UnixListener listener(*std::move(fd), path, st.st_dev, st.st_ino);
  if (!S_ISSOCK(st.st_mode)) {
    listener.linked_ = false;  // not ours
    return absl::InternalError(absl::StrCat(path, " is not a socket right after bind"));
  }
  if ((st.st_mode & 07777) != mode) {
    // The umask removed bits the caller asked for; put them back (never beyond `mode`).
    if (::fchmodat(AT_FDCWD, path.c_str(), mode, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError(errno, absl::StrCat("fchmodat(", path, ")"));
    }
  }
  if (::listen(listener.fd_.get(), backlog) != 0) {
    return ErrnoError(errno, absl::StrCat("listen(", path, ")"));
  }
  return listener;
}

UnixListener::UnixListener(UnixListener&& other) noexcept
    : fd_(std::move(other.fd_)),
      path_(std::move(other.path_)),
      dev_(other.dev_),
      ino_(other.ino_),
      linked_(std::exchange(other.linked_, false)) {}

UnixListener& UnixListener::operator=(UnixListener&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
    dev_ = other.dev_;
    ino_ = other.ino_;
    linked_ = std::exchange(other.linked_, false);
  }
  return *this;
}

UnixListener::~UnixListener() { Close(); }

absl::StatusOr<UnixListener> UnixListener::Adopt(UniqueFd fd, UnixSocketKind kind) {
  absl::Status checked = CheckUnixSocketKind(fd, kind);
  if (!checked.ok()) return checked;
  int listening = 0;
  socklen_t length = sizeof(listening);
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0) {
    return ErrnoError(errno, "getsockopt(SO_ACCEPTCONN)");
  }
  if (listening == 0) {
    return absl::InvalidArgumentError("the inherited socket does not listen");
  }
  absl::Status nonblocking = SetNonBlocking(fd);
  if (!nonblocking.ok()) return nonblocking;
  if (::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) != 0) return ErrnoError(errno, "fcntl(F_SETFD)");
  sockaddr_un address = {};
  socklen_t address_length = sizeof(address);
  std::string path;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &address_length) == 0 &&
      address_length > offsetof(sockaddr_un, sun_path) && address.sun_path[0] != '\0') {
    path.assign(address.sun_path, strnlen(address.sun_path, sizeof(address.sun_path)));
  }
  UnixListener listener(std::move(fd), std::move(path), 0, 0);
  listener.linked_ = false;
  return listener;
}

void UnixListener::Unlink() {
  if (!linked_) return;
  linked_ = false;
  struct stat st;
  if (::lstat(path_.c_str(), &st) != 0) {
    LogDebug("socket file already gone", {{"path", path_}, {"errno", std::to_string(errno)}});
    return;
  }
  if (!S_ISSOCK(st.st_mode) || st.st_dev != dev_ || st.st_ino != ino_) {
    LogInfo("socket path was replaced by another file; leaving it", {{"path", path_}});
    return;
  }
  if (::unlink(path_.c_str()) != 0) {
    LogWarning("cannot remove socket file",
               {{"path", path_}, {"error", std::strerror(errno)}});
  }
}

void UnixListener::Close() {
  Unlink();
  fd_.Reset();
}

absl::StatusOr<UniqueFd> ConnectUnixSocket(absl::string_view path, UnixSocketKind kind) {
  const absl::Status path_status = CheckUnixSocketPath(path);
  if (!path_status.ok()) return path_status;
  absl::StatusOr<UniqueFd> fd = NewSocket(kind);
  if (!fd.ok()) return fd.status();
  int error = ConnectErrno(*fd, path);
  if (error != 0) return ErrnoError(error, absl::StrCat("connect(", path, ")"));
  return fd;
}

absl::StatusOr<UniqueFd> AcceptUnixConnection(const UniqueFd& listener) {
  while (true) {
    int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return UniqueFd();
    return ErrnoError(errno, "accept4");
  }
}

absl::StatusOr<UnixPeerCredentials> GetUnixPeerCredentials(const UniqueFd& socket) {
  struct ucred credentials;
  socklen_t length = sizeof(credentials);
  if (::getsockopt(socket.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return ErrnoError(errno, "getsockopt(SO_PEERCRED)");
  }
  if (length != sizeof(credentials)) {
    return absl::InternalError("getsockopt(SO_PEERCRED) returned a short ucred");
  }
  UnixPeerCredentials result;
  result.pid = credentials.pid;
  result.uid = credentials.uid;
  result.gid = credentials.gid;
  return result;
}

absl::Status CheckUnixSocketKind(const UniqueFd& socket, UnixSocketKind kind) {
  int domain = 0;
  socklen_t length = sizeof(domain);
  if (::getsockopt(socket.get(), SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) {
    if (errno == ENOTSOCK) {
      return absl::InvalidArgumentError(absl::StrCat("fd ", socket.get(), " is not a socket"));
    }
    return ErrnoError(errno, "getsockopt(SO_DOMAIN)");
  }
  if (domain != AF_UNIX) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd ", socket.get(), " is not an AF_UNIX socket (domain ", domain, ")"));
  }
  int type = 0;
  length = sizeof(type);
  if (::getsockopt(socket.get(), SOL_SOCKET, SO_TYPE, &type, &length) != 0) {
    return ErrnoError(errno, "getsockopt(SO_TYPE)");
  }
  if (type != SocketType(kind)) {
    return absl::InvalidArgumentError(absl::StrCat("fd ", socket.get(), " is not a ",
                                                   KindName(kind), " socket (type ", type, ")"));
  }
  return absl::OkStatus();
}

absl::Status SetNonBlocking(const UniqueFd& fd) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return ErrnoError(errno, "fcntl(F_GETFL)");
  if ((flags & O_NONBLOCK) != 0) return absl::OkStatus();
  if (::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoError(errno, "fcntl(F_SETFL, O_NONBLOCK)");
  }
  return absl::OkStatus();
}

absl::Status SetBlocking(const UniqueFd& fd) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return ErrnoError(errno, "fcntl(F_GETFL)");
  if ((flags & O_NONBLOCK) == 0) return absl::OkStatus();
  if (::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return ErrnoError(errno, "fcntl(F_SETFL, ~O_NONBLOCK)");
  }
  return absl::OkStatus();
}

absl::Status SendUnixMessage(const UniqueFd& socket, absl::Span<const uint8_t> data,
                             absl::Span<const UniqueFd> fds) {
  if (fds.size() > kKernelMaxFdsPerMessage) {
    return absl::InvalidArgumentError(absl::StrCat("cannot send ", fds.size(),
                                                   " fds in one message (the limit is ",
                                                   kKernelMaxFdsPerMessage, ")"));
  }
  iovec iov;
  iov.iov_base = const_cast<uint8_t*>(data.data());
  iov.iov_len = data.size();
  msghdr message;
  std::memset(&message, 0, sizeof(message));
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    const size_t payload = fds.size() * sizeof(int);
    control.assign(CMSG_SPACE(payload), 0);
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(payload);
    unsigned char* out = CMSG_DATA(header);
    for (size_t i = 0; i < fds.size(); ++i) {
      const int fd = fds[i].get();
      std::memcpy(out + i * sizeof(int), &fd, sizeof(int));
    }
  }
  while (true) {
    ssize_t n = ::sendmsg(socket.get(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      if (static_cast<size_t>(n) != data.size()) {
        return absl::InternalError(
            absl::StrCat("sendmsg sent ", n, " of ", data.size(), " bytes"));
      }
      return absl::OkStatus();
    }
    if (errno != EINTR) return ErrnoError(errno, "sendmsg");
  }
}

absl::StatusOr<UnixMessage> ReceiveUnixMessage(const UniqueFd& socket, size_t max_bytes,
                                               size_t max_fds) {
  if (max_fds > kKernelMaxFdsPerMessage) max_fds = kKernelMaxFdsPerMessage;
  UnixMessage result;
  // One spare byte is not needed: MSG_TRUNC reports a longer message.
  result.data.resize(max_bytes == 0 ? 1 : max_bytes);
  iovec iov;
  iov.iov_base = result.data.data();
  iov.iov_len = max_bytes;
  // Room for `max_fds` descriptors (CMSG_SPACE rounds up, so perhaps a few more).
  std::vector<char> control(CMSG_SPACE(max_fds * sizeof(int)), 0);
  msghdr message;
  std::memset(&message, 0, sizeof(message));
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();

  ssize_t n;
  while (true) {
    n = ::recvmsg(socket.get(), &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      result.data.clear();
      result.kind = UnixMessage::Kind::kWouldBlock;
      return result;
    }
    return ErrnoError(errno, "recvmsg");
  }

  // Take ownership of every descriptor first, whatever else is wrong with the message.
  result.fds = TakeScmRights(message);
  result.fds_truncated = (message.msg_flags & MSG_CTRUNC) != 0;
  result.data_truncated = (message.msg_flags & MSG_TRUNC) != 0;
  const size_t received = static_cast<size_t>(n) < max_bytes ? static_cast<size_t>(n) : max_bytes;
  result.data.resize(received);
  if (n == 0 && message.msg_controllen == 0 && !result.fds_truncated &&
      !result.data_truncated) {
    result.kind = UnixMessage::Kind::kEndOfStream;
  } else {
    result.kind = UnixMessage::Kind::kMessage;
  }
  return result;
}

}  // namespace vfiod
