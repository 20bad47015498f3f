#include "daemon/base/random.h"

#include <sys/random.h>

#include <cerrno>

#include "daemon/base/errno_status.h"

namespace vfiod {

absl::Status FillRandom(absl::Span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "getrandom");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace vfiod
