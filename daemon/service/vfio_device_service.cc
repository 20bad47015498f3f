#include "daemon/service/vfio_device_service.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/base/status_macros.h"

namespace vfiod {
namespace {

constexpr absl::string_view kMethodNames[] = {
    "GetDeviceInfo", "ReadConfig",      "WriteConfig",    "DumpConfig",
    "ReadRegion",    "WriteRegion",     "RegisterMemory", "UnregisterMemory",
    "MapDma",        "UnmapDma",        "SetIrqs",        "WatchIrqs",
    "Reset",         "GetState",        "ClaimOwnership", "ReleaseOwnership",
    "BindFdChannel", "ReleaseFdTokens",
};
static_assert(sizeof(kMethodNames) / sizeof(kMethodNames[0]) == VfioDeviceService::kMethodCount);

// WatchIrqs streams one non-owner connection may have open at once.
constexpr uint32_t kWatchStreamsPerObserver = 2;

std::string RegionName(uint32_t index) {
  if (index <= kBar5RegionIndex) return absl::StrCat("BAR", index);
  switch (index) {
    case kRomRegionIndex:
      return "ROM";
    case kConfigRegionIndex:
      return "CONFIG";
    case kVgaRegionIndex:
      return "VGA";
    default:
      return absl::StrCat("DEV", index - kNumPciRegions);
  }
}

v1::IrqIndex ToProto(IrqIndex index) { return static_cast<v1::IrqIndex>(index); }

absl::StatusOr<IrqIndex> IrqIndexFromProto(int value, absl::string_view operation) {
  if (!v1::IrqIndex_IsValid(value)) {
    return absl::InvalidArgumentError(absl::StrCat(operation, ": unknown IRQ index ", value));
  }
  return static_cast<IrqIndex>(value);
}

v1::IrqVectorState::Trigger ToProto(IrqVectorState::Trigger trigger) {
  switch (trigger) {
    case IrqVectorState::Trigger::kNone:
      return v1::IrqVectorState::TRIGGER_NONE;
    case IrqVectorState::Trigger::kClientEventfd:
      return v1::IrqVectorState::TRIGGER_CLIENT_EVENTFD;
    case IrqVectorState::Trigger::kWatch:
      return v1::IrqVectorState::TRIGGER_WATCH;
    case IrqVectorState::Trigger::kDaemonRequest:
      return v1::IrqVectorState::TRIGGER_DAEMON_REQUEST;
  }
  return v1::IrqVectorState::TRIGGER_NONE;
}

v1::Bar::Kind ToProto(Bar::Kind kind) {
  switch (kind) {
    case Bar::Kind::kMemory:
      return v1::Bar::KIND_MEMORY;
    case Bar::Kind::kIo:
      return v1::Bar::KIND_IO;
    case Bar::Kind::kRom:
      return v1::Bar::KIND_ROM;
  }
  return v1::Bar::KIND_UNSPECIFIED;
}

void FillCapability(const Capability& capability, v1::Capability* out) {
  out->set_id(capability.id);
  out->set_offset(capability.offset);
  out->set_version(capability.version);
  out->set_name(capability.name);
}

v1::DeviceInfo BuildDeviceInfo(const DeviceDescription& description, const DeviceLimits& limits,
                               uint32_t max_fd_tokens) {
  v1::DeviceInfo info;
  const BackendInfo& backend = description.backend;
  info.set_backend(backend.kind == "vfio"  ? v1::BACKEND_KIND_VFIO
                   : backend.kind == "sim" ? v1::BACKEND_KIND_SIMULATED
                                           : v1::BACKEND_KIND_UNSPECIFIED);
  info.set_name(backend.name);
  v1::PciIds* ids = info.mutable_ids();
  ids->set_vendor_id(description.vendor_id);
  ids->set_device_id(description.device_id);
  ids->set_subsystem_vendor_id(description.subsystem_vendor_id);
  ids->set_subsystem_id(description.subsystem_id);
  ids->set_class_code(description.class_code);
  ids->set_revision(description.revision);
  ids->set_header_type(description.header_type);
  info.mutable_flags()->set_pci(true);
  info.mutable_flags()->set_reset(backend.reset_supported);
  info.mutable_flags()->set_raw(backend.raw_flags);
  for (const RegionInfo& region : backend.regions) {
    v1::Region* out = info.add_regions();
    out->set_index(region.index);
    out->set_name(RegionName(region.index));
    out->set_size(region.size);
    out->set_readable(region.readable);
    out->set_writable(region.writable);
    out->set_mmappable(region.mmappable);
    for (const SparseMmapArea& area : region.sparse_mmap) {
      v1::SparseMmapArea* sparse = out->add_sparse_mmap();
      sparse->set_offset(area.offset);
      sparse->set_size(area.size);
    }
    if (region.type.has_value()) {
      out->mutable_type()->set_type(*region.type);
      out->mutable_type()->set_subtype(region.subtype.value_or(0));
    }
    out->set_msix_mappable(region.msix_mappable);
    if (region.index < description.bars.size() && description.bars[region.index].has_value()) {
      const Bar& bar = *description.bars[region.index];
      v1::Bar* bar_out = out->mutable_bar();
      bar_out->set_kind(ToProto(bar.kind));
      bar_out->set_is_64bit(bar.is_64bit);
      bar_out->set_prefetchable(bar.prefetchable);
      bar_out->set_size(bar.size);
      bar_out->set_address(bar.address);
    }
  }
  for (const IrqInfo& irq : backend.irqs) {
    v1::IrqIndexInfo* out = info.add_irqs();
    out->set_index(ToProto(irq.index));
    out->set_count(irq.count);
    out->set_eventfd(irq.eventfd);
    out->set_maskable(IrqIndexMaskable(irq));
    out->set_mask_emulated(IrqMaskEmulated(irq));
    out->set_automasked(irq.automasked);
    out->set_noresize(irq.noresize);
  }
  v1::IommuInfo* iommu = info.mutable_iommu();
  iommu->set_page_size_bitmap(backend.iommu.page_size_bitmap);
  for (const IovaRange& range : backend.iommu.usable_ranges) {
    v1::IovaRange* out = iommu->add_usable_ranges();
    out->set_start(range.start);
    out->set_last(range.last);
  }
  iommu->set_dma_mappings_available(backend.iommu.dma_mappings_available);
  for (const Capability& capability : description.capabilities) {
    FillCapability(capability, info.add_capabilities());
  }
  for (const Capability& capability : description.extended_capabilities) {
    FillCapability(capability, info.add_extended_capabilities());
  }
  info.set_config_size(description.config_size);
  v1::Limits* out_limits = info.mutable_limits();
  out_limits->set_max_memory_bytes(limits.max_memory_bytes);
  out_limits->set_max_memory_regions(limits.max_memory_regions);
  out_limits->set_max_dma_mappings(limits.max_dma_mappings);
  out_limits->set_max_region_access_bytes(limits.max_region_access_bytes);
  out_limits->set_max_fds_per_message(v1::kFdChannelMaxFdsPerMessage);
  out_limits->set_max_fd_tokens(max_fd_tokens);
  return info;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share the canonical numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

VfioDeviceService::VfioDeviceService(PciDevice* device, SessionManager* sessions,
                                     const Transport* transport, ServiceOptions options)
    : device_(device),
      sessions_(sessions),
      transport_(transport),
      options_(options),
      device_info_(
          BuildDeviceInfo(device->description(), device->limits(), options.max_fd_tokens)) {
  device_info_.set_daemon_version(options.daemon_version);
}

absl::StatusOr<ConnectionId> VfioDeviceService::Caller(const grpc::ServerContextBase* context,
                                                       absl::string_view operation) const {
  std::optional<ConnectionId> id = transport_->ConnectionForPeer(context->peer());
  if (!id.has_value() || !sessions_->NoteCall(*id)) {
    return absl::UnavailableError(
        absl::StrCat(operation, ": the calling connection is not known (it may be closing)"));
  }
  return *id;
}

grpc::Status VfioDeviceService::Finish(Method method, const absl::Status& status) {
  Counter& counter = counters_[method];
  (status.ok() ? counter.ok : counter.errors).fetch_add(1, std::memory_order_relaxed);
  return ToGrpcStatus(status);
}

grpc::Status VfioDeviceService::GetDeviceInfo(grpc::ServerContextBase* context,
                                              const v1::GetDeviceInfoRequest* request,
                                              v1::DeviceInfo* response) {
  absl::StatusOr<ConnectionId> caller = Caller(context, "GetDeviceInfo");
  if (caller.ok()) *response = device_info_;
  return Finish(kGetDeviceInfo, caller.status());
}

grpc::Status VfioDeviceService::ReadConfig(grpc::ServerContextBase* context,
                                           const v1::ReadConfigRequest* request,
                                           v1::ReadConfigResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_RETURN_IF_ERROR(Caller(context, "ReadConfig").status());
    VFIOD_ASSIGN_OR_RETURN(uint32_t value, device_->ReadConfig(request->offset(), request->size()));
    response->set_value(value);
    return absl::OkStatus();
  }();
  return Finish(kReadConfig, status);
}

grpc::Status VfioDeviceService::WriteConfig(grpc::ServerContextBase* context,
                                            const v1::WriteConfigRequest* request,
                                            v1::WriteConfigResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "WriteConfig"));
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                           sessions_->AcquireOwner(caller, "WriteConfig"));
    return device_->WriteConfig(request->offset(), request->size(), request->value());
  }();
  return Finish(kWriteConfig, status);
}

grpc::Status VfioDeviceService::DumpConfig(grpc::ServerContextBase* context,
                                           const v1::DumpConfigRequest* request,
                                           v1::DumpConfigResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_RETURN_IF_ERROR(Caller(context, "DumpConfig").status());
    VFIOD_ASSIGN_OR_RETURN(std::vector<uint8_t> data,
                           device_->DumpConfig(request->offset(), request->length()));
    response->set_offset(request->offset());
    response->set_data(data.data(), data.size());
    return absl::OkStatus();
  }();
  return Finish(kDumpConfig, status);
}

// Region 7 (config space) through ReadRegion/WriteRegion, as kernel VFIO serves it: the range
// becomes naturally aligned 4/2/1-byte config accesses (ReadConfig's and WriteConfig's rules and
// roles), so the region DeviceInfo lists as readable and writable is.
absl::Status VfioDeviceService::CheckConfigRange(absl::string_view operation, uint64_t offset,
                                                 uint64_t size) const {
  const uint64_t limit = device_->limits().max_region_access_bytes;
  if (size == 0 || size > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat(operation, ": size ", size, " is not between 1 and ", limit, " bytes"));
  }
  const uint64_t config_size = device_->description().config_size;
  if (offset > config_size || size > config_size - offset) {
    return absl::OutOfRangeError(absl::StrCat(operation, ": offset ", offset, " + size ", size,
                                              " is beyond config space (region ",
                                              kConfigRegionIndex, ") of ", config_size, " bytes"));
  }
  return absl::OkStatus();
}

namespace {
// The next naturally aligned access at `at` with `left` bytes to go: 4, 2 or 1.
uint32_t ConfigChunk(uint64_t at, uint64_t left) {
  return (at % 4 == 0 && left >= 4) ? 4 : (at % 2 == 0 && left >= 2) ? 2 : 1;
}
}  // namespace

absl::Status VfioDeviceService::ReadConfigRegion(uint64_t offset, uint64_t size, std::string* out) {
  VFIOD_RETURN_IF_ERROR(CheckConfigRange("ReadRegion", offset, size));
  out->resize(size);
  for (uint64_t done = 0; done < size;) {
    const uint32_t n = ConfigChunk(offset + done, size - done);
    VFIOD_ASSIGN_OR_RETURN(uint32_t value,
                           device_->ReadConfig(static_cast<uint32_t>(offset + done), n));
    std::memcpy(out->data() + done, &value, n);  // little-endian host
    done += n;
  }
  return absl::OkStatus();
}

absl::Status VfioDeviceService::WriteConfigRegion(uint64_t offset, absl::string_view data) {
  VFIOD_RETURN_IF_ERROR(CheckConfigRange("WriteRegion", offset, data.size()));
  for (uint64_t done = 0; done < data.size();) {
    const uint32_t n = ConfigChunk(offset + done, data.size() - done);
    uint32_t value = 0;
    std::memcpy(&value, data.data() + done, n);
    VFIOD_RETURN_IF_ERROR(device_->WriteConfig(static_cast<uint32_t>(offset + done), n, value));
    done += n;
  }
  return absl::OkStatus();
}

absl::Status VfioDeviceService::DoReadRegion(ConnectionId caller,
                                             const v1::ReadRegionRequest& request,
                                             v1::ReadRegionResponse* response) {
  if (request.index() == kConfigRegionIndex) {
    // Any role, as ReadConfig.
    return ReadConfigRegion(request.offset(), request.size(), response->mutable_data());
  }
  std::optional<SessionManager::OwnerScope> owner;
  if (!options_.observer_bar_reads) {
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope scope,
                           sessions_->AcquireOwner(caller, "ReadRegion"));
    owner.emplace(std::move(scope));
  }
  VFIOD_ASSIGN_OR_RETURN(std::vector<uint8_t> data,
                         device_->ReadRegion(request.index(), request.offset(), request.size()));
  response->set_data(data.data(), data.size());
  return absl::OkStatus();
}

grpc::Status VfioDeviceService::ReadRegion(grpc::ServerContextBase* context,
                                           const v1::ReadRegionRequest* request,
                                           v1::ReadRegionResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "ReadRegion"));
    return DoReadRegion(caller, *request, response);
  }();
  return Finish(kReadRegion, status);
}

grpc::Status VfioDeviceService::WriteRegion(grpc::ServerContextBase* context,
                                            const v1::WriteRegionRequest* request,
                                            v1::WriteRegionResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "WriteRegion"));
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                           sessions_->AcquireOwner(caller, "WriteRegion"));
    const std::string& data = request->data();
    if (request->index() == kConfigRegionIndex) return WriteConfigRegion(request->offset(), data);
    return device_->WriteRegion(
        request->index(), request->offset(),
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  }();
  return Finish(kWriteRegion, status);
}

grpc::Status VfioDeviceService::RegisterMemory(grpc::ServerContextBase* context,
                                               const v1::RegisterMemoryRequest* request,
                                               v1::RegisterMemoryResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "RegisterMemory"));
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                           sessions_->AcquireOwner(caller, "RegisterMemory"));
    VFIOD_ASSIGN_OR_RETURN(UniqueFd fd,
                           sessions_->TakeFd(caller, request->fd_token(), "RegisterMemory"));
    VFIOD_ASSIGN_OR_RETURN(MemoryInfo memory,
                           device_->RegisterMemory(std::move(fd), request->size()));
    response->set_memory_id(memory.id);
    response->set_size(memory.size);
    return absl::OkStatus();
  }();
  return Finish(kRegisterMemory, status);
}

grpc::Status VfioDeviceService::UnregisterMemory(grpc::ServerContextBase* context,
                                                 const v1::UnregisterMemoryRequest* request,
                                                 v1::UnregisterMemoryResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "UnregisterMemory"));
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                           sessions_->AcquireOwner(caller, "UnregisterMemory"));
    return device_->UnregisterMemory(request->memory_id());
  }();
  return Finish(kUnregisterMemory, status);
}

grpc::Status VfioDeviceService::MapDma(grpc::ServerContextBase* context,
                                       const v1::MapDmaRequest* request,
                                       v1::MapDmaResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "MapDma"));
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                           sessions_->AcquireOwner(caller, "MapDma"));
    DmaMapRequest map;
    map.iova = request->iova();
    map.size = request->size();
    map.memory_id = request->memory_id();
    map.offset = request->offset();
    map.device_read = request->device_read();
    map.device_write = request->device_write();
    return device_->MapDma(map);
  }();
  return Finish(kMapDma, status);
}

grpc::Status VfioDeviceService::UnmapDma(grpc::ServerContextBase* context,
                                         const v1::UnmapDmaRequest* request,
                                         v1::UnmapDmaResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "UnmapDma"));
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                           sessions_->AcquireOwner(caller, "UnmapDma"));
    VFIOD_ASSIGN_OR_RETURN(UnmapResult result, device_->UnmapDma(request->iova(), request->size()));
    response->set_unmapped_bytes(result.bytes);
    response->set_unmapped_mappings(result.mappings);
    return absl::OkStatus();
  }();
  return Finish(kUnmapDma, status);
}

absl::Status VfioDeviceService::DoSetIrqs(ConnectionId caller, const v1::SetIrqsRequest& request) {
  VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                         sessions_->AcquireOwner(caller, "SetIrqs"));
  IrqRequest irq;
  VFIOD_ASSIGN_OR_RETURN(irq.index, IrqIndexFromProto(request.index(), "SetIrqs"));
  irq.start = request.start();
  irq.count = request.count();
  switch (request.action()) {
    case v1::IRQ_ACTION_TRIGGER:
      irq.action = IrqAction::kTrigger;
      break;
    case v1::IRQ_ACTION_MASK:
      irq.action = IrqAction::kMask;
      break;
    case v1::IRQ_ACTION_UNMASK:
      irq.action = IrqAction::kUnmask;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("SetIrqs: action ",
                                                     static_cast<int>(request.action()),
                                                     " is not TRIGGER, MASK or UNMASK"));
  }
  switch (request.data_case()) {
    case v1::SetIrqsRequest::kNone:
      irq.data = IrqRequest::Data::kNone;
      break;
    case v1::SetIrqsRequest::kBools:
      irq.data = IrqRequest::Data::kBool;
      irq.bools.assign(request.bools().values().begin(), request.bools().values().end());
      break;
    case v1::SetIrqsRequest::kWatch:
      irq.data = IrqRequest::Data::kWatch;
      break;
    case v1::SetIrqsRequest::kEventfds: {
      irq.data = IrqRequest::Data::kEventfd;
      const auto& tokens = request.eventfds().fd_tokens();
      if (static_cast<uint64_t>(tokens.size()) != request.count()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "SetIrqs: ", tokens.size(), " eventfd tokens for count ", request.count()));
      }
      std::vector<absl::string_view> hex(tokens.begin(), tokens.end());
      VFIOD_ASSIGN_OR_RETURN(std::vector<std::optional<UniqueFd>> fds,
                             sessions_->TakeFds(caller, hex, "SetIrqs"));
      irq.eventfds.reserve(fds.size());
      for (size_t i = 0; i < fds.size(); ++i) {
        if (!fds[i].has_value()) {
          irq.eventfds.push_back(std::nullopt);
          continue;
        }
        absl::StatusOr<EventFd> eventfd = EventFd::Adopt(std::move(*fds[i]));
        if (!eventfd.ok()) {
          // INVALID_ARGUMENT when the fd is not an eventfd.
          return absl::Status(
              eventfd.status().code(),
              absl::StrCat("SetIrqs: fd token ", hex[i], " (vector ", uint64_t{request.start()} + i,
                           "): ", eventfd.status().message()));
        }
        irq.eventfds.push_back(*std::move(eventfd));
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          "SetIrqs: data is not set (one of none, bools, eventfds, watch)");
  }
  return device_->SetIrqs(std::move(irq));
}

grpc::Status VfioDeviceService::SetIrqs(grpc::ServerContextBase* context,
                                        const v1::SetIrqsRequest* request,
                                        v1::SetIrqsResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "SetIrqs"));
    return DoSetIrqs(caller, *request);
  }();
  return Finish(kSetIrqs, status);
}

absl::StatusOr<VfioDeviceService::Watch> VfioDeviceService::StartWatch(
    grpc::ServerContextBase* context, const v1::WatchIrqsRequest& request) {
  VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "WatchIrqs"));
  // Observers may not take every watcher the device has: the owner keeps one.
  const uint32_t watchers = device_->limits().max_irq_watchers;
  const SessionManager::StreamLimits limits{kWatchStreamsPerObserver,
                                            watchers > 1 ? watchers - 1 : watchers};
  VFIOD_ASSIGN_OR_RETURN(SessionManager::StreamScope stream,
                         sessions_->BeginStream(caller, "WatchIrqs", limits));
  std::vector<IrqIndex> indexes;
  for (int value : request.indexes()) {
    VFIOD_ASSIGN_OR_RETURN(IrqIndex index, IrqIndexFromProto(value, "WatchIrqs"));
    indexes.push_back(index);
  }
  VFIOD_ASSIGN_OR_RETURN(std::shared_ptr<IrqSubscription> subscription,
                         device_->WatchIrqs(std::move(indexes)));
  return Watch{std::move(subscription), std::move(stream)};
}

grpc::Status VfioDeviceService::FinishWatch(const absl::Status& status) {
  return Finish(kWatchIrqs, status);
}

v1::IrqEvent VfioDeviceService::EventToProto(const IrqEvent& event) {
  v1::IrqEvent out;
  out.set_index(ToProto(event.index));
  out.set_vector(event.vector);
  out.set_count(event.count);
  out.set_timestamp_ns(event.timestamp_ns);
  return out;
}

absl::string_view VfioDeviceService::MethodName(Method method) { return kMethodNames[method]; }

std::optional<ConnectionId> VfioDeviceService::ConnectionOf(
    const grpc::ServerContextBase* context) const {
  return transport_->ConnectionForPeer(context->peer());
}

bool VfioDeviceService::IsOwner(ConnectionId connection) const {
  return sessions_->RoleOf(connection) == SessionRole::kOwner;
}

grpc::Status VfioDeviceService::Reset(grpc::ServerContextBase* context,
                                      const v1::ResetRequest* request,
                                      v1::ResetResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "Reset"));
    VFIOD_ASSIGN_OR_RETURN(SessionManager::OwnerScope owner,
                           sessions_->AcquireOwner(caller, "Reset"));
    return device_->Reset();
  }();
  return Finish(kReset, status);
}

void VfioDeviceService::FillState(ConnectionId caller, v1::DeviceState* state) const {
  SessionManager::Summary summary = sessions_->GetSummary();
  state->set_caller_role(sessions_->RoleOf(caller) == SessionRole::kOwner ? v1::ROLE_OWNER
                                                                          : v1::ROLE_OBSERVER);
  state->set_owner_attached(summary.owner_attached);
  state->set_sessions(summary.sessions);
  state->set_owner_losses(summary.owner_losses);
  DeviceSnapshot snapshot = device_->Snapshot();
  for (const MemoryInfo& memory : snapshot.memory) {
    v1::MemoryState* out = state->add_memory();
    out->set_memory_id(memory.id);
    out->set_size(memory.size);
    out->set_mappings(memory.mappings);
  }
  for (const DmaMapRequest& mapping : snapshot.mappings) {
    v1::DmaMappingState* out = state->add_dma_mappings();
    out->set_iova(mapping.iova);
    out->set_size(mapping.size);
    out->set_memory_id(mapping.memory_id);
    out->set_offset(mapping.offset);
    out->set_device_read(mapping.device_read);
    out->set_device_write(mapping.device_write);
  }
  for (const IrqIndexState& index : snapshot.irqs) {
    v1::IrqIndexState* out = state->add_irqs();
    out->set_index(ToProto(index.index));
    out->set_enabled(index.enabled);
    for (const IrqVectorState& vector : index.vectors) {
      v1::IrqVectorState* vector_out = out->add_vectors();
      vector_out->set_vector(vector.vector);
      vector_out->set_trigger(ToProto(vector.trigger));
      vector_out->set_masked(vector.masked);
      vector_out->set_pending(vector.pending);
      vector_out->set_unmask_eventfd(vector.unmask_eventfd);
      vector_out->set_delivered(vector.delivered);
    }
  }
  for (int method = 0; method < kMethodCount; ++method) {
    v1::RpcCounter* out = state->add_counters();
    out->set_method(std::string(kMethodNames[method]));
    out->set_ok(counters_[method].ok.load(std::memory_order_relaxed));
    out->set_errors(counters_[method].errors.load(std::memory_order_relaxed));
  }
  state->mutable_device()->set_dma_faults(snapshot.counters.dma_faults);
  state->mutable_device()->set_interrupts(snapshot.counters.interrupts);
  switch (snapshot.last_owner_loss) {
    case OwnerLossReset::kNone:
      state->set_last_owner_loss(v1::OWNER_LOSS_RESET_NONE);
      break;
    case OwnerLossReset::kReset:
      state->set_last_owner_loss(v1::OWNER_LOSS_RESET_DEVICE_RESET);
      break;
    case OwnerLossReset::kDecodeDisabled:
      state->set_last_owner_loss(v1::OWNER_LOSS_RESET_DECODE_DISABLED);
      break;
  }
}

grpc::Status VfioDeviceService::GetState(grpc::ServerContextBase* context,
                                         const v1::GetStateRequest* request,
                                         v1::DeviceState* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "GetState"));
    FillState(caller, response);
    return absl::OkStatus();
  }();
  return Finish(kGetState, status);
}

grpc::Status VfioDeviceService::ClaimOwnership(grpc::ServerContextBase* context,
                                               const v1::ClaimOwnershipRequest* request,
                                               v1::ClaimOwnershipResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "ClaimOwnership"));
    return sessions_->ClaimOwnership(caller);
  }();
  return Finish(kClaimOwnership, status);
}

grpc::Status VfioDeviceService::ReleaseOwnership(grpc::ServerContextBase* context,
                                                 const v1::ReleaseOwnershipRequest* request,
                                                 v1::ReleaseOwnershipResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "ReleaseOwnership"));
    return sessions_->ReleaseOwnership(caller);
  }();
  return Finish(kReleaseOwnership, status);
}

grpc::Status VfioDeviceService::BindFdChannel(grpc::ServerContextBase* context,
                                              const v1::BindFdChannelRequest* request,
                                              v1::BindFdChannelResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "BindFdChannel"));
    return sessions_->BindFdChannel(caller, request->channel_key());
  }();
  return Finish(kBindFdChannel, status);
}

grpc::Status VfioDeviceService::ReleaseFdTokens(grpc::ServerContextBase* context,
                                                const v1::ReleaseFdTokensRequest* request,
                                                v1::ReleaseFdTokensResponse* response) {
  absl::Status status = [&]() -> absl::Status {
    VFIOD_ASSIGN_OR_RETURN(ConnectionId caller, Caller(context, "ReleaseFdTokens"));
    const auto& tokens = request->fd_tokens();
    const uint64_t limit = std::max<uint64_t>(options_.max_fd_tokens, 1);
    if (tokens.empty() || static_cast<uint64_t>(tokens.size()) > limit) {
      return absl::InvalidArgumentError(
          absl::StrCat("ReleaseFdTokens: ", tokens.size(), " tokens; 1..", limit, " per request"));
    }
    std::vector<absl::string_view> hex(tokens.begin(), tokens.end());
    for (absl::string_view token : hex) {
      // TakeFds reads "" as "no fd"; here every entry must name one.
      if (token.empty()) return absl::InvalidArgumentError("ReleaseFdTokens: an empty token");
    }
    VFIOD_ASSIGN_OR_RETURN(std::vector<std::optional<UniqueFd>> fds,
                           sessions_->TakeFds(caller, hex, "ReleaseFdTokens"));
    response->set_released(static_cast<uint32_t>(fds.size()));
    return absl::OkStatus();  // the fds close here
  }();
  return Finish(kReleaseFdTokens, status);
}

}  // namespace vfiod
