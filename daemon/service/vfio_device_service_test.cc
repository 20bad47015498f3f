// VfioDeviceService against a fake device, in-process: the handlers are called directly, the
// calling connection comes from FakeTransport, and sessions, roles and fd tokens are the
// real SessionManager's.
#include "daemon/service/vfio_device_service.h"

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "daemon/base/owner_cleanup.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/fake_backend.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/session_manager.h"
#include "daemon/transport/fake_transport.h"
#include "daemon/transport/transport.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

constexpr uid_t kOwnerUid = 1000;
constexpr uid_t kObserverUid = 2000;
constexpr uint32_t kMaxFdTokens = 4;
constexpr uint64_t kBarSize = 0x1000;
constexpr uint64_t kMemorySize = 0x2000;

// A sealed memfd of `size` bytes, as a VMM registers guest memory.
UniqueFd MakeMemfd(uint64_t size) {
  UniqueFd fd(::memfd_create("vfio_device_service_test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
  return fd;
}

FdChannelKey KeyFor(FdChannelId channel) {
  FdChannelKey key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(channel * 31 + i);
  return key;
}

std::string KeyString(const FdChannelKey& key) {
  return std::string(reinterpret_cast<const char*>(key.data()), key.size());
}

class VfioDeviceServiceTest : public ::testing::Test {
 protected:
  VfioDeviceServiceTest() : sessions_(&cleanup_, SessionOptions{{kOwnerUid}, kMaxFdTokens, {}}) {}

  void SetUp() override {
    auto backend = std::make_unique<FakeBackend>(256);
    backend_ = backend.get();
    backend->AddMemoryBar(0, kBarSize, false, false);
    backend->SetConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    limits_.max_memory_bytes = 0x10000;
    limits_.max_memory_regions = 3;
    limits_.max_dma_mappings = 5;
    limits_.max_region_access_bytes = 256;
    limits_.max_irq_watchers = 2;
    absl::StatusOr<std::unique_ptr<PciDevice>> device =
        PciDevice::Create(std::move(backend), limits_);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = *std::move(device);
    ASSERT_TRUE(device_->Start().ok());
    device_->RegisterOwnerCleanup(cleanup_);
    sessions_.set_transport(&transport_);
    service_ = MakeService(/*observer_bar_reads=*/false);

    sessions_.OnConnectionOpened(kOwner, PeerCredentials{10, kOwnerUid, kOwnerUid}, false);
    sessions_.OnConnectionOpened(kObserver, PeerCredentials{20, kObserverUid, kObserverUid}, false);
  }

  std::unique_ptr<VfioDeviceService> MakeService(bool observer_bar_reads) {
    ServiceOptions options;
    options.observer_bar_reads = observer_bar_reads;
    options.max_fd_tokens = kMaxFdTokens;
    options.daemon_version = "test-version";
    return std::make_unique<VfioDeviceService>(device_.get(), &sessions_, &transport_, options);
  }

  // Makes `id` the caller of the next handler calls.
  VfioDeviceService& As(std::optional<ConnectionId> id) {
    transport_.set_caller(id);
    return *service_;
  }

  void Claim(ConnectionId id) {
    v1::ClaimOwnershipResponse response;
    grpc::Status status = As(id).ClaimOwnership(&context_, &claim_ownership_request_, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  // Opens an fd channel for `id`, binds it through the service, and sends `fds` on it; returns
  // their tokens in hex.
  std::vector<std::string> SendFds(ConnectionId id, FdChannelId channel,
                                   std::vector<UniqueFd> fds) {
    const FdChannelKey key = KeyFor(channel);
    sessions_.OnFdChannelOpened(channel, key, PeerCredentials{30, kOwnerUid, kOwnerUid},
                                std::nullopt);
    v1::BindFdChannelRequest bind;
    bind.set_channel_key(KeyString(key));
    v1::BindFdChannelResponse bound;
    grpc::Status status = As(id).BindFdChannel(&context_, &bind, &bound);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return Send(channel, std::move(fds));
  }

  // Sends `fds` on an open channel; returns their tokens in hex.
  std::vector<std::string> Send(FdChannelId channel, std::vector<UniqueFd> fds) {
    absl::StatusOr<std::vector<FdTokenBytes>> tokens =
        sessions_.OnFdsReceived(channel, std::move(fds));
    EXPECT_TRUE(tokens.ok()) << tokens.status();
    std::vector<std::string> hex;
    if (tokens.ok()) {
      for (const FdTokenBytes& token : *tokens) hex.push_back(FdTokenToHex(token));
    }
    return hex;
  }

  grpc::Status RegisterMemory(ConnectionId id, const std::string& token,
                              uint64_t* memory_id = nullptr) {
    v1::RegisterMemoryRequest request;
    request.set_fd_token(token);
    request.set_size(kMemorySize);
    v1::RegisterMemoryResponse response;
    grpc::Status status = As(id).RegisterMemory(&context_, &request, &response);
    if (memory_id != nullptr) *memory_id = response.memory_id();
    return status;
  }

  grpc::Status MapDma(ConnectionId id, uint64_t memory_id) {
    v1::MapDmaRequest request;
    request.set_iova(0x100000);
    request.set_size(kMemorySize);
    request.set_memory_id(memory_id);
    request.set_device_read(true);
    request.set_device_write(true);
    v1::MapDmaResponse response;
    return As(id).MapDma(&context_, &request, &response);
  }

  grpc::Status ReadBar(VfioDeviceService& service, ConnectionId id) {
    transport_.set_caller(id);
    v1::ReadRegionRequest request;
    request.set_index(0);
    request.set_offset(0);
    request.set_size(4);
    v1::ReadRegionResponse response;
    return service.ReadRegion(&context_, &request, &response);
  }

  v1::DeviceState State(ConnectionId id) {
    v1::DeviceState state;
    grpc::Status status = As(id).GetState(&context_, &get_state_request_, &state);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return state;
  }

  static constexpr ConnectionId kOwner = 1;
  static constexpr ConnectionId kObserver = 2;

  OwnerCleanup cleanup_;
  FakeBackend* backend_ = nullptr;
  DeviceLimits limits_;
  std::unique_ptr<PciDevice> device_;
  FakeTransport transport_;
  SessionManager sessions_;
  std::unique_ptr<VfioDeviceService> service_;
  grpc::ServerContext context_;
  const v1::GetDeviceInfoRequest get_device_info_request_;
  const v1::ClaimOwnershipRequest claim_ownership_request_;
  const v1::ReleaseOwnershipRequest release_ownership_request_;
  const v1::GetStateRequest get_state_request_;
};

#define EXPECT_DENIED(status, rpc)                                                        \
  do {                                                                                    \
    const grpc::Status denied = (status);                                                 \
    EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED) << (rpc);         \
    EXPECT_TRUE(absl::StartsWith(denied.error_message(), rpc)) << denied.error_message(); \
  } while (false)

TEST_F(VfioDeviceServiceTest, AnUnknownConnectionIsUnavailableNamingTheRpc) {
  v1::DeviceInfo info;
  grpc::Status status = As(std::nullopt).GetDeviceInfo(&context_, &get_device_info_request_, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(absl::StartsWith(status.error_message(), "GetDeviceInfo")) << status.error_message();
  v1::ReadConfigRequest request;
  v1::ReadConfigResponse response;
  status = As(/*closed connection*/ 99).ReadConfig(&context_, &request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(VfioDeviceServiceTest, ObserversReadButOwnerOperationsAreDeniedNamingTheRpc) {
  v1::ClaimOwnershipResponse claimed;
  EXPECT_EQ(
      As(kObserver).ClaimOwnership(&context_, &claim_ownership_request_, &claimed).error_code(),
      grpc::StatusCode::PERMISSION_DENIED)
      << "the observer's uid may not claim";
  Claim(kOwner);
  VfioDeviceService& observer = As(kObserver);

  v1::DeviceInfo info;
  EXPECT_TRUE(observer.GetDeviceInfo(&context_, &get_device_info_request_, &info).ok());
  v1::ReadConfigRequest read_config;
  read_config.set_offset(PCI_VENDOR_ID);
  read_config.set_size(2);
  v1::ReadConfigResponse config_value;
  ASSERT_TRUE(observer.ReadConfig(&context_, &read_config, &config_value).ok());
  EXPECT_EQ(config_value.value(), 0x1234u);
  v1::DumpConfigRequest dump;
  dump.set_length(64);
  v1::DumpConfigResponse dumped;
  ASSERT_TRUE(observer.DumpConfig(&context_, &dump, &dumped).ok());
  EXPECT_EQ(dumped.data().size(), 64u);
  EXPECT_EQ(State(kObserver).caller_role(), v1::ROLE_OBSERVER);

  const std::vector<uint8_t> config_before = backend_->config();
  v1::WriteConfigRequest write_config;
  write_config.set_offset(PCI_COMMAND);
  write_config.set_size(2);
  write_config.set_value(0);
  v1::WriteConfigResponse written_config;
  EXPECT_DENIED(observer.WriteConfig(&context_, &write_config, &written_config), "WriteConfig");
  v1::WriteRegionRequest write_region;
  write_region.set_index(0);
  write_region.set_data("abcd");
  v1::WriteRegionResponse written_region;
  EXPECT_DENIED(observer.WriteRegion(&context_, &write_region, &written_region), "WriteRegion");
  v1::RegisterMemoryRequest register_memory;
  v1::RegisterMemoryResponse registered;
  EXPECT_DENIED(observer.RegisterMemory(&context_, &register_memory, &registered),
                "RegisterMemory");
  v1::UnregisterMemoryRequest unregister_memory;
  v1::UnregisterMemoryResponse unregistered;
  EXPECT_DENIED(observer.UnregisterMemory(&context_, &unregister_memory, &unregistered),
                "UnregisterMemory");
  v1::MapDmaRequest map;
  v1::MapDmaResponse mapped;
  EXPECT_DENIED(observer.MapDma(&context_, &map, &mapped), "MapDma");
  v1::UnmapDmaRequest unmap;
  v1::UnmapDmaResponse unmapped;
  EXPECT_DENIED(observer.UnmapDma(&context_, &unmap, &unmapped), "UnmapDma");
  v1::SetIrqsRequest set_irqs;
  v1::SetIrqsResponse irqs_set;
  EXPECT_DENIED(observer.SetIrqs(&context_, &set_irqs, &irqs_set), "SetIrqs");
  v1::ResetRequest reset;
  v1::ResetResponse was_reset;
  EXPECT_DENIED(observer.Reset(&context_, &reset, &was_reset), "Reset");
  EXPECT_EQ(backend_->config(), config_before);
  EXPECT_EQ(backend_->reset_calls(), 0);

  // The owner may, and GetState tells it its role.
  EXPECT_EQ(State(kOwner).caller_role(), v1::ROLE_OWNER);
  write_config.set_value(PCI_COMMAND_MEMORY);
  EXPECT_TRUE(As(kOwner).WriteConfig(&context_, &write_config, &written_config).ok());
  EXPECT_TRUE(As(kOwner).WriteRegion(&context_, &write_region, &written_region).ok());

  // A second owner is refused while the first holds the device.
  sessions_.OnConnectionOpened(3, PeerCredentials{40, kOwnerUid, kOwnerUid}, false);
  EXPECT_EQ(As(3).ClaimOwnership(&context_, &claim_ownership_request_, &claimed).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(VfioDeviceServiceTest, BarReadsAreTheOwnersUnlessObserverBarReads) {
  Claim(kOwner);
  EXPECT_TRUE(ReadBar(*service_, kOwner).ok());
  EXPECT_DENIED(ReadBar(*service_, kObserver), "ReadRegion");

  // Config space through ReadRegion (region 7) is any role's, as ReadConfig.
  transport_.set_caller(kObserver);
  v1::ReadRegionRequest config;
  config.set_index(kConfigRegionIndex);
  config.set_size(4);
  v1::ReadRegionResponse config_data;
  ASSERT_TRUE(service_->ReadRegion(&context_, &config, &config_data).ok());
  EXPECT_EQ(config_data.data(), std::string("\x34\x12\xe8\x11", 4));

  std::unique_ptr<VfioDeviceService> lenient = MakeService(/*observer_bar_reads=*/true);
  EXPECT_TRUE(ReadBar(*lenient, kObserver).ok());
  // Writes stay the owner's.
  transport_.set_caller(kObserver);
  v1::WriteRegionRequest write;
  write.set_index(0);
  write.set_data("abcd");
  v1::WriteRegionResponse written;
  EXPECT_DENIED(lenient->WriteRegion(&context_, &write, &written), "WriteRegion");
}

TEST_F(VfioDeviceServiceTest, FdTokensAreUsableOnceAndOnlyByTheirSession) {
  Claim(kOwner);
  std::vector<UniqueFd> fds;
  fds.push_back(MakeMemfd(kMemorySize));
  fds.push_back(MakeMemfd(kMemorySize));
  const std::vector<std::string> tokens = SendFds(kOwner, 100, std::move(fds));
  ASSERT_EQ(tokens.size(), 2u);

  uint64_t memory_id = 0;
  grpc::Status status = RegisterMemory(kOwner, tokens[0], &memory_id);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(memory_id, 0u);
  ASSERT_EQ(State(kOwner).memory_size(), 1);

  status = RegisterMemory(kOwner, tokens[0]);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << "a token is used once";
  EXPECT_TRUE(absl::StartsWith(status.error_message(), "RegisterMemory")) << status.error_message();
  status = RegisterMemory(kOwner, "not hex");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Another session's token is unknown to the owner.
  std::vector<UniqueFd> observer_fds;
  observer_fds.push_back(MakeMemfd(kMemorySize));
  const std::vector<std::string> observer_tokens = SendFds(kObserver, 200, std::move(observer_fds));
  ASSERT_EQ(observer_tokens.size(), 1u);
  EXPECT_EQ(RegisterMemory(kOwner, observer_tokens[0]).error_code(), grpc::StatusCode::NOT_FOUND);

  // ReleaseFdTokens closes the session's own unused fds, all or nothing.
  v1::ReleaseFdTokensRequest release;
  release.add_fd_tokens(tokens[1]);
  release.add_fd_tokens(observer_tokens[0]);
  v1::ReleaseFdTokensResponse released;
  EXPECT_EQ(As(kOwner).ReleaseFdTokens(&context_, &release, &released).error_code(),
            grpc::StatusCode::NOT_FOUND);
  release.clear_fd_tokens();
  release.add_fd_tokens(tokens[1]);
  ASSERT_TRUE(As(kOwner).ReleaseFdTokens(&context_, &release, &released).ok());
  EXPECT_EQ(released.released(), 1u);
  EXPECT_EQ(RegisterMemory(kOwner, tokens[1]).error_code(), grpc::StatusCode::NOT_FOUND);

  release.clear_fd_tokens();
  release.add_fd_tokens("");
  EXPECT_EQ(As(kObserver).ReleaseFdTokens(&context_, &release, &released).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(VfioDeviceServiceTest, OwnerLossClearsMemoryMappingsAndUnusedTokens) {
  Claim(kOwner);
  std::vector<UniqueFd> fds;
  fds.push_back(MakeMemfd(kMemorySize));
  fds.push_back(MakeMemfd(kMemorySize));
  const std::vector<std::string> tokens = SendFds(kOwner, 100, std::move(fds));
  ASSERT_EQ(tokens.size(), 2u);
  uint64_t memory_id = 0;
  ASSERT_TRUE(RegisterMemory(kOwner, tokens[0], &memory_id).ok());
  grpc::Status status = MapDma(kOwner, memory_id);
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::DeviceState state = State(kObserver);
  EXPECT_TRUE(state.owner_attached());
  EXPECT_EQ(state.memory_size(), 1);
  EXPECT_EQ(state.dma_mappings_size(), 1);
  EXPECT_EQ(backend_->mappings().size(), 1u);

  v1::ReleaseOwnershipResponse released;
  ASSERT_TRUE(As(kOwner).ReleaseOwnership(&context_, &release_ownership_request_, &released).ok());
  state = State(kObserver);
  EXPECT_FALSE(state.owner_attached());
  EXPECT_EQ(state.owner_losses(), 1u);
  EXPECT_EQ(state.memory_size(), 0);
  EXPECT_EQ(state.dma_mappings_size(), 0);
  EXPECT_TRUE(backend_->mappings().empty());
  EXPECT_EQ(State(kOwner).caller_role(), v1::ROLE_OBSERVER);
  EXPECT_DENIED(MapDma(kOwner, memory_id), "MapDma");

  // The unused token went with the ownership; the session may claim again and start afresh.
  Claim(kOwner);
  EXPECT_EQ(RegisterMemory(kOwner, tokens[1]).error_code(), grpc::StatusCode::NOT_FOUND);

  // Closing the owner's connection is an owner loss too.
  sessions_.OnConnectionClosed(kOwner);
  state = State(kObserver);
  EXPECT_FALSE(state.owner_attached());
  EXPECT_EQ(state.owner_losses(), 2u);
  EXPECT_EQ(state.sessions(), 1u);
}

TEST_F(VfioDeviceServiceTest, DeviceInfoReportsTheLimitsThatAreEnforced) {
  v1::DeviceInfo info;
  ASSERT_TRUE(As(kObserver).GetDeviceInfo(&context_, &get_device_info_request_, &info).ok());
  EXPECT_EQ(info.daemon_version(), "test-version");
  EXPECT_EQ(info.config_size(), 256u);
  EXPECT_EQ(info.limits().max_memory_bytes(), limits_.max_memory_bytes);
  EXPECT_EQ(info.limits().max_memory_regions(), limits_.max_memory_regions);
  EXPECT_EQ(info.limits().max_dma_mappings(), limits_.max_dma_mappings);
  EXPECT_EQ(info.limits().max_region_access_bytes(), limits_.max_region_access_bytes);
  EXPECT_EQ(info.limits().max_fds_per_message(), v1::kFdChannelMaxFdsPerMessage);
  EXPECT_EQ(info.limits().max_fd_tokens(), kMaxFdTokens);

  Claim(kOwner);
  // A region access above max_region_access_bytes.
  transport_.set_caller(kOwner);
  v1::ReadRegionRequest read;
  read.set_index(0);
  read.set_size(info.limits().max_region_access_bytes() + 1);
  v1::ReadRegionResponse data;
  grpc::Status status = service_->ReadRegion(&context_, &read, &data);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  read.set_size(info.limits().max_region_access_bytes());
  EXPECT_TRUE(service_->ReadRegion(&context_, &read, &data).ok());

  // ReleaseFdTokens takes at most max_fd_tokens tokens per request.
  v1::ReleaseFdTokensRequest release;
  for (uint32_t i = 0; i <= info.limits().max_fd_tokens(); ++i) release.add_fd_tokens("00");
  v1::ReleaseFdTokensResponse released;
  EXPECT_EQ(As(kOwner).ReleaseFdTokens(&context_, &release, &released).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // No more than max_fd_tokens unused fds per session.
  std::vector<UniqueFd> fds;
  for (uint32_t i = 0; i < kMaxFdTokens; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  const std::vector<std::string> eventfd_tokens = SendFds(kOwner, 100, std::move(fds));
  ASSERT_EQ(eventfd_tokens.size(), kMaxFdTokens);
  std::vector<UniqueFd> one_more;
  one_more.emplace_back(::eventfd(0, EFD_CLOEXEC));
  EXPECT_EQ(sessions_.OnFdsReceived(100, std::move(one_more)).status().code(),
            absl::StatusCode::kResourceExhausted);

  // Memory regions beyond max_memory_regions are refused. (The eventfds are released first to
  // make room for the memfds' tokens.)
  release.clear_fd_tokens();
  for (const std::string& token : eventfd_tokens) release.add_fd_tokens(token);
  ASSERT_TRUE(As(kOwner).ReleaseFdTokens(&context_, &release, &released).ok());
  std::vector<UniqueFd> memfds;
  for (uint32_t i = 0; i <= limits_.max_memory_regions; ++i) {
    memfds.push_back(MakeMemfd(kMemorySize));
  }
  const std::vector<std::string> tokens = Send(100, std::move(memfds));
  ASSERT_EQ(tokens.size(), limits_.max_memory_regions + 1);
  for (uint32_t i = 0; i < limits_.max_memory_regions; ++i) {
    ASSERT_TRUE(RegisterMemory(kOwner, tokens[i]).ok()) << i;
  }
  EXPECT_EQ(RegisterMemory(kOwner, tokens.back()).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

}  // namespace
}  // namespace vfiod
