// FdChannelClient: the client side of the vfiod fd channel (see proto/vfiod/v1/fd_channel.h).
//
// Owns a connected AF_UNIX SOCK_SEQPACKET socket. Open() reads and checks the daemon's
// FdChannelHello; SendFds() sends fds in batches with SCM_RIGHTS and returns the daemon's tokens
// as lowercase hex strings, ready for gRPC requests. The caller keeps its own fds: the kernel
// gives the daemon duplicates.
//
// Thread-safety: every method may be called from any thread; calls are serialized by an
// internal mutex (a request and its reply are one exchange on the socket). Blocking: SendFds() blocks
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
  // reply's code and message. All or none: when the send fails, the tokens of the batches
  // already answered are not returned but kept as *stray tokens* (see TakeStrayTokens), since
  // the daemon holds their fds. A batch whose reply did not come within `timeout` may still be
  // answered later: its tokens become stray tokens when the reply is read (by a later SendFds
  // or TakeStrayTokens).
  absl::StatusOr<std::vector<std::string>> SendFds(absl::Span<const int> fds,
                                                   absl::Duration timeout);

  // Tokens the daemon gave that no SendFds returned (from a send that failed part way, or
  // late replies to batches that timed out; late replies already waiting are read first,
  // without blocking). The caller should release them (VfioClient::ReleaseStrayFdTokens does,
  // with the ReleaseFdTokens RPC): until then they count against the daemon's token limit.
  std::vector<std::string> TakeStrayTokens();
  // Gives back tokens a release could not handle yet (e.g. the RPC was unavailable), so that a
  // later TakeStrayTokens returns them again.
  void KeepStrayTokens(std::vector<std::string> tokens);
  // How many batches timed out and have not been answered yet.
  uint32_t unanswered_batches() const;

 private:
  FdChannelClient(UniqueFd socket, const FdChannelKey& key, uint32_t max_fds);

  absl::StatusOr<std::vector<std::string>> SendBatch(absl::Span<const int> fds,
                                                     absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A reply to a batch that timed out earlier: its tokens (if any) become stray tokens.
  void KeepLateReply(const char* buffer, size_t size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads, without blocking, replies that are already waiting for batches that timed out.
  void DrainLateReplies() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  UniqueFd socket_ ABSL_GUARDED_BY(mu_);
  uint32_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  // Sequence numbers of batches that timed out and have had no reply yet.
  std::vector<uint32_t> unanswered_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> stray_tokens_ ABSL_GUARDED_BY(mu_);
  const FdChannelKey key_;
  const uint32_t max_fds_per_message_;
};

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_FD_CHANNEL_CLIENT_H_
