// The daemon's side of one fd channel (proto/vfiod/v1/fd_channel.h): the hello, and one
// request/reply exchange at a time. No state of its own; the transport's event loop calls these
// on a connected, non-blocking SOCK_SEQPACKET socket it owns.
//
// Thread-safety: none needed (stateless), but one thread per socket at a time. Nothing here
// blocks: a reply that does not fit in the socket's send buffer (a client that never reads its
// replies) is an error, and the caller closes the channel.
#ifndef VFIOD_DAEMON_TRANSPORT_FD_CHANNEL_SERVER_H_
#define VFIOD_DAEMON_TRANSPORT_FD_CHANNEL_SERVER_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/base/unique_fd.h"
#include "proto/vfiod/v1/fd_channel.h"

namespace vfiod {

// Sends FdChannelHello (magic, version, kFdChannelMaxFdsPerMessage, `key`).
absl::Status SendFdChannelHello(const UniqueFd& channel,
                                const std::array<uint8_t, v1::kFdChannelKeyBytes>& key);

// Takes ownership of a well-formed batch (1..kFdChannelMaxFdsPerMessage fds, in the order sent)
// and returns one token per fd, in order, or an error (after closing every fd).
using FdBatchHandler =
    absl::FunctionRef<absl::StatusOr<std::vector<std::array<uint8_t, v1::kFdTokenBytes>>>(
        std::vector<UniqueFd>)>;

enum class FdChannelStep {
  kIdle,    // nothing was pending
  kServed,  // one message was received and answered (with tokens or an error reply)
  kClosed,  // the peer closed the channel (or sent an empty message without fds)
};

// Receives one pending message and answers it. A message is handed to `handler` only if it is
// exactly sizeof(FdChannelSend) bytes with the right magic and carries 1..max fds in a control
// message that was not truncated; anything else gets an error reply (INVALID_ARGUMENT, with the
// request's sequence number when the header was readable, else 0) and every fd it carried is
// closed. An error from `handler` is answered with its code and message. Returns an error only
// when the socket itself failed (including a reply that could not be sent): the caller must then
// close the channel. No fd survives any path except inside `handler`.
absl::StatusOr<FdChannelStep> ServeFdChannelMessage(const UniqueFd& channel,
                                                     FdBatchHandler handler);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_TRANSPORT_FD_CHANNEL_SERVER_H_
