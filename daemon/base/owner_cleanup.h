// OwnerCleanup: what must be undone when a device's owner goes away.
//
// Whatever creates owner-scoped state (the device model's IRQ triggers, DMA mappings and
// memory, a session's fd tokens, a protocol's DMA windows) registers its release here once, at
// start-up. The session layer runs every release when the owner is lost (connection closed,
// fd channel closed, ownership released, daemon stopping), so a new feature adds a release
// instead of editing the owner-loss path.
//
// Releases run stage by stage (Stage order), and in registration order within a stage. A
// release must not fail half-way: it attempts every step and logs what it could not undo.
//
// Thread-safety: Register() and Run() are thread-safe. Run() calls releases on the calling
// thread, one at a time, with no lock of this class held (a release may take its own locks).
// Registering from inside a release is not allowed.
#ifndef VFIOD_DAEMON_BASE_OWNER_CLEANUP_H_
#define VFIOD_DAEMON_BASE_OWNER_CLEANUP_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace vfiod {

class OwnerCleanup {
 public:
  // The order in which owner-scoped state is undone.
  enum class Stage {
    kQuiesce,     // the device starts no more DMA (bus mastering off)
    kInterrupts,  // IRQ triggers (the owner's eventfds) torn down
    kDma,         // DMA mappings unmapped, then the memory they used
    kDevice,      // device state the next owner must not inherit
    kSession,     // fds and tokens the owner sent but did not use
  };

  OwnerCleanup() = default;
  OwnerCleanup(const OwnerCleanup&) = delete;
  OwnerCleanup& operator=(const OwnerCleanup&) = delete;

  // `name` appears in the log when the release runs.
  void Register(Stage stage, std::string name, std::function<void()> release);

  // Runs every release (see the file comment). `reason` is logged.
  void Run(absl::string_view reason);

  // Names of the registered releases in the order Run() calls them. For tests and GetState.
  std::vector<std::string> Names() const;

  // How many times Run() has completed.
  uint64_t runs() const;

 private:
  struct Release {
    Stage stage;
    std::string name;
    std::function<void()> release;
  };

  mutable absl::Mutex mu_;
  std::vector<Release> releases_ ABSL_GUARDED_BY(mu_);  // sorted by stage, stable
  uint64_t runs_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_OWNER_CLEANUP_H_
