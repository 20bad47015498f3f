#include "daemon/base/event_fd.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace vfiod {
namespace {

TEST(EventFdTest, SignalThenReadReturnsCountAndClears) {
  absl::StatusOr<EventFd> efd = EventFd::Create();
  ASSERT_TRUE(efd.ok()) << efd.status();
  ASSERT_TRUE(efd->Signal().ok());
  ASSERT_TRUE(efd->Signal().ok());
  EXPECT_EQ(*efd->Read(), 2u);
  EXPECT_EQ(*efd->Read(), 0u);
}

// A blocking eventfd as a VMM sends it: the client keeps one end, the daemon adopts a duplicate
// of the same open file description.
struct SharedEventfd {
  UniqueFd client;
  EventFd adopted;
};

SharedEventfd AdoptBlockingEventfd() {
  int client = ::eventfd(0, EFD_CLOEXEC);
  EXPECT_GE(client, 0);
  int sent = ::fcntl(client, F_DUPFD_CLOEXEC, 0);
  EXPECT_GE(sent, 0);
  absl::StatusOr<EventFd> adopted = EventFd::Adopt(UniqueFd(sent));
  EXPECT_TRUE(adopted.ok()) << adopted.status();
  return SharedEventfd{UniqueFd(client), *std::move(adopted)};
}

TEST(EventFdTest, AdoptLeavesTheClientsFileFlagsAlone) {
  SharedEventfd shared = AdoptBlockingEventfd();
  EXPECT_EQ(::fcntl(shared.client.get(), F_GETFL), O_RDWR);
  // The client's blocking read still blocks until the daemon signals.
  std::atomic<bool> done{false};
  uint64_t value = 0;
  ssize_t n = 0;
  std::thread reader([&] {
    n = ::read(shared.client.get(), &value, sizeof(value));
    done.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(done.load()) << "the client's read returned " << n << " without a signal";
  ASSERT_TRUE(shared.adopted.Signal().ok());
  reader.join();
  EXPECT_EQ(n, 8);
  EXPECT_EQ(value, 1u);
}

TEST(EventFdTest, ReadOfAnAdoptedBlockingEventfdNeverBlocks) {
  SharedEventfd shared = AdoptBlockingEventfd();
  absl::StatusOr<uint64_t> empty = shared.adopted.Read();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, 0u);
  const uint64_t three = 3;
  ASSERT_EQ(::write(shared.client.get(), &three, sizeof(three)), 8);
  EXPECT_EQ(*shared.adopted.Read(), 3u);
  EXPECT_EQ(*shared.adopted.Read(), 0u);
  EXPECT_EQ(::fcntl(shared.client.get(), F_GETFL), O_RDWR);
}

TEST(EventFdTest, SignalOfAnAdoptedBlockingEventfdAtItsMaximumIsCoalesced) {
  SharedEventfd shared = AdoptBlockingEventfd();
  const uint64_t max = 0xfffffffffffffffeull;
  ASSERT_EQ(::write(shared.client.get(), &max, sizeof(max)), 8);
  EXPECT_TRUE(shared.adopted.Signal().ok());
  absl::StatusOr<EventFd> copy = shared.adopted.Duplicate();
  ASSERT_TRUE(copy.ok());
  EXPECT_TRUE(copy->Signal().ok());
  EXPECT_EQ(*copy->Read(), max);
}

TEST(EventFdTest, AdoptRejectsOtherFdKinds) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd write_end(pipe_fds[1]);
  EXPECT_EQ(EventFd::Adopt(UniqueFd(pipe_fds[0])).status().code(),
            absl::StatusCode::kInvalidArgument);

  int file = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ASSERT_GE(file, 0);
  EXPECT_EQ(EventFd::Adopt(UniqueFd(file)).status().code(), absl::StatusCode::kInvalidArgument);

  int memfd = ::memfd_create("not-an-eventfd", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  EXPECT_EQ(EventFd::Adopt(UniqueFd(memfd)).status().code(), absl::StatusCode::kInvalidArgument);

  // The same anonymous inode as an eventfd, but another kind of file.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGUSR2);
  struct {
    const char* name;
    int fd;
  } anonymous[] = {
      {"timerfd", ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC)},
      {"signalfd", ::signalfd(-1, &signals, SFD_CLOEXEC)},
      {"epoll", ::epoll_create1(EPOLL_CLOEXEC)},
      {"inotify", ::inotify_init1(IN_CLOEXEC)},
      {"pidfd", static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0))},
  };
  for (const auto& kind : anonymous) {
    ASSERT_GE(kind.fd, 0) << kind.name;
    const int flags = ::fcntl(kind.fd, F_GETFL);
    int probe = ::fcntl(kind.fd, F_DUPFD_CLOEXEC, 0);
    ASSERT_GE(probe, 0);
    UniqueFd keep(kind.fd);
    absl::Status status = EventFd::Adopt(UniqueFd(probe)).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << kind.name << ": " << status;
    EXPECT_NE(status.message().find("not an eventfd"), absl::string_view::npos) << status;
    EXPECT_EQ(::fcntl(kind.fd, F_GETFL), flags) << kind.name;
  }
}

TEST(EventFdTest, SignalAtCounterMaximumDoesNotBlock) {
  absl::StatusOr<EventFd> efd = EventFd::Create();
  ASSERT_TRUE(efd.ok());
  const uint64_t near_max = 0xfffffffffffffffeull;
  ASSERT_EQ(::write(efd->fd().get(), &near_max, sizeof(near_max)), 8);
  EXPECT_TRUE(efd->Signal().ok());
}

}  // namespace
}  // namespace vfiod
