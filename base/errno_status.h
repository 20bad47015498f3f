// Conversion of errno values into absl::Status at the system call that failed.
#ifndef VFIOD_BASE_ERRNO_STATUS_H_
#define VFIOD_BASE_ERRNO_STATUS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vfiod {

// A status for a failed system call: the code follows the errno (EINVAL -> INVALID_ARGUMENT,
// ENOENT -> NOT_FOUND, EPERM/EACCES -> PERMISSION_DENIED, EEXIST -> ALREADY_EXISTS,
// ENOMEM/ENOSPC/EMFILE/ENFILE/EAGAIN -> RESOURCE_EXHAUSTED, EBUSY -> FAILED_PRECONDITION,
// otherwise INTERNAL), and the message reads "<call>: <strerror> (errno <n>)".
absl::Status ErrnoError(int error_number, absl::string_view call);

}  // namespace vfiod

#endif  // VFIOD_BASE_ERRNO_STATUS_H_
