#include "tests/vfio_user/vfio_user_client.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace vfiod::testing {

using vfio_user::Command;
using vfio_user::Header;

absl::StatusOr<VfioUserClient> VfioUserClient::Connect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) return absl::InvalidArgumentError("path too long");
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect ", path, ": ", strerror(errno)));
  }
  return VfioUserClient(std::move(fd));
}

ssize_t SendWithFds(int socket, absl::Span<const uint8_t> bytes, absl::Span<const int> fds,
                    int flags) {
  struct iovec io = {const_cast<uint8_t*>(bytes.data()), bytes.size()};
  struct msghdr message = {};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  std::vector<uint8_t> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(fds.size() * sizeof(int)));
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
  }
  return ::sendmsg(socket, &message, MSG_NOSIGNAL | flags);
}

absl::Status VfioUserClient::SendRaw(absl::Span<const uint8_t> bytes, absl::Span<const int> fds) {
  ssize_t n = SendWithFds(socket_.get(), bytes, fds);
  if (n < 0) return absl::UnavailableError(absl::StrCat("sendmsg: ", strerror(errno)));
  size_t sent = static_cast<size_t>(n);
  while (sent < bytes.size()) {  // the rest without fds
    n = ::send(socket_.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0) return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<VfioUserClient::Reply> VfioUserClient::ReadReply() {
  if (buffer_.size() < (1 << 20) + 64) buffer_.resize((1 << 20) + 64);
  size_t have = 0;
  Header header;
  while (true) {
    ssize_t n = ::recv(socket_.get(), buffer_.data() + have, buffer_.size() - have, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    if (n == 0) return absl::UnavailableError("the server closed the connection");
    have += static_cast<size_t>(n);
    if (have < sizeof(header)) continue;
    std::memcpy(&header, buffer_.data(), sizeof(header));
    if (header.message_size < sizeof(header) || header.message_size > buffer_.size()) {
      return absl::DataLossError(absl::StrCat("reply size ", header.message_size));
    }
    if (have >= header.message_size) break;
  }
  if (have != header.message_size) return absl::DataLossError("more than one reply");
  Reply reply{header, std::vector<uint8_t>(buffer_.begin() + sizeof(header),
                                           buffer_.begin() + header.message_size)};
  return reply;
}

absl::StatusOr<VfioUserClient::Reply> VfioUserClient::Call(Command command,
                                                           absl::Span<const uint8_t> payload,
                                                           absl::Span<const int> fds,
                                                           uint32_t flags) {
  Header header{next_id_++, static_cast<uint16_t>(command),
                static_cast<uint32_t>(sizeof(Header) + payload.size()),
                vfio_user::kTypeCommand | flags, 0};
  std::vector<uint8_t> bytes = BytesOf(header);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  absl::Status sent = SendRaw(bytes, fds);
  if (!sent.ok()) return sent;
  if ((flags & vfio_user::kFlagNoReply) != 0) return Reply{};
  absl::StatusOr<Reply> reply = ReadReply();
  if (!reply.ok()) return reply.status();
  if (reply->header.message_id != header.message_id ||
      reply->header.command != header.command ||
      (reply->header.flags & vfio_user::kFlagTypeMask) != vfio_user::kTypeReply) {
    return absl::DataLossError("the reply does not match the command");
  }
  return reply;
}

absl::StatusOr<VfioUserClient::Reply> VfioUserClient::Version() {
  static constexpr char kJson[] =
      R"({"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, )"
      R"("max_data_xfer_size": 1048576, "migration": {"max_bitmap_size": 268435456, )"
      R"("pgsize": 4096}, "write_multiple": true}})";
  std::vector<uint8_t> payload = {0, 0, 0, 0};
  payload.insert(payload.end(), kJson, kJson + sizeof(kJson));  // with the NUL
  return Call(Command::kVersion, payload);
}

namespace {
absl::Status ReplyStatus(const char* what, const absl::StatusOr<VfioUserClient::Reply>& reply) {
  if (!reply.ok()) return reply.status();
  if (reply->error()) {
    return absl::InternalError(absl::StrCat(what, ": errno ", reply->header.error));
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<std::vector<uint8_t>> VfioUserClient::RegionRead(uint32_t region, uint64_t offset,
                                                                uint32_t count) {
  vfio_user::RegionAccessPayload access{offset, region, count};
  absl::StatusOr<Reply> reply = Call(Command::kRegionRead, BytesOf(access));
  absl::Status status = ReplyStatus("REGION_READ", reply);
  if (!status.ok()) return status;
  if (reply->payload.size() != sizeof(access) + count) {
    return absl::DataLossError("REGION_READ reply of the wrong size");
  }
  return std::vector<uint8_t>(reply->payload.begin() + sizeof(access), reply->payload.end());
}

absl::Status VfioUserClient::RegionWrite(uint32_t region, uint64_t offset,
                                         absl::Span<const uint8_t> data) {
  vfio_user::RegionAccessPayload access{offset, region, static_cast<uint32_t>(data.size())};
  std::vector<uint8_t> payload = BytesOf(access);
  payload.insert(payload.end(), data.begin(), data.end());
  return ReplyStatus("REGION_WRITE", Call(Command::kRegionWrite, payload));
}

absl::StatusOr<uint32_t> VfioUserClient::Read32(uint32_t region, uint64_t offset) {
  absl::StatusOr<std::vector<uint8_t>> bytes = RegionRead(region, offset, 4);
  if (!bytes.ok()) return bytes.status();
  uint32_t value;
  std::memcpy(&value, bytes->data(), 4);
  return value;
}

absl::Status VfioUserClient::Write32(uint32_t region, uint64_t offset, uint32_t value) {
  return RegionWrite(region, offset, BytesOf(value));
}

absl::Status VfioUserClient::DmaMap(uint64_t address, uint64_t size, uint64_t offset,
                                    uint32_t flags, int fd) {
  vfio_user::DmaMapPayload map{sizeof(vfio_user::DmaMapPayload), flags, offset, address, size};
  std::vector<int> fds;
  if (fd >= 0) fds.push_back(fd);
  return ReplyStatus("DMA_MAP", Call(Command::kDmaMap, BytesOf(map), fds));
}

absl::Status VfioUserClient::DmaUnmap(uint64_t address, uint64_t size, uint32_t flags) {
  vfio_user::DmaUnmapPayload unmap{sizeof(vfio_user::DmaUnmapPayload), flags, address, size};
  return ReplyStatus("DMA_UNMAP", Call(Command::kDmaUnmap, BytesOf(unmap)));
}

}  // namespace vfiod::testing
