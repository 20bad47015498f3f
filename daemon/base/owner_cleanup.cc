#include "daemon/base/owner_cleanup.h"

#include <algorithm>
#include <utility>

#include "daemon/base/logging.h"

namespace vfiod {

void OwnerCleanup::Register(Stage stage, std::string name, std::function<void()> release) {
  absl::MutexLock lock(&mu_);
  auto after = std::upper_bound(
      releases_.begin(), releases_.end(), stage,
      [](Stage s, const Release& existing) { return s < existing.stage; });
  releases_.insert(after, Release{stage, std::move(name), std::move(release)});
}

void OwnerCleanup::Run(absl::string_view reason) {
  std::vector<Release> releases;
  {
    absl::MutexLock lock(&mu_);
    releases = releases_;
  }
  for (const Release& release : releases) {
    LogDebug("owner cleanup", {{"step", release.name}, {"reason", std::string(reason)}});
    release.release();
  }
  absl::MutexLock lock(&mu_);
  ++runs_;
}

std::vector<std::string> OwnerCleanup::Names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  names.reserve(releases_.size());
  for (const Release& release : releases_) names.push_back(release.name);
  return names;
}

uint64_t OwnerCleanup::runs() const {
  absl::MutexLock lock(&mu_);
  return runs_;
}

}  // namespace vfiod
