#include "daemon/pci/fake_backend.h"

#include <linux/pci_regs.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vfiod {
namespace {

// Bytes of a BAR the fake stores; beyond them the BAR reads as zeros and ignores writes.
constexpr uint32_t kMaxStoredBytes = 1 << 20;

}  // namespace

FakeBackend::FakeBackend(uint32_t config_size)
    : config_(config_size, 0), write_mask_(config_size, 0) {
  info_.kind = "sim";
  info_.name = "fake";
  info_.regions.resize(kNumPciRegions);
  for (uint32_t i = 0; i < kNumPciRegions; ++i) info_.regions[i].index = i;
  RegionInfo& config_region = info_.regions[kConfigRegionIndex];
  config_region.size = config_size;
  config_region.readable = true;
  config_region.writable = true;
  info_.irqs.resize(kNumPciIrqIndexes);
  for (uint32_t i = 0; i < kNumPciIrqIndexes; ++i) {
    info_.irqs[i].index = static_cast<IrqIndex>(i);
  }
  info_.irqs[0].count = 1;
  info_.irqs[0].eventfd = true;
  info_.irqs[0].maskable = true;
  info_.irqs[0].automasked = true;
  info_.iommu.page_size_bitmap = 0x40201000;  // 4 KiB, 2 MiB, 1 GiB
  info_.iommu.usable_ranges = {{0, 0xfedfffff}, {0xfef00000, (uint64_t{1} << 48) - 1}};
  info_.iommu.dma_mappings_available = 65535;

  SetConfig16(PCI_VENDOR_ID, 0x1234);
  SetConfig16(PCI_DEVICE_ID, 0x11e8);
  write_mask_[PCI_COMMAND] = 0xff;
  write_mask_[PCI_COMMAND + 1] = 0x07;
}

void FakeBackend::SetConfig16(uint32_t offset, uint16_t value) {
  config_[offset] = static_cast<uint8_t>(value);
  config_[offset + 1] = static_cast<uint8_t>(value >> 8);
}

void FakeBackend::SetConfig32(uint32_t offset, uint32_t value) {
  for (uint32_t i = 0; i < 4; ++i) config_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t FakeBackend::Config32(uint32_t offset) const {
  absl::MutexLock lock(&mu_);
  uint32_t value = 0;
  for (uint32_t i = 0; i < 4; ++i) value |= uint32_t{config_[offset + i]} << (8 * i);
  return value;
}

void FakeBackend::SetMask32(uint32_t offset, uint32_t mask) {
  for (uint32_t i = 0; i < 4; ++i) write_mask_[offset + i] = static_cast<uint8_t>(mask >> (8 * i));
}

void FakeBackend::AddMemoryBar(uint32_t bar, uint64_t size, bool is_64bit, bool prefetchable) {
  const uint32_t offset = PCI_BASE_ADDRESS_0 + 4 * bar;
  const uint64_t address_mask = ~(size - 1);
  uint32_t flags = (is_64bit ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) |
                   (prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
  SetConfig32(offset, flags);
  SetMask32(offset, static_cast<uint32_t>(address_mask) & 0xfffffff0u);
  if (is_64bit) {
    SetConfig32(offset + 4, 0);
    SetMask32(offset + 4, static_cast<uint32_t>(address_mask >> 32));
  }
  RegionInfo& region = info_.regions[bar];
  region.size = size;
  region.readable = region.writable = region.mmappable = true;
  region_bytes_[bar].assign(std::min<uint64_t>(size, kMaxStoredBytes), 0);
}

void FakeBackend::AddIoBar(uint32_t bar, uint32_t size) {
  const uint32_t offset = PCI_BASE_ADDRESS_0 + 4 * bar;
  SetConfig32(offset, PCI_BASE_ADDRESS_SPACE_IO);
  SetMask32(offset, ~(size - 1) & 0xfffffffcu);
  RegionInfo& region = info_.regions[bar];
  region.size = size;
  region.readable = region.writable = true;
  region_bytes_[bar].assign(std::min<uint64_t>(size, kMaxStoredBytes), 0);
}

void FakeBackend::AddRom(uint32_t size) {
  SetConfig32(PCI_ROM_ADDRESS, 0);
  SetMask32(PCI_ROM_ADDRESS, (~(size - 1) & PCI_ROM_ADDRESS_MASK) | PCI_ROM_ADDRESS_ENABLE);
  RegionInfo& region = info_.regions[kRomRegionIndex];
  region.size = size;
  region.readable = true;
  region_bytes_[kRomRegionIndex].assign(std::min<uint32_t>(size, kMaxStoredBytes), 0);
}

void FakeBackend::FailNextMapDma(absl::Status status) {
  absl::MutexLock lock(&mu_);
  next_map_status_ = std::move(status);
}

void FakeBackend::FailNextUnmapDma(absl::Status status) {
  absl::MutexLock lock(&mu_);
  next_unmap_status_ = std::move(status);
}

int FakeBackend::map_calls() const {
  absl::MutexLock lock(&mu_);
  return map_calls_;
}

int FakeBackend::unmap_calls() const {
  absl::MutexLock lock(&mu_);
  return unmap_calls_;
}

int FakeBackend::reset_calls() const {
  absl::MutexLock lock(&mu_);
  return reset_calls_;
}

std::map<uint64_t, DmaMap> FakeBackend::mappings() const {
  absl::MutexLock lock(&mu_);
  return mappings_;
}

std::vector<uint8_t>* FakeBackend::RegionBytes(uint32_t index) {
  if (index == kConfigRegionIndex) return &config_;
  auto it = region_bytes_.find(index);
  return it == region_bytes_.end() ? nullptr : &it->second;
}

absl::Status FakeBackend::ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) {
  absl::MutexLock lock(&mu_);
  std::vector<uint8_t>* bytes = RegionBytes(index);
  if (bytes == nullptr) return absl::InvalidArgumentError("fake: no such region");
  const uint64_t size = info_.regions[index].size;
  if (offset > size || data.size() > size - offset) {
    return absl::OutOfRangeError("fake: beyond the region");
  }
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < bytes->size() ? (*bytes)[offset + i] : 0;
  }
  return absl::OkStatus();
}

absl::Status FakeBackend::WriteRegion(uint32_t index, uint64_t offset,
                                      absl::Span<const uint8_t> data) {
  absl::MutexLock lock(&mu_);
  std::vector<uint8_t>* bytes = RegionBytes(index);
  if (bytes == nullptr) return absl::InvalidArgumentError("fake: no such region");
  const uint64_t size = info_.regions[index].size;
  if (offset > size || data.size() > size - offset) {
    return absl::OutOfRangeError("fake: beyond the region");
  }
  for (size_t i = 0; i < data.size() && offset + i < bytes->size(); ++i) {
    uint8_t& byte = (*bytes)[offset + i];
    if (index == kConfigRegionIndex) {
      const uint8_t mask = write_mask_[offset + i];
      byte = static_cast<uint8_t>((data[i] & mask) | (byte & ~mask));
    } else {
      byte = data[i];
    }
  }
  return absl::OkStatus();
}

absl::Status FakeBackend::SetIrqs(const IrqSet& set) {
  absl::MutexLock lock(&mu_);
  IrqSetCall call{set.index, set.start, set.count, set.action, set.data, {}};
  for (const EventFd* eventfd : set.eventfds) call.has_eventfd.push_back(eventfd != nullptr);
  irq_set_calls_.push_back(call);
  const bool msi = set.index == IrqIndex::kMsi || set.index == IrqIndex::kMsix;
  if (!msi || set.action != IrqAction::kTrigger) return absl::OkStatus();
  uint32_t& enabled = enabled_vectors_[static_cast<uint32_t>(set.index)];
  if (set.data == IrqSet::Data::kNone && set.count == 0) {
    enabled = 0;
    return absl::OkStatus();
  }
  if (set.data != IrqSet::Data::kEventfd) return absl::OkStatus();
  if (enabled == 0) {
    enabled = set.start + set.count;
  } else if (set.start + set.count > enabled) {
    return absl::InvalidArgumentError(absl::StrCat("fake: vectors [", set.start, ", ",
                                                   set.start + set.count, ") beyond the ",
                                                   enabled, " enabled (errno 22)"));
  }
  return absl::OkStatus();
}

std::vector<FakeBackend::IrqSetCall> FakeBackend::irq_set_calls() const {
  absl::MutexLock lock(&mu_);
  return irq_set_calls_;
}

uint32_t FakeBackend::enabled_vectors(IrqIndex index) const {
  absl::MutexLock lock(&mu_);
  return enabled_vectors_[static_cast<uint32_t>(index)];
}

absl::Status FakeBackend::MapDma(const DmaMap& map) {
  absl::MutexLock lock(&mu_);
  ++map_calls_;
  if (!next_map_status_.ok()) return std::exchange(next_map_status_, absl::OkStatus());
  const uint64_t last = map.iova + map.size - 1;
  for (const auto& [iova, m] : mappings_) {
    if (iova <= last && map.iova <= iova + m.size - 1) {
      return absl::AlreadyExistsError(absl::StrCat("fake: overlap at 0x", absl::Hex(iova)));
    }
  }
  mappings_[map.iova] = map;
  return absl::OkStatus();
}

absl::Status FakeBackend::UnmapDma(uint64_t iova, uint64_t size) {
  absl::MutexLock lock(&mu_);
  ++unmap_calls_;
  if (!next_unmap_status_.ok()) return std::exchange(next_unmap_status_, absl::OkStatus());
  auto it = mappings_.find(iova);
  if (it == mappings_.end() || it->second.size != size) {
    return absl::InvalidArgumentError("fake: unmap does not match a mapping");
  }
  mappings_.erase(it);
  return absl::OkStatus();
}

absl::Status FakeBackend::Reset() {
  absl::MutexLock lock(&mu_);
  ++reset_calls_;
  if (!info_.reset_supported) return absl::FailedPreconditionError("fake: no reset");
  return absl::OkStatus();
}

}  // namespace vfiod
