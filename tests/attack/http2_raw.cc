#include "tests/attack/http2_raw.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "base/format.h"
#include "daemon/transport/unix_socket.h"

namespace vfiod::attack {
namespace {

constexpr int kSendTimeoutMs = 1000;
constexpr size_t kPeekBytes = 256 * 1024;

void AppendBigEndian(std::string* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint32_t BigEndian(absl::string_view bytes) {
  uint32_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<uint8_t>(c);
  return value;
}

}  // namespace

std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream_id, absl::string_view payload) {
  std::string frame;
  AppendBigEndian(&frame, payload.size(), 3);
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  AppendBigEndian(&frame, stream_id & 0x7fffffffu, 4);
  frame.append(payload.data(), payload.size());
  return frame;
}

std::string HpackInteger(uint64_t value, int prefix_bits, uint8_t first_byte_bits) {
  const uint64_t max_prefix = (uint64_t{1} << prefix_bits) - 1;
  std::string out;
  if (value < max_prefix) {
    out.push_back(static_cast<char>(first_byte_bits | value));
    return out;
  }
  out.push_back(static_cast<char>(first_byte_bits | max_prefix));
  value -= max_prefix;
  while (value >= 128) {
    out.push_back(static_cast<char>((value % 128) + 128));
    value /= 128;
  }
  out.push_back(static_cast<char>(value));
  return out;
}

std::string HpackLiteral(absl::string_view name, absl::string_view value) {
  std::string out(1, '\0');  // 0000 0000: without indexing, new name
  absl::StrAppend(&out, HpackInteger(name.size(), 7, 0), name);  // H = 0: raw octets
  absl::StrAppend(&out, HpackInteger(value.size(), 7, 0), value);
  return out;
}

std::string GrpcRequestHeaderBlock(absl::string_view path) {
  return absl::StrCat(HpackLiteral(":method", "POST"), HpackLiteral(":scheme", "http"),
                      HpackLiteral(":path", path), HpackLiteral(":authority", "localhost"),
                      HpackLiteral("content-type", "application/grpc"),
                      HpackLiteral("te", "trailers"));
}

std::string GrpcLengthPrefixed(absl::string_view body) {
  std::string out(1, '\0');
  AppendBigEndian(&out, body.size(), 4);
  out.append(body.data(), body.size());
  return out;
}

std::vector<Http2FrameHeader> ParseHttp2Frames(absl::string_view bytes) {
  std::vector<Http2FrameHeader> frames;
  while (bytes.size() >= 9) {
    Http2FrameHeader frame;
    frame.length = BigEndian(bytes.substr(0, 3));
    frame.type = static_cast<uint8_t>(bytes[3]);
    frame.flags = static_cast<uint8_t>(bytes[4]);
    frame.stream_id = BigEndian(bytes.substr(5, 4)) & 0x7fffffffu;
    if (bytes.size() < 9 + frame.length) break;
    frames.push_back(frame);
    bytes.remove_prefix(9 + frame.length);
  }
  return frames;
}

absl::StatusOr<RawHttp2Connection> RawHttp2Connection::Open(const std::string& path,
                                                            const RawHttp2Options& options) {
  absl::StatusOr<UniqueFd> socket = ConnectUnixSocket(path, UnixSocketKind::kStream);
  if (!socket.ok()) return socket.status();
  RawHttp2Connection connection(*std::move(socket));
  std::string hello(kHttp2ClientPreface);
  if (options.send_settings) {
    std::string settings;
    AppendBigEndian(&settings, kHttp2SettingsInitialWindowSize, 2);
    AppendBigEndian(&settings, options.initial_window_size, 4);
    absl::StrAppend(&hello, Http2Frame(kHttp2Settings, 0, 0, settings),
                    Http2Frame(kHttp2Settings, kHttp2FlagAck, 0, ""));
  }
  if (absl::Status sent = connection.Send(hello); !sent.ok()) return sent;
  return connection;
}

absl::Status RawHttp2Connection::Send(absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(socket_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return ErrnoError(errno, "send");
    pollfd room = {socket_.get(), POLLOUT, 0};
    if (::poll(&room, 1, kSendTimeoutMs) == 0) {
      return absl::DeadlineExceededError("send: no room in the socket buffer within 1 s");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> RawHttp2Connection::StartCall(absl::string_view method_path,
                                                       absl::string_view request) {
  const uint32_t stream_id = next_stream_id_;
  const std::string frames = absl::StrCat(
      Http2Frame(kHttp2Headers, kHttp2FlagEndHeaders, stream_id,
                 GrpcRequestHeaderBlock(method_path)),
      Http2Frame(kHttp2Data, kHttp2FlagEndStream, stream_id, GrpcLengthPrefixed(request)));
  if (absl::Status sent = Send(frames); !sent.ok()) {
    return Annotate(sent, absl::StrCat("HTTP/2 call ", method_path));
  }
  next_stream_id_ += 2;
  return stream_id;
}

std::vector<Http2FrameHeader> RawHttp2Connection::PeekServerFrames() const {
  std::string buffer(kPeekBytes, '\0');
  ssize_t n;
  do {
    n = ::recv(socket_.get(), buffer.data(), buffer.size(), MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return {};
  buffer.resize(static_cast<size_t>(n));
  return ParseHttp2Frames(buffer);
}

int RawHttp2Connection::AnsweredCalls() const {
  std::set<uint32_t> answered;
  for (const Http2FrameHeader& frame : PeekServerFrames()) {
    if (frame.type == kHttp2GoAway) return calls_started();
    if ((frame.type == kHttp2Headers || frame.type == kHttp2RstStream) && frame.stream_id != 0) {
      answered.insert(frame.stream_id);
    }
  }
  return static_cast<int>(answered.size());
}

bool RawHttp2Connection::Alive() const {
  pollfd state = {socket_.get(), POLLRDHUP, 0};
  if (::poll(&state, 1, 0) <= 0) return true;
  return (state.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0;
}

}  // namespace vfiod::attack
