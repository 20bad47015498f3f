// The daemon's UniqueFd is the one shared with the client library: base/unique_fd.h. This header
// keeps daemon code including its fd layer from daemon/base.
#ifndef VFIOD_DAEMON_BASE_UNIQUE_FD_H_
#define VFIOD_DAEMON_BASE_UNIQUE_FD_H_

#include "base/unique_fd.h"  // IWYU pragma: export

#endif  // VFIOD_DAEMON_BASE_UNIQUE_FD_H_
