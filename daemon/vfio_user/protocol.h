// The vfio-user wire format (QEMU's docs/interop/vfio-user.rst, protocol 0.0) as this server
// speaks it. Every message is a 16-byte header followed by a command-specific payload, in host
// byte order; file descriptors travel as SCM_RIGHTS with the message's first byte. Payloads
// that are the kernel's VFIO structures (device, region and IRQ info, SET_IRQS) use
// <linux/vfio.h>'s definitions and flag values; the rest are declared here.
#ifndef VFIOD_DAEMON_VFIO_USER_PROTOCOL_H_
#define VFIOD_DAEMON_VFIO_USER_PROTOCOL_H_

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>

namespace vfiod::vfio_user {

// Commands (the spec's table).
enum class Command : uint16_t {
  kVersion = 1,
  kDmaMap = 2,
  kDmaUnmap = 3,
  kDeviceGetInfo = 4,
  kDeviceGetRegionInfo = 5,
  kDeviceGetRegionIoFds = 6,
  kDeviceGetIrqInfo = 7,
  kDeviceSetIrqs = 8,
  kRegionRead = 9,
  kRegionWrite = 10,
  kDmaRead = 11,   // server -> client only
  kDmaWrite = 12,  // server -> client only
  kDeviceReset = 13,
  kRegionWriteMulti = 15,
  kDeviceFeature = 16,
  kMigDataRead = 17,
  kMigDataWrite = 18,
};

struct Header {
  uint16_t message_id;
  uint16_t command;
  uint32_t message_size;  // header included
  uint32_t flags;
  uint32_t error;  // errno, in an error reply
};
static_assert(sizeof(Header) == 16);

inline constexpr uint32_t kFlagTypeMask = 0xf;
inline constexpr uint32_t kTypeCommand = 0x0;
inline constexpr uint32_t kTypeReply = 0x1;
inline constexpr uint32_t kFlagNoReply = 1u << 4;
inline constexpr uint32_t kFlagError = 1u << 5;
inline constexpr uint32_t kKnownHeaderFlags = kFlagTypeMask | kFlagNoReply | kFlagError;

// VFIO_USER_VERSION: this server speaks 0.0.
struct VersionPayload {
  uint16_t major;
  uint16_t minor;
  // Followed by optional NUL-terminated JSON.
};
static_assert(sizeof(VersionPayload) == 4);
inline constexpr uint16_t kMajorVersion = 0;
inline constexpr uint16_t kMinorVersion = 0;

// VFIO_USER_DMA_MAP.
struct DmaMapPayload {
  uint32_t argsz;
  uint32_t flags;  // kDmaMapRead | kDmaMapWrite
  uint64_t offset;  // into the fd sent with the message
  uint64_t address;
  uint64_t size;
};
static_assert(sizeof(DmaMapPayload) == 32);
inline constexpr uint32_t kDmaMapRead = 1u << 0;
inline constexpr uint32_t kDmaMapWrite = 1u << 1;

// VFIO_USER_DMA_UNMAP (request and reply).
struct DmaUnmapPayload {
  uint32_t argsz;
  uint32_t flags;  // VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (refused), VFIO_DMA_UNMAP_FLAG_ALL
  uint64_t address;
  uint64_t size;
};
static_assert(sizeof(DmaUnmapPayload) == 24);

// VFIO_USER_REGION_READ / REGION_WRITE, followed by `count` data bytes (read reply, write
// request).
struct RegionAccessPayload {
  uint64_t offset;
  uint32_t region;
  uint32_t count;
};
static_assert(sizeof(RegionAccessPayload) == 16);

// VFIO_USER_DEVICE_GET_REGION_IO_FDS (request; the reply adds sub-regions, none here).
struct RegionIoFdsPayload {
  uint32_t argsz;
  uint32_t flags;
  uint32_t index;
  uint32_t count;
};
static_assert(sizeof(RegionIoFdsPayload) == 16);

// VFIO_USER_DEVICE_GET_INFO: the first four fields of the kernel's vfio_device_info (newer
// kernels append cap_offset and padding, which vfio-user does not carry).
struct DeviceInfoPayload {
  uint32_t argsz;
  uint32_t flags;  // VFIO_DEVICE_FLAGS_*
  uint32_t num_regions;
  uint32_t num_irqs;
};
static_assert(sizeof(DeviceInfoPayload) == 16);
static_assert(sizeof(vfio_region_info) == 32);
static_assert(sizeof(vfio_irq_info) == 16);
static_assert(sizeof(vfio_irq_set) == 20);

// Defaults the spec gives for capabilities a peer leaves out.
inline constexpr uint64_t kDefaultMaxMsgFds = 1;
inline constexpr uint64_t kDefaultMaxDataXferSize = 1 << 20;
inline constexpr uint64_t kDefaultMaxDmaMaps = 65535;
inline constexpr uint64_t kDefaultPageSizes = 4096;

// "VERSION", "DMA_MAP", ...; "command <n>" for others. For messages.
const char* CommandName(uint16_t command);

}  // namespace vfiod::vfio_user

#endif  // VFIOD_DAEMON_VFIO_USER_PROTOCOL_H_
