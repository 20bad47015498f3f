// IrqManager's MSI/MSI-X mask emulation, apart from the trigger and watch machinery in
// irq_manager.cc (as crosvm keeps its MSI-X state apart). The kernel cannot mask these vectors,
// so the manager does what QEMU and crosvm do: MASK points the vector's backend trigger at a
// daemon-private eventfd (watched; a signal there sets the pending bit), UNMASK points it back
// at the target and delivers a pending interrupt once through a loopback trigger. The state is
// the Vector fields `masked`, `pending` and `mask_token`.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/pci/irq_manager.h"

namespace vfiod {

using Trigger = IrqVectorState::Trigger;
using Data = IrqRequest::Data;

// What one MASK/UNMASK changes, index by index into the request's [start, start + count).
struct IrqManager::MaskPlan {
  std::vector<bool> selected;          // the vector's mask bit changes
  std::vector<bool> repoint;           // ... and it has a trigger the backend must re-point
  std::vector<uint64_t> new_mask;      // MASK: the new private eventfd's token
  std::vector<const EventFd*> new_fd;  // what the backend signals from now on
  std::vector<uint64_t> created;       // daemon eventfds to drop if the plan is not committed
  uint32_t lo = 0;                     // span of the re-pointed vectors (when any)
  uint32_t hi = 0;
  bool any = false;
};

absl::Status IrqManager::EmulateMaskLocked(const IrqRequest& r) {
  MaskPlan plan;
  VFIOD_RETURN_IF_ERROR(PlanMaskLocked(r, plan));
  if (plan.any) VFIOD_RETURN_IF_ERROR(RepointLocked(r, plan));
  CommitMaskLocked(r, plan);
  return absl::OkStatus();
}

absl::Status IrqManager::PlanMaskLocked(const IrqRequest& r, MaskPlan& plan) {
  const Index& index = indexes_[static_cast<uint32_t>(r.index)];
  const bool mask = r.action == IrqAction::kMask;
  plan.selected.assign(r.count, false);
  plan.repoint.assign(r.count, false);
  plan.new_mask.assign(r.count, 0);
  plan.new_fd.assign(r.count, nullptr);
  for (uint32_t i = 0; i < r.count; ++i) {
    if (r.data == Data::kBool && !r.bools[i]) continue;
    const uint32_t v = r.start + i;
    const Vector& vector = index.vectors[v];
    if (vector.masked == mask) continue;
    plan.selected[i] = true;
    if (vector.trigger == Trigger::kNone) continue;  // nothing to re-point
    if (mask) {
      absl::StatusOr<uint64_t> token = AddDaemonFdLocked(r.index, v, FdKind::kMask);
      if (!token.ok()) {
        DiscardLocked(plan.created);
        return absl::Status(token.status().code(),
                            absl::StrCat("SetIrqs: ", token.status().message()));
      }
      plan.created.push_back(*token);
      plan.new_mask[i] = *token;
      plan.new_fd[i] = DaemonFdLocked(*token);
    } else {
      plan.new_fd[i] = TargetFdLocked(vector);
    }
    plan.repoint[i] = true;
    if (!plan.any) plan.lo = v;
    plan.hi = v;
    plan.any = true;
  }
  return absl::OkStatus();
}

absl::Status IrqManager::RepointLocked(const IrqRequest& r, const MaskPlan& plan) {
  // The vectors in between keep what they have.
  const Index& index = indexes_[static_cast<uint32_t>(r.index)];
  IrqSet set;
  set.index = r.index;
  set.start = plan.lo;
  set.count = plan.hi - plan.lo + 1;
  set.action = IrqAction::kTrigger;
  set.data = IrqSet::Data::kEventfd;
  set.eventfds.reserve(set.count);
  for (uint32_t v = plan.lo; v <= plan.hi; ++v) {
    const uint32_t i = v - r.start;
    set.eventfds.push_back(plan.repoint[i] ? plan.new_fd[i] : BackendFdLocked(index, v));
  }
  absl::Status status = backend_->SetIrqs(set);
  if (status.ok()) return absl::OkStatus();
  DiscardLocked(plan.created);
  RestoreBackendLocked(r.index, plan.lo, plan.hi - plan.lo + 1);
  return BackendError(r, status);
}

void IrqManager::CommitMaskLocked(const IrqRequest& r, const MaskPlan& plan) {
  Index& index = indexes_[static_cast<uint32_t>(r.index)];
  std::vector<bool> deliver(r.count, false);
  bool any_pending = false;
  for (uint32_t i = 0; i < r.count; ++i) {
    if (!plan.selected[i]) continue;
    const uint32_t v = r.start + i;
    Vector& vector = index.vectors[v];
    if (r.action == IrqAction::kMask) {
      vector.masked = true;
      vector.mask_token = plan.new_mask[i];
      continue;
    }
    vector.masked = false;
    // The backend signals the target again; whatever reached the private eventfd meanwhile is
    // pending and is delivered once.
    if (vector.mask_token != 0) RetireMaskLocked(index, v);
    if (vector.pending) {
      vector.pending = false;
      deliver[i] = TargetFdLocked(vector) != nullptr;
      any_pending = any_pending || deliver[i];
    }
  }
  if (any_pending) DeliverPendingLocked(r.index, r.start, deliver);
}

absl::StatusOr<const EventFd*> IrqManager::MaskedBackendFdLocked(const Index& index, uint32_t v,
                                                                 const EventFd* target,
                                                                 std::vector<uint64_t>& created,
                                                                 uint64_t* mask_token) {
  const Vector& vector = index.vectors[v];
  const bool emulated = index.info.index == IrqIndex::kMsi || index.info.index == IrqIndex::kMsix;
  *mask_token = 0;
  if (target == nullptr || !emulated || !vector.masked) return target;
  uint64_t mask = vector.mask_token;
  if (mask == 0) {
    VFIOD_ASSIGN_OR_RETURN(mask, AddDaemonFdLocked(index.info.index, v, FdKind::kMask));
    created.push_back(mask);
  }
  *mask_token = mask;
  return DaemonFdLocked(mask);
}

void IrqManager::DeliverPendingLocked(IrqIndex index, uint32_t start,
                                      const std::vector<bool>& deliver) {
  // A loopback trigger (SET_IRQS TRIGGER with bools): the backend signals the vectors' triggers,
  // which point at their targets again. The daemon never writes a client's eventfd itself: the
  // kernel's eventfd_signal() cannot block, whatever the client did to the counter or its flags.
  const auto first = std::find(deliver.begin(), deliver.end(), true);
  const auto last = std::find(deliver.rbegin(), deliver.rend(), true).base();
  IrqSet set;
  set.index = index;
  set.start = start + static_cast<uint32_t>(first - deliver.begin());
  set.count = static_cast<uint32_t>(last - first);
  set.action = IrqAction::kTrigger;
  set.data = IrqSet::Data::kBool;
  set.bools.assign(first, last);
  absl::Status status = backend_->SetIrqs(set);
  if (!status.ok()) {
    LogWarning("SetIrqs: cannot deliver pending interrupts",
               {{"index", IrqIndexName(index)},
                {"vectors", absl::StrCat("[", set.start, ", ", set.start + set.count, ")")},
                {"error", status.ToString()}});
  }
}

const EventFd* IrqManager::BackendFdLocked(const Index& index, uint32_t v) const {
  const Vector& vector = index.vectors[v];
  const EventFd* target = TargetFdLocked(vector);
  const bool emulated = index.info.index == IrqIndex::kMsi || index.info.index == IrqIndex::kMsix;
  if (target != nullptr && emulated && vector.masked) return DaemonFdLocked(vector.mask_token);
  return target;
}

void IrqManager::RestoreBackendLocked(IrqIndex which, uint32_t start, uint32_t count) {
  const Index& index = indexes_[static_cast<uint32_t>(which)];
  IrqSet set;
  set.index = which;
  set.start = start;
  set.count = count;
  set.action = IrqAction::kTrigger;
  set.data = IrqSet::Data::kEventfd;
  for (uint32_t v = start; v < start + count; ++v)
    set.eventfds.push_back(BackendFdLocked(index, v));
  absl::Status status = backend_->SetIrqs(set);
  if (!status.ok()) {
    LogError("SetIrqs: cannot restore the triggers after a failed request",
             {{"index", IrqIndexName(which)},
              {"start", absl::StrCat(start)},
              {"count", absl::StrCat(count)},
              {"error", status.ToString()}});
  }
}

void IrqManager::RetireMaskLocked(Index& index, uint32_t v) {
  Vector& vector = index.vectors[v];
  if (RemoveDaemonFdLocked(vector.mask_token) > 0) vector.pending = true;
  vector.mask_token = 0;
}

}  // namespace vfiod
