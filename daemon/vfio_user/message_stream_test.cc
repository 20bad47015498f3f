#include "daemon/vfio_user/message_stream.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace vfiod::vfio_user {
namespace {

class MessageStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    server_ = UniqueFd(pair[0]);
    client_ = UniqueFd(pair[1]);
  }

  static std::vector<uint8_t> Encode(uint16_t id, uint16_t command, size_t payload_bytes,
                                     uint32_t flags = 0) {
    Header header{id, command, static_cast<uint32_t>(sizeof(Header) + payload_bytes), flags, 0};
    std::vector<uint8_t> bytes(sizeof(Header) + payload_bytes, 0xab);
    std::memcpy(bytes.data(), &header, sizeof(header));
    return bytes;
  }

  // One sendmsg of `bytes` with `fds` attached.
  void Send(const std::vector<uint8_t>& bytes, const std::vector<int>& fds = {}) {
    struct iovec io = {const_cast<uint8_t*>(bytes.data()), bytes.size()};
    struct msghdr message = {};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    std::vector<uint8_t> control(CMSG_SPACE(fds.size() * sizeof(int)));
    if (!fds.empty()) {
      message.msg_control = control.data();
      message.msg_controllen = control.size();
      cmsghdr* c = CMSG_FIRSTHDR(&message);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    ASSERT_EQ(::sendmsg(client_.get(), &message, 0), static_cast<ssize_t>(bytes.size()));
  }

  static ino_t Inode(int fd) {
    struct stat st;
    EXPECT_EQ(::fstat(fd, &st), 0);
    return st.st_ino;
  }

  UniqueFd server_;
  UniqueFd client_;
};

TEST_F(MessageStreamTest, PipelinedMessagesAreCutByTheirSizeAndKeepTheirFds) {
  UniqueFd a(::eventfd(0, EFD_CLOEXEC));
  UniqueFd b(::eventfd(0, EFD_CLOEXEC));
  // Three messages in the socket before the server reads: 0 fds, 1 fd, 0 fds.
  Send(Encode(1, 9, 16));
  Send(Encode(2, 2, 32), {a.get()});
  Send(Encode(3, 10, 20));
  MessageStream stream(server_, 4096, 16);
  std::vector<std::pair<uint16_t, size_t>> seen;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::optional<Message>> message = stream.Next();
    ASSERT_TRUE(message.ok()) << message.status();
    ASSERT_TRUE(message->has_value());
    seen.emplace_back((*message)->header.message_id, (*message)->fds.size());
    if ((*message)->header.message_id == 2) {
      ASSERT_EQ((*message)->fds.size(), 1u);
      EXPECT_EQ(Inode((*message)->fds[0].get()), Inode(a.get()));
      EXPECT_EQ((*message)->payload.size(), 32u);
    }
  }
  EXPECT_EQ(seen, (std::vector<std::pair<uint16_t, size_t>>{{1, 0}, {2, 1}, {3, 0}}));
  // Then a message whose fds come while the stream already holds part of the next one.
  std::vector<uint8_t> first = Encode(4, 8, 20);
  std::vector<uint8_t> second = Encode(5, 8, 20);
  Send(first);
  Send(second, {b.get()});
  absl::StatusOr<std::optional<Message>> four = stream.Next();
  ASSERT_TRUE(four.ok() && four->has_value());
  EXPECT_TRUE((*four)->fds.empty());
  absl::StatusOr<std::optional<Message>> five = stream.Next();
  ASSERT_TRUE(five.ok() && five->has_value());
  ASSERT_EQ((*five)->fds.size(), 1u);
  EXPECT_EQ(Inode((*five)->fds[0].get()), Inode(b.get()));
}

TEST_F(MessageStreamTest, AMessageSplitAcrossSendsIsReassembled) {
  std::vector<uint8_t> bytes = Encode(7, 10, 1000);
  MessageStream stream(server_, 4096, 16);
  std::thread writer([&] {
    for (size_t at = 0; at < bytes.size(); at += 100) {
      std::vector<uint8_t> piece(bytes.begin() + at,
                                 bytes.begin() + std::min(at + 100, bytes.size()));
      Send(piece);
      usleep(1000);
    }
  });
  absl::StatusOr<std::optional<Message>> message = stream.Next();
  writer.join();
  ASSERT_TRUE(message.ok()) << message.status();
  ASSERT_TRUE(message->has_value());
  EXPECT_EQ((*message)->header.message_id, 7);
  EXPECT_EQ((*message)->payload.size(), 1000u);
}

TEST_F(MessageStreamTest, BrokenFramingIsDataLoss) {
  const struct {
    const char* what;
    std::vector<uint8_t> bytes;
  } cases[] = {
      {"size below the header", [] {
         std::vector<uint8_t> bytes = Encode(1, 9, 0);
         const uint32_t size = 8;
         std::memcpy(bytes.data() + 4, &size, sizeof(size));
         return bytes;
       }()},
      {"size above the limit", Encode(1, 10, 5000)},
      {"unknown flags", Encode(1, 9, 0, 1u << 8)},
  };
  for (const auto& c : cases) {
    SetUp();
    Send(c.bytes);
    MessageStream stream(server_, 4096, 16);
    absl::StatusOr<std::optional<Message>> message = stream.Next();
    EXPECT_EQ(message.status().code(), absl::StatusCode::kDataLoss) << c.what;
  }
}

TEST_F(MessageStreamTest, EndOfStreamBetweenMessagesIsOrderlyAndInsideOneIsDataLoss) {
  {
    MessageStream stream(server_, 4096, 16);
    Send(Encode(1, 9, 4));
    client_.Reset();
    absl::StatusOr<std::optional<Message>> first = stream.Next();
    ASSERT_TRUE(first.ok() && first->has_value());
    absl::StatusOr<std::optional<Message>> end = stream.Next();
    ASSERT_TRUE(end.ok());
    EXPECT_FALSE(end->has_value());
  }
  SetUp();
  MessageStream stream(server_, 4096, 16);
  std::vector<uint8_t> bytes = Encode(1, 9, 40);
  bytes.resize(30);
  Send(bytes);
  client_.Reset();
  EXPECT_EQ(stream.Next().status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(MessageStreamTest, MoreFdsThanTheLimitIsDataLossAndNoneLeak) {
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    owned.emplace_back(::eventfd(0, EFD_CLOEXEC));
    fds.push_back(owned.back().get());
  }
  Send(Encode(1, 8, 20), fds);
  MessageStream stream(server_, 4096, /*max_fds=*/4);
  EXPECT_EQ(stream.Next().status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(MessageStreamTest, SendWritesHeaderAndPayloadAsOneMessage) {
  MessageStream stream(server_, 4096, 16);
  std::vector<uint8_t> payload(100, 0x5a);
  ASSERT_TRUE(stream.Send(Header{9, 9, 0, kTypeReply, 0}, payload).ok());
  std::vector<uint8_t> received(200);
  ssize_t n = ::recv(client_.get(), received.data(), received.size(), 0);
  ASSERT_EQ(n, 116);
  Header header;
  std::memcpy(&header, received.data(), sizeof(header));
  EXPECT_EQ(header.message_size, 116u);
  EXPECT_EQ(header.message_id, 9);
  EXPECT_EQ(header.flags, kTypeReply);
}

}  // namespace
}  // namespace vfiod::vfio_user
