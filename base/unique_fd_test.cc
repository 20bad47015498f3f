#include "base/unique_fd.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <utility>

#include "gtest/gtest.h"

namespace vfiod {
namespace {

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

TEST(UniqueFdTest, ClosesOnDestructionAndMovesOwnership) {
  int raw = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd fd(raw);
    EXPECT_TRUE(fd.valid());
    UniqueFd moved = std::move(fd);
    EXPECT_FALSE(fd.valid());  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_EQ(moved.get(), raw);
    EXPECT_TRUE(IsOpen(raw));
  }
  EXPECT_FALSE(IsOpen(raw));
}

TEST(UniqueFdTest, ReleaseGivesUpOwnershipAndResetToTheSameFdKeepsIt) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC));
  const int raw = fd.get();
  fd.Reset(raw);
  EXPECT_TRUE(IsOpen(raw));
  EXPECT_EQ(fd.Release(), raw);
  EXPECT_FALSE(fd.valid());
  EXPECT_TRUE(IsOpen(raw));
  ::close(raw);
}

TEST(UniqueFdTest, DuplicateIsNumberedAtLeastKMinDuplicateFd) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC));
  absl::StatusOr<UniqueFd> copy = fd.Duplicate();
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_GE(copy->get(), kMinDuplicateFd);
  EXPECT_NE(::fcntl(copy->get(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_EQ(UniqueFd().Duplicate().status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vfiod
