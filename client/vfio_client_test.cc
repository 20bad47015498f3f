// VfioClient against fake_vfiod (spawn mode), and the errors that need no daemon at all.
// End-to-end tests against the real daemon live in tests/.
#include "client/vfio_client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/unique_fd.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

std::string FakeDaemonPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".", "/",
                      workspace != nullptr ? workspace : "vfiod", "/client/fake_vfiod");
}

std::unique_ptr<VfioClient> SpawnFake(std::vector<std::string> args = {},
                                      bool fd_channel = true) {
  SpawnOptions options;
  options.binary_path = FakeDaemonPath();
  options.args = std::move(args);
  options.fd_channel = fd_channel;
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Spawn(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(VfioClientSpawnTest, ServesRpcsAndInheritsOnlyItsFds) {
  // An fd of ours without CLOEXEC must still not reach the child.
  const int stray = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(stray, 0);
  std::unique_ptr<VfioClient> client = SpawnFake();
  ::close(stray);
  ASSERT_NE(client, nullptr);
  EXPECT_GT(client->pid(), 0);
  EXPECT_TRUE(client->has_fd_channel());

  absl::StatusOr<v1::DeviceInfo> info = client->GetDeviceInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name(), "fake");

  absl::StatusOr<uint32_t> value = client->ReadConfig(0, 4);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, 0x11e81234u);
}

TEST(VfioClientSpawnTest, ServerErrorKeepsCodeAndMessage) {
  std::unique_ptr<VfioClient> client = SpawnFake();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<uint32_t> value = client->ReadConfig(0x1000, 4);
  EXPECT_EQ(value.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(value.status().message(), "ReadConfig: offset 4096 size 4 is outside config space (256)");
}

TEST(VfioClientSpawnTest, RegisterMemoryFromSealedMemfd) {
  std::unique_ptr<VfioClient> client = SpawnFake();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("guest-ram", 1 << 20);
  ASSERT_TRUE(memfd.ok()) << memfd.status();
  const int seals = ::fcntl(memfd->get(), F_GET_SEALS);
  EXPECT_TRUE(seals & F_SEAL_SHRINK);
  EXPECT_TRUE(seals & F_SEAL_GROW);
  EXPECT_EQ(::lseek(memfd->get(), 0, SEEK_END), 1 << 20);

  absl::StatusOr<v1::RegisterMemoryResponse> memory = client->RegisterMemory(memfd->get(), 1 << 20);
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ(memory->memory_id(), 7u);
  EXPECT_EQ(memory->size(), 1u << 20);
  // The caller keeps its fd.
  EXPECT_NE(::fcntl(memfd->get(), F_GETFD), -1);

  EXPECT_EQ(client->RegisterMemoryToken("0123", 4096).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(VfioClientSpawnTest, SendFdsInBatches) {
  std::unique_ptr<VfioClient> client = SpawnFake();
  ASSERT_NE(client, nullptr);
  std::vector<client::UniqueFd> files;
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    files.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    fds.push_back(files.back().get());
  }
  absl::StatusOr<std::vector<std::string>> tokens = client->SendFds(fds);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 20u);
  std::set<std::string> distinct(tokens->begin(), tokens->end());
  EXPECT_EQ(distinct.size(), 20u);
  for (const std::string& token : *tokens) {
    EXPECT_EQ(token.size(), v1::kFdTokenHexLength);
    EXPECT_EQ(token.find_first_not_of("0123456789abcdef"), std::string::npos) << token;
  }
}

TEST(VfioClientSpawnTest, WatchIrqsStreamsAndCancels) {
  std::unique_ptr<VfioClient> client = SpawnFake();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::unique_ptr<IrqWatch>> watch = client->WatchIrqs({v1::IRQ_INDEX_MSI});
  ASSERT_TRUE(watch.ok()) << watch.status();
  EXPECT_TRUE((*watch)->WaitStarted(absl::Seconds(5)).ok());
  for (uint32_t vector = 0; vector < 3; ++vector) {
    absl::StatusOr<std::optional<v1::IrqEvent>> event = (*watch)->Next(absl::Seconds(5));
    ASSERT_TRUE(event.ok()) << event.status();
    ASSERT_TRUE(event->has_value());
    EXPECT_EQ((*event)->index(), v1::IRQ_INDEX_MSI);
    EXPECT_EQ((*event)->vector(), vector);
  }
  absl::StatusOr<std::optional<v1::IrqEvent>> none = (*watch)->Next(absl::Milliseconds(50));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE((*watch)->done());

  (*watch)->Cancel();
  absl::StatusOr<std::optional<v1::IrqEvent>> ended = (*watch)->Next(absl::Seconds(5));
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE((*watch)->done());
}

TEST(VfioClientSpawnTest, ConcurrentCalls) {
  std::unique_ptr<VfioClient> client = SpawnFake();
  ASSERT_NE(client, nullptr);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      client::UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      const int fds[] = {fd.get()};
      for (int i = 0; i < 25; ++i) {
        if (!client->ReadConfig(0, 4).ok()) ++failures;
        if (!client->SendFds(fds).ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(VfioClientSpawnTest, TerminateStopsTheDaemon) {
  std::unique_ptr<VfioClient> client = SpawnFake();
  ASSERT_NE(client, nullptr);
  absl::StatusOr<int> status = client->Terminate();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGTERM);
  EXPECT_EQ(client->pid(), -1);
  EXPECT_EQ(client->ReadConfig(0, 4).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->Terminate().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(VfioClientSpawnTest, TerminateFallsBackToSigkill) {
  std::unique_ptr<VfioClient> client = SpawnFake({"--ignore-sigterm"});
  ASSERT_NE(client, nullptr);
  absl::StatusOr<int> status = client->Terminate(absl::Milliseconds(200));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGKILL);
}

TEST(VfioClientSpawnTest, DestructorTerminates) {
  std::unique_ptr<VfioClient> client = SpawnFake();
  ASSERT_NE(client, nullptr);
  const pid_t pid = client->pid();
  client.reset();
  // Reaped: the pid no longer names our child.
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(VfioClientSpawnTest, WithoutFdChannel) {
  std::unique_ptr<VfioClient> client = SpawnFake({}, /*fd_channel=*/false);
  ASSERT_NE(client, nullptr);
  EXPECT_FALSE(client->has_fd_channel());
  EXPECT_TRUE(client->GetDeviceInfo().ok());
  const int fds[] = {0};
  EXPECT_EQ(client->SendFds(fds).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(VfioClientSpawnTest, MissingBinary) {
  SpawnOptions options;
  options.binary_path = "/nonexistent/vfiod";
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Spawn(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(client.status().message().find("/nonexistent/vfiod"), absl::string_view::npos);
}

TEST(VfioClientSpawnTest, DaemonExitingBeforeHello) {
  SpawnOptions options;
  options.binary_path = FakeDaemonPath();
  options.args = {"--exit-early"};
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Spawn(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << client.status();
}

// fake_vfiod in listen mode (started by Spawn, which also manages its lifetime).
class VfioClientListenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // TEST_TMPDIR is too long for sun_path.
    char dir[] = "/tmp/vfio_client_test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr) << "mkdtemp(/tmp/...): " << std::strerror(errno);
    dir_ = dir;
    socket_ = dir_ + "/fake.sock";
    daemon_ = SpawnFake({"--listen=" + socket_});
    ASSERT_NE(daemon_, nullptr);
    // The spawn connection answers once the listeners are up.
    ASSERT_TRUE(daemon_->GetDeviceInfo().ok());
  }
  void TearDown() override {
    daemon_.reset();
    ::unlink(socket_.c_str());
    ::unlink((socket_ + ".fds").c_str());
    ::rmdir(dir_.c_str());
  }

  std::string dir_;
  std::string socket_;
  std::unique_ptr<VfioClient> daemon_;
};

TEST_F(VfioClientListenTest, ConnectBindsFdChannel) {
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(socket_);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->pid(), -1);
  EXPECT_TRUE((*client)->has_fd_channel());
  absl::StatusOr<v1::DeviceInfo> info = (*client)->GetDeviceInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name(), "fake");
  client::UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const int fds[] = {fd.get()};
  absl::StatusOr<std::vector<std::string>> tokens = (*client)->SendFds(fds);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 1u);
}

TEST_F(VfioClientListenTest, TwoClientsUseTwoConnections) {
  ConnectOptions options;
  options.fd_channel = false;
  absl::StatusOr<std::unique_ptr<VfioClient>> a = VfioClient::Connect(socket_, options);
  absl::StatusOr<std::unique_ptr<VfioClient>> b = VfioClient::Connect(socket_, options);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE((*a)->has_fd_channel());
  EXPECT_TRUE((*a)->ReadConfig(0, 4).ok());
  EXPECT_TRUE((*b)->ReadConfig(0, 4).ok());
}

TEST(VfioClientConnectTest, MissingSocket) {
  EXPECT_EQ(VfioClient::Connect("/nonexistent/vfiod.sock").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(VfioClientConnectTest, NotASocket) {
  EXPECT_EQ(VfioClient::Connect("/dev/null").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioClientTest, CreateSealedMemfdRejectsZero) {
  EXPECT_EQ(VfioClient::CreateSealedMemfd("x", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vfiod
