#include "daemon/backend/device_backend.h"

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

IrqSetForm Form(IrqIndex index, uint32_t start, uint32_t count, IrqSet::Data data, size_t bools = 0,
                size_t eventfds = 0) {
  IrqSetForm form;
  form.index = index;
  form.start = start;
  form.count = count;
  form.data = data;
  form.bools = bools;
  form.eventfds = eventfds;
  return form;
}

void ExpectInvalid(const absl::Status& status, const std::string& message) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(status.message(), message);
}

TEST(IrqSetShapeTest, FormOfCountsTheValues) {
  IrqSet set;
  set.index = IrqIndex::kMsix;
  set.start = 2;
  set.count = 3;
  set.action = IrqAction::kUnmask;
  set.data = IrqSet::Data::kBool;
  set.bools = {true, false, true};
  const IrqSetForm form = FormOf(set);
  EXPECT_EQ(form.index, IrqIndex::kMsix);
  EXPECT_EQ(form.start, 2u);
  EXPECT_EQ(form.count, 3u);
  EXPECT_EQ(form.action, IrqAction::kUnmask);
  EXPECT_EQ(form.data, IrqSet::Data::kBool);
  EXPECT_EQ(form.bools, 3u);
  EXPECT_EQ(form.eventfds, 0u);
}

TEST(IrqSetShapeTest, Index) {
  EXPECT_TRUE(CheckIrqSetIndex(Form(IrqIndex::kReq, 0, 1, IrqSet::Data::kNone)).ok());
  ExpectInvalid(CheckIrqSetIndex(Form(static_cast<IrqIndex>(5), 0, 1, IrqSet::Data::kNone)),
                "unknown IRQ index 5");
}

TEST(IrqSetShapeTest, Data) {
  EXPECT_TRUE(CheckIrqSetData(Form(IrqIndex::kIntx, 0, 0, IrqSet::Data::kNone)).ok());
  EXPECT_TRUE(CheckIrqSetData(Form(IrqIndex::kMsi, 0, 2, IrqSet::Data::kBool, 2)).ok());
  EXPECT_TRUE(CheckIrqSetData(Form(IrqIndex::kMsi, 0, 2, IrqSet::Data::kEventfd, 0, 2)).ok());
  IrqSetForm form = Form(IrqIndex::kIntx, 0, 1, IrqSet::Data::kNone);
  form.action = static_cast<IrqAction>(9);
  ExpectInvalid(CheckIrqSetData(form), "unknown action 9");
  ExpectInvalid(CheckIrqSetData(Form(IrqIndex::kIntx, 0, 1, static_cast<IrqSet::Data>(7))),
                "unknown data form 7");
  ExpectInvalid(CheckIrqSetData(Form(IrqIndex::kIntx, 0, 1, IrqSet::Data::kNone, 1)),
                "1 bools given with data none");
  ExpectInvalid(CheckIrqSetData(Form(IrqIndex::kIntx, 0, 1, IrqSet::Data::kBool, 1, 1)),
                "1 eventfds given with data bool");
  ExpectInvalid(CheckIrqSetData(Form(IrqIndex::kMsi, 0, 2, IrqSet::Data::kBool, 1)),
                "1 bools for 2 vectors");
  ExpectInvalid(CheckIrqSetData(Form(IrqIndex::kMsi, 0, 3, IrqSet::Data::kEventfd, 0, 2)),
                "2 eventfds for 3 vectors");
}

TEST(IrqSetShapeTest, EndFollowsTheKernel) {
  constexpr uint32_t kMax = std::numeric_limits<uint32_t>::max();
  EXPECT_TRUE(CheckIrqSetEnd(Form(IrqIndex::kMsix, kMax - 2, 1, IrqSet::Data::kNone)).ok());
  // vfio_set_irqs_validate_and_prepare(): count >= U32_MAX - start is EINVAL.
  ExpectInvalid(CheckIrqSetEnd(Form(IrqIndex::kMsix, kMax - 1, 1, IrqSet::Data::kNone)),
                "start 4294967294 + count 1 overflows");
  ExpectInvalid(CheckIrqSetEnd(Form(IrqIndex::kMsix, 1, kMax, IrqSet::Data::kNone)),
                "start 1 + count 4294967295 overflows");
}

TEST(IrqSetShapeTest, Vectors) {
  EXPECT_TRUE(CheckIrqSetVectors(Form(IrqIndex::kMsix, 6, 2, IrqSet::Data::kNone), 8).ok());
  EXPECT_TRUE(CheckIrqSetVectors(Form(IrqIndex::kIntx, 0, 0, IrqSet::Data::kNone), 1).ok());
  ExpectInvalid(CheckIrqSetVectors(Form(IrqIndex::kMsix, 7, 2, IrqSet::Data::kNone), 8),
                "vector range [7, 9) exceeds the 8 vectors of MSI-X");
  ExpectInvalid(CheckIrqSetVectors(Form(IrqIndex::kMsix, 0, 0, IrqSet::Data::kNone), 0),
                "vector range [0, 0) exceeds the 0 vectors of MSI-X");
  ExpectInvalid(CheckIrqSetVectors(Form(IrqIndex::kMsix, 0xffffffffu, 2, IrqSet::Data::kNone), 8),
                "vector range [4294967295, 4294967297) exceeds the 8 vectors of MSI-X");
}

}  // namespace
}  // namespace vfiod
