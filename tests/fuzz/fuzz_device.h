// The device both fuzz targets run: PciDevice over the simulated edu device with reset support
// ("edu,reset"), started, with small limits so that inputs reach them and short completion
// delays so that inputs which wait for the device stay fast.
//
// A fresh device per input keeps every input reproducible on its own.
#ifndef VFIOD_TESTS_FUZZ_FUZZ_DEVICE_H_
#define VFIOD_TESTS_FUZZ_FUZZ_DEVICE_H_

#include <cstdint>
#include <memory>

#include "daemon/pci/pci_device.h"

namespace vfiod::fuzz {

// 3 MiB of memory in at most 6 regions, 32 DMA mappings, 64 KiB per region access, 2 IRQ
// watchers.
DeviceLimits FuzzLimits();

// The RLIMIT_MEMLOCK the simulated IOMMU charges pinned pages against, injected so that a run
// never depends on the environment's limit: 8 MiB, less than the 32 mappings of 3 MiB memory
// could pin, so that inputs reach it.
inline constexpr uint64_t kFuzzMemlockBytes = uint64_t{8} << 20;

// Creates and starts the device; a failure aborts through FUZZ_CHECK (it is the harness's, not
// the input's).
std::unique_ptr<PciDevice> MakeFuzzDevice();

}  // namespace vfiod::fuzz

#endif  // VFIOD_TESTS_FUZZ_FUZZ_DEVICE_H_
