#include "daemon/base/scm_rights.h"

#include <cstring>

namespace vfiod {

std::vector<UniqueFd> TakeScmRights(const msghdr& message) {
  std::vector<UniqueFd> fds;
  if (message.msg_control == nullptr) return fds;
  // CMSG_NXTHDR takes a non-const msghdr but only reads it.
  msghdr& readable = const_cast<msghdr&>(message);
  for (cmsghdr* header = CMSG_FIRSTHDR(&readable); header != nullptr;
       header = CMSG_NXTHDR(&readable, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    if (header->cmsg_len < CMSG_LEN(0)) continue;
    const size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* in = CMSG_DATA(header);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, in + i * sizeof(int), sizeof(int));
      if (fd >= 0) fds.emplace_back(fd);
    }
  }
  return fds;
}

}  // namespace vfiod
