#include "daemon/base/scm_rights.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "daemon/base/fd_count_for_test.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

ino_t Inode(int fd) {
  struct stat st = {};
  ::fstat(fd, &st);
  return st.st_ino;
}

// Sends `fds` in one SCM_RIGHTS message, with SO_PASSCRED on the receiver so that an
// SCM_CREDENTIALS message arrives beside it; receives with room for `room` fds.
msghdr SendAndReceive(int sender, int receiver, const std::vector<int>& fds, char* control,
                      size_t control_size, char* byte, iovec* io) {
  const int one = 1;
  EXPECT_EQ(::setsockopt(receiver, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
  char out_control[CMSG_SPACE(8 * sizeof(int))] = {};
  char out_byte = 'x';
  iovec out_io = {&out_byte, 1};
  msghdr out = {};
  out.msg_iov = &out_io;
  out.msg_iovlen = 1;
  out.msg_control = out_control;
  out.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
  cmsghdr* rights = CMSG_FIRSTHDR(&out);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
  std::memcpy(CMSG_DATA(rights), fds.data(), fds.size() * sizeof(int));
  EXPECT_EQ(::sendmsg(sender, &out, 0), 1) << std::strerror(errno);
  *io = {byte, 1};
  msghdr in = {};
  in.msg_iov = io;
  in.msg_iovlen = 1;
  in.msg_control = control;
  in.msg_controllen = control_size;
  EXPECT_EQ(::recvmsg(receiver, &in, MSG_CMSG_CLOEXEC), 1) << std::strerror(errno);
  return in;
}

TEST(ScmRightsTest, TakesEveryFdInOrderAndSkipsOtherControlMessages) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd sender(pair[0]), receiver(pair[1]);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  const int before = testing::CountOpenFds();
  {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(8 * sizeof(int))];
    char byte;
    iovec io;
    msghdr received = SendAndReceive(sender.get(), receiver.get(),
                                     {read_end.get(), write_end.get(), read_end.get()}, control,
                                     sizeof(control), &byte, &io);
    std::vector<UniqueFd> fds = TakeScmRights(received);
    ASSERT_EQ(fds.size(), 3u);
    EXPECT_EQ(Inode(fds[0].get()), Inode(read_end.get()));
    EXPECT_EQ(Inode(fds[1].get()), Inode(write_end.get()));
    EXPECT_EQ(Inode(fds[2].get()), Inode(read_end.get()));
    EXPECT_EQ(testing::CountOpenFds(), before + 3);
  }
  EXPECT_EQ(testing::CountOpenFds(), before);  // every fd taken was closed with its owner
}

TEST(ScmRightsTest, NoControlBufferMeansNoFds) {
  msghdr empty = {};
  EXPECT_TRUE(TakeScmRights(empty).empty());
}

}  // namespace
}  // namespace vfiod
