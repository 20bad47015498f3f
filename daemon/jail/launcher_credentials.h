// Peer credentials read outside the jail. The jailed daemon is pid 1 of its own pid namespace
// and, when started without root, in a user namespace that maps only its own uid: SO_PEERCRED
// read there gives pid 0 for every peer and the overflow uid for every other user. The launcher
// stays in the host's namespaces, so the daemon asks it: it sends the connected socket itself
// (SCM_RIGHTS) over the credential channel, a SOCK_SEQPACKET socketpair made by jail::Enter,
// and the launcher answers with SO_PEERCRED as it reads it (daemon/jail/credential_query.h).
//
// Both ends are here: LauncherCredentialClient (the daemon's) and AnswerCredentialQuery (the
// launcher's loop).
#ifndef VFIOD_DAEMON_JAIL_LAUNCHER_CREDENTIALS_H_
#define VFIOD_DAEMON_JAIL_LAUNCHER_CREDENTIALS_H_

#include <sys/types.h>

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/base/unique_fd.h"

namespace vfiod::jail {

// A peer's credentials in the host's namespaces.
struct HostCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The daemon's end of the credential channel. Thread-safe: queries are serialized, each one
// blocks its caller for at most `timeout` (the launcher is our own process and answers at once;
// one that does not is an error, never a hang). Owns `channel`.
class LauncherCredentialClient {
 public:
  static constexpr absl::Duration kDefaultTimeout = absl::Seconds(1);

  // `channel`: the daemon's end of the socketpair (jail::Enter's result). It is made
  // non-blocking here; an fd that cannot be is reported by the first Query.
  explicit LauncherCredentialClient(UniqueFd channel, absl::Duration timeout = kDefaultTimeout);

  // The credentials of the peer of `socket` (a connected AF_UNIX socket; it stays the
  // caller's: the launcher closes its copy before it answers). Errors: the launcher's errno
  // (e.g. ENOTSOCK) as ErrnoError naming "launcher: ..."; DEADLINE_EXCEEDED when no answer came
  // within the timeout; UNAVAILABLE when the launcher closed the channel. A late answer to an
  // earlier query is recognised by its sequence number and skipped.
  absl::StatusOr<HostCredentials> Query(const UniqueFd& socket);

 private:
  absl::Status Send(const UniqueFd& socket, uint64_t sequence) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<HostCredentials> AwaitReply(uint64_t sequence, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration timeout_;
  absl::Mutex mu_;
  UniqueFd channel_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
};

// The launcher's end: reads one request from `channel` (non-blocking) and answers it. The
// request is validated and nothing else of the daemon's is trusted: it must be exactly a
// CredentialRequest with exactly one fd, an AF_UNIX socket; anything else is answered with an
// errno. Every fd received is closed before the answer is sent. Never blocks (MSG_DONTWAIT both
// ways; an answer the channel cannot take now is dropped, and the daemon's query times out).
// Returns false when the channel is finished (the daemon closed its end, or it failed): stop
// polling it. Not thread-safe on one channel.
bool AnswerCredentialQuery(const UniqueFd& channel);

}  // namespace vfiod::jail

#endif  // VFIOD_DAEMON_JAIL_LAUNCHER_CREDENTIALS_H_
