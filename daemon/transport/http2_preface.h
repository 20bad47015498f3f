// The HTTP/2 client connection preface (RFC 9113, section 3.4): the 24 bytes every HTTP/2
// client sends first. The transport holds a gRPC connection until it has arrived.
#ifndef VFIOD_DAEMON_TRANSPORT_HTTP2_PREFACE_H_
#define VFIOD_DAEMON_TRANSPORT_HTTP2_PREFACE_H_

#include "absl/strings/string_view.h"

namespace vfiod {

inline constexpr absl::string_view kHttp2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace vfiod

#endif  // VFIOD_DAEMON_TRANSPORT_HTTP2_PREFACE_H_
