#include "daemon/jail/launcher_credentials.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/scm_rights.h"
#include "daemon/base/status_macros.h"
#include "daemon/jail/credential_query.h"

namespace vfiod::jail {
namespace {

// More room than one fd, so that a request carrying several is seen whole and refused (and the
// kernel closes whatever did not fit: MSG_CTRUNC).
constexpr size_t kMaxReceivedFds = 4;

// Fills `reply` with the peer of the one fd in `fds`; returns 0 or the errno that explains why
// not.
int ReadPeer(const std::vector<UniqueFd>& fds, CredentialReply& reply) {
  if (fds.size() != 1) return EINVAL;
  const int fd = fds[0].get();
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno;
  if (!S_ISSOCK(st.st_mode)) return ENOTSOCK;
  int domain = 0;
  socklen_t length = sizeof(domain);
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) return errno;
  if (domain != AF_UNIX) return EAFNOSUPPORT;
  struct ucred peer;
  length = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return errno;
  if (length != sizeof(peer)) return EPROTO;
  reply.pid = peer.pid;
  reply.uid = peer.uid;
  reply.gid = peer.gid;
  return 0;
}

}  // namespace

LauncherCredentialClient::LauncherCredentialClient(UniqueFd channel, absl::Duration timeout)
    : timeout_(timeout), channel_(std::move(channel)) {}

absl::StatusOr<HostCredentials> LauncherCredentialClient::Query(const UniqueFd& socket) {
  if (!socket.valid()) {
    return absl::InvalidArgumentError("launcher: credential query for an invalid fd");
  }
  absl::MutexLock lock(&mu_);
  const uint64_t sequence = next_sequence_++;
  const absl::Time deadline = absl::Now() + timeout_;
  VFIOD_RETURN_IF_ERROR(Send(socket, sequence));
  return AwaitReply(sequence, deadline);
}

absl::Status LauncherCredentialClient::Send(const UniqueFd& socket, uint64_t sequence) {
  CredentialRequest request;
  request.sequence = sequence;
  struct iovec data = {&request, sizeof(request)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message = {};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* rights = CMSG_FIRSTHDR(&message);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(sizeof(int));
  const int fd = socket.get();
  std::memcpy(CMSG_DATA(rights), &fd, sizeof(fd));
  ssize_t n;
  do {
    n = ::sendmsg(channel_.get(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
    return absl::UnavailableError("launcher: the credential channel is closed (launcher gone?)");
  }
  if (n < 0) return ErrnoError(errno, "launcher: sendmsg(credential request)");
  if (n != static_cast<ssize_t>(sizeof(request))) {
    return absl::InternalError(absl::StrCat("launcher: credential request sent short: ", n));
  }
  return absl::OkStatus();
}

absl::StatusOr<HostCredentials> LauncherCredentialClient::AwaitReply(uint64_t sequence,
                                                                     absl::Time deadline) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("launcher: no answer to credential query ",
                                                      sequence, " within ",
                                                      absl::FormatDuration(timeout_)));
    }
    struct pollfd wait = {channel_.get(), POLLIN, 0};
    const int ready = ::poll(&wait, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return ErrnoError(errno, "launcher: poll(credential channel)");
    if (ready == 0) continue;
    CredentialReply reply;
    struct iovec data = {&reply, sizeof(reply)};
    msghdr message = {};  // no control buffer: fds, which the launcher never sends, are dropped
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    const ssize_t n = ::recvmsg(channel_.get(), &message, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return ErrnoError(errno, "launcher: recvmsg(credential reply)");
    if (n == 0) return absl::UnavailableError("launcher: closed the credential channel");
    if (n != static_cast<ssize_t>(sizeof(reply)) || (message.msg_flags & MSG_TRUNC) != 0 ||
        reply.magic != kCredentialReplyMagic) {
      return absl::InternalError(
          absl::StrCat("launcher: malformed credential reply (", n, " bytes)"));
    }
    if (reply.sequence != sequence) continue;  // a late answer to an earlier query
    if (reply.error != 0) return ErrnoError(reply.error, "launcher: SO_PEERCRED of the peer");
    HostCredentials credentials;
    credentials.pid = reply.pid;
    credentials.uid = reply.uid;
    credentials.gid = reply.gid;
    return credentials;
  }
}

bool AnswerCredentialQuery(const UniqueFd& channel) {
  CredentialRequest request;
  char data[sizeof(CredentialRequest) + 1];  // a longer message shows as longer, or MSG_TRUNC
  struct iovec buffer = {data, sizeof(data)};
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxReceivedFds * sizeof(int))];
  msghdr message = {};
  message.msg_iov = &buffer;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(channel.get(), &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EAGAIN;
  std::vector<UniqueFd> fds = TakeScmRights(message);
  if (n == 0 && fds.empty()) return false;  // the daemon closed its end

  CredentialReply reply;
  if (n != static_cast<ssize_t>(sizeof(request)) ||
      (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    reply.error = EINVAL;
  } else {
    std::memcpy(&request, data, sizeof(request));
    if (request.magic != kCredentialRequestMagic || request.reserved != 0) {
      reply.error = EINVAL;
    } else {
      reply.sequence = request.sequence;
      reply.error = ReadPeer(fds, reply);
    }
  }
  // The daemon's socket is closed here before the answer, so the launcher never holds a
  // connection open after the daemon learns who is at the other end.
  fds.clear();
  struct iovec out = {&reply, sizeof(reply)};
  msghdr answer = {};
  answer.msg_iov = &out;
  answer.msg_iovlen = 1;
  ssize_t sent;
  do {
    sent = ::sendmsg(channel.get(), &answer, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return sent >= 0 || errno == EAGAIN;
}

}  // namespace vfiod::jail
