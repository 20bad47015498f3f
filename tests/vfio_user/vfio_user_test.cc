// vfiod's vfio-user endpoint end to end: a jailed, filtered daemon on the simulated edu device
// (or $VFIOD_DEVICE in the VM lab), driven by a vfio-user client the way QEMU drives it, while a
// gRPC observer watches. Every hostile case checks the exact errno, that the state did not
// change, and that the connection still serves.
#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/vfio_client.h"
#include "daemon/base/sanitizers.h"
#include "daemon/vfio_user/protocol.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"
#include "tests/eventfd_wait.h"
#include "tests/vfio_user/vfio_user_client.h"

namespace vfiod::testing {
namespace {

using vfio_user::Command;

constexpr uint32_t kBar0 = 0;
constexpr uint32_t kConfig = 7;
constexpr uint64_t kIdent = 0x00;
constexpr uint64_t kLiveness = 0x04;
constexpr uint64_t kFactorial = 0x08;
constexpr uint64_t kStatus = 0x20;
constexpr uint64_t kIrqStatus = 0x24;
constexpr uint64_t kIrqRaise = 0x60;
constexpr uint64_t kIrqAck = 0x64;
constexpr uint64_t kDmaSrc = 0x80;
constexpr uint64_t kDmaDst = 0x88;
constexpr uint64_t kDmaCount = 0x90;
constexpr uint64_t kDmaCmd = 0x98;
constexpr uint64_t kDeviceBuffer = 0x40000;

constexpr uint64_t kRamAddress = 0x100000;
constexpr uint64_t kRamSize = 2 << 20;

// A memfd sealed as QEMU seals guest RAM.
int SealedMemfd(uint64_t size) {
  int fd = ::memfd_create("guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, size) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    ADD_FAILURE() << "memfd: " << strerror(errno);
  }
  return fd;
}

class VfioUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<DaemonProcess>> daemon = DaemonProcess::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<VfioClient>> observer = VfioClient::Connect(
        daemon_->socket_path());
    ASSERT_TRUE(observer.ok()) << observer.status();
    observer_ = *std::move(observer);
  }

  // A client that completed VERSION (the device's owner).
  VfioUserClient Owner() {
    absl::StatusOr<VfioUserClient> client = VfioUserClient::Connect(daemon_->vfio_user_path());
    EXPECT_TRUE(client.ok()) << client.status();
    absl::StatusOr<VfioUserClient::Reply> version = client->Version();
    EXPECT_TRUE(version.ok()) << version.status();
    EXPECT_EQ(ErrorOf(*version), 0u);
    return *std::move(client);
  }

  v1::DeviceState State() {
    absl::StatusOr<v1::DeviceState> state = observer_->GetState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : v1::DeviceState();
  }

  // What a failed command must not change.
  std::string Fingerprint() {
    v1::DeviceState state = State();
    std::string text;
    for (const auto& memory : state.memory()) absl::StrAppend(&text, memory.ShortDebugString());
    for (const auto& mapping : state.dma_mappings()) {
      absl::StrAppend(&text, mapping.ShortDebugString());
    }
    for (const auto& irq : state.irqs()) absl::StrAppend(&text, irq.ShortDebugString());
    absl::StrAppend(&text, " owner=", state.owner_attached());
    return text;
  }

  bool WaitFor(const std::function<bool()>& condition) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!condition()) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return true;
  }

  static void EnableDecodeAndMastering(VfioUserClient& client) {
    const uint16_t command = 0x0006;  // memory space, bus master
    ASSERT_TRUE(client.RegionWrite(kConfig, 0x04, BytesOf(command)).ok());
  }

  static void Dma(VfioUserClient& client, uint64_t src, uint64_t dst, uint32_t count,
                  bool to_ram) {
    ASSERT_TRUE(client.Write32(kBar0, kDmaSrc, static_cast<uint32_t>(src)).ok());
    ASSERT_TRUE(client.Write32(kBar0, kDmaSrc + 4, static_cast<uint32_t>(src >> 32)).ok());
    ASSERT_TRUE(client.Write32(kBar0, kDmaDst, static_cast<uint32_t>(dst)).ok());
    ASSERT_TRUE(client.Write32(kBar0, kDmaDst + 4, static_cast<uint32_t>(dst >> 32)).ok());
    ASSERT_TRUE(client.Write32(kBar0, kDmaCount, count).ok());
    ASSERT_TRUE(client.Write32(kBar0, kDmaCmd, 0x1 | (to_ram ? 0x2 : 0)).ok());
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline) {
      absl::StatusOr<uint32_t> cmd = client.Read32(kBar0, kDmaCmd);
      ASSERT_TRUE(cmd.ok()) << cmd.status();
      if ((*cmd & 0x1) == 0) return;
      absl::SleepFor(absl::Milliseconds(1));
    }
    FAIL() << "edu DMA did not finish";
  }

  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<VfioClient> observer_;
};

TEST_F(VfioUserTest, QemuAttachSequenceAndTheEduDevice) {
  VfioUserClient client = Owner();
  EXPECT_TRUE(WaitFor([&] { return State().owner_attached(); }))
      << "the gRPC observer does not see the vfio-user owner";

  vfio_user::DeviceInfoPayload info_request{16, 0, 0, 0};
  absl::StatusOr<VfioUserClient::Reply> info =
      client.Call(Command::kDeviceGetInfo, BytesOf(info_request));
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(ErrorOf(*info), 0u);
  vfio_user::DeviceInfoPayload device_info;
  ASSERT_EQ(info->payload.size(), sizeof(device_info));
  std::memcpy(&device_info, info->payload.data(), sizeof(device_info));
  EXPECT_NE(device_info.flags & VFIO_DEVICE_FLAGS_PCI, 0u);
  EXPECT_GE(device_info.num_regions, 9u);
  EXPECT_EQ(device_info.num_irqs, 5u);

  // The config region, as QEMU reads it first: 256 bytes in one REGION_READ.
  vfio_region_info region_request = {};
  region_request.argsz = sizeof(region_request);
  region_request.index = kConfig;
  absl::StatusOr<VfioUserClient::Reply> region =
      client.Call(Command::kDeviceGetRegionInfo, BytesOf(region_request));
  ASSERT_TRUE(region.ok() && ErrorOf(*region) == 0);
  vfio_region_info config_info;
  std::memcpy(&config_info, region->payload.data(), sizeof(config_info));
  EXPECT_EQ(config_info.flags & (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE),
            VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE);
  EXPECT_EQ(config_info.flags & VFIO_REGION_INFO_FLAG_MMAP, 0u) << "no region is mmappable";
  absl::StatusOr<std::vector<uint8_t>> config = client.RegionRead(kConfig, 0, 256);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::string> over_grpc = observer_->DumpConfig(0, 256);
  ASSERT_TRUE(over_grpc.ok());
  EXPECT_EQ(std::string(config->begin(), config->end()), *over_grpc)
      << "config space differs between vfio-user and gRPC";
  // Unaligned pieces, as SeaBIOS and Linux read them.
  absl::StatusOr<std::vector<uint8_t>> device_id = client.RegionRead(kConfig, 2, 2);
  ASSERT_TRUE(device_id.ok());
  EXPECT_EQ(std::memcmp(device_id->data(), config->data() + 2, 2), 0);
  absl::StatusOr<std::vector<uint8_t>> odd = client.RegionRead(kConfig, 1, 6);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(std::memcmp(odd->data(), config->data() + 1, 6), 0);

  EnableDecodeAndMastering(client);
  absl::StatusOr<uint32_t> ident = client.Read32(kBar0, kIdent);
  ASSERT_TRUE(ident.ok()) << ident.status();
  EXPECT_EQ(*ident & 0xff, 0xedu);
  ASSERT_TRUE(client.Write32(kBar0, kLiveness, 0x12345678).ok());
  EXPECT_EQ(*client.Read32(kBar0, kLiveness), ~0x12345678u);
  ASSERT_TRUE(client.Write32(kBar0, kFactorial, 6).ok());
  ASSERT_TRUE(WaitFor([&] { return (*client.Read32(kBar0, kStatus) & 1) == 0; }));
  EXPECT_EQ(*client.Read32(kBar0, kFactorial), 720u);
}

TEST_F(VfioUserTest, DmaRoundTripThroughQemuStyleWindowsAndTheObserverSeesThem) {
  VfioUserClient client = Owner();
  int ram = SealedMemfd(kRamSize);
  // QEMU maps RAM in pieces of the same memfd, and ROM without an fd.
  ASSERT_TRUE(client.DmaMap(kRamAddress, kRamSize / 2, 0, vfio_user::kDmaMapRead |
                            vfio_user::kDmaMapWrite, ram).ok());
  ASSERT_TRUE(client.DmaMap(kRamAddress + kRamSize / 2, kRamSize / 2, kRamSize / 2,
                            vfio_user::kDmaMapRead | vfio_user::kDmaMapWrite, ram).ok());
  ASSERT_TRUE(client.DmaMap(0xfffc0000, 0x40000, 0, vfio_user::kDmaMapRead).ok());
  v1::DeviceState state = State();
  EXPECT_EQ(state.memory_size(), 1) << "one registration per file";
  ASSERT_EQ(state.dma_mappings_size(), 2) << "windows without an fd are not device mappings";
  EXPECT_EQ(state.dma_mappings(0).iova(), kRamAddress);
  EXPECT_EQ(state.dma_mappings(1).offset(), kRamSize / 2);

  auto* guest = static_cast<uint8_t*>(
      ::mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE, MAP_SHARED, ram, 0));
  ASSERT_NE(guest, MAP_FAILED);
  constexpr uint32_t kLength = 1024;
  for (uint32_t i = 0; i < kLength; ++i) guest[i] = static_cast<uint8_t>(i * 13 + 1);
  EnableDecodeAndMastering(client);
  Dma(client, kRamAddress, kDeviceBuffer, kLength, /*to_ram=*/false);
  // Into the second window: the device crosses from one window's file offset to the other's.
  Dma(client, kDeviceBuffer, kRamAddress + kRamSize / 2 + 0x1000, kLength, /*to_ram=*/true);
  EXPECT_EQ(std::memcmp(guest, guest + kRamSize / 2 + 0x1000, kLength), 0);

  // Unmapping one window keeps the file registered for the other; unmap-all drops everything.
  ASSERT_TRUE(client.DmaUnmap(kRamAddress, kRamSize / 2).ok());
  state = State();
  EXPECT_EQ(state.memory_size(), 1);
  EXPECT_EQ(state.dma_mappings_size(), 1);
  ASSERT_TRUE(client.DmaUnmap(0, 0, VFIO_DMA_UNMAP_FLAG_ALL).ok());
  state = State();
  EXPECT_EQ(state.memory_size(), 0);
  EXPECT_EQ(state.dma_mappings_size(), 0);
  // The ROM window went too: it can be mapped again.
  EXPECT_TRUE(client.DmaMap(0xfffc0000, 0x40000, 0, vfio_user::kDmaMapRead).ok());
  ::munmap(guest, kRamSize);
  ::close(ram);
}

TEST_F(VfioUserTest, MsiAndIntxThroughEventfdsSentWithSetIrqs) {
  VfioUserClient client = Owner();
  EnableDecodeAndMastering(client);
  int msi = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  vfio_irq_set set = {};
  set.argsz = sizeof(set);
  set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = VFIO_PCI_MSI_IRQ_INDEX;
  set.start = 0;
  set.count = 1;
  absl::StatusOr<VfioUserClient::Reply> reply =
      client.Call(Command::kDeviceSetIrqs, BytesOf(set), {msi});
  ASSERT_TRUE(reply.ok());
  ASSERT_EQ(ErrorOf(*reply), 0u);
  ASSERT_TRUE(client.Write32(kBar0, kIrqRaise, 0x1).ok());
  EXPECT_EQ(ReadEventfdWithin(msi, absl::Seconds(5)), 1u) << "no MSI on the eventfd";
  ASSERT_TRUE(client.Write32(kBar0, kIrqAck, 0x1).ok());
  v1::DeviceState state = State();
  bool msi_enabled = false;
  for (const auto& irq : state.irqs()) {
    if (irq.index() == v1::IRQ_INDEX_MSI) msi_enabled = irq.enabled();
  }
  EXPECT_TRUE(msi_enabled) << "the observer does not see QEMU's MSI trigger";

  // QEMU disables an index with DATA_NONE, count 0.
  set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.count = 0;
  reply = client.Call(Command::kDeviceSetIrqs, BytesOf(set));
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(ErrorOf(*reply), 0u);

  // INTx: trigger eventfd, then the resample (unmask) eventfd, flags as QEMU sends them.
  int intx = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int resample = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = VFIO_PCI_INTX_IRQ_INDEX;
  set.count = 1;
  reply = client.Call(Command::kDeviceSetIrqs, BytesOf(set), {intx});
  ASSERT_TRUE(reply.ok());
  ASSERT_EQ(ErrorOf(*reply), 0u);
  set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
  reply = client.Call(Command::kDeviceSetIrqs, BytesOf(set), {resample});
  ASSERT_TRUE(reply.ok());
  ASSERT_EQ(ErrorOf(*reply), 0u);
  ASSERT_TRUE(client.Write32(kBar0, kIrqRaise, 0x2).ok());
  EXPECT_EQ(ReadEventfdWithin(intx, absl::Seconds(5)), 1u) << "no INTx on the eventfd";
  EXPECT_EQ(*client.Read32(kBar0, kIrqStatus), 0x2u);
  ::close(msi);
  ::close(intx);
  ::close(resample);
}

TEST_F(VfioUserTest, OwnerLossReleasesEverythingAndANewClientAttaches) {
  {
    VfioUserClient client = Owner();
    int ram = SealedMemfd(kRamSize);
    ASSERT_TRUE(client.DmaMap(kRamAddress, kRamSize, 0,
                              vfio_user::kDmaMapRead | vfio_user::kDmaMapWrite, ram).ok());
    ASSERT_TRUE(client.DmaMap(0xfffc0000, 0x40000, 0, vfio_user::kDmaMapRead).ok());
    EnableDecodeAndMastering(client);
    int msi = ::eventfd(0, EFD_CLOEXEC);
    vfio_irq_set set = {sizeof(vfio_irq_set), VFIO_IRQ_SET_DATA_EVENTFD |
                        VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, 1};
    absl::StatusOr<VfioUserClient::Reply> reply =
        client.Call(Command::kDeviceSetIrqs, BytesOf(set), {msi});
    ASSERT_TRUE(reply.ok() && ErrorOf(*reply) == 0);
    ::close(msi);
    ::close(ram);
    EXPECT_EQ(State().dma_mappings_size(), 1);
  }  // the connection closes, as when QEMU is killed
  ASSERT_TRUE(WaitFor([&] { return !State().owner_attached(); }));
  v1::DeviceState state = State();
  EXPECT_EQ(state.memory_size(), 0);
  EXPECT_EQ(state.dma_mappings_size(), 0);
  for (const auto& irq : state.irqs()) EXPECT_FALSE(irq.enabled()) << irq.ShortDebugString();
  absl::StatusOr<uint32_t> command = observer_->ReadConfig(0x04, 2);
  ASSERT_TRUE(command.ok());
  EXPECT_EQ(*command & 0x4, 0u) << "bus mastering survived the owner";
  EXPECT_EQ(state.owner_losses(), 1u);

  // A new client attaches and maps the same addresses, ROM window included.
  VfioUserClient next = Owner();
  int ram = SealedMemfd(kRamSize);
  EXPECT_TRUE(next.DmaMap(kRamAddress, kRamSize, 0, vfio_user::kDmaMapRead, ram).ok());
  EXPECT_TRUE(next.DmaMap(0xfffc0000, 0x40000, 0, vfio_user::kDmaMapRead).ok());
  ::close(ram);
}

TEST_F(VfioUserTest, ASecondClientGetsEbusyAtVersionAndIsClosed) {
  VfioUserClient owner = Owner();
  absl::StatusOr<VfioUserClient> second = VfioUserClient::Connect(daemon_->vfio_user_path());
  ASSERT_TRUE(second.ok());
  absl::StatusOr<VfioUserClient::Reply> version = second->Version();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(ErrorOf(*version), static_cast<uint32_t>(EBUSY));
  EXPECT_TRUE(version->payload.empty()) << "an error reply carries no payload";
  char byte;
  EXPECT_EQ(::recv(second->socket().get(), &byte, 1, 0), 0) << "the connection stays open";
  // The owner is untouched.
  EXPECT_TRUE(owner.Read32(kConfig, 0).ok());
  // A gRPC client cannot claim the device either.
  EXPECT_EQ(observer_->ClaimOwnership().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(VfioUserTest, ACommandBeforeVersionIsRefusedAndClosed) {
  absl::StatusOr<VfioUserClient> client = VfioUserClient::Connect(daemon_->vfio_user_path());
  ASSERT_TRUE(client.ok());
  vfio_user::RegionAccessPayload read{0, kConfig, 4};
  absl::StatusOr<VfioUserClient::Reply> reply = client->Call(Command::kRegionRead, BytesOf(read));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(ErrorOf(*reply), static_cast<uint32_t>(EINVAL));
  char byte;
  EXPECT_EQ(::recv(client->socket().get(), &byte, 1, 0), 0);
  EXPECT_FALSE(State().owner_attached());
}

TEST_F(VfioUserTest, BrokenFramingEndsTheConnectionAndTheOwnership) {
  const struct {
    const char* what;
    vfio_user::Header header;
  } cases[] = {
      {"size below the header", {1, 9, 15, 0, 0}},
      {"size beyond the largest message", {1, 10, 64 << 20, 0, 0}},
      {"unknown header flags", {1, 9, 32, 1u << 7, 0}},
  };
  for (const auto& c : cases) {
    VfioUserClient client = Owner();
    ASSERT_TRUE(WaitFor([&] { return State().owner_attached(); })) << c.what;
    ASSERT_TRUE(client.SendRaw(BytesOf(c.header)).ok());
    char byte;
    EXPECT_EQ(::recv(client.socket().get(), &byte, 1, 0), 0) << c.what;
    EXPECT_TRUE(WaitFor([&] { return !State().owner_attached(); })) << c.what;
  }
}

TEST_F(VfioUserTest, SilentClientIsClosedAfterTheVersionTimeout) {
  absl::StatusOr<VfioUserClient> silent = VfioUserClient::Connect(daemon_->vfio_user_path());
  ASSERT_TRUE(silent.ok());
  const absl::Time start = absl::Now();
  char byte;
  EXPECT_EQ(::recv(silent->socket().get(), &byte, 1, 0), 0);
  EXPECT_GE(absl::Now() - start, absl::Seconds(4));
}

// --- hostile input: exact errno, no state change, the connection keeps serving -------------

struct HostileCase {
  const char* what;
  Command command;
  std::vector<uint8_t> payload;
  int fd_kind;  // 0: none; 1: sealed memfd; 2: pipe; 3: eventfd; 4: unsealed memfd
  int fd_count;
  uint32_t expected_errno;
};

template <typename T>
std::vector<uint8_t> Cut(const T& value, size_t size) {
  std::vector<uint8_t> bytes = BytesOf(value);
  bytes.resize(size);
  return bytes;
}

std::vector<HostileCase> HostileCases() {
  using vfio_user::DmaMapPayload;
  using vfio_user::DmaUnmapPayload;
  using vfio_user::RegionAccessPayload;
  constexpr uint32_t kRW = vfio_user::kDmaMapRead | vfio_user::kDmaMapWrite;
  const DmaMapPayload map{32, kRW, 0, 0x400000, 0x10000};
  std::vector<HostileCase> cases = {
      {"DMA_MAP short payload", Command::kDmaMap, Cut(map, 31), 0, 0, EINVAL},
      {"DMA_MAP argsz", Command::kDmaMap, BytesOf(DmaMapPayload{33, kRW, 0, 0x400000, 0x10000}),
       0, 0, EINVAL},
      {"DMA_MAP two fds", Command::kDmaMap, BytesOf(map), 1, 2, EINVAL},
      {"DMA_MAP unknown flags", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, 0x4, 0, 0x400000, 0x10000}), 1, 1, EINVAL},
      {"DMA_MAP size 0", Command::kDmaMap, BytesOf(DmaMapPayload{32, kRW, 0, 0x400000, 0}), 1, 1,
       EINVAL},
      {"DMA_MAP address + size wraps", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, kRW, 0, ~uint64_t{0} - 0xfff, 0x2000}), 0, 0, EINVAL},
      {"DMA_MAP offset + size wraps", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, kRW, ~uint64_t{0} - 0xfff, 0x400000, 0x2000}), 1, 1, EINVAL},
      {"DMA_MAP unaligned address", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, kRW, 0, 0x400800, 0x1000}), 1, 1, EINVAL},
      {"DMA_MAP beyond the file", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, kRW, 0x1000000, 0x400000, 0x1000}), 1, 1, EINVAL},
      {"DMA_MAP a pipe", Command::kDmaMap, BytesOf(map), 2, 1, EINVAL},
      {"DMA_MAP an unsealed memfd", Command::kDmaMap, BytesOf(map), 4, 1, EINVAL},
      {"DMA_MAP no access", Command::kDmaMap, BytesOf(DmaMapPayload{32, 0, 0, 0x400000, 0x1000}),
       1, 1, EINVAL},
      {"DMA_MAP in the MSI window", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, kRW, 0, 0xfee00000, 0x1000}), 1, 1, EINVAL},
      {"DMA_MAP overlapping", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, kRW, 0, kRamAddress + 0x1000, 0x1000}), 1, 1, EEXIST},
      {"DMA_MAP overlapping without fd", Command::kDmaMap,
       BytesOf(DmaMapPayload{32, 1, 0, kRamAddress - 0x1000, 0x2000}), 0, 0, EEXIST},
      {"DMA_UNMAP nothing there", Command::kDmaUnmap,
       BytesOf(DmaUnmapPayload{24, 0, 0x40000000, 0x1000}), 0, 0, ENOENT},
      {"DMA_UNMAP half a window", Command::kDmaUnmap,
       BytesOf(DmaUnmapPayload{24, 0, kRamAddress, 0x1000}), 0, 0, EINVAL},
      {"DMA_UNMAP dirty bitmap", Command::kDmaUnmap,
       BytesOf(DmaUnmapPayload{24, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, kRamAddress, kRamSize}),
       0, 0, EINVAL},
      {"DMA_UNMAP all with an address", Command::kDmaUnmap,
       BytesOf(DmaUnmapPayload{24, VFIO_DMA_UNMAP_FLAG_ALL, kRamAddress, 0}), 0, 0, EINVAL},
      {"DMA_UNMAP unknown flags", Command::kDmaUnmap,
       BytesOf(DmaUnmapPayload{24, 0x80, kRamAddress, kRamSize}), 0, 0, EINVAL},
      {"DMA_UNMAP short", Command::kDmaUnmap, Cut(DmaUnmapPayload{24, 0, kRamAddress, kRamSize}, 23),
       0, 0, EINVAL},
      {"DMA_UNMAP with an fd", Command::kDmaUnmap,
       BytesOf(DmaUnmapPayload{24, 0, kRamAddress, kRamSize}), 3, 1, EINVAL},
      {"DEVICE_GET_INFO short", Command::kDeviceGetInfo,
       Cut(vfio_user::DeviceInfoPayload{16, 0, 0, 0}, 15), 0, 0, EINVAL},
      {"DEVICE_GET_INFO argsz", Command::kDeviceGetInfo,
       BytesOf(vfio_user::DeviceInfoPayload{8, 0, 0, 0}), 0, 0, EINVAL},
      {"DEVICE_GET_REGION_INFO index", Command::kDeviceGetRegionInfo,
       BytesOf(vfio_region_info{32, 0, 0xffffffff, 0, 0, 0}), 0, 0, EINVAL},
      {"DEVICE_GET_REGION_INFO argsz", Command::kDeviceGetRegionInfo,
       BytesOf(vfio_region_info{16, 0, 0, 0, 0, 0}), 0, 0, EINVAL},
      {"DEVICE_GET_IRQ_INFO index", Command::kDeviceGetIrqInfo,
       BytesOf(vfio_irq_info{16, 0, 5, 0}), 0, 0, EINVAL},
      {"DEVICE_GET_REGION_IO_FDS count", Command::kDeviceGetRegionIoFds,
       BytesOf(vfio_user::RegionIoFdsPayload{16, 0, 0, 3}), 0, 0, EINVAL},
      {"REGION_READ no region", Command::kRegionRead, BytesOf(RegionAccessPayload{0, 9, 4}), 0, 0,
       EINVAL},
      {"REGION_READ huge region index", Command::kRegionRead,
       BytesOf(RegionAccessPayload{0, 0xffffffff, 4}), 0, 0, EINVAL},
      {"REGION_READ past the end", Command::kRegionRead,
       BytesOf(RegionAccessPayload{(1 << 20) - 2, 0, 4}), 0, 0, EINVAL},
      {"REGION_READ offset wraps", Command::kRegionRead,
       BytesOf(RegionAccessPayload{~uint64_t{0} - 1, 0, 4}), 0, 0, EINVAL},
      {"REGION_READ count 0", Command::kRegionRead, BytesOf(RegionAccessPayload{0, 0, 0}), 0, 0,
       EINVAL},
      {"REGION_READ beyond max_data_xfer_size", Command::kRegionRead,
       BytesOf(RegionAccessPayload{0, 0, 65537}), 0, 0, EINVAL},
      {"REGION_READ config past 256", Command::kRegionRead,
       BytesOf(RegionAccessPayload{254, kConfig, 4}), 0, 0, EINVAL},
      {"REGION_READ with data", Command::kRegionRead,
       [] {
         std::vector<uint8_t> p = BytesOf(RegionAccessPayload{0, 0, 4});
         p.resize(p.size() + 4);
         return p;
       }(),
       0, 0, EINVAL},
      {"REGION_READ with an fd", Command::kRegionRead, BytesOf(RegionAccessPayload{0, 0, 4}), 3,
       1, EINVAL},
      {"REGION_WRITE count beyond data", Command::kRegionWrite,
       BytesOf(RegionAccessPayload{0, 0, 8}), 0, 0, EINVAL},
      {"REGION_WRITE config past the end", Command::kRegionWrite,
       [] {
         std::vector<uint8_t> p = BytesOf(RegionAccessPayload{255, kConfig, 2});
         p.resize(p.size() + 2);
         return p;
       }(),
       0, 0, EINVAL},
      {"DEVICE_SET_IRQS short", Command::kDeviceSetIrqs,
       Cut(vfio_irq_set{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 1, 0, 0}, 19),
       0, 0, EINVAL},
      {"DEVICE_SET_IRQS argsz", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{24, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 1, 0, 0}), 0,
       0, EINVAL},
      {"DEVICE_SET_IRQS two data kinds", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_EVENTFD |
                                    VFIO_IRQ_SET_ACTION_TRIGGER, 1, 0, 1}),
       3, 1, EINVAL},
      {"DEVICE_SET_IRQS no action", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_NONE, 1, 0, 0}), 0, 0, EINVAL},
      {"DEVICE_SET_IRQS unknown flag", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER | (1u << 9),
                            1, 0, 0}),
       0, 0, EINVAL},
      {"DEVICE_SET_IRQS index 5", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 5, 0, 0}), 0,
       0, EINVAL},
      {"DEVICE_SET_IRQS start + count wraps", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 1,
                            0xffffffff, 1}),
       3, 1, EINVAL},
      {"DEVICE_SET_IRQS more fds than count", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 1, 0, 1}),
       3, 2, EINVAL},
      {"DEVICE_SET_IRQS a pipe as eventfd", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 1, 0, 1}),
       2, 1, EINVAL},
      {"DEVICE_SET_IRQS fds with DATA_NONE", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 1, 0, 0}), 3,
       1, EINVAL},
      {"DEVICE_SET_IRQS bools missing", Command::kDeviceSetIrqs,
       BytesOf(vfio_irq_set{20, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK, 1, 0, 1}), 0, 0,
       EINVAL},
      {"DEVICE_RESET with a payload", Command::kDeviceReset, {1, 2, 3, 4}, 0, 0, EINVAL},
      {"VERSION again", Command::kVersion, {0, 0, 0, 0}, 0, 0, EINVAL},
      {"DMA_READ from the client", Command::kDmaRead, std::vector<uint8_t>(16), 0, 0, EINVAL},
      {"DEVICE_FEATURE", Command::kDeviceFeature, std::vector<uint8_t>(8), 0, 0, ENOTSUP},
      {"REGION_WRITE_MULTI", Command::kRegionWriteMulti, std::vector<uint8_t>(8), 0, 0, ENOTSUP},
      {"unknown command", static_cast<Command>(200), {}, 0, 0, ENOTSUP},
  };
  return cases;
}

int MakeFd(int kind) {
  switch (kind) {
    case 1:
      return SealedMemfd(kRamSize);
    case 2: {
      int pipe_fds[2];
      if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
      ::close(pipe_fds[1]);
      return pipe_fds[0];
    }
    case 3:
      return ::eventfd(0, EFD_CLOEXEC);
    case 4: {
      int fd = ::memfd_create("unsealed", MFD_CLOEXEC);
      if (fd >= 0 && ::ftruncate(fd, kRamSize) != 0) ADD_FAILURE() << "ftruncate";
      return fd;
    }
  }
  return -1;
}

TEST_F(VfioUserTest, HostileCommandsGetTheirErrnoAndChangeNothing) {
  VfioUserClient client = Owner();
  // Something to overlap and to leave untouched: a RAM window and an enabled MSI trigger.
  int ram = SealedMemfd(kRamSize);
  ASSERT_TRUE(client.DmaMap(kRamAddress, kRamSize, 0,
                            vfio_user::kDmaMapRead | vfio_user::kDmaMapWrite, ram).ok());
  ::close(ram);
  int msi = ::eventfd(0, EFD_CLOEXEC);
  vfio_irq_set set = {sizeof(vfio_irq_set), VFIO_IRQ_SET_DATA_EVENTFD |
                      VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, 1};
  absl::StatusOr<VfioUserClient::Reply> enabled =
      client.Call(Command::kDeviceSetIrqs, BytesOf(set), {msi});
  ASSERT_TRUE(enabled.ok() && ErrorOf(*enabled) == 0);
  ::close(msi);
  const std::string before = Fingerprint();

  for (const HostileCase& c : HostileCases()) {
    std::vector<int> fds;
    for (int i = 0; i < c.fd_count; ++i) fds.push_back(MakeFd(c.fd_kind));
    absl::StatusOr<VfioUserClient::Reply> reply = client.Call(c.command, c.payload, fds);
    for (int fd : fds) ::close(fd);
    ASSERT_TRUE(reply.ok()) << c.what << ": " << reply.status();
    EXPECT_EQ(ErrorOf(*reply), c.expected_errno) << c.what;
    EXPECT_TRUE(reply->payload.empty()) << c.what << ": an error reply carries no payload";
    EXPECT_EQ(Fingerprint(), before) << c.what << " changed the state";
    absl::StatusOr<uint32_t> alive = client.Read32(kConfig, 0);
    ASSERT_TRUE(alive.ok()) << c.what << " ended the connection: " << alive.status();
  }
}

TEST_F(VfioUserTest, PostedWritesGetNoReplyAndAreDoneInOrder) {
  VfioUserClient client = Owner();
  EnableDecodeAndMastering(client);
  vfio_user::RegionAccessPayload write{kLiveness, kBar0, 4};
  for (uint32_t value = 1; value <= 100; ++value) {
    std::vector<uint8_t> payload = BytesOf(write);
    std::vector<uint8_t> data = BytesOf(value);
    payload.insert(payload.end(), data.begin(), data.end());
    ASSERT_TRUE(client.Call(Command::kRegionWrite, payload, {}, vfio_user::kFlagNoReply).ok());
  }
  // The next reply is the read's: no reply was sent for the posted writes.
  absl::StatusOr<uint32_t> value = client.Read32(kBar0, kLiveness);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, ~100u);
}

// Ended connections' threads are reaped: a daemon that served many short vfio-user sessions
// holds no more memory than after the first ones (each unjoined thread kept about 16 KiB of
// stack).
TEST_F(VfioUserTest, ManyShortSessionsLeaveNoMemoryBehind) {
  if (kSanitizerBuild) GTEST_SKIP() << "a sanitizer's allocator keeps freed memory: RSS says nothing";
  absl::StatusOr<pid_t> pid = daemon_->ServingPid();
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto rss_kib = [&] {
    std::ifstream status(absl::StrCat("/proc/", *pid, "/status"));
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    ADD_FAILURE() << "no VmRSS for pid " << *pid;
    return 0L;
  };
  auto sessions = [&](int n) {
    for (int i = 0; i < n; ++i) {
      VfioUserClient client = Owner();
      ASSERT_TRUE(client.Read32(kConfig, 0).ok());
      client = VfioUserClient(UniqueFd());
      ASSERT_TRUE(WaitFor([&] { return !State().owner_attached(); }));
    }
  };
  sessions(50);  // allocator and gRPC warm-up
  const long before = rss_kib();
  sessions(300);
  const long after = rss_kib();
  EXPECT_LT(after - before, 2048) << "RSS grew from " << before << " to " << after
                                  << " KiB over 300 sessions";
}

TEST(VfioUserQuotaTest, SilentConnectionsGiveWayToAClientThatSpeaks) {
  absl::StatusOr<std::unique_ptr<DaemonProcess>> daemon =
      DaemonProcess::Start({"--max-vfio-user-connections=2"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<VfioUserClient> first = VfioUserClient::Connect((*daemon)->vfio_user_path());
  absl::StatusOr<VfioUserClient> second = VfioUserClient::Connect((*daemon)->vfio_user_path());
  ASSERT_TRUE(first.ok() && second.ok());
  absl::SleepFor(absl::Milliseconds(200));  // both admitted, both silent
  absl::StatusOr<VfioUserClient> owner = VfioUserClient::Connect((*daemon)->vfio_user_path());
  ASSERT_TRUE(owner.ok());
  absl::StatusOr<VfioUserClient::Reply> version = owner->Version();
  ASSERT_TRUE(version.ok()) << "the newcomer was refused: " << version.status();
  EXPECT_EQ(ErrorOf(*version), 0u);
  char byte;
  EXPECT_EQ(::recv(first->socket().get(), &byte, 1, 0), 0) << "the oldest silent one goes";
  // The owner, having spoken, is never evicted: two more silent peers cannot take its slot.
  absl::StatusOr<VfioUserClient> third = VfioUserClient::Connect((*daemon)->vfio_user_path());
  absl::StatusOr<VfioUserClient> fourth = VfioUserClient::Connect((*daemon)->vfio_user_path());
  ASSERT_TRUE(third.ok() && fourth.ok());
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_TRUE(owner->Read32(7, 0).ok());
}

TEST(VfioUserSpawnTest, InheritedSocketIsTheOwnerAndTheDaemonExitsWhenItCloses) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);  // the daemon's end is inherited
  std::vector<std::string> argv = {DaemonProcess::BinaryPath(),
                                   "--device=" + DaemonProcess::DeviceName(),
                                   absl::StrCat("--vfio-user-fd=", pair[0])};
  for (const std::string& arg : DaemonProcess::BaseArgs()) argv.push_back(arg);
  absl::StatusOr<pid_t> pid = SpawnProcess(argv);
  ASSERT_TRUE(pid.ok()) << pid.status();
  ::close(pair[0]);
  ::fcntl(pair[1], F_SETFD, FD_CLOEXEC);
  VfioUserClient client{UniqueFd(pair[1])};
  absl::StatusOr<VfioUserClient::Reply> version = client.Version();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(ErrorOf(*version), 0u);
  absl::StatusOr<uint32_t> ids = client.Read32(kConfig, 0);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids & 0xffff, 0x1234u);
  client = VfioUserClient(UniqueFd());  // closes the connection
  int status = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  pid_t done = 0;
  while ((done = ::waitpid(*pid, &status, WNOHANG)) == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (done == 0) {
    ::kill(*pid, SIGKILL);
    ::waitpid(*pid, &status, 0);
    FAIL() << "the daemon did not exit when its only vfio-user connection closed";
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

}  // namespace
}  // namespace vfiod::testing
