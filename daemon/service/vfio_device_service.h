// VfioDeviceService: the gRPC face of vfiod (service vfiod.v1.VfioDevice).
//
// The only place where generated proto types meet the device model, and the only place where
// absl::Status becomes grpc::Status (ToGrpcStatus). Each handler identifies the calling session
// from the connection (Transport::ConnectionForPeer), checks its role, decodes and range-checks
// the proto fields (open proto3 enums included), calls PciDevice, and encodes the answer. A
// request that does not decode never reaches a handler; malformed_request.h maps gRPC's INTERNAL
// for it to INVALID_ARGUMENT.
//
// The handlers are plain methods: VfioDeviceCallbacks (vfio_device_callbacks.h) is the gRPC
// service that admits each call (call_admission.h) and runs its handler; tests and the service
// fuzzer call the handlers directly.
//
// Thread-safety: handlers may run concurrently on any threads; all state lives in PciDevice and
// SessionManager, which are thread-safe. A handler blocks for as long as its device operation.
#ifndef VFIOD_DAEMON_SERVICE_VFIO_DEVICE_SERVICE_H_
#define VFIOD_DAEMON_SERVICE_VFIO_DEVICE_SERVICE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/session_manager.h"
#include "daemon/transport/transport.h"
#include "grpcpp/grpcpp.h"
#include "proto/vfiod/v1/vfiod.grpc.pb.h"

namespace vfiod {

// absl::Status -> grpc::Status with the same code (the numbering is shared) and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

struct ServiceOptions {
  bool observer_bar_reads = false;  // observers may read BARs (reads can have side effects)
  uint32_t max_fd_tokens = 0;       // reported in DeviceInfo.limits; enforced by SessionManager
  std::string daemon_version;       // reported in DeviceInfo
};

class VfioDeviceService final {
 public:
  // All pointers must outlive the service.
  VfioDeviceService(PciDevice* device, SessionManager* sessions, const Transport* transport,
                    ServiceOptions options);

  grpc::Status GetDeviceInfo(grpc::ServerContextBase* context,
                             const v1::GetDeviceInfoRequest* request, v1::DeviceInfo* response);
  grpc::Status ReadConfig(grpc::ServerContextBase* context, const v1::ReadConfigRequest* request,
                          v1::ReadConfigResponse* response);
  grpc::Status WriteConfig(grpc::ServerContextBase* context, const v1::WriteConfigRequest* request,
                           v1::WriteConfigResponse* response);
  grpc::Status DumpConfig(grpc::ServerContextBase* context, const v1::DumpConfigRequest* request,
                          v1::DumpConfigResponse* response);
  grpc::Status ReadRegion(grpc::ServerContextBase* context, const v1::ReadRegionRequest* request,
                          v1::ReadRegionResponse* response);
  grpc::Status WriteRegion(grpc::ServerContextBase* context, const v1::WriteRegionRequest* request,
                           v1::WriteRegionResponse* response);
  grpc::Status RegisterMemory(grpc::ServerContextBase* context,
                              const v1::RegisterMemoryRequest* request,
                              v1::RegisterMemoryResponse* response);
  grpc::Status UnregisterMemory(grpc::ServerContextBase* context,
                                const v1::UnregisterMemoryRequest* request,
                                v1::UnregisterMemoryResponse* response);
  grpc::Status MapDma(grpc::ServerContextBase* context, const v1::MapDmaRequest* request,
                      v1::MapDmaResponse* response);
  grpc::Status UnmapDma(grpc::ServerContextBase* context, const v1::UnmapDmaRequest* request,
                        v1::UnmapDmaResponse* response);
  grpc::Status SetIrqs(grpc::ServerContextBase* context, const v1::SetIrqsRequest* request,
                       v1::SetIrqsResponse* response);
  // WatchIrqs, in two halves for an asynchronous stream (vfio_device_callbacks.h): StartWatch
  // checks the caller and the request and subscribes (the stream scope keeps the connection from
  // being evicted as idle while the stream is open); FinishWatch counts the stream's outcome.
  struct Watch {
    std::shared_ptr<IrqSubscription> subscription;
    SessionManager::StreamScope stream;
  };
  absl::StatusOr<Watch> StartWatch(grpc::ServerContextBase* context,
                                   const v1::WatchIrqsRequest& request);
  grpc::Status FinishWatch(const absl::Status& status);
  static v1::IrqEvent EventToProto(const IrqEvent& event);
  grpc::Status Reset(grpc::ServerContextBase* context, const v1::ResetRequest* request,
                     v1::ResetResponse* response);
  grpc::Status GetState(grpc::ServerContextBase* context, const v1::GetStateRequest* request,
                        v1::DeviceState* response);
  grpc::Status ClaimOwnership(grpc::ServerContextBase* context,
                              const v1::ClaimOwnershipRequest* request,
                              v1::ClaimOwnershipResponse* response);
  grpc::Status ReleaseOwnership(grpc::ServerContextBase* context,
                                const v1::ReleaseOwnershipRequest* request,
                                v1::ReleaseOwnershipResponse* response);
  grpc::Status BindFdChannel(grpc::ServerContextBase* context,
                             const v1::BindFdChannelRequest* request,
                             v1::BindFdChannelResponse* response);
  grpc::Status ReleaseFdTokens(grpc::ServerContextBase* context,
                               const v1::ReleaseFdTokensRequest* request,
                               v1::ReleaseFdTokensResponse* response);

  enum Method {
    kGetDeviceInfo,
    kReadConfig,
    kWriteConfig,
    kDumpConfig,
    kReadRegion,
    kWriteRegion,
    kRegisterMemory,
    kUnregisterMemory,
    kMapDma,
    kUnmapDma,
    kSetIrqs,
    kWatchIrqs,
    kReset,
    kGetState,
    kClaimOwnership,
    kReleaseOwnership,
    kBindFdChannel,
    kReleaseFdTokens,
    kMethodCount,
  };

  static absl::string_view MethodName(Method method);

  // The connection a call comes from (nullopt: unknown, e.g. closing), and whether it is the
  // owner's; for choosing where the call runs. Notes no call.
  std::optional<ConnectionId> ConnectionOf(const grpc::ServerContextBase* context) const;
  bool IsOwner(ConnectionId connection) const;

  // Counts a call's outcome under `method` and translates it; also for calls refused before
  // their handler ran.
  grpc::Status Finish(Method method, const absl::Status& status);

 private:
  struct Counter {
    std::atomic<uint64_t> ok{0};
    std::atomic<uint64_t> errors{0};
  };

  absl::StatusOr<ConnectionId> Caller(const grpc::ServerContextBase* context,
                                      absl::string_view operation) const;

  absl::Status DoReadRegion(ConnectionId caller, const v1::ReadRegionRequest& request,
                            v1::ReadRegionResponse* response);
  absl::Status CheckConfigRange(absl::string_view operation, uint64_t offset, uint64_t size) const;
  absl::Status ReadConfigRegion(uint64_t offset, uint64_t size, std::string* out);
  absl::Status WriteConfigRegion(uint64_t offset, absl::string_view data);
  absl::Status DoSetIrqs(ConnectionId caller, const v1::SetIrqsRequest& request);
  void FillState(ConnectionId caller, v1::DeviceState* state) const;

  PciDevice* const device_;
  SessionManager* const sessions_;
  const Transport* const transport_;
  const ServiceOptions options_;
  v1::DeviceInfo device_info_;  // immutable, built once
  std::array<Counter, kMethodCount> counters_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_SERVICE_VFIO_DEVICE_SERVICE_H_
