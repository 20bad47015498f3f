// The simulated device's config space (region 7) as Linux 6.1's vfio_pci_config.c virtualises
// it (see sim_backend.h for what is virtual): the virtual copy (vconfig), vfio's permission
// tables for edu's basic header and MSI capability, and accesses chopped at capability
// boundaries. The INTx-disable bit is passed on to the interrupts as an INTx mask; the MSI
// flags follow what SET_IRQS enabled.
//
// Thread-safety: none of its own; the owning backend guards it, the device and the interrupts
// with its mutex.
#ifndef VFIOD_DAEMON_SIM_SIM_CONFIG_SPACE_H_
#define VFIOD_DAEMON_SIM_SIM_CONFIG_SPACE_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "daemon/sim/edu_device.h"
#include "daemon/sim/sim_interrupts.h"

namespace vfiod {
namespace sim {

class SimConfigSpace {
 public:
  static constexpr uint32_t kSize = EduDevice::kConfigSize;

  // Neither is owned; both must outlive this.
  SimConfigSpace(EduDevice* device, SimInterrupts* interrupts);

  // vfio_config_init(): vconfig starts as a copy of the device's config space as it is now (after
  // firmware and vfio_pci_core_enable()), and the permission tables are set up.
  void Open();

  // vfio_config_do_rw() over [offset, offset + size), within kSize (checked by the caller).
  // Exactly one of `read_out` and `write_in` is set; both hold `size` bytes.
  void Access(uint32_t offset, size_t size, uint8_t* read_out, const uint8_t* write_in);

  // The virtual command register's memory enable (BAR accesses fail without it).
  bool MemoryDecodeEnabled() const;

 private:
  // Which permission table of vfio_pci_config.c governs a config byte.
  enum class Kind : uint8_t { kBasic, kMsi, kUnassigned };

  uint32_t ReadPiece(uint32_t pos, unsigned count);
  void WritePiece(uint32_t pos, unsigned count, uint32_t value);
  uint32_t DefaultRead(uint32_t pos, unsigned count);
  void DefaultWrite(uint32_t pos, unsigned count, uint32_t value);
  void BasicWrite(uint32_t pos, unsigned count, uint32_t value);
  void MsiWrite(uint32_t pos, unsigned count, uint32_t value);
  void BarFixup();
  void SetPermissions(uint32_t offset, unsigned size, uint32_t virt, uint32_t write);

  EduDevice* const device_;
  SimInterrupts* const interrupts_;
  // vfio's permission tables for this device: fixed after Open().
  std::array<uint8_t, kSize> perm_virt_{};
  std::array<uint8_t, kSize> perm_write_{};
  std::array<Kind, kSize> kind_{};
  std::array<uint8_t, kSize> vconfig_{};
};

}  // namespace sim
}  // namespace vfiod

#endif  // VFIOD_DAEMON_SIM_SIM_CONFIG_SPACE_H_
