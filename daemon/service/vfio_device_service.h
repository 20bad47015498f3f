// VfioDeviceService: the gRPC face of vfiod (service vfiod.v1.VfioDevice).
//
// The only place where generated proto types meet the device model, and the only place where
// absl::Status becomes grpc::Status (ToGrpcStatus). Each handler identifies the calling session
// from the connection (Transport::ConnectionForPeer), checks its role, decodes and range-checks
// the proto fields (open proto3 enums included), calls PciDevice, and encodes the answer. A
// request that does not decode never reaches a handler; malformed_request.h maps gRPC's INTERNAL
// for it to INVALID_ARGUMENT.
//
// Thread-safety: handlers run concurrently on gRPC's threads; all state lives in PciDevice and
// SessionManager, which are thread-safe.
#ifndef VFIOD_DAEMON_SERVICE_VFIO_DEVICE_SERVICE_H_
#define VFIOD_DAEMON_SERVICE_VFIO_DEVICE_SERVICE_H_

#include <array>
#include <atomic>
#include <cstdint>
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

class VfioDeviceService final : public v1::VfioDevice::Service {
 public:
  // All pointers must outlive the service.
  VfioDeviceService(PciDevice* device, SessionManager* sessions, const Transport* transport,
                    ServiceOptions options);

  grpc::Status GetDeviceInfo(grpc::ServerContext* context, const v1::GetDeviceInfoRequest* request,
                             v1::DeviceInfo* response) override;
  grpc::Status ReadConfig(grpc::ServerContext* context, const v1::ReadConfigRequest* request,
                          v1::ReadConfigResponse* response) override;
  grpc::Status WriteConfig(grpc::ServerContext* context, const v1::WriteConfigRequest* request,
                           v1::WriteConfigResponse* response) override;
  grpc::Status DumpConfig(grpc::ServerContext* context, const v1::DumpConfigRequest* request,
                          v1::DumpConfigResponse* response) override;
  grpc::Status ReadRegion(grpc::ServerContext* context, const v1::ReadRegionRequest* request,
                          v1::ReadRegionResponse* response) override;
  grpc::Status WriteRegion(grpc::ServerContext* context, const v1::WriteRegionRequest* request,
                           v1::WriteRegionResponse* response) override;
  grpc::Status RegisterMemory(grpc::ServerContext* context,
                              const v1::RegisterMemoryRequest* request,
                              v1::RegisterMemoryResponse* response) override;
  grpc::Status UnregisterMemory(grpc::ServerContext* context,
                                const v1::UnregisterMemoryRequest* request,
                                v1::UnregisterMemoryResponse* response) override;
  grpc::Status MapDma(grpc::ServerContext* context, const v1::MapDmaRequest* request,
                      v1::MapDmaResponse* response) override;
  grpc::Status UnmapDma(grpc::ServerContext* context, const v1::UnmapDmaRequest* request,
                        v1::UnmapDmaResponse* response) override;
  grpc::Status SetIrqs(grpc::ServerContext* context, const v1::SetIrqsRequest* request,
                       v1::SetIrqsResponse* response) override;
  grpc::Status WatchIrqs(grpc::ServerContext* context, const v1::WatchIrqsRequest* request,
                         grpc::ServerWriter<v1::IrqEvent>* writer) override;
  grpc::Status Reset(grpc::ServerContext* context, const v1::ResetRequest* request,
                     v1::ResetResponse* response) override;
  grpc::Status GetState(grpc::ServerContext* context, const v1::GetStateRequest* request,
                        v1::DeviceState* response) override;
  grpc::Status ClaimOwnership(grpc::ServerContext* context,
                              const v1::ClaimOwnershipRequest* request,
                              v1::ClaimOwnershipResponse* response) override;
  grpc::Status ReleaseOwnership(grpc::ServerContext* context,
                                const v1::ReleaseOwnershipRequest* request,
                                v1::ReleaseOwnershipResponse* response) override;
  grpc::Status BindFdChannel(grpc::ServerContext* context,
                             const v1::BindFdChannelRequest* request,
                             v1::BindFdChannelResponse* response) override;
  grpc::Status ReleaseFdTokens(grpc::ServerContext* context,
                               const v1::ReleaseFdTokensRequest* request,
                               v1::ReleaseFdTokensResponse* response) override;

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

 private:
  struct Counter {
    std::atomic<uint64_t> ok{0};
    std::atomic<uint64_t> errors{0};
  };

  absl::StatusOr<ConnectionId> Caller(const grpc::ServerContext* context,
                                      absl::string_view operation) const;
  // Counts the outcome and translates it.
  grpc::Status Finish(Method method, const absl::Status& status);

  absl::Status DoReadRegion(ConnectionId caller, const v1::ReadRegionRequest& request,
                            v1::ReadRegionResponse* response);
  absl::Status CheckConfigRange(absl::string_view operation, uint64_t offset,
                                uint64_t size) const;
  absl::Status ReadConfigRegion(uint64_t offset, uint64_t size, std::string* out);
  absl::Status WriteConfigRegion(uint64_t offset, absl::string_view data);
  absl::Status DoSetIrqs(ConnectionId caller, const v1::SetIrqsRequest& request);
  absl::Status DoWatchIrqs(grpc::ServerContext* context, const v1::WatchIrqsRequest& request,
                           grpc::ServerWriter<v1::IrqEvent>* writer);
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
