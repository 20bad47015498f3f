// The simulated device's interrupt plumbing, as Linux 6.1's vfio_pci_intrs.c does it for edu:
// level-triggered, automasked INTx with mask, unmask and a resample (unmask) eventfd (the
// virqfd); MSI with one vector; INTx and MSI mutually exclusive; the REQ trigger stored (never
// fired: no host driver ever asks for a simulated device, so the daemon's own REQ trigger, see
// IrqManager, stays armed and silent; only a loopback fires it); loopback triggers with DATA_NONE/BOOL. Also the INTx masking by the virtual
// INTx-disable bit of the command register (SetVirqDisabled, from the config space).
//
// Thread-safety: none of its own; the owning backend guards it, and the device whose MSI enable
// bit it programs, with its mutex.
#ifndef VFIOD_DAEMON_SIM_SIM_INTERRUPTS_H_
#define VFIOD_DAEMON_SIM_SIM_INTERRUPTS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/event_fd.h"
#include "daemon/sim/edu_device.h"

namespace vfiod {
namespace sim {

// Signals `fd`, logging a failure (an eventfd at its maximum count; nothing to do about it).
void SignalEventFd(const EventFd& fd);

class SimInterrupts {
 public:
  // `device`: whose MSI flags the kernel programs at enable/disable (not owned). `wake_worker`:
  // called when the resample eventfd changes, so that the worker polls the new one.
  SimInterrupts(EduDevice* device, std::function<void()> wake_worker);

  // What VFIO_DEVICE_GET_IRQ_INFO reports for edu, index i at position i.
  static std::vector<IrqInfo> Info();

  // VFIO_DEVICE_SET_IRQS (vfio_pci_set_irqs_ioctl()).
  absl::Status SetIrqs(const IrqSet& set);

  // The virtual INTx-disable bit of the command register changed to `disabled` (it masks INTx).
  void SetVirqDisabled(bool disabled);
  // The resample eventfd fired (the virqfd): unmasks INTx, re-sending a still-asserted line.
  void IntxUnmask();
  // The resample eventfd the worker polls (null: none), shared so that it stays open until the
  // worker stops looking.
  std::shared_ptr<const EventFd> intx_unmask() const { return intx_unmask_; }

  bool msi_enabled() const { return mode_ == Mode::kMsi; }
  // log2 of the MSI vectors SET_IRQS allows (the multiple-message-capable field).
  uint8_t msi_qmax() const { return msi_qmax_; }

  // The device's side (sim::EduBus): its MSI message, its INTx# level.
  void SendMsi();
  void SetIntx(bool asserted);
  // Interrupts the device raised.
  uint64_t interrupts() const { return interrupts_; }

 private:
  enum class Mode { kNone, kIntx, kMsi };

  absl::Status IntxTrigger(const IrqSet& set);
  absl::Status IntxMaskAction(const IrqSet& set);
  absl::Status IntxUnmaskAction(const IrqSet& set);
  absl::Status MsiTrigger(const IrqSet& set);
  absl::Status MsiEventfdTrigger(const IrqSet& set);
  absl::Status ReqTrigger(const IrqSet& set);
  void IntxMask();
  bool IntxUnmaskHandler();
  void SendIntxEventfd();
  void IntxFireIfPending();
  void IntxDisable();
  void SetDeviceMsiEnable(bool enable);

  EduDevice* const device_;
  const std::function<void()> wake_worker_;
  const std::vector<IrqInfo> info_;

  Mode mode_ = Mode::kNone;
  std::optional<EventFd> intx_trigger_;
  bool intx_masked_ = false;
  bool virq_disabled_ = false;
  bool intx_asserted_ = false;
  std::shared_ptr<const EventFd> intx_unmask_;
  std::optional<EventFd> msi_trigger_;
  uint32_t msi_vectors_ = 0;
  uint8_t msi_qmax_ = 0;
  std::optional<EventFd> req_trigger_;
  uint64_t interrupts_ = 0;
};

}  // namespace sim
}  // namespace vfiod

#endif  // VFIOD_DAEMON_SIM_SIM_INTERRUPTS_H_
