// Conversions between gRPC statuses, fd-channel status codes and absl::Status.
//
// gRPC and absl share the canonical code numbers, so codes are carried over unchanged; values
// outside the canonical range become UNKNOWN. Stateless and thread-safe.
#ifndef VFIOD_CLIENT_STATUS_CONVERT_H_
#define VFIOD_CLIENT_STATUS_CONVERT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "base/format.h"
#include "grpcpp/support/status.h"

namespace vfiod::client {

// A canonical status code from its number (an fd-channel reply's status_code, a gRPC code).
absl::StatusCode StatusCodeFromInt(uint32_t code);

// The absl form of a gRPC status: same code, the server's message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// `status` with "<context>: " prepended to its message; OK stays OK (base/format.h).
using ::vfiod::Annotate;

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_STATUS_CONVERT_H_
