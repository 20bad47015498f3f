// IrqManager: the interrupt half of the device model. Validates and applies VFIO_DEVICE_SET_IRQS
// requests on a DeviceBackend, owns every eventfd the backend is using, emulates MSI/MSI-X vector
// masking, and runs the WatchIrqs machinery (daemon-owned eventfds read by a watcher thread and
// fanned out to subscriptions).
//
// SetIrqs contract (the VFIO model: the shape rules are DeviceBackend's CheckIrqSet*, the rest is
// the device model's policy; every check happens before the backend is called, and a
// request that fails leaves the manager's state unchanged and closes every eventfd it carried,
// since the request owns them):
//   - index: a value outside IrqIndex is INVALID_ARGUMENT; an index whose info count is 0 (the
//     device does not have it) is NOT_FOUND.
//   - action / data combinations (INVALID_ARGUMENT otherwise):
//       TRIGGER + kNone, count 0, start 0  disable the whole index (idempotent: OK when it is
//                                          already disabled, without a backend call).
//       TRIGGER + kNone/kBool, count > 0    loopback: the backend signals the vectors' triggers
//                                          (INTx/MSI/MSI-X only while the index is enabled,
//                                          FAILED_PRECONDITION otherwise, as the kernel's EINVAL).
//       TRIGGER + kEventfd                  the client's eventfds become the vectors' triggers
//                                          (nullopt removes a vector's trigger). INTx, MSI and
//                                          MSI-X exclude each other, as in the kernel: enabling
//                                          one (also with watch) while another is enabled is
//                                          FAILED_PRECONDITION, before the backend.
//       TRIGGER + kWatch                    the daemon creates one eventfd per vector, watches it
//                                          and streams IrqEvents to subscriptions.
//       MASK/UNMASK + kNone/kBool           MSI/MSI-X: emulated (below); other indexes only when
//                                          their info is maskable, and INTx only while enabled
//                                          (FAILED_PRECONDITION otherwise).
//       UNMASK + kEventfd                   INTx only, start 0, count 1, INTx enabled: the
//                                          resample (unmask) eventfd; nullopt removes it.
//     Any form with count 0 other than the disable above is INVALID_ARGUMENT. kBool needs exactly
//     `count` bools, kEventfd exactly `count` eventfds, and the other forms neither. TRIGGER with
//     eventfds needs the index's info eventfd flag (INVALID_ARGUMENT).
//   - range: start + count is computed without overflow and must not exceed the index's vector
//     count: OUT_OF_RANGE, e.g. "SetIrqs: vector range [3, 5) exceeds the 2 vectors of MSI-X".
//   - Backend errors are returned with the operation prefixed; the state stays as it was.
//
// MSI/MSI-X masking is emulated the way QEMU and crosvm do it, because the kernel cannot mask
// these vectors: MASK points the vector's backend trigger at a daemon-private eventfd (watched; a
// signal there sets the vector's pending bit), UNMASK points it back at the client's (or watch)
// eventfd and, if the vector was pending, has the backend signal it once (a loopback trigger:
// the daemon never writes a client's eventfd itself, so a client cannot block it there). A
// masked vector with no trigger just remembers the mask. INTx masking is the backend's
// (maskable and automasked); for a watched INTx the manager marks the vector masked when it
// sees the interrupt (automask). The emulation lives apart from the trigger and watch
// machinery, in irq_mask_emulation.cc (plan, re-point, commit).
//
// The host's device request (REQ): when the host wants the device back (unbinding it from
// vfio-pci while the daemon holds the device fd), the kernel signals the REQ trigger, and again
// about every 10 s until the device fd is closed; without a trigger the unbind just blocks. So
// while the owner has no REQ trigger, the manager keeps one of its own there (when Start was
// given `on_host_request` and the device has REQ with an eventfd): its firing calls
// on_host_request. The owner's REQ trigger (eventfd or watch) replaces the daemon's in the
// backend; when the owner's goes (TRIGGER with no eventfd, disable, DisableAll at owner loss)
// the daemon's is armed again. While the daemon's is armed, the owner sees REQ as having no
// trigger: disabling it is the idempotent no-op, and a loopback answers as the kernel does
// without a trigger (DATA_NONE: INVALID_ARGUMENT, DATA_BOOL: OK, nothing signalled), so an
// owner cannot stop the daemon through it. State() reports it as Trigger::kDaemonRequest with
// the index not enabled. A failure to arm is logged (the unbind then waits for the daemon to
// exit, as before). The simulated device has no host driver: its REQ is armed and never fires.
//
// State: `delivered` counts the interrupts the daemon itself read from watch eventfds
// (cumulative for the life of the manager; the daemon cannot see interrupts that go straight to
// a client's eventfd). Disabling an index clears its triggers, masks, pending bits and unmask
// eventfd; interrupts already counted on a watch eventfd that is being torn down are still
// delivered to subscriptions.
//
// Thread-safety: all methods are thread-safe. SetIrqs and DisableAll are serialised with each
// other and with the watcher thread; backend calls are made with the manager's lock held.
// Blocking: SetIrqs/DisableAll block for the backend call only; Watch and State never block for
// long; IrqSubscription::Next blocks until an event, its deadline or close.
#ifndef VFIOD_DAEMON_PCI_IRQ_MANAGER_H_
#define VFIOD_DAEMON_PCI_IRQ_MANAGER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/irq_types.h"

namespace vfiod {

class IrqManager {
 public:
  // Events a subscription holds before it starts dropping the oldest.
  static constexpr size_t kSubscriptionQueueLimit = 1024;

  // Reads backend->Info().irqs; opens no fd and starts no thread (Start() does). `backend` is
  // not owned and must outlive the manager. `max_watchers` bounds the live subscriptions (0:
  // Watch always fails). INVALID_ARGUMENT for a null backend.
  static absl::StatusOr<std::unique_ptr<IrqManager>> Create(DeviceBackend* backend,
                                                            uint32_t max_watchers);
  // Creates the watcher's epoll instance and wake eventfd and starts the watcher thread. Called
  // once, after the daemon's jail (which needs a single-threaded process and renumbers fds).
  // Until then every request that needs a daemon-owned eventfd (watch forms, MSI/MSI-X mask
  // with a trigger) is FAILED_PRECONDITION; the others work. The errno status when an eventfd,
  // the epoll instance or the thread cannot be created; FAILED_PRECONDITION when called twice.
  //
  // `on_host_request` (may be empty: no REQ trigger of the daemon's): called on the watcher
  // thread, without the manager's lock, each time the host signals the daemon's REQ trigger
  // (see the file comment); it must not block and must not call back into the manager's
  // SetIrqs/DisableAll. The daemon's trigger is armed here, when the device has REQ.
  absl::Status Start(std::function<void()> on_host_request = nullptr);
  // Disables every index and the daemon's REQ trigger (DisableAll), stops and joins the watcher
  // thread and closes every live subscription (their Next() then drains the queue and returns
  // nullopt, closed() is true).
  ~IrqManager();

  IrqManager(const IrqManager&) = delete;
  IrqManager& operator=(const IrqManager&) = delete;

  // Applies one SET_IRQS request; see the file comment for the contract. The request's eventfds
  // are kept by the manager on success and closed on failure.
  absl::Status SetIrqs(IrqRequest request);

  // A new subscription to the events of `indexes` (empty: all indexes). INVALID_ARGUMENT for an
  // index outside IrqIndex, NOT_FOUND for one the device does not have, RESOURCE_EXHAUSTED when
  // `max_watchers` subscriptions are alive. The subscription is released (and stops counting
  // against the limit) when its last shared_ptr goes; DisableAll does not close it.
  absl::StatusOr<std::shared_ptr<IrqSubscription>> Watch(std::vector<IrqIndex> indexes);

  // Every index the device has (info count > 0) with every vector, in index order.
  std::vector<IrqIndexState> State() const;

  // Tears down every index (owner loss; before reset): each index is disabled in the backend
  // (failures are logged and do not stop the others) and its state, eventfds and masks are
  // dropped; then the daemon's REQ trigger is armed again (after Start with on_host_request).
  // Subscriptions stay open.
  void DisableAll();

  // Number of live subscriptions (for tests and counters).
  uint32_t watchers() const;

 private:
  class Subscription;
  struct Registry;

  // What a daemon-owned eventfd is for.
  enum class FdKind { kWatch, kMask, kHostRequest };

  // A daemon-owned eventfd registered in epoll under its token.
  struct DaemonFd {
    EventFd fd;
    IrqIndex index;
    uint32_t vector;
    FdKind kind;
  };

  struct Vector {
    IrqVectorState::Trigger trigger = IrqVectorState::Trigger::kNone;
    std::optional<EventFd> client;  // kClientEventfd
    uint64_t watch_token = 0;       // kWatch: token of the daemon's eventfd
    uint64_t mask_token = 0;        // MSI/MSI-X while masked with a trigger: private eventfd
    bool masked = false;
    bool pending = false;
    uint64_t delivered = 0;
  };

  struct Index {
    IrqInfo info;
    bool enabled = false;
    std::optional<EventFd> unmask_eventfd;  // INTx only
    std::vector<Vector> vectors;
  };

  IrqManager(DeviceBackend* backend, uint32_t max_watchers);

  absl::Status SetIrqsLocked(IrqRequest& request, std::vector<IrqEvent>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ValidateLocked(const IrqRequest& request) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status ValidateTriggerLocked(const IrqRequest& request) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status ValidateMaskLocked(const IrqRequest& request) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status LoopbackLocked(const IrqRequest& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status BackendMaskLocked(IrqRequest& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Disables `index` in the backend (when it is enabled) and clears its state. With `force`,
  // the state is cleared even when the backend fails (the failure is still returned).
  absl::Status DisableIndexLocked(IrqIndex index, bool force, std::vector<IrqEvent>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // TRIGGER on REQ: the owner's request, then the daemon's trigger follows (file comment).
  absl::Status SetReqTriggerLocked(IrqRequest& request, std::vector<IrqEvent>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arms the daemon's REQ trigger when it should be (on_host_request_ set, not stopping, REQ
  // present with eventfds, no owner trigger, not armed yet); a failure is logged.
  void ArmHostRequestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the daemon's REQ eventfd after the backend's trigger was replaced or cleared.
  void DropHostRequestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Clears the daemon's REQ trigger in the backend too (the manager is going away).
  void DisarmHostRequestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // TRIGGER with eventfds or watch (irq_manager.cc): prepare every daemon eventfd, one backend
  // call, then commit. A failure leaves the state as it was.
  struct TriggerPlan;
  absl::Status SetTriggerLocked(IrqRequest& request, std::vector<IrqEvent>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PrepareTriggerLocked(const IrqRequest& request, TriggerPlan& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CommitTriggerLocked(IrqRequest& request, const TriggerPlan& plan,
                           std::vector<IrqEvent>& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // MSI/MSI-X mask emulation (irq_mask_emulation.cc).
  struct MaskPlan;
  // MASK/UNMASK on MSI/MSI-X: plan, re-point the backend, commit.
  absl::Status EmulateMaskLocked(const IrqRequest& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Which vectors change and what the backend must signal instead (creates the private
  // eventfds for MASK; `plan.created` lists them for DiscardLocked).
  absl::Status PlanMaskLocked(const IrqRequest& request, MaskPlan& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One backend call over the span of re-pointed vectors.
  absl::Status RepointLocked(const IrqRequest& request, const MaskPlan& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CommitMaskLocked(const IrqRequest& request, const MaskPlan& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // For a new trigger `target` of (index, vector): a masked MSI/MSI-X vector gets its private
  // eventfd (created when it has none; its token goes to `created` and `*mask_token`), others
  // the target itself.
  absl::StatusOr<const EventFd*> MaskedBackendFdLocked(const Index& index, uint32_t vector,
                                                       const EventFd* target,
                                                       std::vector<uint64_t>& created,
                                                       uint64_t* mask_token)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Has the backend signal, once, the target of each vector start + i with deliver[i] (at least
  // one): a loopback trigger over their span. Failures are logged.
  void DeliverPendingLocked(IrqIndex index, uint32_t start, const std::vector<bool>& deliver)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The eventfd the backend should signal for `vector` given the manager's state: nullptr
  // without a trigger, the private mask eventfd for a masked MSI/MSI-X vector, the target
  // otherwise.
  const EventFd* BackendFdLocked(const Index& index, uint32_t vector) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Best effort after a failed backend call on an enabled MSI/MSI-X index (the kernel tears the
  // vectors it already set down): points [start, start + count) back at the current state.
  void RestoreBackendLocked(IrqIndex index, uint32_t start, uint32_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the private mask eventfd of `vector`; what it counted becomes the pending bit.
  void RetireMaskLocked(Index& index, uint32_t vector) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The client's or the watch eventfd of `vector` (nullptr without a trigger).
  const EventFd* TargetFdLocked(const Vector& vector) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // "SetIrqs: <request>: <backend message>", with the backend's code.
  static absl::Status BackendError(const IrqRequest& request, const absl::Status& status);

  // Creates a daemon eventfd, registers it in epoll and returns its token.
  absl::StatusOr<uint64_t> AddDaemonFdLocked(IrqIndex index, uint32_t vector, FdKind kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unregisters and closes the daemon eventfd `token`; returns what its counter held.
  uint64_t RemoveDaemonFdLocked(uint64_t token) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const EventFd* DaemonFdLocked(uint64_t token) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Accounts `count` interrupts read from the watch eventfd of (index, vector).
  void RecordWatchLocked(IrqIndex index, uint32_t vector, uint64_t count,
                         std::vector<IrqEvent>& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the watch eventfd of `vector`, delivering the interrupts it still counted.
  void RetireWatchLocked(Index& index, uint32_t vector, std::vector<IrqEvent>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the daemon eventfds of a plan that is not committed.
  void DiscardLocked(const std::vector<uint64_t>& tokens) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Pushes events to every live subscription whose filter matches. Called without mu_.
  void Deliver(const std::vector<IrqEvent>& events) ABSL_LOCKS_EXCLUDED(mu_);
  void WatcherLoop();

  DeviceBackend* const backend_;
  const uint32_t max_watchers_;
  // Set once by Start() (under mu_, before the watcher exists), fixed afterwards.
  std::optional<EventFd> wake_;
  UniqueFd epoll_;
  std::atomic<bool> stop_{false};
  std::shared_ptr<Registry> registry_;

  mutable absl::Mutex mu_;
  std::array<Index, kNumPciIrqIndexes> indexes_ ABSL_GUARDED_BY(mu_);
  absl::node_hash_map<uint64_t, DaemonFd> daemon_fds_ ABSL_GUARDED_BY(mu_);
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;  // 0: the wake eventfd
  // Set once by Start(), before the watcher exists; called by the watcher without mu_.
  std::function<void()> on_host_request_;
  // The daemon's REQ eventfd while it is the backend's REQ trigger (0: not armed).
  uint64_t host_request_token_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread watcher_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_PCI_IRQ_MANAGER_H_
