// VfioUserClient: a minimal vfio-user client for tests, benchmarks and fuzzing: it sends a
// command in one sendmsg (fds attached) and reads the reply, as QEMU's client does. It checks
// nothing of what it is asked to send, so tests can send anything.
//
// Thread-safety: not thread-safe. Ownership: owns its socket.
#ifndef VFIOD_TESTS_VFIO_USER_VFIO_USER_CLIENT_H_
#define VFIOD_TESTS_VFIO_USER_VFIO_USER_CLIENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "daemon/base/unique_fd.h"
#include "daemon/vfio_user/protocol.h"

namespace vfiod::testing {

class VfioUserClient {
 public:
  static absl::StatusOr<VfioUserClient> Connect(const std::string& path);
  explicit VfioUserClient(UniqueFd socket) : socket_(std::move(socket)) {}

  struct Reply {
    vfio_user::Header header;
    std::vector<uint8_t> payload;
    bool error() const { return (header.flags & vfio_user::kFlagError) != 0; }
  };

  // Sends one command (`flags` are added to the command type) and, unless kFlagNoReply is set,
  // waits for its reply. A closed connection is UNAVAILABLE.
  absl::StatusOr<Reply> Call(vfio_user::Command command, absl::Span<const uint8_t> payload,
                             absl::Span<const int> fds = {}, uint32_t flags = 0);
  // Sends raw bytes (for framing tests).
  absl::Status SendRaw(absl::Span<const uint8_t> bytes, absl::Span<const int> fds = {});
  absl::StatusOr<Reply> ReadReply();

  // VERSION with QEMU 11.1's proposal.
  absl::StatusOr<Reply> Version();
  // REGION_READ / REGION_WRITE; an error reply is INTERNAL with the errno in the message.
  absl::StatusOr<std::vector<uint8_t>> RegionRead(uint32_t region, uint64_t offset,
                                                  uint32_t count);
  absl::Status RegionWrite(uint32_t region, uint64_t offset, absl::Span<const uint8_t> data);
  absl::StatusOr<uint32_t> Read32(uint32_t region, uint64_t offset);
  absl::Status Write32(uint32_t region, uint64_t offset, uint32_t value);
  absl::Status DmaMap(uint64_t address, uint64_t size, uint64_t offset, uint32_t flags,
                      int fd = -1);
  absl::Status DmaUnmap(uint64_t address, uint64_t size, uint32_t flags = 0);

  const UniqueFd& socket() const { return socket_; }

 private:
  UniqueFd socket_;
  uint16_t next_id_ = 1;
  std::vector<uint8_t> buffer_;
};

// One sendmsg of `bytes` with `fds` attached as SCM_RIGHTS (MSG_NOSIGNAL, plus `flags`); what
// sendmsg returned.
ssize_t SendWithFds(int socket, absl::Span<const uint8_t> bytes, absl::Span<const int> fds,
                    int flags = 0);

// Bytes of a plain struct.
template <typename T>
std::vector<uint8_t> BytesOf(const T& value) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&value);
  return std::vector<uint8_t>(p, p + sizeof(T));
}

// The errno of an error reply, or 0.
inline uint32_t ErrorOf(const VfioUserClient::Reply& reply) {
  return reply.error() ? reply.header.error : 0;
}

}  // namespace vfiod::testing

#endif  // VFIOD_TESTS_VFIO_USER_VFIO_USER_CLIENT_H_
