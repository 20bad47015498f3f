#include "daemon/vfio_user/vfio_user_session.h"

#include <linux/vfio.h>
#include <sys/eventfd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "daemon/base/owner_cleanup.h"
#include "daemon/pci/fake_backend.h"
#include "daemon/vfio_user/protocol.h"
#include "gtest/gtest.h"

namespace vfiod::vfio_user {
namespace {

constexpr uid_t kOwnerUid = 1000;
constexpr ConnectionId kConnection = 7;
constexpr uint32_t kMsixVectors = 8;

// A session over a FakeBackend whose MSI-X follows vfio-pci's block rules, as QEMU drives it.
class VfioUserSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = std::make_unique<FakeBackend>();
    backend_ = backend.get();
    IrqInfo& msix = backend->info().irqs[static_cast<int>(IrqIndex::kMsix)];
    msix.count = kMsixVectors;
    msix.eventfd = true;
    msix.noresize = true;
    absl::StatusOr<std::unique_ptr<PciDevice>> device =
        PciDevice::Create(std::move(backend), DeviceLimits());
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = *std::move(device);
    device_->RegisterOwnerCleanup(cleanup_);
    sessions_ = std::make_unique<SessionManager>(&cleanup_, SessionOptions{{kOwnerUid}, 64, {}});
    windows_ = std::make_unique<DmaWindows>(device_.get());
    ServerLimits limits;
    session_ = std::make_unique<VfioUserSession>(device_.get(), sessions_.get(), windows_.get(),
                                                 kConnection, limits);
    sessions_->OnConnectionOpened(kConnection, PeerCredentials{1, kOwnerUid, kOwnerUid}, false);
    std::vector<uint8_t> version = {0, 0, 0, 0};
    ASSERT_EQ(Handle(Command::kVersion, version).error, 0u);
  }

  VfioUserSession::Reply Handle(Command command, const std::vector<uint8_t>& payload,
                                std::vector<UniqueFd> fds = {}) {
    Message message;
    message.header = Header{1, static_cast<uint16_t>(command),
                            static_cast<uint32_t>(sizeof(Header) + payload.size()), 0, 0};
    message.payload = payload;
    message.fds = std::move(fds);
    return session_->Handle(message);
  }

  // One SET_IRQS piece for MSI-X as QEMU sends it: eventfds, or none for a run of -1 entries.
  uint32_t MsixPiece(uint32_t start, uint32_t count, bool with_fds) {
    vfio_irq_set set = {sizeof(vfio_irq_set),
                        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                        VFIO_PCI_MSIX_IRQ_INDEX, start, count};
    std::vector<uint8_t> payload(sizeof(set));
    std::memcpy(payload.data(), &set, sizeof(set));
    std::vector<UniqueFd> fds;
    if (with_fds) {
      for (uint32_t i = 0; i < count; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    }
    return Handle(Command::kDeviceSetIrqs, payload, std::move(fds)).error;
  }

  uint32_t DisableMsix() {
    vfio_irq_set set = {sizeof(vfio_irq_set), VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                        VFIO_PCI_MSIX_IRQ_INDEX, 0, 0};
    std::vector<uint8_t> payload(sizeof(set));
    std::memcpy(payload.data(), &set, sizeof(set));
    return Handle(Command::kDeviceSetIrqs, payload).error;
  }

  std::vector<IrqVectorState::Trigger> MsixTriggers() {
    std::vector<IrqVectorState::Trigger> triggers;
    for (const IrqIndexState& index : device_->Snapshot().irqs) {
      if (index.index != IrqIndex::kMsix) continue;
      for (const IrqVectorState& vector : index.vectors) triggers.push_back(vector.trigger);
    }
    return triggers;
  }

  OwnerCleanup cleanup_;
  FakeBackend* backend_ = nullptr;
  std::unique_ptr<PciDevice> device_;
  std::unique_ptr<SessionManager> sessions_;
  std::unique_ptr<DmaWindows> windows_;
  std::unique_ptr<VfioUserSession> session_;
};

using Trigger = IrqVectorState::Trigger;

TEST_F(VfioUserSessionTest, QemuPiecesOfOneMsixArrayEnableEveryVector) {
  // QEMU's eventfd array [fd, -1, -1, fd, fd] in pieces by run.
  ASSERT_EQ(DisableMsix(), 0u);
  ASSERT_EQ(MsixPiece(0, 1, true), 0u);
  ASSERT_EQ(MsixPiece(1, 2, false), 0u) << "a piece beyond the enabled block";
  ASSERT_EQ(MsixPiece(3, 2, true), 0u);
  EXPECT_EQ(backend_->enabled_vectors(IrqIndex::kMsix), 5u);
  std::vector<Trigger> triggers = MsixTriggers();
  ASSERT_EQ(triggers.size(), kMsixVectors);
  EXPECT_EQ(triggers[0], Trigger::kClientEventfd) << "an earlier piece's eventfd survives";
  EXPECT_EQ(triggers[1], Trigger::kNone);
  EXPECT_EQ(triggers[2], Trigger::kNone);
  EXPECT_EQ(triggers[3], Trigger::kClientEventfd);
  EXPECT_EQ(triggers[4], Trigger::kClientEventfd);
  // The backend saw whole blocks only: enable 1, disable, enable 3, disable, enable 5.
  std::vector<uint32_t> enabled_counts;
  for (const FakeBackend::IrqSetCall& call : backend_->irq_set_calls()) {
    if (call.index == IrqIndex::kMsix && call.data == IrqSet::Data::kEventfd) {
      EXPECT_EQ(call.start, 0u);
      enabled_counts.push_back(call.count);
    }
  }
  EXPECT_EQ(enabled_counts, (std::vector<uint32_t>{1, 3, 5}));

  // A piece inside the enabled block changes only its vectors.
  ASSERT_EQ(MsixPiece(1, 1, true), 0u);
  EXPECT_EQ(backend_->enabled_vectors(IrqIndex::kMsix), 5u);
  EXPECT_EQ(MsixTriggers()[1], Trigger::kClientEventfd);
  EXPECT_EQ(MsixTriggers()[0], Trigger::kClientEventfd);
}

TEST_F(VfioUserSessionTest, DisableForgetsTheBlockAndAPieceBeyondTheVectorsChangesNothing) {
  ASSERT_EQ(MsixPiece(0, 2, true), 0u);
  EXPECT_EQ(MsixPiece(2, kMsixVectors, true), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(backend_->enabled_vectors(IrqIndex::kMsix), 2u);
  EXPECT_EQ(MsixTriggers()[0], Trigger::kClientEventfd);
  EXPECT_EQ(MsixTriggers()[1], Trigger::kClientEventfd);
  // start + count past 2^32 while the index is enabled: refused, nothing allocated for it.
  EXPECT_EQ(MsixPiece(0xffffffff, 1, true), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(MsixPiece(0xfffffffe, 2, false), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(backend_->enabled_vectors(IrqIndex::kMsix), 2u);
  ASSERT_EQ(DisableMsix(), 0u);
  EXPECT_EQ(backend_->enabled_vectors(IrqIndex::kMsix), 0u);
  ASSERT_EQ(MsixPiece(0, 1, true), 0u);
  EXPECT_EQ(backend_->enabled_vectors(IrqIndex::kMsix), 1u);
}

TEST_F(VfioUserSessionTest, ErrnoForKeepsARecordedErrnoAndMapsCodes) {
  EXPECT_EQ(ErrnoFor(absl::OkStatus()), 0u);
  EXPECT_EQ(ErrnoFor(absl::InternalError("VFIO_DEVICE_SET_IRQS: Busy (errno 16)")), 16u);
  EXPECT_EQ(ErrnoFor(absl::FailedPreconditionError("memory decode disabled (EIO)")),
            static_cast<uint32_t>(EIO));
  EXPECT_EQ(ErrnoFor(absl::InvalidArgumentError("x")), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(ErrnoFor(absl::OutOfRangeError("x")), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(ErrnoFor(absl::AlreadyExistsError("x")), static_cast<uint32_t>(EEXIST));
  EXPECT_EQ(ErrnoFor(absl::NotFoundError("x")), static_cast<uint32_t>(ENOENT));
  EXPECT_EQ(ErrnoFor(absl::ResourceExhaustedError("x")), static_cast<uint32_t>(ENOSPC));
  EXPECT_EQ(ErrnoFor(absl::PermissionDeniedError("x")), static_cast<uint32_t>(EPERM));
  EXPECT_EQ(ErrnoFor(absl::UnimplementedError("x")), static_cast<uint32_t>(ENOTSUP));
  // A number that is no errno is not taken.
  EXPECT_EQ(ErrnoFor(absl::InvalidArgumentError("(errno 99999)")), static_cast<uint32_t>(EINVAL));
}

TEST_F(VfioUserSessionTest, OwnerLossRunsThroughTheCleanupAndLaterCommandsAreRefused) {
  ASSERT_EQ(MsixPiece(0, 2, true), 0u);
  sessions_->OnConnectionClosed(kConnection);
  EXPECT_EQ(cleanup_.runs(), 1u);
  EXPECT_EQ(backend_->enabled_vectors(IrqIndex::kMsix), 0u);
  EXPECT_EQ(MsixPiece(0, 1, true), static_cast<uint32_t>(EPERM));
}

}  // namespace
}  // namespace vfiod::vfio_user
