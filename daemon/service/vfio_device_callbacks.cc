#include "daemon/service/vfio_device_callbacks.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/alarm.h"

namespace vfiod {
namespace {

using Method = VfioDeviceService::Method;

// The owner's calls that may block for long; its other calls run on the receiving thread.
bool OwnerCallMayBlock(Method method) {
  switch (method) {
    case VfioDeviceService::kRegisterMemory:
    case VfioDeviceService::kUnregisterMemory:
    case VfioDeviceService::kMapDma:
    case VfioDeviceService::kUnmapDma:
    case VfioDeviceService::kSetIrqs:
    case VfioDeviceService::kReset:
    case VfioDeviceService::kReleaseOwnership:  // runs the owner-loss cleanup
      return true;
    default:
      return false;
  }
}

// A call refused for capacity is answered this much later. A client that floods calls past its
// limits then waits with its streams open (HTTP/2 bounds them per connection) instead of
// having its next call refused at once: its refusals cannot keep gRPC's threads, which run the
// owner's calls, busy.
constexpr absl::Duration kRefusalDelay = absl::Milliseconds(20);

void FinishAfterRefusalDelay(grpc::ServerUnaryReactor* reactor, grpc::Status status) {
  auto* alarm = new grpc::Alarm();
  alarm->Set(absl::ToChronoTime(absl::Now() + kRefusalDelay),
             [alarm, reactor, status = std::move(status)](bool) {
               reactor->Finish(status);
               delete alarm;  // the alarm's state lives until this callback returns
             });
}

CallLane LaneFor(Method method, bool owner) {
  if (owner) return OwnerCallMayBlock(method) ? CallLane::kOwnerWorker : CallLane::kOwnerInline;
  if (method == VfioDeviceService::kClaimOwnership || method == VfioDeviceService::kBindFdChannel) {
    return CallLane::kSetup;
  }
  return CallLane::kObserver;
}

// One WatchIrqs stream. Deletes itself in OnDone.
class WatchReactor final : public grpc::ServerWriteReactor<v1::IrqEvent> {
 public:
  WatchReactor(VfioDeviceService* service, VfioDeviceService::Watch watch)
      : service_(service), watch_(std::move(watch)) {
    // Headers go out at once, so the client knows the subscription exists before any event.
    StartSendInitialMetadata();
    watch_.subscription->SetListener([this] { WriteNext(); });
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) client_gone_ = true;  // cancelled or broken: no more writes
    }
    WriteNext();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      client_gone_ = true;
    }
    WriteNext();
  }

  void OnDone() override {
    // After this no listener call is in progress or will start.
    watch_.subscription->SetListener(nullptr);
    delete this;
  }

 private:
  // Starts the next write if none is in flight, or finishes the stream once it is over.
  void WriteNext() {
    enum class Next { kNothing, kWrite, kFinish } next = Next::kNothing;
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || writing_) return;
      std::optional<IrqEvent> event;
      if (!client_gone_) event = watch_.subscription->TryNext();
      if (event.has_value()) {
        out_ = VfioDeviceService::EventToProto(*event);
        writing_ = true;
        next = Next::kWrite;
      } else if (client_gone_ || watch_.subscription->closed()) {
        finished_ = true;
        next = Next::kFinish;
      }
    }
    if (next == Next::kWrite) StartWrite(&out_);
    if (next == Next::kFinish) Finish(service_->FinishWatch(absl::OkStatus()));
  }

  VfioDeviceService* const service_;
  VfioDeviceService::Watch watch_;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  v1::IrqEvent out_;  // the write in flight; touched only while writing_ is false
};

}  // namespace

VfioDeviceCallbacks::VfioDeviceCallbacks(VfioDeviceService* service, CallAdmission* admission)
    : service_(service), admission_(admission) {}

grpc::ServerUnaryReactor* VfioDeviceCallbacks::Unary(grpc::CallbackServerContext* context,
                                                     Method method,
                                                     std::function<grpc::Status()> handler) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<ConnectionId> connection = service_->ConnectionOf(context);
  if (!connection.has_value()) {
    reactor->Finish(handler());  // the handler answers UNAVAILABLE, naming the method
    return reactor;
  }
  const CallLane lane = LaneFor(method, service_->IsOwner(*connection));
  absl::Status admitted =
      admission_->Admit(*connection, lane, VfioDeviceService::MethodName(method),
                        [reactor, handler = std::move(handler)] { reactor->Finish(handler()); });
  if (!admitted.ok()) FinishAfterRefusalDelay(reactor, service_->Finish(method, admitted));
  return reactor;
}

grpc::ServerWriteReactor<v1::IrqEvent>* VfioDeviceCallbacks::WatchIrqs(
    grpc::CallbackServerContext* context, const v1::WatchIrqsRequest* request) {
  absl::StatusOr<VfioDeviceService::Watch> watch = service_->StartWatch(context, *request);
  if (!watch.ok()) {
    // A reactor that only finishes.
    class Refused final : public grpc::ServerWriteReactor<v1::IrqEvent> {
     public:
      explicit Refused(grpc::Status status) { Finish(std::move(status)); }
      void OnDone() override { delete this; }
    };
    return new Refused(service_->FinishWatch(watch.status()));
  }
  return new WatchReactor(service_, *std::move(watch));
}

// The unary methods: each runs the service's handler of the same name in its lane.
#define VFIOD_UNARY(Name, Request, Response)                                                      \
  grpc::ServerUnaryReactor* VfioDeviceCallbacks::Name(                                            \
      grpc::CallbackServerContext* context, const v1::Request* request, v1::Response* response) { \
    return Unary(context, VfioDeviceService::k##Name, [this, context, request, response] {        \
      return service_->Name(context, request, response);                                          \
    });                                                                                           \
  }

VFIOD_UNARY(GetDeviceInfo, GetDeviceInfoRequest, DeviceInfo)
VFIOD_UNARY(ReadConfig, ReadConfigRequest, ReadConfigResponse)
VFIOD_UNARY(WriteConfig, WriteConfigRequest, WriteConfigResponse)
VFIOD_UNARY(DumpConfig, DumpConfigRequest, DumpConfigResponse)
VFIOD_UNARY(ReadRegion, ReadRegionRequest, ReadRegionResponse)
VFIOD_UNARY(WriteRegion, WriteRegionRequest, WriteRegionResponse)
VFIOD_UNARY(RegisterMemory, RegisterMemoryRequest, RegisterMemoryResponse)
VFIOD_UNARY(UnregisterMemory, UnregisterMemoryRequest, UnregisterMemoryResponse)
VFIOD_UNARY(MapDma, MapDmaRequest, MapDmaResponse)
VFIOD_UNARY(UnmapDma, UnmapDmaRequest, UnmapDmaResponse)
VFIOD_UNARY(SetIrqs, SetIrqsRequest, SetIrqsResponse)
VFIOD_UNARY(Reset, ResetRequest, ResetResponse)
VFIOD_UNARY(GetState, GetStateRequest, DeviceState)
VFIOD_UNARY(ClaimOwnership, ClaimOwnershipRequest, ClaimOwnershipResponse)
VFIOD_UNARY(ReleaseOwnership, ReleaseOwnershipRequest, ReleaseOwnershipResponse)
VFIOD_UNARY(BindFdChannel, BindFdChannelRequest, BindFdChannelResponse)
VFIOD_UNARY(ReleaseFdTokens, ReleaseFdTokensRequest, ReleaseFdTokensResponse)

#undef VFIOD_UNARY

}  // namespace vfiod
