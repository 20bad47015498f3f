#include "daemon/transport/peer_credential_source.h"

#include <cstdint>
#include <fstream>

#include "daemon/base/status_macros.h"
#include "daemon/transport/unix_socket.h"

namespace vfiod {

absl::StatusOr<PeerCredentials> SocketPeerCredentialSource::PeerOf(const UniqueFd& socket) {
  VFIOD_ASSIGN_OR_RETURN(UnixPeerCredentials credentials, GetUnixPeerCredentials(socket));
  PeerCredentials peer;
  peer.pid = credentials.pid;
  peer.uid = credentials.uid;
  peer.gid = credentials.gid;
  return peer;
}

uid_t KernelOverflowUid() {
  std::ifstream file("/proc/sys/kernel/overflowuid");
  unsigned long value = 0;
  if (file >> value && value <= UINT32_MAX) return static_cast<uid_t>(value);
  return 65534;  // the kernel's default
}

}  // namespace vfiod
