// A service manager's two conventions, without libsystemd: socket activation (sd_listen_fds(3):
// LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and readiness notification (sd_notify(3):
// NOTIFY_SOCKET). See tools/systemd/ for the units that use them.
//
// Thread-safety: TakeActivatedSockets() reads and clears the environment: call it first thing,
// before any thread exists.
#ifndef VFIOD_DAEMON_SOCKET_ACTIVATION_H_
#define VFIOD_DAEMON_SOCKET_ACTIVATION_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/base/unique_fd.h"

namespace vfiod {

// The first fd a service manager passes (SD_LISTEN_FDS_START).
inline constexpr int kFirstActivatedFd = 3;

struct ActivatedSockets {
  UniqueFd grpc;        // name "grpc"
  UniqueFd fd_channel;  // name "fds"
  UniqueFd vfio_user;   // name "vfio-user"
  bool any() const { return grpc.valid() || fd_channel.valid() || vfio_user.valid(); }
};

// The sockets passed to this process, by their LISTEN_FDNAMES names; none when LISTEN_PID is
// unset or names another process. INVALID_ARGUMENT for: a LISTEN_FDS that is not 1..16, names
// that do not match the count, an unknown or repeated name, or a passed fd that is not open.
// Without LISTEN_FDNAMES, one fd is "grpc" and two are "grpc" and "fds". The kinds of the
// sockets are checked by the transport, like any inherited socket. The variables are removed
// from the environment.
absl::StatusOr<ActivatedSockets> TakeActivatedSockets();

// A datagram socket connected to $NOTIFY_SOCKET (a path, or "@name" for the abstract
// namespace), opened before the jail, which could not open it; invalid when unset.
absl::StatusOr<UniqueFd> OpenNotifySocket();

// Sends "READY=1" and a STATUS line on `socket` (no-op when invalid).
absl::Status NotifyReady(const UniqueFd& socket, absl::string_view status);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_SOCKET_ACTIVATION_H_
