// Where the transport learns who is at the other end of a connection it accepted: the peer's
// pid, uid and gid, which the --allow-uid and --owner-uid checks, the per-uid quota and the log
// use. SO_PEERCRED is translated into the namespaces of the process that reads it, so the
// answer depends on who reads: the jailed daemon (pid 1 of its own pid namespace, and without
// root in a user namespace that maps only its own uid) would see pid 0 for every peer and the
// overflow uid for every other user. Under the jail the daemon therefore asks its launcher,
// which stays in the host's namespaces (daemon/jail/launcher_credentials.h; vfiod_main.cc puts
// the two together); this interface keeps the transport free of the jail.
#ifndef VFIOD_DAEMON_TRANSPORT_PEER_CREDENTIAL_SOURCE_H_
#define VFIOD_DAEMON_TRANSPORT_PEER_CREDENTIAL_SOURCE_H_

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "daemon/base/unique_fd.h"
#include "daemon/transport/connection_registry.h"

namespace vfiod {

class PeerCredentialSource {
 public:
  virtual ~PeerCredentialSource() = default;
  // The credentials of the process that connected `socket` (a connected AF_UNIX socket, which
  // stays the caller's), in the host's namespaces. Thread-safe. May block, for a bounded time
  // the implementation states; an error means the connection must be refused.
  virtual absl::StatusOr<PeerCredentials> PeerOf(const UniqueFd& socket) = 0;
};

// SO_PEERCRED read by the calling process: the host's view when the caller shares the host's
// pid and user namespaces (--jail=off, tests). Never blocks.
class SocketPeerCredentialSource final : public PeerCredentialSource {
 public:
  absl::StatusOr<PeerCredentials> PeerOf(const UniqueFd& socket) override;
};

// The uid the kernel reports for a uid that is not mapped into the reader's user namespace:
// /proc/sys/kernel/overflowuid, or the kernel's default 65534 where that cannot be read.
uid_t KernelOverflowUid();

}  // namespace vfiod

#endif  // VFIOD_DAEMON_TRANSPORT_PEER_CREDENTIAL_SOURCE_H_
