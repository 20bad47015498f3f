// UniqueFd for the client library: the one fd-ownership type of vfiod (base/unique_fd.h),
// which depends on nothing under //daemon. Move-only; closes the fd on destruction.
#ifndef VFIOD_CLIENT_UNIQUE_FD_H_
#define VFIOD_CLIENT_UNIQUE_FD_H_

#include "base/unique_fd.h"

namespace vfiod::client {

using UniqueFd = ::vfiod::UniqueFd;

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_UNIQUE_FD_H_
