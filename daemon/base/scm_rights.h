// The fds of a received SCM_RIGHTS message, owned from the moment they exist in this process.
#ifndef VFIOD_DAEMON_BASE_SCM_RIGHTS_H_
#define VFIOD_DAEMON_BASE_SCM_RIGHTS_H_

#include <sys/socket.h>

#include <vector>

#include "daemon/base/unique_fd.h"

namespace vfiod {

// Every fd in the SCM_RIGHTS control messages of `message`, as filled by recvmsg(2), in order;
// other control messages are skipped. Call right after recvmsg, before anything can fail, so
// that no received fd is ever leaked. Pure; thread-safe.
std::vector<UniqueFd> TakeScmRights(const msghdr& message);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_SCM_RIGHTS_H_
