#include "daemon/service/session_manager.h"

#include <sys/eventfd.h>

#include <list>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "daemon/base/owner_cleanup.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

constexpr uid_t kOwnerUid = 1000;
constexpr uid_t kObserverUid = 2000;
const PeerCredentials kOwnerPeer{10, kOwnerUid, kOwnerUid};
const PeerCredentials kObserverPeer{20, kObserverUid, kObserverUid};

class SessionManagerTest : public ::testing::Test {
 protected:
  SessionManagerTest() : sessions_(&cleanup_, SessionOptions{{kOwnerUid}, 4, {}}) {}

  std::vector<FdTokenBytes> SendEventfds(FdChannelId channel, int count) {
    std::vector<UniqueFd> fds;
    for (int i = 0; i < count; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    absl::StatusOr<std::vector<FdTokenBytes>> tokens =
        sessions_.OnFdsReceived(channel, std::move(fds));
    EXPECT_TRUE(tokens.ok()) << tokens.status();
    return tokens.ok() ? *tokens : std::vector<FdTokenBytes>();
  }

  OwnerCleanup cleanup_;
  SessionManager sessions_;
};

TEST_F(SessionManagerTest, OnlyAnAllowedUidClaimsAndOnlyOneOwnerAtATime) {
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  sessions_.OnConnectionOpened(2, kObserverPeer, false);
  sessions_.OnConnectionOpened(3, kOwnerPeer, false);
  EXPECT_EQ(sessions_.ClaimOwnership(2).code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(sessions_.ClaimOwnership(1).ok());
  EXPECT_TRUE(sessions_.ClaimOwnership(1).ok()) << "claiming again is a no-op";
  EXPECT_EQ(sessions_.ClaimOwnership(3).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sessions_.RoleOf(1), SessionRole::kOwner);
  EXPECT_EQ(sessions_.RoleOf(3), SessionRole::kObserver);
  EXPECT_EQ(sessions_.AcquireOwner(3, "WriteConfig").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(sessions_.AcquireOwner(1, "WriteConfig").ok());
}

TEST_F(SessionManagerTest, OwnerLossRunsTheCleanupOnceAndFreesTheDevice) {
  int runs = 0;
  cleanup_.Register(OwnerCleanup::Stage::kDma, "count", [&runs] { ++runs; });
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  sessions_.OnConnectionOpened(2, kOwnerPeer, false);
  ASSERT_TRUE(sessions_.ClaimOwnership(1).ok());
  sessions_.OnConnectionClosed(2);  // an observer leaving is no owner loss
  EXPECT_EQ(runs, 0);
  sessions_.OnConnectionClosed(1);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(sessions_.GetSummary().owner_losses, 1u);
  EXPECT_FALSE(sessions_.GetSummary().owner_attached);
  sessions_.OnConnectionOpened(3, kOwnerPeer, false);
  EXPECT_TRUE(sessions_.ClaimOwnership(3).ok());
}

// The session of a closing connection ends before its owner loss runs: a ClaimOwnership that
// comes in between (here: from inside the cleanup, where it would have run in the window) finds
// no session, so no closed connection can become the owner again.
TEST_F(SessionManagerTest, AClaimRacingTheCloseNeverLeavesAClosedConnectionOwning) {
  absl::Status claim_during_loss;
  bool existed_during_loss = true;
  cleanup_.Register(OwnerCleanup::Stage::kSession, "claims again", [&] {
    existed_during_loss = sessions_.Exists(1);
    claim_during_loss = sessions_.ClaimOwnership(1);
  });
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  ASSERT_TRUE(sessions_.ClaimOwnership(1).ok());
  sessions_.OnConnectionClosed(1);
  EXPECT_FALSE(existed_during_loss);
  EXPECT_EQ(claim_during_loss.code(), absl::StatusCode::kFailedPrecondition) << claim_during_loss;
  EXPECT_FALSE(sessions_.GetSummary().owner_attached);
  EXPECT_EQ(sessions_.ClaimOwnership(1).code(), absl::StatusCode::kFailedPrecondition);
}

// A VMM that reconnects while its predecessor's cleanup still runs gets the device once the
// cleanup is done, instead of "another session owns the device".
TEST_F(SessionManagerTest, AClaimDuringTheLastOwnersCleanupWaitsForIt) {
  absl::Notification cleanup_started;
  absl::Notification finish_cleanup;
  cleanup_.Register(OwnerCleanup::Stage::kDma, "slow unpin", [&] {
    cleanup_started.Notify();
    finish_cleanup.WaitForNotification();
  });
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  sessions_.OnConnectionOpened(2, kOwnerPeer, false);
  ASSERT_TRUE(sessions_.ClaimOwnership(1).ok());
  std::thread closer([&] { sessions_.OnConnectionClosed(1); });
  cleanup_started.WaitForNotification();
  absl::Status claimed;
  std::thread claimer([&] { claimed = sessions_.ClaimOwnership(2); });
  absl::SleepFor(absl::Milliseconds(50));  // the claim is waiting
  finish_cleanup.Notify();
  closer.join();
  claimer.join();
  EXPECT_TRUE(claimed.ok()) << claimed;
  EXPECT_EQ(sessions_.RoleOf(2), SessionRole::kOwner);
}

TEST_F(SessionManagerTest, TokensBelongToTheBoundSessionAndAreTakenAllOrNothing) {
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  sessions_.OnConnectionOpened(2, kObserverPeer, false);
  FdChannelKey key{};
  key[0] = 42;
  sessions_.OnFdChannelOpened(10, key, kOwnerPeer, std::nullopt);
  std::vector<FdTokenBytes> tokens = SendEventfds(10, 2);
  ASSERT_EQ(tokens.size(), 2u);
  const std::string a = FdTokenToHex(tokens[0]);
  const std::string b = FdTokenToHex(tokens[1]);
  // Unbound: nobody can use them.
  EXPECT_EQ(sessions_.TakeFd(1, a, "op").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(sessions_.BindFdChannel(1, std::string(key.begin(), key.end())).ok());
  EXPECT_EQ(sessions_.BindFdChannel(2, std::string(key.begin(), key.end())).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sessions_.TakeFd(2, a, "op").status().code(), absl::StatusCode::kNotFound)
      << "another session's token";
  // One unknown token: none is taken.
  const std::string unknown(32, 'f');
  EXPECT_EQ(sessions_.TakeFds(1, {a, unknown}, "op").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(sessions_.TakeFds(1, {a, a}, "op").status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::vector<std::optional<UniqueFd>>> both = sessions_.TakeFds(1, {a, b}, "op");
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(sessions_.TakeFd(1, a, "op").status().code(), absl::StatusCode::kNotFound)
      << "a token is used once";
  EXPECT_EQ(sessions_.TakeFd(1, "xyz", "op").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SessionManagerTest, TheTokenLimitHoldsAndOwnerLossDropsUnusedTokens) {
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  ASSERT_TRUE(sessions_.ClaimOwnership(1).ok());
  FdChannelKey key{};
  sessions_.OnFdChannelOpened(10, key, kOwnerPeer, 1);
  std::vector<FdTokenBytes> tokens = SendEventfds(10, 4);
  ASSERT_EQ(tokens.size(), 4u);
  std::vector<UniqueFd> one_more;
  one_more.emplace_back(::eventfd(0, EFD_CLOEXEC));
  EXPECT_EQ(sessions_.OnFdsReceived(10, std::move(one_more)).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(sessions_.ReleaseOwnership(1).ok());
  EXPECT_EQ(sessions_.TakeFd(1, FdTokenToHex(tokens[0]), "op").status().code(),
            absl::StatusCode::kNotFound)
      << "the lost owner's unused tokens are closed";
}

TEST_F(SessionManagerTest, TheTokenLimitIsTheSessionsOverAllItsChannels) {
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  FdChannelKey first{}, second{}, third{};
  first[0] = 1;
  second[0] = 2;
  third[0] = 3;
  sessions_.OnFdChannelOpened(10, first, kOwnerPeer, 1);
  sessions_.OnFdChannelOpened(11, second, kOwnerPeer, 1);
  sessions_.OnFdChannelOpened(12, third, kOwnerPeer, std::nullopt);
  ASSERT_EQ(SendEventfds(10, 3).size(), 3u);
  std::vector<UniqueFd> two;
  two.emplace_back(::eventfd(0, EFD_CLOEXEC));
  two.emplace_back(::eventfd(0, EFD_CLOEXEC));
  EXPECT_EQ(sessions_.OnFdsReceived(11, std::move(two)).status().code(),
            absl::StatusCode::kResourceExhausted)
      << "a second channel of the same session is not a second allowance";
  // An unbound channel's fds count once it is bound.
  ASSERT_EQ(SendEventfds(12, 2).size(), 2u);
  EXPECT_EQ(sessions_.BindFdChannel(1, std::string(third.begin(), third.end())).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(SessionManagerTest, OnlyAnIdleObserverWithoutStreamsMayBeEvicted) {
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  sessions_.OnConnectionOpened(2, kObserverPeer, false);
  sessions_.OnConnectionOpened(3, kObserverPeer, false);
  sessions_.OnConnectionOpened(4, kObserverPeer, false);
  ASSERT_TRUE(sessions_.ClaimOwnership(1).ok());
  absl::StatusOr<SessionManager::StreamScope> watch = sessions_.BeginStream(2, "WatchIrqs", {1, 1});
  ASSERT_TRUE(watch.ok()) << watch.status();
  EXPECT_EQ(sessions_.EvictableConnection({1, 2, 3, 4}), std::nullopt)
      << "nobody has been idle long enough";
  absl::SleepFor(SessionManager::kEvictableIdle + absl::Milliseconds(100));
  ASSERT_TRUE(sessions_.NoteCall(4));
  EXPECT_EQ(sessions_.EvictableConnection({1, 2, 3, 4}), 3u);
  EXPECT_EQ(sessions_.EvictableConnection({1, 2, 4}), std::nullopt)
      << "the owner, an open stream and a recent call all keep their connection";
  EXPECT_FALSE(sessions_.IsFdChannelBound(99));
}

TEST_F(SessionManagerTest, ObserverStreamsAreBoundedAndTheOwnersAreNot) {
  sessions_.OnConnectionOpened(1, kOwnerPeer, false);
  sessions_.OnConnectionOpened(2, kObserverPeer, false);
  sessions_.OnConnectionOpened(3, kObserverPeer, false);
  ASSERT_TRUE(sessions_.ClaimOwnership(1).ok());
  const SessionManager::StreamLimits limits{2, 3};
  std::list<SessionManager::StreamScope> open;  // StreamScope is not assignable
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<SessionManager::StreamScope> stream =
        sessions_.BeginStream(2, "WatchIrqs", limits);
    ASSERT_TRUE(stream.ok()) << stream.status();
    open.push_back(*std::move(stream));
  }
  absl::StatusOr<SessionManager::StreamScope> refused =
      sessions_.BeginStream(2, "WatchIrqs", limits);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(refused.status().message(), "WatchIrqs: ")) << refused.status();
  absl::StatusOr<SessionManager::StreamScope> third = sessions_.BeginStream(3, "WatchIrqs", limits);
  ASSERT_TRUE(third.ok()) << "another observer, within the total";
  EXPECT_EQ(sessions_.BeginStream(3, "WatchIrqs", limits).status().code(),
            absl::StatusCode::kResourceExhausted)
      << "the observers' total is reached";
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<SessionManager::StreamScope> owner =
        sessions_.BeginStream(1, "WatchIrqs", limits);
    ASSERT_TRUE(owner.ok()) << "the owner is not bounded here";
    open.push_back(*std::move(owner));
  }
  open.erase(open.begin());  // an observer stream ends: room again
  EXPECT_TRUE(sessions_.BeginStream(2, "WatchIrqs", limits).ok());
  EXPECT_EQ(sessions_.BeginStream(99, "WatchIrqs", limits).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(SessionManagerTest, TheSpawnOwnerOwnsFromTheStartAndItsEndIsReported) {
  int gone = 0;
  SessionOptions options{{kOwnerUid}, 4, [&gone] { ++gone; }};
  OwnerCleanup cleanup;
  SessionManager sessions(&cleanup, options);
  sessions.OnConnectionOpened(5, kObserverPeer, /*spawn_owner=*/true);
  EXPECT_EQ(sessions.RoleOf(5), SessionRole::kOwner) << "the spawning VMM owns, whatever its uid";
  sessions.OnConnectionClosed(5);
  EXPECT_EQ(gone, 1);
  EXPECT_EQ(cleanup.runs(), 1u);
}

}  // namespace
}  // namespace vfiod
