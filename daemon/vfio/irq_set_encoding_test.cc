#include "daemon/vfio/irq_set_encoding.h"

#include <linux/vfio.h>

#include <cstring>
#include <limits>

#include "daemon/base/event_fd.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

vfio_irq_set Header(const std::vector<uint8_t>& buffer) {
  vfio_irq_set header;
  EXPECT_GE(buffer.size(), sizeof(header));
  std::memcpy(&header, buffer.data(), sizeof(header));
  return header;
}

int32_t FdAt(const std::vector<uint8_t>& buffer, size_t i) {
  int32_t fd;
  std::memcpy(&fd, buffer.data() + sizeof(vfio_irq_set) + i * sizeof(fd), sizeof(fd));
  return fd;
}

TEST(IrqSetEncodingTest, HeaderIsTwentyBytes) { EXPECT_EQ(sizeof(vfio_irq_set), 20u); }

TEST(IrqSetEncodingTest, EventfdsWithATornDownVector) {
  absl::StatusOr<EventFd> a = EventFd::Create();
  absl::StatusOr<EventFd> b = EventFd::Create();
  ASSERT_TRUE(a.ok() && b.ok());
  IrqSet set;
  set.index = IrqIndex::kMsix;
  set.start = 4;
  set.count = 3;
  set.action = IrqAction::kTrigger;
  set.data = IrqSet::Data::kEventfd;
  set.eventfds = {&*a, nullptr, &*b};
  absl::StatusOr<std::vector<uint8_t>> buffer = EncodeIrqSet(set);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  ASSERT_EQ(buffer->size(), 20u + 3 * 4);
  const vfio_irq_set header = Header(*buffer);
  EXPECT_EQ(header.argsz, 32u);
  EXPECT_EQ(header.flags, uint32_t{VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER});
  EXPECT_EQ(header.index, uint32_t{VFIO_PCI_MSIX_IRQ_INDEX});
  EXPECT_EQ(header.start, 4u);
  EXPECT_EQ(header.count, 3u);
  EXPECT_EQ(FdAt(*buffer, 0), a->fd().get());
  EXPECT_EQ(FdAt(*buffer, 1), -1);
  EXPECT_EQ(FdAt(*buffer, 2), b->fd().get());
}

TEST(IrqSetEncodingTest, BoolsAreOneBytePerVector) {
  IrqSet set;
  set.index = IrqIndex::kMsi;
  set.count = 3;
  set.action = IrqAction::kMask;
  set.data = IrqSet::Data::kBool;
  set.bools = {true, false, true};
  absl::StatusOr<std::vector<uint8_t>> buffer = EncodeIrqSet(set);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  ASSERT_EQ(buffer->size(), 23u);
  const vfio_irq_set header = Header(*buffer);
  EXPECT_EQ(header.argsz, 23u);
  EXPECT_EQ(header.flags, uint32_t{VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK});
  EXPECT_EQ(header.index, uint32_t{VFIO_PCI_MSI_IRQ_INDEX});
  EXPECT_EQ((*buffer)[20], 1);
  EXPECT_EQ((*buffer)[21], 0);
  EXPECT_EQ((*buffer)[22], 1);
}

TEST(IrqSetEncodingTest, DisableIsTriggerDataNoneCountZero) {
  IrqSet set;
  set.index = IrqIndex::kIntx;
  set.count = 0;
  set.action = IrqAction::kTrigger;
  set.data = IrqSet::Data::kNone;
  absl::StatusOr<std::vector<uint8_t>> buffer = EncodeIrqSet(set);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  ASSERT_EQ(buffer->size(), 20u);
  const vfio_irq_set header = Header(*buffer);
  EXPECT_EQ(header.argsz, 20u);
  EXPECT_EQ(header.flags, uint32_t{VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER});
  EXPECT_EQ(header.count, 0u);
}

TEST(IrqSetEncodingTest, IntxUnmaskWithResampleEventfd) {
  absl::StatusOr<EventFd> resample = EventFd::Create();
  ASSERT_TRUE(resample.ok());
  IrqSet set;
  set.index = IrqIndex::kIntx;
  set.count = 1;
  set.action = IrqAction::kUnmask;
  set.data = IrqSet::Data::kEventfd;
  set.eventfds = {&*resample};
  absl::StatusOr<std::vector<uint8_t>> buffer = EncodeIrqSet(set);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_EQ(Header(*buffer).flags,
            uint32_t{VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK});
  EXPECT_EQ(FdAt(*buffer, 0), resample->fd().get());
}

TEST(IrqSetEncodingTest, RejectsDataThatDoesNotMatchTheCount) {
  absl::StatusOr<EventFd> a = EventFd::Create();
  ASSERT_TRUE(a.ok());
  IrqSet set;
  set.index = IrqIndex::kMsi;
  set.count = 2;
  set.data = IrqSet::Data::kEventfd;
  set.eventfds = {&*a};
  EXPECT_EQ(EncodeIrqSet(set).status().code(), absl::StatusCode::kInvalidArgument);

  set.data = IrqSet::Data::kBool;
  set.eventfds.clear();
  set.bools = {true};
  EXPECT_EQ(EncodeIrqSet(set).status().code(), absl::StatusCode::kInvalidArgument);

  set.bools = {true, true};
  set.eventfds = {&*a, &*a};  // both kinds at once
  EXPECT_EQ(EncodeIrqSet(set).status().code(), absl::StatusCode::kInvalidArgument);

  set.data = IrqSet::Data::kNone;
  set.eventfds.clear();
  EXPECT_EQ(EncodeIrqSet(set).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IrqSetEncodingTest, RejectsStartPlusCountOverflow) {
  IrqSet set;
  set.index = IrqIndex::kMsix;
  set.start = std::numeric_limits<uint32_t>::max();
  set.count = 1;
  set.data = IrqSet::Data::kBool;
  set.bools = {true};
  EXPECT_EQ(EncodeIrqSet(set).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IrqSetEncodingTest, RejectsUnknownEnumValues) {
  IrqSet set;
  set.count = 0;
  set.action = static_cast<IrqAction>(7);
  EXPECT_EQ(EncodeIrqSet(set).status().code(), absl::StatusCode::kInvalidArgument);
  set.action = IrqAction::kTrigger;
  set.data = static_cast<IrqSet::Data>(9);
  EXPECT_EQ(EncodeIrqSet(set).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IrqSetEncodingTest, IndexIsPassedThroughForTheKernelToJudge) {
  IrqSet set;
  set.index = static_cast<IrqIndex>(9);
  set.count = 0;
  absl::StatusOr<std::vector<uint8_t>> buffer = EncodeIrqSet(set);
  ASSERT_TRUE(buffer.ok());
  EXPECT_EQ(Header(*buffer).index, 9u);
  EXPECT_NE(DescribeIrqSet(set).find("index 9"), std::string::npos);
}

}  // namespace
}  // namespace vfiod
