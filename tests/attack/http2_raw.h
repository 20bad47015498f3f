// A minimal raw HTTP/2 client for attacking vfiod's gRPC socket (RFC 9113, HPACK per RFC 7541):
// the frames a gRPC client sends, built by hand, so that a test can do what no well-behaved gRPC
// client library does: advertise a stream window of 0 and never grant more, start calls and
// never read their responses, or send the client preface and then nothing.
//
// Only what the attacks need: the client preface, SETTINGS (with its ACK), HEADERS carrying a
// literal, non-Huffman HPACK block (":method POST, :scheme http, :path, :authority,
// content-type application/grpc, te trailers"), and DATA with one gRPC length-prefixed message.
// The connection never reads: what the server sent can be inspected with PeekServerFrames(),
// which leaves every byte in the socket.
//
// Thread-safety: a RawHttp2Connection is used by one thread at a time. Ownership: it owns its
// socket. Blocking: Open() and StartCall() wait up to a second for room in the socket buffer;
// nothing else blocks.
#ifndef VFIOD_TESTS_ATTACK_HTTP2_RAW_H_
#define VFIOD_TESTS_ATTACK_HTTP2_RAW_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/unique_fd.h"
#include "daemon/transport/http2_preface.h"

namespace vfiod::attack {

// Frame types and flags used here (RFC 9113, section 6).
inline constexpr uint8_t kHttp2Data = 0x0;
inline constexpr uint8_t kHttp2Headers = 0x1;
inline constexpr uint8_t kHttp2RstStream = 0x3;
inline constexpr uint8_t kHttp2Settings = 0x4;
inline constexpr uint8_t kHttp2GoAway = 0x7;
inline constexpr uint8_t kHttp2FlagEndStream = 0x1;
inline constexpr uint8_t kHttp2FlagAck = 0x1;
inline constexpr uint8_t kHttp2FlagEndHeaders = 0x4;
inline constexpr uint16_t kHttp2SettingsInitialWindowSize = 0x4;

// One frame: the 9-byte header (24-bit length, type, flags, 31-bit stream id) and `payload`.
std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream_id, absl::string_view payload);

// An HPACK integer with an N-bit prefix (RFC 7541, 5.1); `first_byte_bits` are the bits of the
// first byte above the prefix.
std::string HpackInteger(uint64_t value, int prefix_bits, uint8_t first_byte_bits);

// "Literal Header Field without Indexing -- New Name" (RFC 7541, 6.2.2), name and value as raw
// (non-Huffman) string literals.
std::string HpackLiteral(absl::string_view name, absl::string_view value);

// The header block of a gRPC request for `path` ("/vfiod.v1.VfioDevice/GetDeviceInfo").
std::string GrpcRequestHeaderBlock(absl::string_view path);

// A gRPC length-prefixed message: flag byte 0 (not compressed), 32-bit big-endian length, body.
std::string GrpcLengthPrefixed(absl::string_view body);

// A frame the server sent, as PeekServerFrames() parsed it.
struct Http2FrameHeader {
  uint32_t length = 0;
  uint8_t type = 0;
  uint8_t flags = 0;
  uint32_t stream_id = 0;
};

// Parses the complete frames at the start of `bytes` (a trailing partial frame is ignored).
std::vector<Http2FrameHeader> ParseHttp2Frames(absl::string_view bytes);

struct RawHttp2Options {
  // The SETTINGS_INITIAL_WINDOW_SIZE this client advertises: 0 means the server may send no
  // DATA on any stream, ever (no WINDOW_UPDATE is ever sent).
  uint32_t initial_window_size = 0;
  // Send the SETTINGS frame (and the ACK of the server's SETTINGS) after the preface. Without
  // it, the connection sends the preface and nothing more.
  bool send_settings = true;
};

class RawHttp2Connection {
 public:
  // Connects to the gRPC UNIX socket at `path` and sends the client preface and, with
  // options.send_settings, a SETTINGS frame carrying options.initial_window_size and an ACK of
  // the server's SETTINGS (an ACK needs no reading: the server sends exactly one SETTINGS first).
  static absl::StatusOr<RawHttp2Connection> Open(const std::string& path,
                                                 const RawHttp2Options& options);

  RawHttp2Connection(RawHttp2Connection&&) = default;
  RawHttp2Connection& operator=(RawHttp2Connection&&) = default;

  // Starts a unary or server-streaming call on a new stream: HEADERS (END_HEADERS) for
  // `method_path`, then one DATA frame (END_STREAM) with `request` length-prefixed. Returns the
  // stream id.
  absl::StatusOr<uint32_t> StartCall(absl::string_view method_path, absl::string_view request);

  // The frames the server has sent so far, parsed from a MSG_PEEK of the socket (at most the
  // first 256 KiB): nothing is consumed, so the server's view of this client never changes.
  std::vector<Http2FrameHeader> PeekServerFrames() const;

  // How many of this connection's calls the server has dealt with: answered with response
  // HEADERS, reset (RST_STREAM), or refused by a GOAWAY.
  int AnsweredCalls() const;

  // False once the server closed the connection (a poll without reading).
  bool Alive() const;

  int calls_started() const { return static_cast<int>(next_stream_id_ / 2); }

 private:
  explicit RawHttp2Connection(UniqueFd socket) : socket_(std::move(socket)) {}
  absl::Status Send(absl::string_view bytes);

  UniqueFd socket_;
  uint32_t next_stream_id_ = 1;
};

}  // namespace vfiod::attack

#endif  // VFIOD_TESTS_ATTACK_HTTP2_RAW_H_
