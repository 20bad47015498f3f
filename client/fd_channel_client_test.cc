// FdChannelClient against a socketpair where the test plays the daemon.
#include "client/fd_channel_client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "client/unique_fd.h"
#include "gtest/gtest.h"
#include "proto/vfiod/v1/fd_channel.h"

namespace vfiod::client {
namespace {

using v1::FdChannelHello;
using v1::FdChannelReply;
using v1::FdChannelSend;
using v1::FdToken;

class FdChannelClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
    client_end_.Reset(pair[0]);
    daemon_.Reset(pair[1]);
  }

  void SendHello(uint32_t magic = v1::kFdChannelMagic, uint16_t version = v1::kFdChannelVersion,
                 uint16_t max_fds = v1::kFdChannelMaxFdsPerMessage) {
    FdChannelHello hello = {};
    hello.magic = magic;
    hello.version = version;
    hello.max_fds_per_message = max_fds;
    for (size_t i = 0; i < v1::kFdChannelKeyBytes; ++i) hello.channel_key[i] = 0xa0 + i;
    ASSERT_EQ(::send(daemon_.get(), &hello, sizeof(hello), 0), ssize_t{sizeof(hello)});
  }

  std::unique_ptr<FdChannelClient> OpenClient() {
    auto client = FdChannelClient::Open(std::move(client_end_), absl::Seconds(5));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  // One FdChannelSend as the daemon receives it: its header and the fds that came with it.
  struct Received {
    FdChannelSend header;
    std::vector<UniqueFd> fds;
  };
  Received Receive() {
    Received received = {};
    iovec iov = {&received.header, sizeof(received.header)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(daemon_.get(), &msg, MSG_CMSG_CLOEXEC);
    EXPECT_EQ(n, ssize_t{sizeof(FdChannelSend)});
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        received.fds.emplace_back(fd);
      }
    }
    return received;
  }

  static FdToken TokenFor(uint32_t sequence, size_t i) {
    FdToken token;
    for (size_t b = 0; b < sizeof(token.bytes); ++b) {
      token.bytes[b] = static_cast<uint8_t>(sequence * 16 + i + b);
    }
    return token;
  }

  void Reply(uint32_t sequence, size_t count) {
    std::vector<char> buffer(sizeof(FdChannelReply) + count * sizeof(FdToken));
    FdChannelReply reply = {};
    reply.magic = v1::kFdChannelMagic;
    reply.sequence = sequence;
    reply.count = count;
    std::memcpy(buffer.data(), &reply, sizeof(reply));
    for (size_t i = 0; i < count; ++i) {
      FdToken token = TokenFor(sequence, i);
      std::memcpy(buffer.data() + sizeof(reply) + i * sizeof(token), &token, sizeof(token));
    }
    ASSERT_EQ(::send(daemon_.get(), buffer.data(), buffer.size(), 0), ssize_t(buffer.size()));
  }

  void ReplyError(uint32_t sequence, uint32_t code, const char* message) {
    FdChannelReply reply = {};
    reply.magic = v1::kFdChannelMagic;
    reply.sequence = sequence;
    reply.status_code = code;
    std::strncpy(reply.message, message, sizeof(reply.message) - 1);
    ASSERT_EQ(::send(daemon_.get(), &reply, sizeof(reply), 0), ssize_t{sizeof(reply)});
  }

  static UniqueFd TempFile() {
    char path[] = "/tmp/fd_channel_client_test.XXXXXX";
    UniqueFd fd(::mkostemp(path, O_CLOEXEC));
    ::unlink(path);
    return fd;
  }

  static bool SameFile(int a, int b) {
    struct stat sa, sb;
    return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
  }

  UniqueFd client_end_;
  UniqueFd daemon_;
};

TEST(FdTokenToHexTest, LowercaseFixedLength) {
  FdToken token;
  for (size_t i = 0; i < sizeof(token.bytes); ++i) token.bytes[i] = static_cast<uint8_t>(i * 17);
  token.bytes[15] = 0xab;
  std::string hex = FdTokenToHex(token);
  EXPECT_EQ(hex.size(), v1::kFdTokenHexLength);
  EXPECT_EQ(hex, "00112233445566778899aabbccddeeab");
}

TEST(FdTokenToHexTest, AllZeroAndAllOnes) {
  FdToken zero = {};
  EXPECT_EQ(FdTokenToHex(zero), std::string(32, '0'));
  FdToken ones;
  std::memset(ones.bytes, 0xff, sizeof(ones.bytes));
  EXPECT_EQ(FdTokenToHex(ones), std::string(32, 'f'));
}

TEST_F(FdChannelClientTest, HelloGivesKeyAndBatchSize) {
  SendHello(v1::kFdChannelMagic, v1::kFdChannelVersion, 8);
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->max_fds_per_message(), 8u);
  for (size_t i = 0; i < v1::kFdChannelKeyBytes; ++i) EXPECT_EQ(client->channel_key()[i], 0xa0 + i);
}

TEST_F(FdChannelClientTest, BatchSizeCappedAtProtocolMaximum) {
  SendHello(v1::kFdChannelMagic, v1::kFdChannelVersion, 200);
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->max_fds_per_message(), v1::kFdChannelMaxFdsPerMessage);
}

TEST_F(FdChannelClientTest, BadHelloMagic) {
  SendHello(0x12345678);
  auto client = FdChannelClient::Open(std::move(client_end_), absl::Seconds(5));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(FdChannelClientTest, BadHelloVersion) {
  SendHello(v1::kFdChannelMagic, 2);
  auto client = FdChannelClient::Open(std::move(client_end_), absl::Seconds(5));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(FdChannelClientTest, ShortHello) {
  uint32_t magic = v1::kFdChannelMagic;
  ASSERT_EQ(::send(daemon_.get(), &magic, sizeof(magic), 0), 4);
  auto client = FdChannelClient::Open(std::move(client_end_), absl::Seconds(5));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(FdChannelClientTest, PeerClosesBeforeHello) {
  daemon_.Reset();
  auto client = FdChannelClient::Open(std::move(client_end_), absl::Seconds(5));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(FdChannelClientTest, NoHelloTimesOut) {
  auto client = FdChannelClient::Open(std::move(client_end_), absl::Milliseconds(50));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(FdChannelClientTest, SendsThreeFdsAndReturnsTokens) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  UniqueFd files[3] = {TempFile(), TempFile(), TempFile()};
  const int fds[] = {files[0].get(), files[1].get(), files[2].get()};

  Received received;
  std::thread daemon([&] {
    received = Receive();
    Reply(received.header.sequence, received.fds.size());
  });
  auto tokens = client->SendFds(fds, absl::Seconds(5));
  daemon.join();

  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(received.header.magic, v1::kFdChannelMagic);
  ASSERT_EQ(received.fds.size(), 3u);
  ASSERT_EQ(tokens->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(SameFile(received.fds[i].get(), fds[i])) << i;
    EXPECT_EQ((*tokens)[i], FdTokenToHex(TokenFor(received.header.sequence, i)));
  }
  // The caller keeps its fds.
  for (int fd : fds) EXPECT_NE(::fcntl(fd, F_GETFD), -1);
}

TEST_F(FdChannelClientTest, ErrorReplyBecomesStatus) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  UniqueFd file = TempFile();
  const int fds[] = {file.get()};
  std::thread daemon([&] {
    Received received = Receive();
    ReplyError(received.header.sequence, static_cast<uint32_t>(absl::StatusCode::kResourceExhausted),
               "fd channel: too many outstanding tokens (64)");
  });
  auto tokens = client->SendFds(fds, absl::Seconds(5));
  daemon.join();
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(tokens.status().message(), "fd channel: too many outstanding tokens (64)");
}

TEST_F(FdChannelClientTest, TwentyFdsGoInBatchesOfSixteenAndFour) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  std::vector<UniqueFd> files;
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    files.push_back(TempFile());
    fds.push_back(files.back().get());
  }
  std::vector<Received> batches;
  std::thread daemon([&] {
    for (int i = 0; i < 2; ++i) {
      batches.push_back(Receive());
      Reply(batches.back().header.sequence, batches.back().fds.size());
    }
  });
  auto tokens = client->SendFds(fds, absl::Seconds(5));
  daemon.join();

  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].fds.size(), 16u);
  EXPECT_EQ(batches[1].fds.size(), 4u);
  EXPECT_NE(batches[0].header.sequence, batches[1].header.sequence);
  ASSERT_EQ(tokens->size(), 20u);
  for (size_t i = 0; i < 20; ++i) {
    const Received& batch = batches[i / 16];
    EXPECT_TRUE(SameFile(batch.fds[i % 16].get(), fds[i])) << i;
    EXPECT_EQ((*tokens)[i], FdTokenToHex(TokenFor(batch.header.sequence, i % 16))) << i;
  }
}

TEST_F(FdChannelClientTest, StaleReplyIsSkipped) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  UniqueFd file = TempFile();
  const int fds[] = {file.get()};
  // The first exchange times out; its late reply must not be taken for the second one's.
  std::thread daemon([&] { Receive(); });
  EXPECT_EQ(client->SendFds(fds, absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  daemon.join();
  std::thread daemon2([&] {
    Received second = Receive();
    Reply(second.header.sequence - 1, 1);
    Reply(second.header.sequence, 1);
  });
  auto tokens = client->SendFds(fds, absl::Seconds(5));
  daemon2.join();
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 1u);
  // The late reply's token is the caller's to release.
  EXPECT_EQ(client->TakeStrayTokens().size(), 1u);
}

// All or none: a send whose second batch is refused returns no token, and the first batch's
// tokens (the daemon holds those fds) are stray tokens for the caller to release.
TEST_F(FdChannelClientTest, PartialFailureLeavesTheAnsweredBatchesAsStrayTokens) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  UniqueFd file = TempFile();
  std::vector<int> fds(20, file.get());
  uint32_t first_sequence = 0;
  std::thread daemon([&] {
    Received first = Receive();
    first_sequence = first.header.sequence;
    Reply(first.header.sequence, first.fds.size());
    Received second = Receive();
    ReplyError(second.header.sequence,
               static_cast<uint32_t>(absl::StatusCode::kResourceExhausted), "too many");
  });
  auto tokens = client->SendFds(fds, absl::Seconds(5));
  daemon.join();
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kResourceExhausted);
  std::vector<std::string> strays = client->TakeStrayTokens();
  ASSERT_EQ(strays.size(), 16u);
  for (size_t i = 0; i < 16; ++i) EXPECT_EQ(strays[i], FdTokenToHex(TokenFor(first_sequence, i)));
  EXPECT_TRUE(client->TakeStrayTokens().empty());
}

// A batch that timed out is answered later: its tokens become stray tokens as soon as the late
// reply is read, without blocking, and a refused late batch leaves none.
TEST_F(FdChannelClientTest, LateRepliesBecomeStrayTokens) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  UniqueFd file = TempFile();
  const int fds[] = {file.get(), file.get()};
  Received first, second;
  std::thread daemon([&] { first = Receive(); });
  EXPECT_EQ(client->SendFds(fds, absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  daemon.join();
  EXPECT_EQ(client->unanswered_batches(), 1u);
  EXPECT_TRUE(client->TakeStrayTokens().empty());  // no reply yet: nothing, and no blocking
  Reply(first.header.sequence, 2);
  std::vector<std::string> strays = client->TakeStrayTokens();
  ASSERT_EQ(strays.size(), 2u);
  EXPECT_EQ(strays[0], FdTokenToHex(TokenFor(first.header.sequence, 0)));
  EXPECT_EQ(client->unanswered_batches(), 0u);

  std::thread daemon2([&] { second = Receive(); });
  EXPECT_EQ(client->SendFds(fds, absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  daemon2.join();
  ReplyError(second.header.sequence, static_cast<uint32_t>(absl::StatusCode::kInvalidArgument),
             "refused");
  EXPECT_TRUE(client->TakeStrayTokens().empty());
  EXPECT_EQ(client->unanswered_batches(), 0u);
  // Stray tokens given back are returned again.
  client->KeepStrayTokens({"x"});
  EXPECT_EQ(client->TakeStrayTokens(), std::vector<std::string>{"x"});
}

TEST_F(FdChannelClientTest, TokenCountMismatchIsDataLoss) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  UniqueFd a = TempFile(), b = TempFile();
  const int fds[] = {a.get(), b.get()};
  std::thread daemon([&] {
    Received received = Receive();
    Reply(received.header.sequence, 1);
  });
  auto tokens = client->SendFds(fds, absl::Seconds(5));
  daemon.join();
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(FdChannelClientTest, DaemonGoneIsUnavailable) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  UniqueFd file = TempFile();
  const int fds[] = {file.get()};
  daemon_.Reset();
  EXPECT_EQ(client->SendFds(fds, absl::Seconds(5)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(FdChannelClientTest, RejectsEmptyAndNegative) {
  SendHello();
  auto client = OpenClient();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->SendFds({}, absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  const int bad[] = {-1};
  EXPECT_EQ(client->SendFds(bad, absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vfiod::client
