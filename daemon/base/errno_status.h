// The daemon's ErrnoError is the one shared with the client library: base/errno_status.h. This
// header keeps daemon code including it from daemon/base.
#ifndef VFIOD_DAEMON_BASE_ERRNO_STATUS_H_
#define VFIOD_DAEMON_BASE_ERRNO_STATUS_H_

#include "base/errno_status.h"  // IWYU pragma: export

#endif  // VFIOD_DAEMON_BASE_ERRNO_STATUS_H_
