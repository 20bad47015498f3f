#include "daemon/transport/connection_registry.h"

#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace vfiod {
namespace {

constexpr PeerCredentials kAlice{100, 1000, 1000};
constexpr PeerCredentials kBob{200, 2000, 2000};

TEST(ConnectionRegistryTest, IdsAreSharedByEveryProtocolAndNeverReused) {
  ConnectionRegistry registry(ConnectionQuotas{});
  absl::StatusOr<ConnectionSlot> grpc = registry.Admit(Protocol::kGrpc, kAlice);
  absl::StatusOr<ConnectionSlot> channel = registry.Admit(Protocol::kFdChannel, kAlice);
  absl::StatusOr<ConnectionSlot> vfio_user = registry.Admit(Protocol::kVfioUser, kAlice);
  ASSERT_TRUE(grpc.ok() && channel.ok() && vfio_user.ok());
  EXPECT_EQ(grpc->id(), 1u);
  EXPECT_EQ(channel->id(), 2u);
  EXPECT_EQ(vfio_user->id(), 3u);
  grpc->Release();
  absl::StatusOr<ConnectionSlot> again = registry.Admit(Protocol::kGrpc, kAlice);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id(), 4u);
}

TEST(ConnectionRegistryTest, EachProtocolHasItsOwnQuota) {
  ConnectionQuotas quotas;
  quotas.max_vfio_user = 1;
  ConnectionRegistry registry(quotas);
  absl::StatusOr<ConnectionSlot> first = registry.Admit(Protocol::kVfioUser, kAlice);
  ASSERT_TRUE(first.ok());
  absl::StatusOr<ConnectionSlot> second = registry.Admit(Protocol::kVfioUser, kBob);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(second.status().message().find("vfio_user"), absl::string_view::npos);
  // Other protocols are not affected.
  EXPECT_TRUE(registry.Admit(Protocol::kGrpc, kBob).ok());
  EXPECT_EQ(registry.Count(Protocol::kVfioUser), 1u);
  // A released slot makes room.
  first->Release();
  EXPECT_TRUE(registry.Admit(Protocol::kVfioUser, kBob).ok());
}

TEST(ConnectionRegistryTest, PerUidQuotaCountsEveryProtocol) {
  ConnectionQuotas quotas;
  quotas.max_per_uid = 2;
  ConnectionRegistry registry(quotas);
  absl::StatusOr<ConnectionSlot> a = registry.Admit(Protocol::kGrpc, kAlice);
  absl::StatusOr<ConnectionSlot> b = registry.Admit(Protocol::kFdChannel, kAlice);
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<ConnectionSlot> c = registry.Admit(Protocol::kVfioUser, kAlice);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("uid 1000"), absl::string_view::npos);
  EXPECT_TRUE(registry.Admit(Protocol::kGrpc, kBob).ok());
  b->Release();
  EXPECT_TRUE(registry.Admit(Protocol::kVfioUser, kAlice).ok());
}

TEST(ConnectionRegistryTest, SlotsReleaseOnDestructionAndMoveOnce) {
  ConnectionQuotas quotas;
  quotas.max_grpc = 1;
  ConnectionRegistry registry(quotas);
  {
    absl::StatusOr<ConnectionSlot> slot = registry.Admit(Protocol::kGrpc, kAlice);
    ASSERT_TRUE(slot.ok());
    ConnectionSlot moved = *std::move(slot);
    EXPECT_TRUE(moved.valid());
    EXPECT_EQ(registry.List().size(), 1u);
  }
  EXPECT_TRUE(registry.List().empty());
  EXPECT_EQ(registry.Count(Protocol::kGrpc), 0u);
}

}  // namespace
}  // namespace vfiod
