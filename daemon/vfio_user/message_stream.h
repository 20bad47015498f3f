// MessageStream: vfio-user framing on a connected, blocking UNIX stream socket.
//
// Receiving takes one recvmsg per message in the usual request/reply exchange: the stream is
// read into a buffer as far as the socket offers, and messages are cut from it by their
// header's size. A message's fds arrive with its first byte (the sender passes them with the
// sendmsg that starts the message), and the kernel ends a read right after data that carried
// fds; so fds received by a read belong to the last message that begins in the buffer up to
// the end of that read. A client that splits a message across sends with fds on a later piece
// confuses only its own messages, whose fd counts are checked by command.
//
// Broken framing, which ends the connection: a header size below 16 or above
// `max_message_bytes`, a header with unknown flag bits, more fds than `max_fds` in one read
// (the kernel drops the excess: MSG_CTRUNC), end of stream inside a message, or a receive
// error. Everything else is a message, for the session to answer.
//
// Thread-safety: one thread receives; Send() may be called from one thread at a time (the
// receiving thread, in this server). Ownership: the socket is borrowed and must outlive the
// stream; every received fd is owned by the message it belongs to, or closed.
#ifndef VFIOD_DAEMON_VFIO_USER_MESSAGE_STREAM_H_
#define VFIOD_DAEMON_VFIO_USER_MESSAGE_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "daemon/base/unique_fd.h"
#include "daemon/vfio_user/protocol.h"

namespace vfiod::vfio_user {

// One received message. `payload` points into the stream's buffer and is valid until the next
// Next() call.
struct Message {
  Header header;
  absl::Span<const uint8_t> payload;
  std::vector<UniqueFd> fds;
};

class MessageStream {
 public:
  // `max_fds`: the most fds one read may bring (this server's max_msg_fds).
  MessageStream(const UniqueFd& socket, size_t max_message_bytes, size_t max_fds);
  MessageStream(const MessageStream&) = delete;
  MessageStream& operator=(const MessageStream&) = delete;

  // Blocks for the next message. nullopt: the peer closed the stream between messages.
  // DATA_LOSS: broken framing (see the file comment); the connection must end.
  absl::StatusOr<std::optional<Message>> Next();

  // True once data (or end of stream) is waiting, false when `timeout` passed first.
  absl::StatusOr<bool> WaitReadable(absl::Duration timeout) const;

  // Sends a header and payload in one sendmsg (retried on partial writes and EINTR).
  // `header.message_size` is set here. Never raises SIGPIPE.
  absl::Status Send(Header header, absl::Span<const uint8_t> payload) const;

 private:
  // Reads once into the buffer; false on end of stream.
  absl::StatusOr<bool> Fill();
  // Checks the header at `offset` (which must be complete): the message's size.
  absl::StatusOr<uint32_t> CheckedSize(size_t offset) const;
  // The offset of the last message that begins before `end`.
  size_t LastMessageStart(size_t end) const;

  const UniqueFd& socket_;
  const size_t max_message_bytes_;
  const size_t max_fds_;
  std::vector<uint8_t> buffer_;
  size_t filled_ = 0;    // bytes of buffer_ holding data
  size_t consumed_ = 0;  // bytes of the last message handed out, dropped at the next Next()
  std::map<size_t, std::vector<UniqueFd>> fds_;  // by the offset of the message they belong to
  std::vector<uint8_t> control_;
};

}  // namespace vfiod::vfio_user

#endif  // VFIOD_DAEMON_VFIO_USER_MESSAGE_STREAM_H_
