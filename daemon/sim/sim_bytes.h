// Little-endian byte helpers shared by the simulated backend's parts (header only; internal to
// daemon/sim).
#ifndef VFIOD_DAEMON_SIM_SIM_BYTES_H_
#define VFIOD_DAEMON_SIM_SIM_BYTES_H_

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/format.h"

namespace vfiod {
namespace sim {

inline void PutLe(uint8_t* p, unsigned size, uint32_t value) {
  for (unsigned i = 0; i < size; ++i) p[i] = static_cast<uint8_t>(value >> (8 * i));
}

inline uint32_t GetLe(const uint8_t* p, unsigned size) {
  uint32_t value = 0;
  for (unsigned i = 0; i < size; ++i) value |= static_cast<uint32_t>(p[i]) << (8 * i);
  return value;
}

inline uint32_t ByteMask(unsigned size) { return size >= 4 ? 0xffffffffu : (1u << (8 * size)) - 1; }

// The largest naturally aligned access of at most 4 bytes at `offset` within `remaining`.
inline unsigned AccessSize(uint64_t offset, uint64_t remaining) {
  if (remaining >= 4 && offset % 4 == 0) return 4;
  if (remaining >= 2 && offset % 2 == 0) return 2;
  return 1;
}

using ::vfiod::Hex;  // base/format.h

}  // namespace sim
}  // namespace vfiod

#endif  // VFIOD_DAEMON_SIM_SIM_BYTES_H_
