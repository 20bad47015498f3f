// VfioDeviceCallbacks: service vfiod.v1.VfioDevice on gRPC's callback API.
//
// Each unary call is admitted to a lane (call_admission.h) by its caller's role and method, and
// runs VfioDeviceService's handler there; a call refused for capacity is counted under its
// method and answered RESOURCE_EXHAUSTED 20 ms later (a flood of refused calls then costs the
// daemon little). Nothing blocks gRPC's own threads except the
// owner's short calls, so a client that floods calls, or stops reading its responses (an
// HTTP/2 window of 0), holds no thread the owner needs: with the callback API a finished call
// whose response cannot be sent yet holds only its buffers.
//
// WatchIrqs is an asynchronous stream: the IRQ subscription tells the stream when events are
// queued; at most one write is in flight; a reader that does not read holds no thread, its
// subscription keeps the newest 1024 events (irq_types.h), and the stream ends when the client
// cancels, the subscription closes, or the server shuts down.
//
// Thread-safety: as gRPC requires of a service; the pointers given must outlive the gRPC server.
#ifndef VFIOD_DAEMON_SERVICE_VFIO_DEVICE_CALLBACKS_H_
#define VFIOD_DAEMON_SERVICE_VFIO_DEVICE_CALLBACKS_H_

#include <functional>

#include "daemon/service/call_admission.h"
#include "daemon/service/vfio_device_service.h"
#include "grpcpp/grpcpp.h"
#include "proto/vfiod/v1/vfiod.grpc.pb.h"

namespace vfiod {

class VfioDeviceCallbacks final : public v1::VfioDevice::CallbackService {
 public:
  VfioDeviceCallbacks(VfioDeviceService* service, CallAdmission* admission);

  grpc::ServerUnaryReactor* GetDeviceInfo(grpc::CallbackServerContext* context,
                                          const v1::GetDeviceInfoRequest* request,
                                          v1::DeviceInfo* response) override;
  grpc::ServerUnaryReactor* ReadConfig(grpc::CallbackServerContext* context,
                                       const v1::ReadConfigRequest* request,
                                       v1::ReadConfigResponse* response) override;
  grpc::ServerUnaryReactor* WriteConfig(grpc::CallbackServerContext* context,
                                        const v1::WriteConfigRequest* request,
                                        v1::WriteConfigResponse* response) override;
  grpc::ServerUnaryReactor* DumpConfig(grpc::CallbackServerContext* context,
                                       const v1::DumpConfigRequest* request,
                                       v1::DumpConfigResponse* response) override;
  grpc::ServerUnaryReactor* ReadRegion(grpc::CallbackServerContext* context,
                                       const v1::ReadRegionRequest* request,
                                       v1::ReadRegionResponse* response) override;
  grpc::ServerUnaryReactor* WriteRegion(grpc::CallbackServerContext* context,
                                        const v1::WriteRegionRequest* request,
                                        v1::WriteRegionResponse* response) override;
  grpc::ServerUnaryReactor* RegisterMemory(grpc::CallbackServerContext* context,
                                           const v1::RegisterMemoryRequest* request,
                                           v1::RegisterMemoryResponse* response) override;
  grpc::ServerUnaryReactor* UnregisterMemory(grpc::CallbackServerContext* context,
                                             const v1::UnregisterMemoryRequest* request,
                                             v1::UnregisterMemoryResponse* response) override;
  grpc::ServerUnaryReactor* MapDma(grpc::CallbackServerContext* context,
                                   const v1::MapDmaRequest* request,
                                   v1::MapDmaResponse* response) override;
  grpc::ServerUnaryReactor* UnmapDma(grpc::CallbackServerContext* context,
                                     const v1::UnmapDmaRequest* request,
                                     v1::UnmapDmaResponse* response) override;
  grpc::ServerUnaryReactor* SetIrqs(grpc::CallbackServerContext* context,
                                    const v1::SetIrqsRequest* request,
                                    v1::SetIrqsResponse* response) override;
  grpc::ServerWriteReactor<v1::IrqEvent>* WatchIrqs(grpc::CallbackServerContext* context,
                                                    const v1::WatchIrqsRequest* request) override;
  grpc::ServerUnaryReactor* Reset(grpc::CallbackServerContext* context,
                                  const v1::ResetRequest* request,
                                  v1::ResetResponse* response) override;
  grpc::ServerUnaryReactor* GetState(grpc::CallbackServerContext* context,
                                     const v1::GetStateRequest* request,
                                     v1::DeviceState* response) override;
  grpc::ServerUnaryReactor* ClaimOwnership(grpc::CallbackServerContext* context,
                                           const v1::ClaimOwnershipRequest* request,
                                           v1::ClaimOwnershipResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseOwnership(grpc::CallbackServerContext* context,
                                             const v1::ReleaseOwnershipRequest* request,
                                             v1::ReleaseOwnershipResponse* response) override;
  grpc::ServerUnaryReactor* BindFdChannel(grpc::CallbackServerContext* context,
                                          const v1::BindFdChannelRequest* request,
                                          v1::BindFdChannelResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseFdTokens(grpc::CallbackServerContext* context,
                                            const v1::ReleaseFdTokensRequest* request,
                                            v1::ReleaseFdTokensResponse* response) override;

 private:
  using Method = VfioDeviceService::Method;
  // Admits the call and runs `handler` (which calls the VfioDeviceService handler) in its lane;
  // the reactor finishes with the handler's status, or with the refusal after the refusal delay.
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, Method method,
                                  std::function<grpc::Status()> handler);

  VfioDeviceService* const service_;
  CallAdmission* const admission_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_SERVICE_VFIO_DEVICE_CALLBACKS_H_
