#include "daemon/service/session_manager.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/logging.h"
#include "daemon/base/random.h"

namespace vfiod {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Compares keys without an early exit, so timing tells nothing about a guessed prefix.
bool KeysEqual(const FdChannelKey& a, absl::string_view b) {
  if (b.size() != a.size()) return false;
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ static_cast<uint8_t>(b[i]);
  return diff == 0;
}

}  // namespace

std::string FdTokenToHex(const FdTokenBytes& token) {
  std::string hex;
  hex.reserve(2 * token.size());
  for (uint8_t byte : token) {
    hex.push_back(kHexDigits[byte >> 4]);
    hex.push_back(kHexDigits[byte & 0xf]);
  }
  return hex;
}

std::optional<FdTokenBytes> FdTokenFromHex(absl::string_view hex) {
  FdTokenBytes token;
  if (hex.size() != 2 * token.size()) return std::nullopt;
  for (size_t i = 0; i < token.size(); ++i) {
    int high = HexValue(hex[2 * i]);
    int low = HexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    token[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return token;
}

SessionManager::SessionManager(OwnerCleanup* cleanup, SessionOptions options)
    : cleanup_(cleanup), options_(std::move(options)) {
  cleanup_->Register(OwnerCleanup::Stage::kSession, "owner's unused fd tokens",
                     [this] { DropOwnerTokens(); });
}

SessionManager::~SessionManager() = default;

absl::StatusOr<SessionManager::OwnerScope> SessionManager::AcquireOwner(
    ConnectionId id, absl::string_view operation) {
  owner_mu_.ReaderLock();
  bool is_owner;
  {
    absl::MutexLock lock(&mu_);
    is_owner = owner_.has_value() && *owner_ == id;
  }
  if (!is_owner) {
    owner_mu_.ReaderUnlock();
    return absl::PermissionDeniedError(
        absl::StrCat(operation, ": only the owner may do this; this session is an observer",
                     " (ClaimOwnership first)"));
  }
  return OwnerScope(&owner_mu_);
}

SessionRole SessionManager::RoleOf(ConnectionId id) const {
  absl::MutexLock lock(&mu_);
  return owner_.has_value() && *owner_ == id ? SessionRole::kOwner : SessionRole::kObserver;
}

bool SessionManager::Exists(ConnectionId id) const {
  absl::MutexLock lock(&mu_);
  return sessions_.count(id) != 0;
}

absl::Status SessionManager::ClaimOwnership(ConnectionId id) {
  absl::MutexLock lock(&mu_);
  auto session = sessions_.find(id);
  if (session == sessions_.end()) {
    return absl::FailedPreconditionError("ClaimOwnership: the connection has ended");
  }
  // The last owner's cleanup may still be running (unpinning its memory takes a moment on a
  // real device): a claim waits for it rather than failing, so a VMM that restarts at once
  // attaches.
  mu_.AwaitWithTimeout(absl::Condition(
                           +[](bool* losing) { return !*losing; }, &losing_owner_),
                       kOwnerLossWait);
  if (owner_.has_value()) {
    if (*owner_ == id) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "ClaimOwnership: another session owns the device (connection ", *owner_, ")"));
  }
  uid_t uid = session->second.peer.uid;
  if (std::find(options_.owner_uids.begin(), options_.owner_uids.end(), uid) ==
      options_.owner_uids.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("ClaimOwnership: uid ", uid, " may not own this device"));
  }
  owner_ = id;
  LogInfo("owner attached", {{"connection", absl::StrCat(id)},
                             {"pid", absl::StrCat(session->second.peer.pid)},
                             {"uid", absl::StrCat(uid)}});
  return absl::OkStatus();
}

absl::Status SessionManager::ReleaseOwnership(ConnectionId id) {
  if (RoleOf(id) != SessionRole::kOwner) {
    return absl::FailedPreconditionError("ReleaseOwnership: this session is not the owner");
  }
  LoseOwner(id, "released");
  return absl::OkStatus();
}

void SessionManager::LoseOwner(ConnectionId id, absl::string_view reason) {
  absl::MutexLock owner_lock(&owner_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (!owner_.has_value() || *owner_ != id) return;
    losing_owner_ = true;
  }
  // No owner call is running (owner_mu_ is held exclusively) and none can start. The owner is
  // cleared only once its resources are gone, so that nobody (GetState, a new ClaimOwnership)
  // sees the device unowned while DMA mappings or IRQs are still being torn down: on real VFIO
  // that takes milliseconds (found in the VM lab).
  // Timed for operators: unpinning a large guest's memory is most of it.
  const absl::Time cleanup_start = absl::Now();
  cleanup_->Run(reason);
  const absl::Duration cleanup = absl::Now() - cleanup_start;
  {
    absl::MutexLock lock(&mu_);
    owner_.reset();
    losing_owner_ = false;
    ++owner_losses_;
  }
  LogInfo("owner detached; device resources released",
          {{"connection", absl::StrCat(id)},
           {"reason", std::string(reason)},
           {"cleanup_us", absl::StrCat(absl::ToInt64Microseconds(cleanup))}});
}

absl::Status SessionManager::BindFdChannel(ConnectionId id, absl::string_view key) {
  absl::MutexLock lock(&mu_);
  if (sessions_.count(id) == 0) {
    return absl::FailedPreconditionError("BindFdChannel: the connection has ended");
  }
  if (key.size() != v1::kFdChannelKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("BindFdChannel: channel_key has ",
                                                   key.size(), " bytes, expected ",
                                                   v1::kFdChannelKeyBytes));
  }
  for (auto& [channel_id, channel] : channels_) {
    if (!KeysEqual(channel.key, key)) continue;
    if (channel.bound_to.has_value()) {
      if (*channel.bound_to == id) return absl::OkStatus();
      return absl::FailedPreconditionError(
          "BindFdChannel: the channel is bound to another session");
    }
    if (HeldBySessionLocked(id) + channel.fds.size() > options_.max_fd_tokens) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "BindFdChannel: the channel's ", channel.fds.size(), " unused fds and the session's ",
          HeldBySessionLocked(id), " exceed the limit of ", options_.max_fd_tokens));
    }
    channel.bound_to = id;
    return absl::OkStatus();
  }
  return absl::NotFoundError("BindFdChannel: no open fd channel has this key");
}

absl::StatusOr<UniqueFd> SessionManager::TakeFd(ConnectionId id, absl::string_view token_hex,
                                                absl::string_view operation) {
  if (token_hex.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(operation, ": fd_token is empty"));
  }
  absl::StatusOr<std::vector<std::optional<UniqueFd>>> fds = TakeFds(id, {token_hex}, operation);
  if (!fds.ok()) return fds.status();
  return std::move(*(*fds)[0]);
}

absl::StatusOr<std::vector<std::optional<UniqueFd>>> SessionManager::TakeFds(
    ConnectionId id, const std::vector<absl::string_view>& tokens_hex,
    absl::string_view operation) {
  std::vector<std::optional<FdTokenBytes>> tokens;
  tokens.reserve(tokens_hex.size());
  for (absl::string_view hex : tokens_hex) {
    if (hex.empty()) {
      tokens.push_back(std::nullopt);
      continue;
    }
    std::optional<FdTokenBytes> token = FdTokenFromHex(hex);
    if (!token.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(operation, ": fd token \"", hex.substr(0, 64), "\" is not ",
                       v1::kFdTokenHexLength, " lowercase hex digits"));
    }
    if (std::find(tokens.begin(), tokens.end(), token) != tokens.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(operation, ": fd token ", hex, " is named twice"));
    }
    tokens.push_back(token);
  }

  absl::MutexLock lock(&mu_);
  // Find every token first; take nothing unless all are there.
  std::vector<std::pair<Channel*, std::map<FdTokenBytes, UniqueFd>::iterator>> found;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!tokens[i].has_value()) {
      found.emplace_back(nullptr, std::map<FdTokenBytes, UniqueFd>::iterator());
      continue;
    }
    bool hit = false;
    for (auto& [channel_id, channel] : channels_) {
      if (!channel.bound_to.has_value() || *channel.bound_to != id) continue;
      auto it = channel.fds.find(*tokens[i]);
      if (it == channel.fds.end()) continue;
      found.emplace_back(&channel, it);
      hit = true;
      break;
    }
    if (!hit) {
      return absl::NotFoundError(absl::StrCat(operation, ": no fd with token ", tokens_hex[i],
                                              " was sent by this session (or it was used)"));
    }
  }
  std::vector<std::optional<UniqueFd>> fds;
  fds.reserve(found.size());
  for (auto& [channel, it] : found) {
    if (channel == nullptr) {
      fds.push_back(std::nullopt);
      continue;
    }
    fds.push_back(std::move(it->second));
    channel->fds.erase(it);
  }
  return fds;
}

SessionManager::Summary SessionManager::GetSummary() const {
  absl::MutexLock lock(&mu_);
  return Summary{static_cast<uint32_t>(sessions_.size()), owner_.has_value(), owner_losses_};
}

void SessionManager::OnConnectionOpened(ConnectionId id, const PeerCredentials& peer,
                                        bool spawn_owner) {
  absl::MutexLock lock(&mu_);
  sessions_[id] = Session{peer, spawn_owner, absl::Now(), 0};
  if (spawn_owner) {
    // The VMM that spawned the daemon owns it; nobody can have claimed it before.
    owner_ = id;
    spawn_owner_seen_ = true;
    LogInfo("owner attached (spawn mode)",
            {{"connection", absl::StrCat(id)}, {"pid", absl::StrCat(peer.pid)}});
  }
}

void SessionManager::OnConnectionClosed(ConnectionId id) {
  std::vector<FdChannelId> to_close;
  bool spawn_owner_gone = false;
  {
    // The session ends first, under the lock that ClaimOwnership holds: a claim that has not
    // yet taken it finds no session, and one that did made this connection the owner, which
    // LoseOwner below undoes. Either way no closed connection stays the owner.
    absl::MutexLock lock(&mu_);
    auto session = sessions_.find(id);
    if (session == sessions_.end()) return;
    spawn_owner_gone = session->second.spawn_owner;
    sessions_.erase(session);
    for (auto& [channel_id, channel] : channels_) {
      if (channel.bound_to.has_value() && *channel.bound_to == id) {
        channel.fds.clear();
        to_close.push_back(channel_id);
      }
    }
  }
  LoseOwner(id, "connection closed");
  if (transport_ != nullptr) {
    for (FdChannelId channel : to_close) transport_->CloseFdChannel(channel);
  }
  if (spawn_owner_gone && options_.on_spawn_owner_gone) options_.on_spawn_owner_gone();
}

size_t SessionManager::HeldBySessionLocked(ConnectionId id) const {
  size_t held = 0;
  for (const auto& [channel_id, channel] : channels_) {
    if (channel.bound_to.has_value() && *channel.bound_to == id) held += channel.fds.size();
  }
  return held;
}

bool SessionManager::NoteCall(ConnectionId id) {
  absl::MutexLock lock(&mu_);
  auto session = sessions_.find(id);
  if (session == sessions_.end()) return false;
  session->second.last_active = absl::Now();
  return true;
}

absl::StatusOr<SessionManager::StreamScope> SessionManager::BeginStream(ConnectionId id,
                                                                        absl::string_view operation,
                                                                        StreamLimits limits) {
  absl::MutexLock lock(&mu_);
  auto session = sessions_.find(id);
  if (session == sessions_.end()) {
    return absl::UnavailableError(absl::StrCat(operation, ": the connection has ended"));
  }
  if (owner_ != id) {
    if (static_cast<uint32_t>(session->second.open_streams) >= limits.per_observer) {
      return absl::ResourceExhaustedError(
          absl::StrCat(operation, ": this connection has ", session->second.open_streams,
                       " streams open, the most a non-owner may have"));
    }
    uint32_t observer_streams = 0;
    for (const auto& [other, state] : sessions_) {
      if (owner_ != other) observer_streams += state.open_streams;
    }
    if (observer_streams >= limits.observers_total) {
      return absl::ResourceExhaustedError(absl::StrCat(
          operation, ": non-owners have ", observer_streams,
          " streams open, the most they may have together (the rest are the owner's)"));
    }
  }
  ++session->second.open_streams;
  return StreamScope(this, id);
}

SessionManager::StreamScope::~StreamScope() {
  if (manager_ == nullptr) return;
  absl::MutexLock lock(&manager_->mu_);
  auto session = manager_->sessions_.find(id_);
  if (session == manager_->sessions_.end()) return;
  --session->second.open_streams;
  session->second.last_active = absl::Now();
}

bool SessionManager::IsFdChannelBound(FdChannelId id) {
  absl::MutexLock lock(&mu_);
  auto channel = channels_.find(id);
  return channel != channels_.end() && channel->second.bound_to.has_value();
}

std::optional<ConnectionId> SessionManager::EvictableConnection(
    const std::vector<ConnectionId>& candidates) {
  absl::MutexLock lock(&mu_);
  const absl::Time idle_since = absl::Now() - kEvictableIdle;
  std::optional<ConnectionId> choice;
  absl::Time choice_active = absl::InfiniteFuture();
  for (ConnectionId id : candidates) {
    if (owner_.has_value() && *owner_ == id) continue;
    auto session = sessions_.find(id);
    if (session == sessions_.end()) continue;
    const Session& s = session->second;
    // A spawn-mode connection is the VMM's even while it does not own: never evicted.
    if (s.spawn_owner || s.open_streams > 0 || s.last_active > idle_since) continue;
    if (s.last_active < choice_active) {
      choice = id;
      choice_active = s.last_active;
    }
  }
  return choice;
}

void SessionManager::DropOwnerTokens() {
  absl::MutexLock lock(&mu_);
  if (!owner_.has_value()) return;
  for (auto& [channel_id, channel] : channels_) {
    if (channel.bound_to.has_value() && *channel.bound_to == *owner_) channel.fds.clear();
  }
}

void SessionManager::OnFdChannelOpened(FdChannelId id, const FdChannelKey& key,
                                       const PeerCredentials& peer,
                                       std::optional<ConnectionId> bound_to) {
  absl::MutexLock lock(&mu_);
  Channel& channel = channels_[id];
  channel.key = key;
  channel.peer = peer;
  channel.bound_to = bound_to;
}

absl::StatusOr<std::vector<FdTokenBytes>> SessionManager::OnFdsReceived(
    FdChannelId id, std::vector<UniqueFd> fds) {
  std::vector<FdTokenBytes> tokens(fds.size());
  for (FdTokenBytes& token : tokens) {
    absl::Status random = FillRandom(absl::MakeSpan(token));
    if (!random.ok()) return random;
  }
  absl::MutexLock lock(&mu_);
  auto channel = channels_.find(id);
  if (channel == channels_.end()) {
    return absl::FailedPreconditionError("the fd channel is closed");
  }
  // The limit is the session's, over every channel bound to it; an unbound channel's own.
  const size_t held = channel->second.bound_to.has_value()
                          ? HeldBySessionLocked(*channel->second.bound_to)
                          : channel->second.fds.size();
  if (held + fds.size() > options_.max_fd_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("too many unused fds: ", held,
                                                     " held by the session, limit ",
                                                     options_.max_fd_tokens));
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    channel->second.fds.emplace(tokens[i], std::move(fds[i]));
  }
  return tokens;
}

void SessionManager::OnFdChannelClosed(FdChannelId id) {
  std::optional<ConnectionId> bound_to;
  {
    absl::MutexLock lock(&mu_);
    auto channel = channels_.find(id);
    if (channel == channels_.end()) return;
    bound_to = channel->second.bound_to;
    channels_.erase(channel);  // closes every fd it still held
  }
  if (bound_to.has_value()) LoseOwner(*bound_to, "fd channel closed");
}

}  // namespace vfiod
