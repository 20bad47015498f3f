#include "client/cli/command.h"

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vfiod::cli {
namespace {

constexpr absl::string_view kUsagePayload = "type.googleapis.com/vfiod.vfioctl.UsageError";
constexpr absl::string_view kReportedPayload = "type.googleapis.com/vfiod.vfioctl.Reported";

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

absl::Status ReportedFailure(int exit_code) {
  absl::Status status = absl::UnknownError("reported");
  status.SetPayload(kReportedPayload, absl::Cord(absl::StrCat(exit_code)));
  return status;
}

std::optional<int> ReportedExitCode(const absl::Status& status) {
  auto payload = status.GetPayload(kReportedPayload);
  int code;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &code)) return std::nullopt;
  return code;
}

}  // namespace vfiod::cli
