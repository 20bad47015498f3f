// FakeBackend: a DeviceBackend for tests whose every byte the test controls.
//
// Config space is a byte array with a per-byte writable mask (a write keeps the read-only bits),
// which is enough to emulate BAR sizing (the address bits of a BAR are writable, the low flag
// and size bits are not) and to build malformed capability chains. BAR regions are plain
// memory. DMA map/unmap are recorded and checked for overlap the way type1 does; any call can
// be made to fail once. SET_IRQS calls are recorded, and MSI/MSI-X triggers follow vfio-pci's
// block rules: eventfds on a disabled index enable it with start + count vectors; on an enabled
// one they must stay inside the enabled vectors (EINVAL otherwise, as vfio_msi_set_block).
//
// Thread-safety: all methods are thread-safe (one mutex); the configuration setters must be
// called before the backend is shared.
#ifndef VFIOD_DAEMON_PCI_FAKE_BACKEND_H_
#define VFIOD_DAEMON_PCI_FAKE_BACKEND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "daemon/backend/device_backend.h"

namespace vfiod {

class FakeBackend : public DeviceBackend {
 public:
  // A type-0 device with the given config size (256 or 4096), vendor 0x1234 device 0x11e8,
  // no BARs, no capabilities, INTx with one vector, 4 KiB IOMMU pages and the usable IOVA
  // ranges of an x86 host: [0, 0xfedfffff] and [0xfef00000, 2^48 - 1].
  explicit FakeBackend(uint32_t config_size = 256);

  BackendInfo& info() { return info_; }
  std::vector<uint8_t>& config() { return config_; }
  std::vector<uint8_t>& config_write_mask() { return write_mask_; }

  // Makes BAR `bar` (0..5) a memory BAR of `size` bytes (a power of two >= 16) with the given
  // flags; a 64-bit BAR uses register bar + 1 too. Adds the backend region.
  void AddMemoryBar(uint32_t bar, uint64_t size, bool is_64bit, bool prefetchable);
  void AddIoBar(uint32_t bar, uint32_t size);
  void AddRom(uint32_t size);

  void SetConfig8(uint32_t offset, uint8_t value) { config_[offset] = value; }
  void SetConfig16(uint32_t offset, uint16_t value);
  void SetConfig32(uint32_t offset, uint32_t value);
  uint32_t Config32(uint32_t offset) const;

  // The next call of that kind fails with `status`.
  void FailNextMapDma(absl::Status status);
  void FailNextUnmapDma(absl::Status status);

  // What the backend saw.
  struct IrqSetCall {
    IrqIndex index;
    uint32_t start;
    uint32_t count;
    IrqAction action;
    IrqSet::Data data;
    std::vector<bool> has_eventfd;  // per vector, for kEventfd
  };
  std::vector<IrqSetCall> irq_set_calls() const;
  // Vectors enabled on MSI/MSI-X (0: disabled).
  uint32_t enabled_vectors(IrqIndex index) const;
  int map_calls() const;
  int unmap_calls() const;
  int reset_calls() const;
  std::map<uint64_t, DmaMap> mappings() const;  // by iova

  const BackendInfo& Info() const override { return info_; }
  absl::Status ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) override;
  absl::Status WriteRegion(uint32_t index, uint64_t offset,
                           absl::Span<const uint8_t> data) override;
  absl::Status SetIrqs(const IrqSet& set) override;
  absl::Status MapDma(const DmaMap& map) override;
  absl::Status UnmapDma(uint64_t iova, uint64_t size) override;
  absl::Status Reset() override;

 private:
  void SetMask32(uint32_t offset, uint32_t mask);
  std::vector<uint8_t>* RegionBytes(uint32_t index);

  BackendInfo info_;
  mutable absl::Mutex mu_;
  std::vector<uint8_t> config_;
  std::vector<uint8_t> write_mask_;
  std::map<uint32_t, std::vector<uint8_t>> region_bytes_;
  std::map<uint64_t, DmaMap> mappings_;
  absl::Status next_map_status_;
  absl::Status next_unmap_status_;
  std::vector<IrqSetCall> irq_set_calls_;
  uint32_t enabled_vectors_[kNumPciIrqIndexes] = {};
  int map_calls_ = 0;
  int unmap_calls_ = 0;
  int reset_calls_ = 0;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_PCI_FAKE_BACKEND_H_
