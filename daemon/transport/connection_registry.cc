#include "daemon/transport/connection_registry.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vfiod {

absl::string_view ProtocolName(Protocol protocol) {
  switch (protocol) {
    case Protocol::kGrpc:
      return "grpc";
    case Protocol::kFdChannel:
      return "fd_channel";
    case Protocol::kVfioUser:
      return "vfio_user";
  }
  return "unknown";
}

uint32_t ConnectionQuotas::Max(Protocol protocol) const {
  switch (protocol) {
    case Protocol::kGrpc:
      return max_grpc;
    case Protocol::kFdChannel:
      return max_fd_channels;
    case Protocol::kVfioUser:
      return max_vfio_user;
  }
  return 0;
}

ConnectionSlot::ConnectionSlot(ConnectionSlot&& other) noexcept
    : registry_(std::exchange(other.registry_, nullptr)), id_(other.id_) {}

ConnectionSlot& ConnectionSlot::operator=(ConnectionSlot&& other) noexcept {
  if (this != &other) {
    Release();
    registry_ = std::exchange(other.registry_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

ConnectionSlot::~ConnectionSlot() { Release(); }

void ConnectionSlot::Release() {
  if (registry_ == nullptr) return;
  std::exchange(registry_, nullptr)->Release(id_);
}

absl::StatusOr<ConnectionSlot> ConnectionRegistry::Admit(Protocol protocol,
                                                         const PeerCredentials& peer) {
  absl::MutexLock lock(&mu_);
  const int kind = static_cast<int>(protocol);
  if (counts_[kind] >= quotas_.Max(protocol)) {
    return absl::ResourceExhaustedError(absl::StrCat("too many ", ProtocolName(protocol),
                                                     " connections (limit ",
                                                     quotas_.Max(protocol), ")"));
  }
  uint32_t& of_uid = per_uid_[peer.uid];
  if (quotas_.max_per_uid != 0 && of_uid >= quotas_.max_per_uid) {
    if (of_uid == 0) per_uid_.erase(peer.uid);
    return absl::ResourceExhaustedError(absl::StrCat("too many connections from uid ", peer.uid,
                                                     " (limit ", quotas_.max_per_uid, ")"));
  }
  const ConnectionId id = next_id_++;
  entries_.emplace(id, Entry{id, protocol, peer});
  ++counts_[kind];
  ++of_uid;
  return ConnectionSlot(this, id);
}

void ConnectionRegistry::Release(ConnectionId id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  --counts_[static_cast<int>(it->second.protocol)];
  auto uid = per_uid_.find(it->second.peer.uid);
  if (uid != per_uid_.end() && --uid->second == 0) per_uid_.erase(uid);
  entries_.erase(it);
}

std::vector<ConnectionRegistry::Entry> ConnectionRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<Entry> entries;
  entries.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) entries.push_back(entry);
  return entries;
}

uint32_t ConnectionRegistry::Count(Protocol protocol) const {
  absl::MutexLock lock(&mu_);
  return counts_[static_cast<int>(protocol)];
}

}  // namespace vfiod
