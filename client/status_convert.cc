#include "client/status_convert.h"

namespace vfiod::client {

absl::StatusCode StatusCodeFromInt(uint32_t code) {
  if (code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(StatusCodeFromInt(static_cast<uint32_t>(status.error_code())),
                      status.error_message());
}

}  // namespace vfiod::client
