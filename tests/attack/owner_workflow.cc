#include "tests/attack/owner_workflow.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/fd_channel_client.h"
#include "client/status_convert.h"
#include "client/vfio_client.h"
#include "daemon/transport/unix_socket.h"
#include "grpcpp/client_context.h"

namespace vfiod::attack {
namespace {

constexpr uint64_t kMemoryBytes = 1 << 20;
constexpr uint64_t kIova = 0x100000;
constexpr uint64_t kMapBytes = 0x10000;
constexpr uint32_t kCommandMemoryAndBusMaster = 0x0006;
constexpr uint32_t kEduIdentification = 0x00;  // BAR0 register 0: 0x010000ed

// Records `status` as one call of `step`; true when it succeeded.
bool Record(OwnerStep& step, const absl::Status& status) {
  ++step.calls;
  if (status.ok()) return true;
  if (step.failed++ == 0) {
    step.first_error =
        absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
  }
  return false;
}

}  // namespace

int OwnerWorkflowResult::calls() const {
  int total = 0;
  for (const OwnerStep& step : steps) total += step.calls;
  return total;
}

int OwnerWorkflowResult::failed() const {
  int total = 0;
  for (const OwnerStep& step : steps) total += step.failed;
  return total;
}

std::string OwnerWorkflowResult::FirstFailure() const {
  for (const OwnerStep& step : steps) {
    if (step.failed > 0) return absl::StrCat(step.name, ": ", step.first_error);
  }
  return "";
}

std::string OwnerWorkflowResult::StepSummary() const {
  std::vector<std::string> parts;
  for (const OwnerStep& step : steps) {
    parts.push_back(absl::StrCat(step.name, " ", step.failed, "/", step.calls, " failed"));
  }
  return absl::StrJoin(parts, ", ");
}

absl::Duration Quantile(std::vector<absl::Duration> samples, double fraction) {
  if (samples.empty()) return absl::ZeroDuration();
  std::sort(samples.begin(), samples.end());
  const size_t rank = static_cast<size_t>(fraction * static_cast<double>(samples.size()));
  return samples[std::min(samples.size() - 1, rank)];
}

OwnerWorkflowResult RunOwnerWorkflow(const std::string& socket_path,
                                     const OwnerWorkflowOptions& options) {
  OwnerWorkflowResult result;
  auto step = [&](const char* name) -> OwnerStep& {
    result.steps.push_back(OwnerStep{name});
    return result.steps.back();
  };
  ConnectOptions connect_options;
  connect_options.default_timeout = options.call_timeout;
  connect_options.fd_channel = false;  // bound below, as a step of its own
  absl::StatusOr<std::unique_ptr<VfioClient>> connected =
      VfioClient::Connect(socket_path, connect_options);
  if (!Record(step("connect"), connected.status())) return result;
  VfioClient& owner = **connected;
  if (!Record(step("ClaimOwnership"), owner.ClaimOwnership())) return result;

  // The fd channel: connect, read the hello, bind it to this session.
  OwnerStep& bind = step("BindFdChannel");
  absl::StatusOr<UniqueFd> socket =
      ConnectUnixSocket(socket_path + ".fds", UnixSocketKind::kSeqPacket);
  if (!Record(bind, socket.status())) return result;
  absl::StatusOr<std::unique_ptr<client::FdChannelClient>> channel =
      client::FdChannelClient::Open(*std::move(socket), options.call_timeout);
  if (!Record(bind, channel.status())) return result;
  v1::BindFdChannelRequest bind_request;
  const client::FdChannelKey& key = (*channel)->channel_key();
  bind_request.set_channel_key(std::string(key.begin(), key.end()));
  v1::BindFdChannelResponse bind_response;
  grpc::ClientContext bind_context;
  bind_context.set_deadline(absl::ToChronoTime(absl::Now() + options.call_timeout));
  if (!Record(bind, client::FromGrpcStatus(owner.stub()->BindFdChannel(&bind_context, bind_request,
                                                                       &bind_response)))) {
    return result;
  }

  OwnerStep& memory_step = step("RegisterMemory");
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("guest", kMemoryBytes);
  if (!Record(memory_step, memfd.status())) return result;
  const int fds[] = {memfd->get()};
  absl::StatusOr<std::vector<std::string>> tokens = (*channel)->SendFds(fds, options.call_timeout);
  if (!Record(memory_step, tokens.status())) return result;
  absl::StatusOr<v1::RegisterMemoryResponse> memory =
      owner.RegisterMemoryToken((*tokens)[0], kMemoryBytes);
  if (!Record(memory_step, memory.status())) return result;

  if (!Record(step("MapDma"), owner.MapDma(kIova, kMapBytes, memory->memory_id(), 0))) {
    return result;
  }
  if (!Record(step("WriteConfig"), owner.WriteConfig(0x04, 2, kCommandMemoryAndBusMaster))) {
    return result;
  }

  OwnerStep& reads = step("ReadRegion");
  for (int i = 0; i < options.bar_reads; ++i) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<uint32_t> value = owner.ReadRegion32(0, kEduIdentification);
    const absl::Duration latency = absl::FromChrono(std::chrono::steady_clock::now() - start);
    if (Record(reads, value.status())) result.bar_read_latencies.push_back(latency);
  }

  if (options.irq_triggers > 0) {
    OwnerStep& irqs = step("SetIrqs");
    if (!Record(irqs, owner.EnableIrqWatch(v1::IRQ_INDEX_MSI, 0, 1))) return result;
    for (int i = 0; i < options.irq_triggers; ++i) {
      Record(irqs, owner.SetIrqAction(v1::IRQ_INDEX_MSI, 0, 1, v1::IRQ_ACTION_TRIGGER));
    }
  }

  if (options.concurrent_resets > 0) {
    OwnerStep& resets = step("Reset");
    std::mutex mu;
    std::vector<std::thread> threads;
    for (int i = 0; i < options.concurrent_resets; ++i) {
      threads.emplace_back([&] {
        absl::Status status = owner.Reset();
        std::lock_guard<std::mutex> lock(mu);
        Record(resets, status);
      });
    }
    for (std::thread& thread : threads) thread.join();
  }
  return result;
}

}  // namespace vfiod::attack
