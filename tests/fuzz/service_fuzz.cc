// A libFuzzer target for the service adapter: VfioDeviceService, SessionManager and PciDevice
// over the simulated edu device (with reset), driven by the protocol's own request messages.
//
// The input is a serialized vfiod.fuzz.ServiceFuzzInput (tests/fuzz/service_fuzz.proto): calls
// by three clients, each a vfiod.v1 request or a client-side event (sending fds on its fd
// channel, reconnecting). The harness stands in for the transport: it opens the clients'
// connections and fd channels on the SessionManager, resolves every call to its client's
// connection, and substitutes what a client cannot forge ("#N" names the client's N-th fd token
// or client N's channel key). Handlers are called directly, as gRPC's threads would call them
// (one at a time here), so proto decoding, role checks, token handling and validation all run
// as in the daemon; the gRPC framing below them is gRPC's.
//
// After every call, whatever the input (a violation aborts):
//   - the code is one the API documents for client errors or OK: never UNKNOWN, INTERNAL,
//     DATA_LOSS, UNIMPLEMENTED or UNAVAILABLE, and an error has a message naming the RPC;
//   - an owner-only RPC (and ReadRegion, observers being denied BAR reads; region 7, config
//     space, excepted) from a client that was not the owner is PERMISSION_DENIED;
//   - a call that fails, and a read-only call that succeeds, leaves the device state (GetState
//     without counters and without what the device's threads change: INTx automask, delivered
//     counts) unchanged;
//   - successful answers are well formed: a config value fits its size, a region read returns
//     the bytes asked for, registered memory is page-sized and listed, a mapping made is listed,
//     an unmap reports what disappeared from the state.
// At the end of each input every client disconnects: no owner, no memory, no mapping and no
// IRQ enabled may remain, and once the device is destroyed the process's fd count is back
// where it was.
//
// Built like device_model_fuzz (see tests/fuzz/README.md): a libFuzzer binary under
// --config=fuzz; in the default build a test replays the seed corpus (text protos in
// tests/fuzz/seeds/service, encoded at build time) and tests/fuzz/corpus/service.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/base/logging.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/session_manager.h"
#include "daemon/service/vfio_device_service.h"
#include "daemon/transport/fake_transport.h"
#include "daemon/transport/transport.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/grpcpp.h"
#include "proto/vfiod/v1/fd_channel.h"
#include "proto/vfiod/v1/vfiod.pb.h"
#include "tests/fuzz/fuzz_device.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/service_fuzz.pb.h"

namespace vfiod {
namespace {

constexpr int kClients = 3;
constexpr uid_t kOwnerUid = 0;
constexpr uid_t kObserverOnlyUid = 1000;  // client 2: not in the owner set
constexpr int kMaxCalls = 128;
constexpr uint64_t kPage = 4096;
constexpr uint32_t kMaxMemfdPages = 512;

struct Client {
  ConnectionId connection = 0;
  FdChannelId channel = 0;
  FdChannelKey key{};
  PeerCredentials peer;
  std::vector<std::string> tokens;  // hex, in the order received
};

// Region 7 is config space, which observers may read through ReadRegion too.
bool ReadsConfigRegion(const fuzz::Call& call) {
  return call.op_case() == fuzz::Call::kReadRegion &&
         call.read_region().index() == kConfigRegionIndex;
}

bool OwnerOnly(fuzz::Call::OpCase op) {
  switch (op) {
    case fuzz::Call::kWriteConfig:
    case fuzz::Call::kReadRegion:  // observers may not read BARs (no --observer-bar-reads)
    case fuzz::Call::kWriteRegion:
    case fuzz::Call::kRegisterMemory:
    case fuzz::Call::kUnregisterMemory:
    case fuzz::Call::kMapDma:
    case fuzz::Call::kUnmapDma:
    case fuzz::Call::kSetIrqs:
    case fuzz::Call::kReset:
      return true;
    default:
      return false;
  }
}

bool ReadOnly(fuzz::Call::OpCase op) {
  switch (op) {
    case fuzz::Call::kGetDeviceInfo:
    case fuzz::Call::kReadConfig:
    case fuzz::Call::kDumpConfig:
    case fuzz::Call::kReadRegion:  // edu's registers have no read side effects
    case fuzz::Call::kGetState:
      return true;
    default:
      return false;
  }
}

// The RPC name an error message must carry.
const char* RpcName(fuzz::Call::OpCase op) {
  switch (op) {
    case fuzz::Call::kGetDeviceInfo: return "GetDeviceInfo";
    case fuzz::Call::kReadConfig: return "ReadConfig";
    case fuzz::Call::kWriteConfig: return "WriteConfig";
    case fuzz::Call::kDumpConfig: return "DumpConfig";
    case fuzz::Call::kReadRegion: return "ReadRegion";
    case fuzz::Call::kWriteRegion: return "WriteRegion";
    case fuzz::Call::kRegisterMemory: return "RegisterMemory";
    case fuzz::Call::kUnregisterMemory: return "UnregisterMemory";
    case fuzz::Call::kMapDma: return "MapDma";
    case fuzz::Call::kUnmapDma: return "UnmapDma";
    case fuzz::Call::kSetIrqs: return "SetIrqs";
    case fuzz::Call::kReset: return "Reset";
    case fuzz::Call::kGetState: return "GetState";
    case fuzz::Call::kClaimOwnership: return "ClaimOwnership";
    case fuzz::Call::kReleaseOwnership: return "ReleaseOwnership";
    case fuzz::Call::kBindFdChannel: return "BindFdChannel";
    case fuzz::Call::kReleaseFdTokens: return "ReleaseFdTokens";
    case fuzz::Call::kSendFds: return "SendFds";
    case fuzz::Call::kReconnect: return "Reconnect";
    case fuzz::Call::OP_NOT_SET: return "(none)";
  }
  return "?";
}

// What only calls change: GetState without counters, delivered counts and INTx's mask (the
// simulated device automasks INTx on its own thread).
std::string StableState(v1::DeviceState state) {
  state.clear_counters();
  state.clear_device();
  for (v1::IrqIndexState& irq : *state.mutable_irqs()) {
    for (v1::IrqVectorState& vector : *irq.mutable_vectors()) {
      // Set by the device, not by calls: an interrupt may arrive between two snapshots.
      vector.clear_delivered();
      vector.clear_pending();
      if (irq.index() == v1::IRQ_INDEX_INTX) vector.clear_masked();
    }
  }
  return state.SerializeAsString();
}

class Harness {
 public:
  Harness()
      : device_(fuzz::MakeFuzzDevice()),
        sessions_(&cleanup_, SessionOptions{{kOwnerUid}, 64, nullptr}),
        service_(device_.get(), &sessions_, &transport_, ServiceOptions{false, 64}) {
    device_->RegisterOwnerCleanup(cleanup_);
    sessions_.set_transport(&transport_);
    fuzz::SetTrace(&trace_);
    for (int i = 0; i < kClients; ++i) Connect(i);
  }
  ~Harness() { fuzz::SetTrace(nullptr); }

  void Run(const fuzz::ServiceFuzzInput& input) {
    int n = 0;
    for (const fuzz::Call& call : input.calls()) {
      if (++n > kMaxCalls) break;
      Step(call);
    }
    for (int i = 0; i < kClients; ++i) Disconnect(i);
    if (std::getenv("SERVICE_FUZZ_VERBOSE") != nullptr) {
      for (const std::string& step : trace_) std::fprintf(stderr, "%s\n", step.c_str());
    }
    const v1::DeviceState state = StateAs(std::nullopt);
    FUZZ_CHECK(!state.owner_attached(), "an owner is left after every client left");
    FUZZ_CHECK(state.memory_size() == 0 && state.dma_mappings_size() == 0,
               "memory or mappings left after every client left: ", state.ShortDebugString());
    for (const v1::IrqIndexState& irq : state.irqs()) {
      FUZZ_CHECK(!irq.enabled(), "an IRQ index is left enabled: ", irq.ShortDebugString());
    }
  }

 private:
  void Connect(int i) {
    Client& client = clients_[i];
    client = Client();
    client.connection = next_id_++;
    client.channel = next_id_++;
    for (size_t b = 0; b < client.key.size(); ++b) {
      client.key[b] = static_cast<uint8_t>(client.channel * 37 + b * 11 + 1);
    }
    client.peer = PeerCredentials{static_cast<pid_t>(100 + i),
                                  i == 2 ? kObserverOnlyUid : kOwnerUid, 0};
    sessions_.OnConnectionOpened(client.connection, client.peer, false);
    sessions_.OnFdChannelOpened(client.channel, client.key, client.peer, std::nullopt);
  }

  void Disconnect(int i) {
    Client& client = clients_[i];
    sessions_.OnConnectionClosed(client.connection);
    DeliverCloses();
    sessions_.OnFdChannelClosed(client.channel);
  }

  void DeliverCloses() {
    for (FdChannelId id : transport_.TakeCloseRequests()) sessions_.OnFdChannelClosed(id);
  }

  // GetState as `client` (any client: its role only sets caller_role), or as a fresh observer.
  v1::DeviceState StateAs(std::optional<int> client) {
    ConnectionId id;
    std::optional<ConnectionId> temporary;
    if (client.has_value()) {
      id = clients_[*client].connection;
    } else {
      id = next_id_++;
      temporary = id;
      sessions_.OnConnectionOpened(id, PeerCredentials{1, kObserverOnlyUid, 0}, false);
    }
    transport_.set_caller(id);
    grpc::ServerContext context;
    v1::GetStateRequest request;
    v1::DeviceState state;
    grpc::Status status = service_.GetState(&context, &request, &state);
    FUZZ_CHECK(status.ok(), "GetState failed: ", status.error_message());
    if (temporary.has_value()) {
      sessions_.OnConnectionClosed(*temporary);
      DeliverCloses();
    }
    return state;
  }

  std::string Token(const Client& client, const std::string& text) {
    uint32_t n;
    if (text.size() > 1 && text[0] == '#' && absl::SimpleAtoi(text.substr(1), &n) &&
        n < client.tokens.size()) {
      return client.tokens[n];
    }
    return text;
  }

  void SendFds(Client& client, const fuzz::SendFds& send) {
    std::vector<UniqueFd> fds;
    const uint32_t pages = std::min(std::max(send.memfd_pages(), 1u), kMaxMemfdPages);
    for (int kind : send.kinds()) {
      switch (kind) {
        case fuzz::SendFds::SEALED_MEMFD:
          fds.push_back(fuzz::MakeMemfd(pages * kPage, F_SEAL_SHRINK));
          break;
        case fuzz::SendFds::UNSEALED_MEMFD:
          fds.push_back(fuzz::MakeMemfd(pages * kPage, 0));
          break;
        case fuzz::SendFds::EVENTFD:
          fds.push_back(UniqueFd(::eventfd(0, EFD_CLOEXEC)));
          break;
        default:
          fds.push_back(fuzz::MakeNonEventfd(static_cast<uint8_t>(send.variant() % 7)));
          break;
      }
      FUZZ_CHECK(fds.back().valid(), "the harness could not make an fd of kind ", kind);
    }
    // The transport refuses empty and oversized messages before the session layer sees them.
    if (fds.empty() || fds.size() > v1::kFdChannelMaxFdsPerMessage) return;
    const size_t sent = fds.size();
    absl::StatusOr<std::vector<FdTokenBytes>> tokens =
        sessions_.OnFdsReceived(client.channel, std::move(fds));
    if (!tokens.ok()) return;
    FUZZ_CHECK(tokens->size() == sent, "OnFdsReceived returned ", tokens->size(), " tokens for ",
               sent, " fds");
    for (const FdTokenBytes& token : *tokens) client.tokens.push_back(FdTokenToHex(token));
    trace_.back() += absl::StrCat(" -> tokens #", client.tokens.size() - sent, "..#",
                                  client.tokens.size() - 1);
  }

  void Step(const fuzz::Call& call) {
    const int index = static_cast<int>(call.client() % kClients);
    Client& client = clients_[index];
    const fuzz::Call::OpCase op = call.op_case();
    fuzz::Call shown = call;
    shown.clear_client();
    trace_.push_back(absl::StrCat("client ", index, ": ", shown.ShortDebugString()));
    switch (op) {
      case fuzz::Call::kSendFds:
        SendFds(client, call.send_fds());
        return;
      case fuzz::Call::kReconnect:
        Disconnect(index);
        Connect(index);
        return;
      case fuzz::Call::OP_NOT_SET:
        return;
      default:
        break;
    }

    const v1::DeviceState before = StateAs(index);
    const bool was_owner = before.caller_role() == v1::ROLE_OWNER;
    transport_.set_caller(client.connection);
    grpc::ServerContext context;
    grpc::Status status;
    std::string detail;  // the answer, for the trace
    switch (op) {
      case fuzz::Call::kGetDeviceInfo: {
        v1::DeviceInfo response;
        status = service_.GetDeviceInfo(&context, &call.get_device_info(), &response);
        break;
      }
      case fuzz::Call::kReadConfig: {
        v1::ReadConfigResponse response;
        status = service_.ReadConfig(&context, &call.read_config(), &response);
        if (status.ok()) {
          const uint32_t size = call.read_config().size();
          FUZZ_CHECK(size == 4 || response.value() >> (8 * size) == 0, "ReadConfig of ", size,
                     " bytes returned 0x", absl::Hex(response.value()));
        }
        break;
      }
      case fuzz::Call::kWriteConfig: {
        v1::WriteConfigResponse response;
        status = service_.WriteConfig(&context, &call.write_config(), &response);
        break;
      }
      case fuzz::Call::kDumpConfig: {
        v1::DumpConfigResponse response;
        status = service_.DumpConfig(&context, &call.dump_config(), &response);
        if (status.ok()) {
          FUZZ_CHECK(response.offset() == call.dump_config().offset() &&
                         response.data().size() % 4 == 0 && !response.data().empty() &&
                         response.offset() + response.data().size() <= 4096,
                     "DumpConfig answered offset ", response.offset(), " with ",
                     response.data().size(), " bytes");
        }
        break;
      }
      case fuzz::Call::kReadRegion: {
        v1::ReadRegionResponse response;
        status = service_.ReadRegion(&context, &call.read_region(), &response);
        if (status.ok()) {
          FUZZ_CHECK(response.data().size() == call.read_region().size(), "ReadRegion of ",
                     call.read_region().size(), " bytes returned ", response.data().size());
        }
        break;
      }
      case fuzz::Call::kWriteRegion: {
        v1::WriteRegionResponse response;
        status = service_.WriteRegion(&context, &call.write_region(), &response);
        break;
      }
      case fuzz::Call::kRegisterMemory: {
        v1::RegisterMemoryRequest request = call.register_memory();
        request.set_fd_token(Token(client, request.fd_token()));
        v1::RegisterMemoryResponse response;
        status = service_.RegisterMemory(&context, &request, &response);
        if (status.ok()) {
          FUZZ_CHECK(response.size() > 0 && response.size() % kPage == 0,
                     "RegisterMemory returned size ", response.size());
          bool listed = false;
          const v1::DeviceState after = StateAs(index);
          for (const v1::MemoryState& m : after.memory()) {
            listed |= m.memory_id() == response.memory_id() && m.size() == response.size();
          }
          FUZZ_CHECK(listed, "registered memory ", response.memory_id(), " is not in the state");
        }
        break;
      }
      case fuzz::Call::kUnregisterMemory: {
        v1::UnregisterMemoryResponse response;
        status = service_.UnregisterMemory(&context, &call.unregister_memory(), &response);
        break;
      }
      case fuzz::Call::kMapDma: {
        v1::MapDmaResponse response;
        status = service_.MapDma(&context, &call.map_dma(), &response);
        if (status.ok()) {
          bool listed = false;
          const v1::DeviceState after = StateAs(index);
          for (const v1::DmaMappingState& m : after.dma_mappings()) {
            listed |= m.iova() == call.map_dma().iova() && m.size() == call.map_dma().size() &&
                      m.memory_id() == call.map_dma().memory_id();
          }
          FUZZ_CHECK(listed, "a mapping made is not in the state");
        }
        break;
      }
      case fuzz::Call::kUnmapDma: {
        v1::UnmapDmaResponse response;
        status = service_.UnmapDma(&context, &call.unmap_dma(), &response);
        if (status.ok()) {
          const v1::DeviceState after = StateAs(index);
          uint64_t bytes = 0;
          for (const v1::DmaMappingState& m : before.dma_mappings()) bytes += m.size();
          for (const v1::DmaMappingState& m : after.dma_mappings()) bytes -= m.size();
          FUZZ_CHECK(response.unmapped_bytes() == bytes &&
                         static_cast<int>(response.unmapped_mappings()) ==
                             before.dma_mappings_size() - after.dma_mappings_size(),
                     "UnmapDma reported ", response.unmapped_mappings(), " mappings, ",
                     response.unmapped_bytes(), " bytes; the state lost ", bytes, " bytes");
        }
        break;
      }
      case fuzz::Call::kSetIrqs: {
        v1::SetIrqsRequest request = call.set_irqs();
        if (request.has_eventfds()) {
          for (std::string& token : *request.mutable_eventfds()->mutable_fd_tokens()) {
            token = Token(client, token);
          }
        }
        v1::SetIrqsResponse response;
        status = service_.SetIrqs(&context, &request, &response);
        break;
      }
      case fuzz::Call::kReset: {
        v1::ResetResponse response;
        status = service_.Reset(&context, &call.reset(), &response);
        break;
      }
      case fuzz::Call::kGetState: {
        v1::DeviceState response;
        status = service_.GetState(&context, &call.get_state(), &response);
        break;
      }
      case fuzz::Call::kClaimOwnership: {
        v1::ClaimOwnershipResponse response;
        status = service_.ClaimOwnership(&context, &call.claim_ownership(), &response);
        break;
      }
      case fuzz::Call::kReleaseOwnership: {
        v1::ReleaseOwnershipResponse response;
        status = service_.ReleaseOwnership(&context, &call.release_ownership(), &response);
        break;
      }
      case fuzz::Call::kBindFdChannel: {
        v1::BindFdChannelRequest request = call.bind_fd_channel();
        uint32_t n;
        const std::string& key = request.channel_key();
        if (key.size() > 1 && key[0] == '#' && absl::SimpleAtoi(key.substr(1), &n)) {
          const FdChannelKey& real = clients_[n % kClients].key;
          request.set_channel_key(std::string(real.begin(), real.end()));
        }
        v1::BindFdChannelResponse response;
        status = service_.BindFdChannel(&context, &request, &response);
        break;
      }
      case fuzz::Call::kReleaseFdTokens: {
        v1::ReleaseFdTokensRequest request = call.release_fd_tokens();
        for (std::string& token : *request.mutable_fd_tokens()) token = Token(client, token);
        v1::ReleaseFdTokensResponse response;
        status = service_.ReleaseFdTokens(&context, &request, &response);
        if (status.ok()) {
          FUZZ_CHECK(static_cast<int>(response.released()) == request.fd_tokens_size(),
                     "ReleaseFdTokens released ", response.released(), " of ",
                     request.fd_tokens_size());
        }
        break;
      }
      default:
        FUZZ_CHECK(false, "unhandled op ", static_cast<int>(op));
    }
    DeliverCloses();
    trace_.back() += absl::StrCat(" -> ", status.error_code(), " ", status.error_message());

    const grpc::StatusCode code = status.error_code();
    FUZZ_CHECK(code != grpc::StatusCode::UNKNOWN && code != grpc::StatusCode::INTERNAL &&
                   code != grpc::StatusCode::DATA_LOSS &&
                   code != grpc::StatusCode::UNIMPLEMENTED &&
                   code != grpc::StatusCode::UNAVAILABLE,
               RpcName(op), " returned code ", code, ": ", status.error_message());
    if (!status.ok()) {
      FUZZ_CHECK(absl::StrContains(status.error_message(), RpcName(op)),
                 "the error message does not name the RPC ", RpcName(op), ": \"",
                 status.error_message(), "\"");
    }
    if (OwnerOnly(op) && !was_owner && !ReadsConfigRegion(call)) {
      FUZZ_CHECK(code == grpc::StatusCode::PERMISSION_DENIED, RpcName(op),
                 " from a non-owner returned code ", code, ": ", status.error_message());
    }
    if (!status.ok() || ReadOnly(op)) {
      const v1::DeviceState after = StateAs(index);
      FUZZ_CHECK(StableState(before) == StableState(after), RpcName(op),
                 status.ok() ? " (read-only) changed the state" : " failed and changed the state",
                 "\n    before: ", before.ShortDebugString(),
                 "\n    after:  ", after.ShortDebugString());
    }
  }

  OwnerCleanup cleanup_;
  std::unique_ptr<PciDevice> device_;
  FakeTransport transport_;
  SessionManager sessions_;
  VfioDeviceService service_;
  std::array<Client, kClients> clients_;
  ConnectionId next_id_ = 1;
  std::vector<std::string> trace_;
};

}  // namespace
}  // namespace vfiod

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vfiod::fuzz::RunProtoInput<vfiod::fuzz::ServiceFuzzInput, vfiod::Harness>("service_fuzz", data, size);
}
