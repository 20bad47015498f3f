// Hostile input through the real daemon: one group of cases per class in the security notes
// (config, regions, memory and DMA, IRQs, protocol). Each case asserts the exact gRPC code and
// that the device state did not change.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/vfio_client.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/vfiod/v1/vfiod.grpc.pb.h"
#include "tests/daemon_process.h"

namespace vfiod {
namespace {

using absl::StatusCode;

constexpr uint64_t kMemorySize = 1 << 20;

class HostileInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
        testing::DaemonProcess::Start({"--max-dma-mappings=8"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    absl::StatusOr<std::unique_ptr<VfioClient>> owner = VfioClient::Connect(daemon_->socket_path());
    ASSERT_TRUE(owner.ok()) << owner.status();
    owner_ = *std::move(owner);
    ASSERT_TRUE(owner_->ClaimOwnership().ok());
    absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("guest", kMemorySize);
    ASSERT_TRUE(memfd.ok());
    absl::StatusOr<v1::RegisterMemoryResponse> memory =
        owner_->RegisterMemory(memfd->get(), kMemorySize);
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_id_ = memory->memory_id();
    ASSERT_TRUE(owner_->MapDma(0x200000, 0x10000, memory_id_, 0).ok());
    baseline_ = Fingerprint();
  }

  // What must not change when a request fails: mappings, memory, IRQ state, config space.
  std::string Fingerprint() {
    absl::StatusOr<v1::DeviceState> state = owner_->GetState();
    EXPECT_TRUE(state.ok()) << state.status();
    std::string print;
    for (const auto& m : state->dma_mappings()) print += m.DebugString();
    for (const auto& m : state->memory()) print += m.DebugString();
    for (const auto& i : state->irqs()) print += i.DebugString();
    absl::StatusOr<std::string> config = owner_->DumpConfig();
    EXPECT_TRUE(config.ok()) << config.status();
    return print + config.value_or("");
  }

  void ExpectUnchanged() { EXPECT_EQ(Fingerprint(), baseline_); }

  std::unique_ptr<testing::DaemonProcess> daemon_;
  std::unique_ptr<VfioClient> owner_;
  uint64_t memory_id_ = 0;
  std::string baseline_;
};

TEST_F(HostileInputTest, ConfigSpace) {
  for (uint32_t size : {0u, 3u, 5u, 8u, 0xffffffffu}) {
    EXPECT_EQ(owner_->ReadConfig(0, size).status().code(), StatusCode::kInvalidArgument) << size;
    EXPECT_EQ(owner_->WriteConfig(0x3c, size, 0).code(), StatusCode::kInvalidArgument) << size;
  }
  EXPECT_EQ(owner_->ReadConfig(0x41, 2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->ReadConfig(0x42, 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->WriteConfig(0x3d, 2, 0xffff).code(), StatusCode::kInvalidArgument);
  // Beyond a 256-byte config space (extended config does not exist here), and near 2^32.
  EXPECT_EQ(owner_->ReadConfig(0x100, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->ReadConfig(0xfffffffc, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->WriteConfig(0xfffffffc, 4, 0).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->DumpConfig(2, 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->DumpConfig(0, 6).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->DumpConfig(0xfc, 8).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->DumpConfig(0xfffffffc, 8).status().code(), StatusCode::kOutOfRange);
  ExpectUnchanged();
  // BAR sizing writes are virtualised: the BAR reads back its size mask, and is restorable.
  uint32_t bar0 = *owner_->ReadConfig(0x10, 4);
  ASSERT_TRUE(owner_->WriteConfig(0x10, 4, 0xffffffff).ok());
  EXPECT_EQ(*owner_->ReadConfig(0x10, 4) & 0xfffffff0u, 0xfff00000u);
  ASSERT_TRUE(owner_->WriteConfig(0x10, 4, bar0).ok());
  ExpectUnchanged();
}

TEST_F(HostileInputTest, Regions) {
  EXPECT_EQ(owner_->ReadRegion(99, 0, 4).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(owner_->ReadRegion(0xffffffff, 0, 4).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(owner_->ReadRegion(1, 0, 4).status().code(), StatusCode::kNotFound);  // size 0
  EXPECT_EQ(owner_->ReadRegion(0, 0, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->ReadRegion(0, 1 << 20, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->ReadRegion(0, (1 << 20) - 2, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->ReadRegion(0, 0xfffffffffffffffeull, 4).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->WriteRegion(0, 0xfffffffffffffffcull, "abcd").code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->WriteRegion(0, 0, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->ReadRegion(0, 0, 1 << 20).status().code(), StatusCode::kInvalidArgument);
  // Config space as region 7 (listed readable and writable, as kernel VFIO serves it): config
  // accesses under ReadConfig's and WriteConfig's rules.
  absl::StatusOr<std::string> ids = owner_->ReadRegion(7, 0, 4);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, std::string("\x34\x12\xe8\x11", 4));
  absl::StatusOr<std::string> odd = owner_->ReadRegion(7, 1, 6);  // 1 + 2 + 1 + 2 bytes
  ASSERT_TRUE(odd.ok()) << odd.status();
  absl::StatusOr<std::string> dump = owner_->DumpConfig(0, 8);
  ASSERT_TRUE(dump.ok());
  EXPECT_EQ(*odd, dump->substr(1, 6));
  EXPECT_EQ(owner_->ReadRegion(7, 0, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->ReadRegion(7, 254, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->ReadRegion(7, 0xfffffffffffffffeull, 4).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->WriteRegion(7, 256, "ab").code(), StatusCode::kOutOfRange);
  ExpectUnchanged();
  // A write is a config write: the same bytes back leave everything as it was.
  absl::StatusOr<std::string> command_bytes = owner_->ReadRegion(7, 4, 2);
  ASSERT_TRUE(command_bytes.ok());
  EXPECT_TRUE(owner_->WriteRegion(7, 4, *command_bytes).ok());
  EXPECT_EQ(*owner_->ReadRegion(7, 4, 2), *command_bytes);
  ExpectUnchanged();
  // Memory decode off: BAR access fails (the kernel's EIO), nothing else changes.
  uint32_t command = *owner_->ReadConfig(0x04, 2);
  ASSERT_TRUE(owner_->WriteConfig(0x04, 2, command & ~0x2u).ok());
  EXPECT_EQ(owner_->ReadRegion32(0, 0x04).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(owner_->WriteRegion32(0, 0x04, 1).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(owner_->WriteConfig(0x04, 2, command).ok());
  EXPECT_TRUE(owner_->ReadRegion32(0, 0x04).ok());
  ExpectUnchanged();
}

TEST_F(HostileInputTest, MemoryRegistration) {
  // Not sealed against shrinking: the daemon could fault on a truncated page.
  int unsealed = ::memfd_create("unsealed", MFD_CLOEXEC);
  ASSERT_GE(unsealed, 0);
  ASSERT_EQ(::ftruncate(unsealed, 0x10000), 0);
  EXPECT_EQ(owner_->RegisterMemory(unsealed, 0x10000).status().code(),
            StatusCode::kFailedPrecondition);
  ::close(unsealed);
  // Sealed against future writes, or open read-only: the daemon's shared writable mapping
  // would fail (EPERM, EACCES); a property of the fd, not of the caller's role.
  int future_write = ::memfd_create("future-write", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(future_write, 0);
  ASSERT_EQ(::ftruncate(future_write, 0x10000), 0);
  ASSERT_EQ(::fcntl(future_write, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE), 0);
  EXPECT_EQ(owner_->RegisterMemory(future_write, 0x10000).status().code(),
            StatusCode::kFailedPrecondition);
  ::close(future_write);
  absl::StatusOr<client::UniqueFd> sealed = VfioClient::CreateSealedMemfd("sealed", 0x10000);
  ASSERT_TRUE(sealed.ok());
  int read_only = ::open(absl::StrCat("/proc/self/fd/", sealed->get()).c_str(), O_RDONLY);
  ASSERT_GE(read_only, 0);
  EXPECT_EQ(owner_->RegisterMemory(read_only, 0x10000).status().code(),
            StatusCode::kFailedPrecondition);
  ::close(read_only);
  ExpectUnchanged();
  // Not a file at all.
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  EXPECT_EQ(owner_->RegisterMemory(pipe_fds[0], 0x1000).status().code(),
            StatusCode::kInvalidArgument);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("small", 0x10000);
  ASSERT_TRUE(memfd.ok());
  EXPECT_EQ(owner_->RegisterMemory(memfd->get(), 0x20000).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->RegisterMemory(memfd->get(), 0x1001).status().code(),
            StatusCode::kInvalidArgument);
  // Unknown, malformed and reused tokens.
  EXPECT_EQ(owner_->RegisterMemoryToken(std::string(32, 'a'), 0).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(owner_->RegisterMemoryToken("not-a-token", 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->RegisterMemoryToken("", 0).status().code(), StatusCode::kInvalidArgument);
  absl::StatusOr<std::vector<std::string>> tokens = owner_->SendFds({memfd->get()});
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  absl::StatusOr<v1::RegisterMemoryResponse> used = owner_->RegisterMemoryToken((*tokens)[0], 0);
  ASSERT_TRUE(used.ok()) << used.status();
  EXPECT_EQ(owner_->RegisterMemoryToken((*tokens)[0], 0).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(owner_->UnregisterMemory(used->memory_id()).ok());
  EXPECT_EQ(owner_->UnregisterMemory(used->memory_id()).code(), StatusCode::kNotFound);
  // Memory with live mappings cannot go.
  EXPECT_EQ(owner_->UnregisterMemory(memory_id_).code(), StatusCode::kFailedPrecondition);
  ExpectUnchanged();
}

TEST_F(HostileInputTest, UnusedFdsAreBoundedAndTheLimitIsReported) {
  absl::StatusOr<v1::DeviceInfo> info = owner_->GetDeviceInfo();
  ASSERT_TRUE(info.ok());
  const uint32_t limit = info->limits().max_fd_tokens();
  ASSERT_EQ(limit, 64u);
  int efd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  std::vector<int> fds(limit, efd);
  absl::StatusOr<std::vector<std::string>> tokens = owner_->SendFds(fds);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(owner_->SendFds({efd}).status().code(), StatusCode::kResourceExhausted);
  // Using a token frees its slot.
  v1::SetIrqsRequest request;
  request.set_index(v1::IRQ_INDEX_MSI);
  request.set_count(1);
  request.set_action(v1::IRQ_ACTION_TRIGGER);
  request.mutable_eventfds()->add_fd_tokens((*tokens)[0]);
  ASSERT_TRUE(owner_->SetIrqs(request).ok());
  EXPECT_TRUE(owner_->SendFds({efd}).ok());
  ::close(efd);
  ASSERT_TRUE(owner_->DisableIrqs(v1::IRQ_INDEX_MSI).ok());
  ExpectUnchanged();
}

// A send of several batches that fails part way (the fifth batch of 16 passes the 64-token
// limit) leaves no fd in the daemon: the client releases the tokens of the batches that went
// through. The fds are the write end of a pipe, so the read end sees end of file exactly when
// nobody, the daemon included, holds it any more.
TEST_F(HostileInputTest, AFailedMultiBatchSendLeavesNoFdInTheDaemon) {
  absl::StatusOr<v1::DeviceInfo> info = owner_->GetDeviceInfo();
  ASSERT_TRUE(info.ok());
  const uint32_t limit = info->limits().max_fd_tokens();
  ASSERT_EQ(limit, 64u);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  client::UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  std::vector<int> fds(limit + 6, write_end.get());  // batches of 16: 64 accepted, then refused
  EXPECT_EQ(owner_->SendFds(fds).status().code(), StatusCode::kResourceExhausted);
  write_end.Reset();
  struct pollfd wait = {read_end.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&wait, 1, 5000), 1) << "the daemon still holds the write end";
  char byte;
  EXPECT_EQ(::read(read_end.get(), &byte, 1), 0);
  // The whole token limit is free again.
  int efd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  absl::StatusOr<std::vector<std::string>> tokens = owner_->SendFds(std::vector<int>(limit, efd));
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  ::close(efd);
  ExpectUnchanged();
}

// ReleaseFdTokens: all or nothing, strict about its tokens, and only for the caller's own.
TEST_F(HostileInputTest, ReleaseFdTokens) {
  int efd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  absl::StatusOr<std::vector<std::string>> tokens = owner_->SendFds({efd, efd});
  ::close(efd);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  auto release = [&](VfioClient* client, std::vector<std::string> names) {
    v1::ReleaseFdTokensRequest request;
    for (const std::string& name : names) request.add_fd_tokens(name);
    v1::ReleaseFdTokensResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status status = client->stub()->ReleaseFdTokens(&context, request, &response);
    return std::make_pair(status.error_code(), response.released());
  };
  const std::string unknown(v1::kFdTokenHexLength, 'a');
  EXPECT_EQ(release(owner_.get(), {}).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(release(owner_.get(), {""}).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(release(owner_.get(), {"xyz"}).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(release(owner_.get(), {(*tokens)[0], (*tokens)[0]}).first,
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(release(owner_.get(), std::vector<std::string>(65, unknown)).first,
            grpc::StatusCode::INVALID_ARGUMENT);
  // One unknown token: nothing is released.
  EXPECT_EQ(release(owner_.get(), {(*tokens)[0], unknown}).first, grpc::StatusCode::NOT_FOUND);
  // Another session cannot release them.
  absl::StatusOr<std::unique_ptr<VfioClient>> other = VfioClient::Connect(daemon_->socket_path());
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(release(other->get(), {(*tokens)[0]}).first, grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(release(owner_.get(), *tokens), std::make_pair(grpc::StatusCode::OK, 2u));
  // Released means gone.
  EXPECT_EQ(release(owner_.get(), {(*tokens)[1]}).first, grpc::StatusCode::NOT_FOUND);
  ExpectUnchanged();
}

TEST_F(HostileInputTest, TokensBelongToTheirSession) {
  absl::StatusOr<std::unique_ptr<VfioClient>> other = VfioClient::Connect(daemon_->socket_path());
  ASSERT_TRUE(other.ok());
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("other", 0x10000);
  ASSERT_TRUE(memfd.ok());
  absl::StatusOr<std::vector<std::string>> tokens = (*other)->SendFds({memfd->get()});
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(owner_->RegisterMemoryToken((*tokens)[0], 0).status().code(), StatusCode::kNotFound);
  ExpectUnchanged();
}

TEST_F(HostileInputTest, Dma) {
  const uint64_t id = memory_id_;
  struct Case {
    uint64_t iova, size, memory, offset;
    bool read, write;
    StatusCode code;
  };
  const Case cases[] = {
      {0x400000, 0, id, 0, true, true, StatusCode::kInvalidArgument},          // zero size
      {0x400800, 0x1000, id, 0, true, true, StatusCode::kInvalidArgument},     // iova unaligned
      {0x400000, 0x1800, id, 0, true, true, StatusCode::kInvalidArgument},     // size unaligned
      {0x400000, 0x1000, id, 0x800, true, true, StatusCode::kInvalidArgument}, // offset unaligned
      {0xfffffffffffff000ull, 0x2000, id, 0, true, true, StatusCode::kOutOfRange},  // wraps
      {0x400000, 0x1000, id, 0xfffffffffffff000ull, true, true, StatusCode::kOutOfRange},
      {0x400000, 0x1000, id, kMemorySize, true, true, StatusCode::kOutOfRange},  // past memory
      {0x400000, kMemorySize + 0x1000, id, 0, true, true, StatusCode::kOutOfRange},
      {0xfee00000, 0x1000, id, 0, true, true, StatusCode::kOutOfRange},  // x86 MSI window
      {0xfedff000, 0x2000, id, 0, true, true, StatusCode::kOutOfRange},  // straddles it
      {0x400000, 0x1000, id + 100, 0, true, true, StatusCode::kNotFound},  // unknown memory
      {0x400000, 0x1000, id, 0, false, false, StatusCode::kInvalidArgument},  // no permission
      {0x200000, 0x10000, id, 0, true, true, StatusCode::kAlreadyExists},    // duplicate
      {0x1f0000, 0x30000, id, 0, true, true, StatusCode::kAlreadyExists},    // containing
      {0x204000, 0x1000, id, 0, true, true, StatusCode::kAlreadyExists},     // contained
      {0x20f000, 0x2000, id, 0, true, true, StatusCode::kAlreadyExists},     // tail overlap
      {0x1ff000, 0x2000, id, 0, true, true, StatusCode::kAlreadyExists},     // head overlap
  };
  for (const Case& c : cases) {
    EXPECT_EQ(owner_->MapDma(c.iova, c.size, c.memory, c.offset, c.read, c.write).code(), c.code)
        << "iova 0x" << std::hex << c.iova << " size 0x" << c.size << " offset 0x" << c.offset;
  }
  EXPECT_EQ(owner_->UnmapDma(0x200000, 0x8000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->UnmapDma(0x208000, 0x10000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->UnmapDma(0x800000, 0x1000).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(owner_->UnmapDma(0x200000, 0).status().code(), StatusCode::kInvalidArgument);
  // Unaligned size or iova, as for MapDma, even when the range covers the whole mapping.
  EXPECT_EQ(owner_->UnmapDma(0x200000, 0x10001).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->UnmapDma(0x200000, 0x10800).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->UnmapDma(0x1ff800, 0x11000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->UnmapDma(0xfffffffffffff000ull, 0x2000).status().code(),
            StatusCode::kOutOfRange);
  ExpectUnchanged();
}

// The jail's RLIMIT_MEMLOCK (--max-dma-bytes) bounds pinned DMA memory: type1 refuses a map past
// it with ENOMEM, and the simulated IOMMU the same way (RESOURCE_EXHAUSTED), leaving nothing.
TEST(HostileInputDaemonTest, DmaPastTheMemlockLimitIsRefused) {
  constexpr uint64_t kMiB = 1 << 20;
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start({absl::StrCat("--max-dma-bytes=", 8 * kMiB)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<std::unique_ptr<VfioClient>> owner = VfioClient::Connect((*daemon)->socket_path());
  ASSERT_TRUE(owner.ok()) << owner.status();
  ASSERT_TRUE((*owner)->ClaimOwnership().ok());
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("big", 16 * kMiB);
  ASSERT_TRUE(memfd.ok());
  absl::StatusOr<v1::RegisterMemoryResponse> memory =
      (*owner)->RegisterMemory(memfd->get(), 16 * kMiB);
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::Status status = (*owner)->MapDma(0x1000000, 16 * kMiB, memory->memory_id(), 0);
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status;
  absl::StatusOr<v1::DeviceState> state = (*owner)->GetState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->dma_mappings_size(), 0);
  EXPECT_EQ(state->memory(0).mappings(), 0u);
  // Within the limit, it maps.
  EXPECT_TRUE((*owner)->MapDma(0x1000000, 4 * kMiB, memory->memory_id(), 0).ok());
}

TEST_F(HostileInputTest, DmaMappingLimitAndMapUnmapLoop) {
  // --max-dma-mappings=8, one mapping exists.
  for (uint64_t i = 0; i < 7; ++i) {
    ASSERT_TRUE(owner_->MapDma(0x1000000 + i * 0x1000, 0x1000, memory_id_, i * 0x1000).ok()) << i;
  }
  EXPECT_EQ(owner_->MapDma(0x2000000, 0x1000, memory_id_, 0).code(),
            StatusCode::kResourceExhausted);
  ASSERT_TRUE(owner_->UnmapDma(0x1000000, 0x7000).ok());
  ExpectUnchanged();
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(owner_->MapDma(0x3000000, 0x4000, memory_id_, 0x4000).ok()) << i;
    ASSERT_TRUE(owner_->UnmapDma(0x3000000, 0x4000).ok()) << i;
  }
  ExpectUnchanged();
}

TEST_F(HostileInputTest, Irqs) {
  auto set = [&](int index, uint32_t start, uint32_t count, v1::IrqAction action) {
    v1::SetIrqsRequest request;
    request.set_index(static_cast<v1::IrqIndex>(index));
    request.set_start(start);
    request.set_count(count);
    request.set_action(action);
    request.mutable_none();
    return request;
  };
  EXPECT_EQ(owner_->SetIrqs(set(7, 0, 1, v1::IRQ_ACTION_TRIGGER)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->SetIrqs(set(-1, 0, 1, v1::IRQ_ACTION_TRIGGER)).code(),
            StatusCode::kInvalidArgument);
  // start + count wraps, or runs past the index's vectors.
  EXPECT_EQ(owner_->SetIrqs(set(v1::IRQ_INDEX_MSI, 0xffffffff, 2, v1::IRQ_ACTION_TRIGGER)).code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->SetIrqs(set(v1::IRQ_INDEX_MSI, 0, 2, v1::IRQ_ACTION_TRIGGER)).code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(owner_->SetIrqs(set(v1::IRQ_INDEX_MSI, 0, 1, static_cast<v1::IrqAction>(99))).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->SetIrqs(set(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_UNSPECIFIED)).code(),
            StatusCode::kInvalidArgument);
  // An index this device does not have (edu has no MSI-X).
  EXPECT_EQ(owner_->SetIrqs(set(v1::IRQ_INDEX_MSIX, 0, 1, v1::IRQ_ACTION_TRIGGER)).code(),
            StatusCode::kNotFound);
  v1::SetIrqsRequest unset = set(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_TRIGGER);
  unset.clear_data();
  EXPECT_EQ(owner_->SetIrqs(unset).code(), StatusCode::kInvalidArgument);
  v1::SetIrqsRequest bools = set(v1::IRQ_INDEX_INTX, 0, 1, v1::IRQ_ACTION_MASK);
  bools.mutable_bools()->add_values(true);
  bools.mutable_bools()->add_values(true);
  EXPECT_EQ(owner_->SetIrqs(bools).code(), StatusCode::kInvalidArgument);
  v1::SetIrqsRequest watch_mask = set(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_MASK);
  watch_mask.mutable_watch();
  EXPECT_EQ(owner_->SetIrqs(watch_mask).code(), StatusCode::kInvalidArgument);
  // Eventfd token count differs from count.
  int efd = ::eventfd(0, EFD_CLOEXEC);
  absl::StatusOr<std::vector<std::string>> tokens = owner_->SendFds({efd, efd});
  ASSERT_TRUE(tokens.ok());
  v1::SetIrqsRequest mismatch = set(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_TRIGGER);
  mismatch.mutable_eventfds()->add_fd_tokens((*tokens)[0]);
  mismatch.mutable_eventfds()->add_fd_tokens((*tokens)[1]);
  EXPECT_EQ(owner_->SetIrqs(mismatch).code(), StatusCode::kInvalidArgument);
  // A memfd is not an eventfd: refused, and the fd is consumed (closed) by the request.
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("x", 0x1000);
  ASSERT_TRUE(memfd.ok());
  absl::StatusOr<std::vector<std::string>> memfd_token = owner_->SendFds({memfd->get()});
  ASSERT_TRUE(memfd_token.ok());
  v1::SetIrqsRequest not_eventfd = set(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_TRIGGER);
  not_eventfd.mutable_eventfds()->add_fd_tokens((*memfd_token)[0]);
  EXPECT_EQ(owner_->SetIrqs(not_eventfd).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(owner_->SetIrqs(not_eventfd).code(), StatusCode::kNotFound);
  // The kernel cannot mask MSI: vfiod emulates it, so masking an enabled vector works.
  ASSERT_TRUE(owner_->SetIrqEventfds(v1::IRQ_INDEX_MSI, 0, {efd}).ok());
  EXPECT_TRUE(owner_->SetIrqAction(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_MASK).ok());
  EXPECT_TRUE(owner_->SetIrqAction(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_UNMASK).ok());
  // INTx and MSI cannot both be enabled: a state of the device.
  int intx = ::eventfd(0, EFD_CLOEXEC);
  EXPECT_EQ(owner_->SetIrqEventfds(v1::IRQ_INDEX_INTX, 0, {intx}).code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(owner_->DisableIrqs(v1::IRQ_INDEX_MSI).ok());
  ASSERT_TRUE(owner_->SetIrqEventfds(v1::IRQ_INDEX_INTX, 0, {intx}).ok());
  EXPECT_EQ(owner_->SetIrqEventfds(v1::IRQ_INDEX_MSI, 0, {efd}).code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(owner_->DisableIrqs(v1::IRQ_INDEX_INTX).ok());
  ::close(efd);
  ::close(intx);
  ExpectUnchanged();
}

// A client's eventfd is shared with the daemon (one open file description): adopting it must not
// change its flags, so the client's blocking read still blocks until the device signals. Files on
// the same anonymous inode that are not eventfds are refused.
TEST_F(HostileInputTest, ClientEventfdsKeepTheirFlagsAndOtherKindsAreRefused) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGUSR2);
  const std::pair<const char*, int> others[] = {
      {"timerfd", ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC)},
      {"signalfd", ::signalfd(-1, &signals, SFD_CLOEXEC)},
      {"epoll", ::epoll_create1(EPOLL_CLOEXEC)},
  };
  for (const auto& [name, fd] : others) {
    ASSERT_GE(fd, 0) << name;
    absl::StatusOr<std::vector<std::string>> token = owner_->SendFds({fd});
    ASSERT_TRUE(token.ok()) << token.status();
    v1::SetIrqsRequest request;
    request.set_index(v1::IRQ_INDEX_MSI);
    request.set_count(1);
    request.set_action(v1::IRQ_ACTION_TRIGGER);
    request.mutable_eventfds()->add_fd_tokens((*token)[0]);
    absl::Status status = owner_->SetIrqs(request);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << name << ": " << status;
    EXPECT_NE(status.message().find("not an eventfd"), absl::string_view::npos) << status;
    ::close(fd);
  }
  ExpectUnchanged();

  int efd = ::eventfd(0, EFD_CLOEXEC);  // blocking
  ASSERT_GE(efd, 0);
  ASSERT_TRUE(owner_->SetIrqEventfds(v1::IRQ_INDEX_MSI, 0, {efd}).ok());
  EXPECT_EQ(::fcntl(efd, F_GETFL), O_RDWR);
  std::atomic<bool> done{false};
  uint64_t value = 0;
  ssize_t n = 0;
  std::thread reader([&] {
    n = ::read(efd, &value, sizeof(value));
    done.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(done.load()) << "the client's blocking read returned " << n << " unsignalled";
  // A loopback trigger: the device signals the vector.
  ASSERT_TRUE(owner_->SetIrqAction(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_TRIGGER).ok());
  for (int i = 0; i < 500 && !done.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const bool signalled = done.load();
  if (!signalled) {
    const uint64_t one = 1;
    ASSERT_EQ(::write(efd, &one, sizeof(one)), 8);  // unblock the reader
  }
  reader.join();
  EXPECT_TRUE(signalled);
  EXPECT_EQ(n, 8);
  EXPECT_EQ(value, 1u);
  ASSERT_TRUE(owner_->DisableIrqs(v1::IRQ_INDEX_MSI).ok());
  ::close(efd);
  ExpectUnchanged();
}

// A unary call with a raw body through a generic stub on a new channel (an observer session).
grpc::Status RawCall(const std::string& socket_path, const std::string& method,
                     const std::string& payload) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel("unix:" + socket_path, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice slice(payload);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status result;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   std::lock_guard<std::mutex> lock(mu);
                   result = status;
                   done = true;
                   cv.notify_one();
                 });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return result;
}

TEST_F(HostileInputTest, Protocol) {
  // Over the message size limit: refused by gRPC before any handler runs.
  EXPECT_EQ(owner_->WriteRegion(0, 0, std::string(2 << 20, 'x')).code(),
            StatusCode::kResourceExhausted);
  // Larger than the per-call region limit but within the message limit.
  EXPECT_EQ(owner_->WriteRegion(0, 0, std::string(128 << 10, 'x')).code(),
            StatusCode::kInvalidArgument);
  // An unknown method, and another service, through a generic stub on a raw channel.
  const std::string socket = daemon_->socket_path();
  EXPECT_EQ(RawCall(socket, "/vfiod.v1.VfioDevice/NoSuchMethod", "").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(RawCall(socket, "/grpc.health.v1.Health/Check", "").error_code(),
            grpc::StatusCode::OK);
  // The daemon still serves.
  EXPECT_TRUE(owner_->ReadConfig(0, 4).ok());
  ExpectUnchanged();
}

// A body that is not a valid protobuf encoding of the request is INVALID_ARGUMENT naming the
// method, before the role check (the raw channel is an observer, so the owner-only methods would
// say PERMISSION_DENIED for a request that parsed), and changes nothing.
TEST_F(HostileInputTest, MalformedRequestBodiesAreInvalidArgument) {
  const std::string socket = daemon_->socket_path();
  const std::pair<const char*, std::string> bodies[] = {
      {"garbage", std::string("\xff\xff\xff\xff", 4)},
      {"truncated varint", std::string("\x08\x80\x80", 3)},
      {"11-byte varint", "\x08" + std::string(10, '\x80') + "\x01"},
      {"stray end-group tag", std::string("\x0c", 1)},
      {"length past the end", std::string("\x1a\x05" "ab", 4)},
  };
  const std::pair<const char*, const char*> methods[] = {
      {"ReadConfig", "vfiod.v1.ReadConfigRequest"},
      {"WriteConfig", "vfiod.v1.WriteConfigRequest"},
      {"RegisterMemory", "vfiod.v1.RegisterMemoryRequest"},
      {"MapDma", "vfiod.v1.MapDmaRequest"},
      {"SetIrqs", "vfiod.v1.SetIrqsRequest"},
      {"WatchIrqs", "vfiod.v1.WatchIrqsRequest"},
      {"ClaimOwnership", "vfiod.v1.ClaimOwnershipRequest"},
  };
  for (const auto& [method, request_type] : methods) {
    for (const auto& [kind, body] : bodies) {
      grpc::Status status = RawCall(socket, absl::StrCat("/vfiod.v1.VfioDevice/", method), body);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << method << ", " << kind << ": " << status.error_message();
      EXPECT_EQ(status.error_message(),
                absl::StrCat(method, ": the request is not a valid ", request_type,
                             " message (protobuf decoding failed)"))
          << method << ", " << kind;
    }
  }
  // A request that parses still meets the role check, and a handler's own errors pass through.
  EXPECT_EQ(RawCall(socket, "/vfiod.v1.VfioDevice/WriteConfig", "").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(RawCall(socket, "/vfiod.v1.VfioDevice/ReadConfig", "").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // size 0
  // Tokens are bytes: any bytes parse, and a token that is not hex is the token's error.
  const std::string not_utf8("\xff\xfe\xfd", 3);
  absl::Status status = owner_->RegisterMemoryToken(not_utf8, 0).status();
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "RegisterMemory: fd token")) << status;
  v1::SetIrqsRequest request;
  request.set_index(v1::IRQ_INDEX_MSI);
  request.set_count(1);
  request.set_action(v1::IRQ_ACTION_TRIGGER);
  request.mutable_eventfds()->add_fd_tokens(not_utf8);
  status = owner_->SetIrqs(request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "SetIrqs: fd token")) << status;
  // The daemon still serves, and nothing changed.
  EXPECT_TRUE(owner_->ReadConfig(0, 4).ok());
  ExpectUnchanged();
}

}  // namespace
}  // namespace vfiod
