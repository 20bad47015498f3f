#include "client/fd_channel_client.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/status_convert.h"

namespace vfiod::client {
namespace {

int PollTimeoutMs(absl::Time deadline) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)));
  return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// Receives one message into `buffer` by `deadline`; returns its length (0: peer closed).
// Fds arriving with it are discarded by the kernel (no control buffer is given).
absl::StatusOr<size_t> ReceiveMessage(int fd, char* buffer, size_t size, absl::Time deadline,
                                      absl::string_view what) {
  for (;;) {
    pollfd pfd = {fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, PollTimeoutMs(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(what, ": poll: ", std::strerror(errno)));
    }
    if (ready == 0) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": no answer from the daemon"));
    }
    ssize_t n = ::recv(fd, buffer, size, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::UnavailableError(absl::StrCat(what, ": recv: ", std::strerror(errno)));
    }
    return static_cast<size_t>(n);
  }
}

}  // namespace

std::string FdTokenToHex(const v1::FdToken& token) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(v1::kFdTokenHexLength);
  for (uint8_t byte : token.bytes) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 0xf]);
  }
  return hex;
}

FdChannelClient::FdChannelClient(UniqueFd socket, const FdChannelKey& key, uint32_t max_fds)
    : socket_(std::move(socket)), key_(key), max_fds_per_message_(max_fds) {}

absl::StatusOr<std::unique_ptr<FdChannelClient>> FdChannelClient::Open(UniqueFd socket,
                                                                      absl::Duration timeout) {
  if (!socket.valid()) return absl::InvalidArgumentError("fd channel: no socket");
  char buffer[v1::kFdChannelMaxMessageBytes];
  absl::StatusOr<size_t> n = ReceiveMessage(socket.get(), buffer, sizeof(buffer),
                                            absl::Now() + timeout, "fd channel hello");
  if (!n.ok()) return n.status();
  if (*n == 0) {
    return absl::UnavailableError("fd channel hello: the daemon closed the channel");
  }
  if (*n != sizeof(v1::FdChannelHello)) {
    return absl::DataLossError(
        absl::StrFormat("fd channel hello: %d bytes, expected %d", *n,
                        sizeof(v1::FdChannelHello)));
  }
  v1::FdChannelHello hello;
  std::memcpy(&hello, buffer, sizeof(hello));
  if (hello.magic != v1::kFdChannelMagic) {
    return absl::DataLossError(absl::StrFormat("fd channel hello: bad magic 0x%08x", hello.magic));
  }
  if (hello.version != v1::kFdChannelVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "fd channel hello: version %d, this client speaks %d", hello.version,
        v1::kFdChannelVersion));
  }
  if (hello.max_fds_per_message == 0) {
    return absl::DataLossError("fd channel hello: max_fds_per_message is 0");
  }
  FdChannelKey key;
  std::memcpy(key.data(), hello.channel_key, key.size());
  uint32_t max_fds = std::min<uint32_t>(hello.max_fds_per_message, v1::kFdChannelMaxFdsPerMessage);
  return std::unique_ptr<FdChannelClient>(new FdChannelClient(std::move(socket), key, max_fds));
}

absl::StatusOr<std::vector<std::string>> FdChannelClient::SendFds(absl::Span<const int> fds,
                                                                  absl::Duration timeout) {
  if (fds.empty()) return absl::InvalidArgumentError("SendFds: no fds");
  for (int fd : fds) {
    if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("SendFds: invalid fd ", fd));
  }
  absl::MutexLock lock(&mu_);
  DrainLateReplies();
  std::vector<std::string> tokens;
  tokens.reserve(fds.size());
  for (size_t start = 0; start < fds.size(); start += max_fds_per_message_) {
    absl::StatusOr<std::vector<std::string>> batch =
        SendBatch(fds.subspan(start, max_fds_per_message_), timeout);
    if (!batch.ok()) {
      // All or none: the daemon holds the fds of the batches it answered; the caller gets no
      // token of this send, so they are stray tokens for the caller to release.
      for (std::string& token : tokens) stray_tokens_.push_back(std::move(token));
      return batch.status();
    }
    for (std::string& token : *batch) tokens.push_back(std::move(token));
  }
  return tokens;
}

std::vector<std::string> FdChannelClient::TakeStrayTokens() {
  absl::MutexLock lock(&mu_);
  DrainLateReplies();
  std::vector<std::string> tokens;
  tokens.swap(stray_tokens_);
  return tokens;
}

void FdChannelClient::KeepStrayTokens(std::vector<std::string> tokens) {
  absl::MutexLock lock(&mu_);
  for (std::string& token : tokens) stray_tokens_.push_back(std::move(token));
}

uint32_t FdChannelClient::unanswered_batches() const {
  absl::MutexLock lock(&mu_);
  return static_cast<uint32_t>(unanswered_.size());
}

void FdChannelClient::KeepLateReply(const char* buffer, size_t size) {
  if (size < sizeof(v1::FdChannelReply)) return;
  v1::FdChannelReply reply;
  std::memcpy(&reply, buffer, sizeof(reply));
  if (reply.magic != v1::kFdChannelMagic) return;
  auto it = std::find(unanswered_.begin(), unanswered_.end(), reply.sequence);
  if (it == unanswered_.end()) return;  // not a batch we are waiting for: nothing to keep
  unanswered_.erase(it);
  if (reply.status_code != 0 || reply.count > v1::kFdChannelMaxFdsPerMessage ||
      size != sizeof(reply) + reply.count * sizeof(v1::FdToken)) {
    return;  // refused (the daemon closed the fds) or malformed
  }
  for (uint32_t i = 0; i < reply.count; ++i) {
    v1::FdToken token;
    std::memcpy(&token, buffer + sizeof(reply) + i * sizeof(token), sizeof(token));
    stray_tokens_.push_back(FdTokenToHex(token));
  }
}

void FdChannelClient::DrainLateReplies() {
  char buffer[v1::kFdChannelMaxMessageBytes];
  while (!unanswered_.empty() && socket_.valid()) {
    ssize_t n = ::recv(socket_.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // nothing waiting (EAGAIN), or an error the next exchange reports
    if (n == 0) {
      socket_.Reset();  // the daemon closed the channel, and with it every token on it
      unanswered_.clear();
      stray_tokens_.clear();
      return;
    }
    KeepLateReply(buffer, static_cast<size_t>(n));
  }
}

absl::StatusOr<std::vector<std::string>> FdChannelClient::SendBatch(absl::Span<const int> fds,
                                                                    absl::Duration timeout) {
  if (!socket_.valid()) return absl::UnavailableError("SendFds: the fd channel is closed");
  const uint32_t sequence = next_sequence_++;
  v1::FdChannelSend header = {v1::kFdChannelMagic, sequence};
  iovec iov = {&header, sizeof(header)};

  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * v1::kFdChannelMaxFdsPerMessage)];
  std::memset(control, 0, sizeof(control));
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());

  ssize_t sent;
  do {
    sent = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    int error = errno;
    if (error == EPIPE || error == ECONNRESET || error == ENOTCONN) {
      socket_.Reset();
      unanswered_.clear();
      stray_tokens_.clear();  // the channel's tokens died with it
      return absl::UnavailableError("SendFds: the daemon closed the fd channel");
    }
    return absl::InternalError(absl::StrCat("SendFds: sendmsg: ", std::strerror(error)));
  }

  const absl::Time deadline = absl::Now() + timeout;
  char buffer[v1::kFdChannelMaxMessageBytes];
  for (;;) {
    absl::StatusOr<size_t> n =
        ReceiveMessage(socket_.get(), buffer, sizeof(buffer), deadline, "SendFds");
    if (!n.ok()) {
      // No reply yet: the daemon may still answer (with tokens) later.
      if (n.status().code() == absl::StatusCode::kDeadlineExceeded) {
        unanswered_.push_back(sequence);
      }
      return n.status();
    }
    if (*n == 0) {
      socket_.Reset();
      unanswered_.clear();
      stray_tokens_.clear();  // the channel's tokens died with it
      return absl::UnavailableError("SendFds: the daemon closed the fd channel");
    }
    if (*n < sizeof(v1::FdChannelReply)) {
      return absl::DataLossError(absl::StrFormat("SendFds: short reply (%d bytes)", *n));
    }
    v1::FdChannelReply reply;
    std::memcpy(&reply, buffer, sizeof(reply));
    if (reply.magic != v1::kFdChannelMagic) {
      return absl::DataLossError(
          absl::StrFormat("SendFds: bad reply magic 0x%08x", reply.magic));
    }
    // A reply to an earlier batch whose wait timed out: its tokens are stray tokens.
    if (reply.sequence < sequence) {
      KeepLateReply(buffer, *n);
      continue;
    }
    if (reply.sequence != sequence) {
      return absl::DataLossError(absl::StrFormat("SendFds: reply for sequence %d, expected %d",
                                                 reply.sequence, sequence));
    }
    if (reply.status_code != 0) {
      std::string message(reply.message, strnlen(reply.message, sizeof(reply.message)));
      if (message.empty()) message = "the daemon refused the fds";
      return absl::Status(StatusCodeFromInt(reply.status_code), message);
    }
    if (reply.count != fds.size() ||
        *n != sizeof(v1::FdChannelReply) + fds.size() * sizeof(v1::FdToken)) {
      return absl::DataLossError(absl::StrFormat(
          "SendFds: reply has %d tokens in %d bytes for %d fds", reply.count, *n, fds.size()));
    }
    std::vector<std::string> tokens;
    tokens.reserve(fds.size());
    for (size_t i = 0; i < fds.size(); ++i) {
      v1::FdToken token;
      std::memcpy(&token, buffer + sizeof(reply) + i * sizeof(token), sizeof(token));
      tokens.push_back(FdTokenToHex(token));
    }
    return tokens;
  }
}

}  // namespace vfiod::client
