// AF_UNIX socket primitives for the transport: listening sockets created with an exact mode and
// stale-socket handling, accept with peer credentials, and one-message sends and receives with
// SCM_RIGHTS that never leak a descriptor.
//
// Every socket made here is close-on-exec and non-blocking; every received fd is close-on-exec
// and owned by a UniqueFd from the moment it exists in this process. Nothing here keeps state:
// the functions are thread-safe as far as the sockets they are given are (one thread per socket
// at a time). None of them blocks, except UnixListener::Bind, which may sleep in connect(2) on a
// hung filesystem like any path operation.
#ifndef VFIOD_DAEMON_TRANSPORT_UNIX_SOCKET_H_
#define VFIOD_DAEMON_TRANSPORT_UNIX_SOCKET_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "daemon/base/unique_fd.h"

namespace vfiod {

enum class UnixSocketKind { kStream, kSeqPacket };

// The longest path a sockaddr_un can hold (sun_path is 108 bytes including the NUL).
inline constexpr size_t kMaxUnixSocketPathLength = 107;

// INVALID_ARGUMENT unless `path` is a usable filesystem socket path: not empty, no NUL byte, and
// at most kMaxUnixSocketPathLength bytes (the message names the length and the limit).
absl::Status CheckUnixSocketPath(absl::string_view path);

// A listening socket bound at a filesystem path. Move-only. The destructor closes the socket and
// removes the file (see Unlink). Not thread-safe.
class UnixListener {
 public:
  // Creates a `kind` socket listening at `path` whose file has exactly `mode` (permission bits
  // only). The mode is applied to the socket before bind(2), so the file never exists with a wider
  // mode than `mode & ~umask`; bits the umask removed are then restored with a no-follow chmod.
  // An existing path is handled as follows:
  //  - a socket nobody accepts on (connect gives ECONNREFUSED): removed and replaced;
  //  - a socket someone accepts on: ALREADY_EXISTS "another vfiod is serving <path>";
  //  - a socket that refuses us otherwise (other socket type, no permission): FAILED_PRECONDITION;
  //  - anything that is not a socket: FAILED_PRECONDITION, and it is left alone.
  // Other errors follow ErrnoError.
  static absl::StatusOr<UnixListener> Bind(absl::string_view path, UnixSocketKind kind,
                                           mode_t mode, int backlog = 64);
  // Takes a listening socket someone else bound (a service manager's socket activation):
  // INVALID_ARGUMENT unless it is an AF_UNIX socket of `kind` that listens. It is made
  // non-blocking and close-on-exec; its file is never removed here (it is not ours); path() is
  // the bound path, for logs.
  static absl::StatusOr<UnixListener> Adopt(UniqueFd fd, UnixSocketKind kind);

  UnixListener(UnixListener&& other) noexcept;
  UnixListener& operator=(UnixListener&& other) noexcept;
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;
  ~UnixListener();

  const UniqueFd& fd() const { return fd_; }
  // For the jail only, which moves the socket to a fixed fd number in place.
  UniqueFd* mutable_fd() { return &fd_; }
  const std::string& path() const { return path_; }

  // Removes the socket file if the path still names the inode this listener created (a file put
  // there by someone else since is left alone). Idempotent; failures are logged, not returned:
  // after the jail's pivot_root the path is usually out of reach, which is fine.
  void Unlink();
  // Unlink() and close the socket.
  void Close();

 private:
  UnixListener(UniqueFd fd, std::string path, dev_t dev, ino_t ino)
      : fd_(std::move(fd)), path_(std::move(path)), dev_(dev), ino_(ino) {}

  UniqueFd fd_;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  bool linked_ = true;
};

// Connects to the socket at `path` (a new close-on-exec, non-blocking socket of `kind`). A
// connection refused by a full backlog is RESOURCE_EXHAUSTED (EAGAIN); no socket listening gives
// ErrnoError(ECONNREFUSED) (INTERNAL) and a missing file NOT_FOUND.
absl::StatusOr<UniqueFd> ConnectUnixSocket(absl::string_view path, UnixSocketKind kind);

// Accepts one pending connection from a non-blocking `listener` with accept4(SOCK_CLOEXEC |
// SOCK_NONBLOCK). Returns an invalid UniqueFd when none is pending; EINTR and ECONNABORTED are
// retried. Other errors follow ErrnoError (EMFILE/ENFILE: RESOURCE_EXHAUSTED).
absl::StatusOr<UniqueFd> AcceptUnixConnection(const UniqueFd& listener);

struct UnixPeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// SO_PEERCRED of a connected AF_UNIX socket: the peer's credentials at connect() (or socketpair()).
absl::StatusOr<UnixPeerCredentials> GetUnixPeerCredentials(const UniqueFd& socket);

// OK if `socket` is an AF_UNIX socket of `kind`, else INVALID_ARGUMENT naming what it is.
absl::Status CheckUnixSocketKind(const UniqueFd& socket, UnixSocketKind kind);

// Sets O_NONBLOCK on the open file description of `fd`.
absl::Status SetNonBlocking(const UniqueFd& fd);
// Clears O_NONBLOCK: for a connection served by a thread of its own, which then waits for data
// in recvmsg itself (one system call per message instead of poll plus recvmsg).
absl::Status SetBlocking(const UniqueFd& fd);

// Sends `data` as one message (for SOCK_SEQPACKET), with `fds` in one SCM_RIGHTS control message
// when not empty. Never blocks (MSG_DONTWAIT) and never raises SIGPIPE (MSG_NOSIGNAL): a full
// send buffer is RESOURCE_EXHAUSTED (EAGAIN), a closed peer ErrnoError(EPIPE). The fds stay
// owned by the caller (the kernel passes duplicates).
absl::Status SendUnixMessage(const UniqueFd& socket, absl::Span<const uint8_t> data,
                             absl::Span<const UniqueFd> fds = {});

struct UnixMessage {
  enum class Kind {
    kMessage,      // a message arrived (possibly empty, possibly truncated)
    kWouldBlock,   // nothing pending
    kEndOfStream,  // the peer closed its end (or sent an empty message without fds)
  };
  Kind kind = Kind::kWouldBlock;
  std::vector<uint8_t> data;     // the bytes that fit in the buffer (at most max_bytes)
  bool data_truncated = false;   // MSG_TRUNC: the message was longer than max_bytes
  bool fds_truncated = false;    // MSG_CTRUNC: more control data than fitted; the kernel
                                 // discarded the fds that did not fit
  std::vector<UniqueFd> fds;     // every fd that arrived, from every SCM_RIGHTS message
};

// Receives one message from a SOCK_SEQPACKET (or datagram) socket with recvmsg(MSG_DONTWAIT |
// MSG_CMSG_CLOEXEC). The control buffer has room for at least `max_fds` descriptors; extra ones
// are discarded by the kernel (fds_truncated). Every fd that arrived is in the result, whatever
// else is wrong with the message, so the caller closes them by dropping it. Errors (other than
// EAGAIN and EINTR, which is retried) follow ErrnoError; no fd exists in this process after an
// error.
absl::StatusOr<UnixMessage> ReceiveUnixMessage(const UniqueFd& socket, size_t max_bytes,
                                               size_t max_fds);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_TRANSPORT_UNIX_SOCKET_H_
