// The fd channel of vfiod.v1: how file descriptors reach the daemon.
//
// gRPC cannot carry file descriptors, so each session may open a second connection, an AF_UNIX
// SOCK_SEQPACKET socket (`<socket>.fds` in listen mode; an inherited fd in spawn mode), and send
// fds on it with SCM_RIGHTS. The daemon answers each batch with one opaque, unguessable token per
// fd; gRPC requests name the fds by those tokens (as lowercase hex, kFdTokenHexLength chars).
//
// Exchange, one seqpacket message each, all integers little-endian (x86_64 host order):
//   1. daemon -> client, on connect: FdChannelHello. Its channel_key binds the channel to a gRPC
//      session (BindFdChannel); in spawn mode the channel is bound to the owner already.
//   2. client -> daemon: FdChannelSend with 1..max_fds_per_message fds in one SCM_RIGHTS
//      control message. Anything else (no fds, too many, a bad header, truncated control data)
//      is answered with an error reply, and every fd that came with it is closed.
//   3. daemon -> client: FdChannelReply with the same sequence number and, on success, `count`
//      FdToken values following the header, in the order the fds were sent.
// Tokens are valid only for the session the channel is bound to; a token is consumed by the
// request that uses it. Fds never consumed are closed when the session ends.
#ifndef VFIOD_PROTO_VFIOD_V1_FD_CHANNEL_H_
#define VFIOD_PROTO_VFIOD_V1_FD_CHANNEL_H_

#include <cstddef>
#include <cstdint>

namespace vfiod::v1 {

inline constexpr uint32_t kFdChannelMagic = 0x43444656;  // "VFDC"
inline constexpr uint16_t kFdChannelVersion = 1;
inline constexpr size_t kFdChannelKeyBytes = 16;
inline constexpr size_t kFdTokenBytes = 16;
inline constexpr size_t kFdTokenHexLength = 2 * kFdTokenBytes;
// The daemon never accepts more than this many fds in one message (the kernel allows 253).
inline constexpr uint32_t kFdChannelMaxFdsPerMessage = 16;

struct FdChannelHello {
  uint32_t magic;
  uint16_t version;
  uint16_t max_fds_per_message;
  uint8_t channel_key[kFdChannelKeyBytes];
};

struct FdChannelSend {
  uint32_t magic;
  uint32_t sequence;
};

// Status codes in replies: 0 success, else an absl::StatusCode value.
struct FdChannelReply {
  uint32_t magic;
  uint32_t sequence;
  uint32_t status_code;
  uint32_t count;             // tokens following this header
  char message[112];          // NUL-terminated reason when status_code != 0
};

struct FdToken {
  uint8_t bytes[kFdTokenBytes];
};

static_assert(sizeof(FdChannelHello) == 24);
static_assert(sizeof(FdChannelSend) == 8);
static_assert(sizeof(FdChannelReply) == 128);
static_assert(sizeof(FdToken) == 16);

// The largest message either side sends.
inline constexpr size_t kFdChannelMaxMessageBytes =
    sizeof(FdChannelReply) + kFdChannelMaxFdsPerMessage * sizeof(FdToken);

}  // namespace vfiod::v1

#endif  // VFIOD_PROTO_VFIOD_V1_FD_CHANNEL_H_
