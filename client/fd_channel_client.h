// FdChannelClient: the client side of the vfiod fd channel (see proto/vfiod/v1/fd_channel.h).
//
// Owns a connected AF_UNIX SOCK_SEQPACKET socket. Open() reads and checks the daemon's
// FdChannelHello; SendFds() sends fds in batches with SCM_RIGHTS and returns the daemon's tokens
// as lowercase hex strings, ready for gRPC requests. The caller keeps its own fds: the kernel
// gives the daemon duplicates.
//
// Thread-safety: SendFds() may be called from any thread; calls are serialized by an internal
// mutex (a request and its reply are one exchange on the socket). Blocking: SendFds() blocks
// until every batch is answered or `timeout` passes for one reply.
#ifndef VFIOD_CLIENT_FD_CHANNEL_CLIENT_H_
#define VFIOD_CLIENT_FD_CHANNEL_CLIENT_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/unique_fd.h"
#include "proto/vfiod/v1/fd_channel.h"

namespace vfiod::client {

using FdChannelKey = std::array<uint8_t, v1::kFdChannelKeyBytes>;

// Lowercase hex of `token`, v1::kFdTokenHexLength characters.
std::string FdTokenToHex(const v1::FdToken& token);

class FdChannelClient {
 public:
  // Takes `socket` and waits up to `timeout` for the hello. Fails with UNAVAILABLE when the
  // peer closes first or nothing arrives, DATA_LOSS for a malformed hello, FAILED_PRECONDITION
  // for an unsupported version.
  static absl::StatusOr<std::unique_ptr<FdChannelClient>> Open(UniqueFd socket,
                                                               absl::Duration timeout);

  FdChannelClient(const FdChannelClient&) = delete;
  FdChannelClient& operator=(const FdChannelClient&) = delete;

  // The key to pass to BindFdChannel.
  const FdChannelKey& channel_key() const { return key_; }
  // The batch size used: the daemon's limit, capped at v1::kFdChannelMaxFdsPerMessage.
  uint32_t max_fds_per_message() const { return max_fds_per_message_; }

  // Sends `fds` (at least one) in batches of max_fds_per_message(), one message per batch, and
  // returns one token per fd, in order. An error reply becomes an absl::Status with the
  // reply's code and message; tokens of batches already answered stay with the session until
  // it ends (the daemon closes unconsumed fds then).
  absl::StatusOr<std::vector<std::string>> SendFds(absl::Span<const int> fds,
                                                   absl::Duration timeout);

 private:
  FdChannelClient(UniqueFd socket, const FdChannelKey& key, uint32_t max_fds);

  absl::StatusOr<std::vector<std::string>> SendBatch(absl::Span<const int> fds,
                                                     absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  UniqueFd socket_ ABSL_GUARDED_BY(mu_);
  uint32_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  const FdChannelKey key_;
  const uint32_t max_fds_per_message_;
};

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_FD_CHANNEL_CLIENT_H_
