// Unguessable bytes from the kernel (getrandom), for fd tokens and channel keys.
#ifndef VFIOD_DAEMON_BASE_RANDOM_H_
#define VFIOD_DAEMON_BASE_RANDOM_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace vfiod {

// Fills `out` from getrandom(2). Blocks only before the kernel's pool is initialised at boot.
absl::Status FillRandom(absl::Span<uint8_t> out);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_RANDOM_H_
