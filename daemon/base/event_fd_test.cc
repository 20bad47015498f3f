#include "daemon/base/event_fd.h"

#include <fcntl.h>
#include <sys/timerfd.h>
#include <unistd.h>

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

TEST(EventFdTest, AdoptAcceptsAnEventfdAndMakesItNonBlocking) {
  absl::StatusOr<EventFd> original = EventFd::Create();
  ASSERT_TRUE(original.ok());
  int raw = ::fcntl(original->fd().get(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(raw, 0);
  ASSERT_EQ(::fcntl(raw, F_SETFL, 0), 0);  // blocking, as a client may send it
  absl::StatusOr<EventFd> adopted = EventFd::Adopt(UniqueFd(raw));
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_NE(::fcntl(adopted->fd().get(), F_GETFL) & O_NONBLOCK, 0);
  ASSERT_TRUE(adopted->Signal().ok());
  EXPECT_EQ(*original->Read(), 1u);
}

TEST(EventFdTest, AdoptRejectsOtherFdKinds) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd write_end(pipe_fds[1]);
  EXPECT_EQ(EventFd::Adopt(UniqueFd(pipe_fds[0])).status().code(),
            absl::StatusCode::kInvalidArgument);

  int timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
  ASSERT_GE(timer, 0);
  EXPECT_EQ(EventFd::Adopt(UniqueFd(timer)).status().code(),
            absl::StatusCode::kInvalidArgument);

  int file = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ASSERT_GE(file, 0);
  EXPECT_EQ(EventFd::Adopt(UniqueFd(file)).status().code(), absl::StatusCode::kInvalidArgument);
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
