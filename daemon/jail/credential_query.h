// The wire format of the credential channel between the jailed daemon and its launcher
// (daemon/jail/launcher_credentials.h): one AF_UNIX SOCK_SEQPACKET socketpair, one message per
// request and per reply, host byte order (both ends are the same binary on the same machine).
//
//   daemon -> launcher: a CredentialRequest, with exactly one fd (SCM_RIGHTS): the connected
//                       AF_UNIX socket whose peer is to be named.
//   launcher -> daemon: a CredentialReply with the same sequence number: the peer's pid, uid and
//                       gid as the launcher reads them (SO_PEERCRED, translated into the
//                       launcher's namespaces, which are the host's), or an errno.
#ifndef VFIOD_DAEMON_JAIL_CREDENTIAL_QUERY_H_
#define VFIOD_DAEMON_JAIL_CREDENTIAL_QUERY_H_

#include <cstdint>

namespace vfiod::jail {

// "VCRQ" and "VCRA": a message of the wrong kind or from another build is refused.
inline constexpr uint32_t kCredentialRequestMagic = 0x56435251;
inline constexpr uint32_t kCredentialReplyMagic = 0x56435241;

struct CredentialRequest {
  uint32_t magic = kCredentialRequestMagic;
  uint32_t reserved = 0;  // must be 0
  uint64_t sequence = 0;  // chosen by the daemon, echoed in the reply
};

struct CredentialReply {
  uint32_t magic = kCredentialReplyMagic;
  // 0, or the errno that explains why there are no credentials: EINVAL (malformed request, no
  // fd or more than one), ENOTSOCK (not a socket), EAFNOSUPPORT (not AF_UNIX), or what
  // getsockopt(SO_PEERCRED) said.
  int32_t error = 0;
  // The request's sequence; 0 when the request was too malformed to carry one.
  uint64_t sequence = 0;
  int32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t reserved = 0;
};

static_assert(sizeof(CredentialRequest) == 16, "the request has no padding");
static_assert(sizeof(CredentialReply) == 32, "the reply has no padding");

}  // namespace vfiod::jail

#endif  // VFIOD_DAEMON_JAIL_CREDENTIAL_QUERY_H_
