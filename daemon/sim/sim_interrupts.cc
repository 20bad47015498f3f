#include "daemon/sim/sim_interrupts.h"

#include <linux/pci_regs.h>

#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"

namespace vfiod {
namespace sim {
namespace {

constexpr uint32_t kMsiFlags = EduDevice::kMsiCapOffset + PCI_MSI_FLAGS;

absl::StatusOr<std::optional<EventFd>> DuplicateOrNone(const EventFd* fd) {
  if (fd == nullptr) return std::optional<EventFd>();
  VFIOD_ASSIGN_OR_RETURN(EventFd copy, fd->Duplicate());
  return std::optional<EventFd>(std::move(copy));
}

}  // namespace

void SignalEventFd(const EventFd& fd) {
  absl::Status status = fd.Signal();
  if (!status.ok()) LogWarning("sim: eventfd signal failed", {{"error", status.ToString()}});
}

SimInterrupts::SimInterrupts(EduDevice* device, std::function<void()> wake_worker)
    : device_(device), wake_worker_(std::move(wake_worker)), info_(Info()) {}

std::vector<IrqInfo> SimInterrupts::Info() {
  // vfio_pci_ioctl_get_irq_info(): every index but ERR (refused for conventional PCI) has the
  // eventfd flag; INTx is maskable and automasked, the others do not resize.
  std::vector<IrqInfo> irqs;
  for (uint32_t i = 0; i < kNumPciIrqIndexes; ++i) {
    IrqInfo irq;
    irq.index = static_cast<IrqIndex>(i);
    switch (irq.index) {
      case IrqIndex::kIntx:
        irq.count = 1;
        irq.eventfd = irq.maskable = irq.automasked = true;
        break;
      case IrqIndex::kMsi:
      case IrqIndex::kReq:
        irq.count = 1;
        irq.eventfd = irq.noresize = true;
        break;
      case IrqIndex::kMsix:
        irq.eventfd = irq.noresize = true;
        break;
      case IrqIndex::kErr:
        break;
    }
    irqs.push_back(irq);
  }
  return irqs;
}

absl::Status SimInterrupts::SetIrqs(const IrqSet& set) {
  // vfio_set_irqs_validate_and_prepare(): DeviceBackend's shape rules, in the kernel's order.
  const IrqSetForm form = FormOf(set);
  absl::Status status = CheckIrqSetData(form);
  if (status.ok()) status = CheckIrqSetIndex(form);
  if (status.ok()) status = CheckIrqSetEnd(form);
  if (status.ok()) status = CheckIrqSetVectors(form, info_[static_cast<uint32_t>(set.index)].count);
  const std::string name = IrqIndexName(set.index);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("SetIrqs ", name, ": ", status.message()));
  }
  // vfio_pci_set_irqs_ioctl().
  switch (set.index) {
    case IrqIndex::kIntx:
      if (set.action == IrqAction::kMask) return IntxMaskAction(set);
      if (set.action == IrqAction::kUnmask) return IntxUnmaskAction(set);
      return IntxTrigger(set);
    case IrqIndex::kMsi:
      if (set.action == IrqAction::kTrigger) return MsiTrigger(set);
      break;
    case IrqIndex::kReq:
      if (set.action == IrqAction::kTrigger) return ReqTrigger(set);
      break;
    case IrqIndex::kMsix:
    case IrqIndex::kErr:
      break;
  }
  return absl::UnimplementedError(absl::StrCat("SetIrqs ", name, ": action ",
                                               set.action == IrqAction::kMask     ? "mask"
                                               : set.action == IrqAction::kUnmask ? "unmask"
                                                                                  : "trigger",
                                               " is not supported (ENOTTY)"));
}

void SimInterrupts::SetVirqDisabled(bool disabled) {
  if (disabled && !virq_disabled_) {
    virq_disabled_ = true;
    IntxMask();
  } else if (!disabled && virq_disabled_) {
    virq_disabled_ = false;
    IntxUnmask();
  }
}

absl::Status SimInterrupts::IntxTrigger(const IrqSet& set) {
  if (mode_ == Mode::kIntx && set.count == 0 && set.data == IrqSet::Data::kNone) {
    IntxDisable();
    return absl::OkStatus();
  }
  if (mode_ == Mode::kMsi) {
    return absl::InvalidArgumentError("SetIrqs INTx trigger: MSI is enabled");
  }
  if (set.start != 0 || set.count != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs INTx trigger: start ", set.start, " count ", set.count,
                     mode_ == Mode::kNone && set.count == 0 ? " (INTx is not enabled)"
                                                            : " (need start 0 count 1)"));
  }
  if (set.data == IrqSet::Data::kEventfd) {
    VFIOD_ASSIGN_OR_RETURN(std::optional<EventFd> trigger, DuplicateOrNone(set.eventfds[0]));
    if (mode_ == Mode::kNone) {
      // vfio_intx_enable(): the virtual INTx-disable bit carries over as the mask.
      mode_ = Mode::kIntx;
      intx_masked_ = virq_disabled_;
    }
    intx_trigger_ = std::move(trigger);
    // request_irq() on a line that is already asserted fires at once.
    IntxFireIfPending();
    return absl::OkStatus();
  }
  if (mode_ != Mode::kIntx) {
    return absl::InvalidArgumentError("SetIrqs INTx loopback trigger: INTx is not enabled");
  }
  if (set.data == IrqSet::Data::kNone || set.bools[0]) SendIntxEventfd();
  return absl::OkStatus();
}

absl::Status SimInterrupts::IntxMaskAction(const IrqSet& set) {
  if (mode_ != Mode::kIntx || set.start != 0 || set.count != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs INTx mask: start ", set.start, " count ", set.count,
                     mode_ != Mode::kIntx ? " (INTx is not enabled)" : " (need start 0 count 1)"));
  }
  switch (set.data) {
    case IrqSet::Data::kNone:
      IntxMask();
      break;
    case IrqSet::Data::kBool:
      if (set.bools[0]) IntxMask();
      break;
    case IrqSet::Data::kEventfd:
      return absl::UnimplementedError("SetIrqs INTx mask: eventfd masking (ENOTTY)");
  }
  return absl::OkStatus();
}

absl::Status SimInterrupts::IntxUnmaskAction(const IrqSet& set) {
  if (mode_ != Mode::kIntx || set.start != 0 || set.count != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs INTx unmask: start ", set.start, " count ", set.count,
                     mode_ != Mode::kIntx ? " (INTx is not enabled)" : " (need start 0 count 1)"));
  }
  switch (set.data) {
    case IrqSet::Data::kNone:
      IntxUnmask();
      break;
    case IrqSet::Data::kBool:
      if (set.bools[0]) IntxUnmask();
      break;
    case IrqSet::Data::kEventfd:
      if (set.eventfds[0] == nullptr) {
        intx_unmask_.reset();
      } else {
        if (intx_unmask_) {
          return absl::FailedPreconditionError(
              "SetIrqs INTx unmask: an unmask eventfd is already registered (EBUSY)");
        }
        VFIOD_ASSIGN_OR_RETURN(EventFd unmask, set.eventfds[0]->Duplicate());
        intx_unmask_ = std::make_shared<const EventFd>(std::move(unmask));
      }
      wake_worker_();
      break;
  }
  return absl::OkStatus();
}

absl::Status SimInterrupts::MsiTrigger(const IrqSet& set) {
  if (mode_ == Mode::kMsi && set.count == 0 && set.data == IrqSet::Data::kNone) {
    // vfio_msi_disable().
    msi_trigger_.reset();
    msi_vectors_ = 0;
    mode_ = Mode::kNone;
    SetDeviceMsiEnable(false);
    return absl::OkStatus();
  }
  if (mode_ == Mode::kIntx) {
    return absl::InvalidArgumentError("SetIrqs MSI trigger: INTx is enabled");
  }
  if (set.data == IrqSet::Data::kEventfd) return MsiEventfdTrigger(set);
  if (mode_ != Mode::kMsi || set.start + set.count > msi_vectors_) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs MSI loopback trigger: ",
                     mode_ != Mode::kMsi ? "MSI is not enabled" : "vectors beyond enabled"));
  }
  for (uint32_t i = set.start; i < set.start + set.count; ++i) {
    if (msi_trigger_ && (set.data == IrqSet::Data::kNone || set.bools[i - set.start])) {
      SignalEventFd(*msi_trigger_);
    }
  }
  return absl::OkStatus();
}

absl::Status SimInterrupts::MsiEventfdTrigger(const IrqSet& set) {
  if (mode_ == Mode::kMsi && (set.start >= msi_vectors_ || set.start + set.count > msi_vectors_)) {
    return absl::InvalidArgumentError(absl::StrCat("SetIrqs MSI trigger: vectors [", set.start,
                                                   ", ", set.start + set.count, ") are beyond the ",
                                                   msi_vectors_, " enabled"));
  }
  if (mode_ == Mode::kNone && set.start + set.count == 0) {
    return absl::InvalidArgumentError("SetIrqs MSI trigger: enabling needs at least 1 vector");
  }
  // Only vector 0 exists (validated above), so the block is at most that one.
  std::optional<EventFd> trigger;
  if (set.count == 1) {
    VFIOD_ASSIGN_OR_RETURN(trigger, DuplicateOrNone(set.eventfds[0]));
  }
  if (mode_ == Mode::kNone) {
    // vfio_msi_enable(): the kernel programs and enables MSI in the device.
    mode_ = Mode::kMsi;
    msi_vectors_ = set.start + set.count;
    msi_qmax_ = 0;  // fls(nvec * 2 - 1) - 1 for one vector
    SetDeviceMsiEnable(true);
  }
  if (set.count == 1) msi_trigger_ = std::move(trigger);
  return absl::OkStatus();
}

// vfio_pci_set_req_trigger() / vfio_pci_set_ctx_trigger_single().
absl::Status SimInterrupts::ReqTrigger(const IrqSet& set) {
  switch (set.data) {
    case IrqSet::Data::kNone:
      if (!req_trigger_) {
        return absl::InvalidArgumentError("SetIrqs REQ trigger: no eventfd is registered");
      }
      if (set.count != 0) {
        SignalEventFd(*req_trigger_);
      } else {
        req_trigger_.reset();
      }
      return absl::OkStatus();
    case IrqSet::Data::kBool:
      if (set.count == 0) return absl::InvalidArgumentError("SetIrqs REQ trigger: count 0");
      if (set.bools[0] && req_trigger_) SignalEventFd(*req_trigger_);
      return absl::OkStatus();
    case IrqSet::Data::kEventfd: {
      if (set.count == 0) return absl::InvalidArgumentError("SetIrqs REQ trigger: count 0");
      VFIOD_ASSIGN_OR_RETURN(req_trigger_, DuplicateOrNone(set.eventfds[0]));
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError("SetIrqs REQ trigger: unknown data type");
}

void SimInterrupts::SetDeviceMsiEnable(bool enable) {
  uint32_t flags = device_->ConfigRead(kMsiFlags, 2);
  flags &= ~uint32_t{PCI_MSI_FLAGS_QSIZE};
  flags = enable ? (flags | PCI_MSI_FLAGS_ENABLE) : (flags & ~uint32_t{PCI_MSI_FLAGS_ENABLE});
  device_->ConfigWrite(kMsiFlags, 2, flags);
}

// vfio_pci_intx_mask().
void SimInterrupts::IntxMask() {
  if (mode_ == Mode::kIntx && !intx_masked_) intx_masked_ = true;
}

// vfio_pci_intx_unmask_handler(): true when the line is still asserted, so the interrupt must
// be sent again and INTx stays masked.
bool SimInterrupts::IntxUnmaskHandler() {
  if (mode_ != Mode::kIntx || !intx_masked_ || virq_disabled_) return false;
  if (intx_asserted_) return true;
  intx_masked_ = false;
  return false;
}

void SimInterrupts::IntxUnmask() {
  if (IntxUnmaskHandler()) SendIntxEventfd();
}

// vfio_send_intx_eventfd().
void SimInterrupts::SendIntxEventfd() {
  if (mode_ == Mode::kIntx && !virq_disabled_ && intx_trigger_) {
    SignalEventFd(*intx_trigger_);
  }
}

// vfio_intx_handler(): an asserted, unmasked line is masked and signalled.
void SimInterrupts::IntxFireIfPending() {
  if (mode_ != Mode::kIntx || !intx_trigger_ || intx_masked_ || !intx_asserted_) return;
  intx_masked_ = true;
  SendIntxEventfd();
}

void SimInterrupts::IntxDisable() {
  intx_unmask_.reset();
  intx_trigger_.reset();
  intx_masked_ = false;
  mode_ = Mode::kNone;
  wake_worker_();
}

void SimInterrupts::SendMsi() {
  ++interrupts_;
  // vfio_msihandler(): the vector's trigger, if one is set.
  if (mode_ == Mode::kMsi && msi_trigger_) SignalEventFd(*msi_trigger_);
}

void SimInterrupts::SetIntx(bool asserted) {
  intx_asserted_ = asserted;
  if (!asserted) return;
  ++interrupts_;
  IntxFireIfPending();
}

}  // namespace sim
}  // namespace vfiod
