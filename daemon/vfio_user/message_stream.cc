#include "daemon/vfio_user/message_stream.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/scm_rights.h"

namespace vfiod::vfio_user {

MessageStream::MessageStream(const UniqueFd& socket, size_t max_message_bytes, size_t max_fds)
    : socket_(socket),
      max_message_bytes_(std::max(max_message_bytes, sizeof(Header))),
      max_fds_(max_fds),
      buffer_(max_message_bytes_),
      control_(CMSG_SPACE(std::max<size_t>(max_fds, 1) * sizeof(int))) {}

absl::StatusOr<uint32_t> MessageStream::CheckedSize(size_t offset) const {
  Header header;
  std::memcpy(&header, buffer_.data() + offset, sizeof(header));
  if (header.message_size < sizeof(Header) || header.message_size > max_message_bytes_) {
    return absl::DataLossError(absl::StrCat("vfio-user: message size ", header.message_size,
                                            " is not between 16 and ", max_message_bytes_));
  }
  if ((header.flags & ~kKnownHeaderFlags) != 0) {
    return absl::DataLossError(
        absl::StrCat("vfio-user: unknown header flags 0x", absl::Hex(header.flags)));
  }
  return header.message_size;
}

size_t MessageStream::LastMessageStart(size_t end) const {
  size_t start = 0;
  while (start + sizeof(Header) <= end) {
    absl::StatusOr<uint32_t> size = CheckedSize(start);
    if (!size.ok() || start + *size >= end) break;
    start += *size;
  }
  return start;
}

absl::StatusOr<bool> MessageStream::Fill() {
  struct iovec io = {buffer_.data() + filled_, buffer_.size() - filled_};
  struct msghdr message = {};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control_.data();
  message.msg_controllen = control_.size();
  ssize_t n;
  do {
    n = ::recvmsg(socket_.get(), &message, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return absl::DataLossError(ErrnoError(errno, "recvmsg").message());
  // Take ownership of every fd first, so that each is closed whatever happens next.
  std::vector<UniqueFd> fds = TakeScmRights(message);
  if ((message.msg_flags & MSG_CTRUNC) != 0) {
    return absl::DataLossError(
        absl::StrCat("vfio-user: more fds than ", max_fds_, " in one message (some were lost)"));
  }
  if (n == 0) return false;
  filled_ += static_cast<size_t>(n);
  if (!fds.empty()) {
    std::vector<UniqueFd>& owner = fds_[LastMessageStart(filled_)];
    for (UniqueFd& fd : fds) owner.push_back(std::move(fd));
  }
  return true;
}

absl::StatusOr<std::optional<Message>> MessageStream::Next() {
  if (consumed_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + consumed_, filled_ - consumed_);
    filled_ -= consumed_;
    std::map<size_t, std::vector<UniqueFd>> shifted;
    for (auto& [offset, fds] : fds_) shifted.emplace(offset - consumed_, std::move(fds));
    fds_ = std::move(shifted);
    consumed_ = 0;
  }
  while (true) {
    if (filled_ >= sizeof(Header)) {
      absl::StatusOr<uint32_t> size = CheckedSize(0);
      if (!size.ok()) return size.status();
      if (filled_ >= *size) {
        Message message;
        std::memcpy(&message.header, buffer_.data(), sizeof(Header));
        message.payload = absl::MakeConstSpan(buffer_.data() + sizeof(Header),
                                              *size - sizeof(Header));
        auto fds = fds_.find(0);
        if (fds != fds_.end()) {
          message.fds = std::move(fds->second);
          fds_.erase(fds);
        }
        consumed_ = *size;
        return std::optional<Message>(std::move(message));
      }
    }
    absl::StatusOr<bool> more = Fill();
    if (!more.ok()) return more.status();
    if (!*more) {
      if (filled_ == 0) return std::optional<Message>();
      return absl::DataLossError(
          absl::StrCat("vfio-user: the peer closed the stream inside a message (", filled_,
                       " bytes received)"));
    }
  }
}

absl::StatusOr<bool> MessageStream::WaitReadable(absl::Duration timeout) const {
  if (filled_ > consumed_) return true;
  struct pollfd wait = {socket_.get(), POLLIN, 0};
  const int ms = static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 0,
                                                      INT32_MAX));
  int n;
  do {
    n = ::poll(&wait, 1, ms);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoError(errno, "poll");
  return n > 0;
}

absl::Status MessageStream::Send(Header header, absl::Span<const uint8_t> payload) const {
  const size_t total = sizeof(Header) + payload.size();
  header.message_size = static_cast<uint32_t>(total);
  struct iovec io[2] = {{&header, sizeof(header)},
                        {const_cast<uint8_t*>(payload.data()), payload.size()}};
  size_t sent = 0;
  while (sent < total) {
    struct iovec rest[2];
    struct msghdr message = {};
    int count = 0;
    size_t skip = sent;
    for (const struct iovec& part : io) {
      if (skip >= part.iov_len) {
        skip -= part.iov_len;
        continue;
      }
      rest[count++] = {static_cast<uint8_t*>(part.iov_base) + skip, part.iov_len - skip};
      skip = 0;
    }
    message.msg_iov = rest;
    message.msg_iovlen = count;
    ssize_t n = ::sendmsg(socket_.get(), &message, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "sendmsg");
    }
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace vfiod::vfio_user
