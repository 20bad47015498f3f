// Early-return helpers for absl::Status and absl::StatusOr (this abseil has none).
#ifndef VFIOD_DAEMON_BASE_STATUS_MACROS_H_
#define VFIOD_DAEMON_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the current function with the status of `expr` when it is not OK.
#define VFIOD_RETURN_IF_ERROR(expr)                     \
  do {                                                  \
    ::absl::Status vfiod_status_ = (expr);              \
    if (!vfiod_status_.ok()) return vfiod_status_;      \
  } while (0)

#define VFIOD_STATUS_CONCAT_INNER_(a, b) a##b
#define VFIOD_STATUS_CONCAT_(a, b) VFIOD_STATUS_CONCAT_INNER_(a, b)

// `lhs = *expr` when `expr` (an absl::StatusOr) is OK; otherwise returns its status.
#define VFIOD_ASSIGN_OR_RETURN(lhs, expr) \
  VFIOD_ASSIGN_OR_RETURN_IMPL_(VFIOD_STATUS_CONCAT_(vfiod_statusor_, __LINE__), lhs, expr)

#define VFIOD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // VFIOD_DAEMON_BASE_STATUS_MACROS_H_
