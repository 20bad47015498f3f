#include "tests/fuzz/fuzz_device.h"

#include <chrono>
#include <utility>

#include "absl/status/statusor.h"
#include "daemon/sim/sim_backend.h"
#include "tests/fuzz/fuzz_support.h"

namespace vfiod::fuzz {

DeviceLimits FuzzLimits() {
  DeviceLimits limits;
  limits.max_memory_bytes = 3 << 20;
  limits.max_memory_regions = 6;
  limits.max_dma_mappings = 32;
  limits.max_region_access_bytes = 64 * 1024;
  limits.max_irq_watchers = 2;
  return limits;
}

std::unique_ptr<PciDevice> MakeFuzzDevice() {
  SimEduOptions options;
  options.reset_supported = true;  // as "edu,reset"
  // Short completion delays (the default 1-2 ms would dominate every input that waits).
  options.factorial_delay = std::chrono::microseconds(20);
  options.dma_delay = std::chrono::microseconds(20);
  options.memlock_limit = kFuzzMemlockBytes;
  absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedEdu(options);
  FUZZ_CHECK(backend.ok(), "CreateSimulatedEdu: ", backend.status().ToString());
  absl::StatusOr<std::unique_ptr<PciDevice>> device =
      PciDevice::Create(*std::move(backend), FuzzLimits());
  FUZZ_CHECK(device.ok(), "PciDevice::Create: ", device.status().ToString());
  absl::Status started = (*device)->Start();
  FUZZ_CHECK(started.ok(), "PciDevice::Start: ", started.ToString());
  return *std::move(device);
}

}  // namespace vfiod::fuzz
