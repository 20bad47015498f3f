#include "base/errno_status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace vfiod {
namespace {

absl::StatusCode CodeForErrno(int error_number) {
  switch (error_number) {
    case EINVAL:
    case EBADF:
    case EFAULT:
      return absl::StatusCode::kInvalidArgument;
    case ENOENT:
    case ENODEV:
    case ENXIO:
      return absl::StatusCode::kNotFound;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case EAGAIN:
      return absl::StatusCode::kResourceExhausted;
    case EBUSY:
      return absl::StatusCode::kFailedPrecondition;
    case ENOTTY:
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status ErrnoError(int error_number, absl::string_view call) {
  return absl::Status(
      CodeForErrno(error_number),
      absl::StrCat(call, ": ", std::strerror(error_number), " (errno ", error_number, ")"));
}

}  // namespace vfiod
