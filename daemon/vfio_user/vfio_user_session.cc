#include "daemon/vfio_user/vfio_user_session.h"

#include <linux/vfio.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/format.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/status_macros.h"
#include "daemon/pci/irq_types.h"

namespace vfiod::vfio_user {
namespace {

absl::Status Invalid(const char* operation, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(operation, ": ", what));
}

// Payload of exactly sizeof(T), copied out (payloads need not be aligned).
template <typename T>
absl::StatusOr<T> FixedPayload(const char* operation, absl::Span<const uint8_t> payload) {
  if (payload.size() != sizeof(T)) {
    return Invalid(operation, absl::StrCat("payload of ", payload.size(), " bytes, expected ",
                                           sizeof(T)));
  }
  T value;
  std::memcpy(&value, payload.data(), sizeof(T));
  return value;
}

absl::Status NoFds(const char* operation, const Message& message) {
  if (message.fds.empty()) return absl::OkStatus();
  return Invalid(operation, absl::StrCat(message.fds.size(), " fds sent, this command takes none"));
}

// Mapping of a status code to the errno kernel VFIO gives in the same case.
uint32_t ErrnoForCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return EINVAL;
    case absl::StatusCode::kNotFound:
      return ENOENT;
    case absl::StatusCode::kAlreadyExists:
      return EEXIST;
    case absl::StatusCode::kPermissionDenied:
      return EPERM;
    case absl::StatusCode::kResourceExhausted:
      return ENOSPC;
    case absl::StatusCode::kUnimplemented:
      return ENOTSUP;
    case absl::StatusCode::kUnavailable:
      return ENODEV;
    default:
      return EIO;
  }
}

}  // namespace

uint32_t ErrnoFor(const absl::Status& status) {
  if (status.ok()) return 0;
  const absl::string_view message = status.message();
  constexpr absl::string_view kErrno = "(errno ";
  const size_t at = message.rfind(kErrno);
  if (at != absl::string_view::npos) {
    absl::string_view rest = message.substr(at + kErrno.size());
    uint32_t value;
    if (absl::SimpleAtoi(rest.substr(0, rest.find(')')), &value) && value > 0 && value < 4096) {
      return value;
    }
  }
  // The simulated device names the kernel's errno for disabled BAR decode.
  if (message.find("(EIO)") != absl::string_view::npos) return EIO;
  return ErrnoForCode(status.code());
}

VfioUserSession::VfioUserSession(PciDevice* device, SessionManager* sessions,
                                 DmaWindows* windows, ConnectionId id,
                                 const ServerLimits& limits)
    : device_(device), sessions_(sessions), windows_(windows), id_(id), limits_(limits) {}

VfioUserSession::Reply VfioUserSession::Handle(Message& message) {
  reply_.clear();
  Reply reply;
  const bool first = !negotiated_.has_value();
  absl::Status status = Dispatch(message);
  if (!status.ok()) {
    reply.error = ErrnoFor(status);
    // A connection that did not get through VERSION has no session to continue.
    reply.close = first;
    return reply;
  }
  reply.payload = reply_;
  return reply;
}

absl::Status VfioUserSession::Dispatch(Message& message) {
  const uint16_t command = message.header.command;
  if (!negotiated_.has_value()) {
    if (command != static_cast<uint16_t>(Command::kVersion)) {
      return Invalid(CommandName(command), "the first command must be VERSION");
    }
    return Version(message);
  }
  absl::StatusOr<SessionManager::OwnerScope> owner =
      sessions_->AcquireOwner(id_, CommandName(command));
  if (!owner.ok()) return owner.status();
  switch (static_cast<Command>(command)) {
    case Command::kVersion:
      return Invalid("VERSION", "the version was negotiated already");
    case Command::kDmaMap:
      return DmaMap(message);
    case Command::kDmaUnmap:
      return DmaUnmap(message);
    case Command::kDeviceGetInfo:
      return GetDeviceInfo(message);
    case Command::kDeviceGetRegionInfo:
      return GetRegionInfo(message);
    case Command::kDeviceGetRegionIoFds:
      return GetRegionIoFds(message);
    case Command::kDeviceGetIrqInfo:
      return GetIrqInfo(message);
    case Command::kDeviceSetIrqs:
      return SetIrqs(message);
    case Command::kRegionRead:
      return RegionRead(message);
    case Command::kRegionWrite:
      return RegionWrite(message);
    case Command::kDeviceReset:
      return Reset(message);
    case Command::kDmaRead:
    case Command::kDmaWrite:
      return Invalid(CommandName(command), "a server-to-client command");
    case Command::kRegionWriteMulti:
    case Command::kDeviceFeature:
    case Command::kMigDataRead:
    case Command::kMigDataWrite:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat(CommandName(command), " (", command, "): not offered by this server"));
}

absl::Status VfioUserSession::Version(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("VERSION", message));
  VFIOD_ASSIGN_OR_RETURN(Negotiated negotiated, Negotiate(message.payload, limits_));
  absl::Status claimed = sessions_->ClaimOwnership(id_);
  if (!claimed.ok()) {
    // Another session owns the device: the spec's EBUSY; a uid that may not own: EPERM.
    if (claimed.code() == absl::StatusCode::kFailedPrecondition) {
      return absl::Status(claimed.code(), absl::StrCat(claimed.message(), " (errno ", EBUSY, ")"));
    }
    return claimed;
  }
  reply_ = VersionReply(negotiated);
  negotiated_ = negotiated;
  return absl::OkStatus();
}

absl::Status VfioUserSession::DmaMap(Message& message) {
  VFIOD_ASSIGN_OR_RETURN(DmaMapPayload map,
                         FixedPayload<DmaMapPayload>("DMA_MAP", message.payload));
  if (map.argsz != sizeof(map)) {
    return Invalid("DMA_MAP", absl::StrCat("argsz ", map.argsz, ", expected ", sizeof(map)));
  }
  if (message.fds.size() > 1) {
    return Invalid("DMA_MAP", absl::StrCat(message.fds.size(), " fds sent, at most 1"));
  }
  std::optional<UniqueFd> fd;
  if (!message.fds.empty()) fd = std::move(message.fds[0]);
  return windows_->Map(map.address, map.size, map.offset, map.flags, std::move(fd),
                       negotiated_->max_dma_maps);
}

absl::Status VfioUserSession::DmaUnmap(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("DMA_UNMAP", message));
  VFIOD_ASSIGN_OR_RETURN(DmaUnmapPayload unmap,
                         FixedPayload<DmaUnmapPayload>("DMA_UNMAP", message.payload));
  if (unmap.argsz < sizeof(unmap)) {
    return Invalid("DMA_UNMAP", absl::StrCat("argsz ", unmap.argsz, " is below ", sizeof(unmap)));
  }
  VFIOD_RETURN_IF_ERROR(windows_->Unmap(unmap.address, unmap.size, unmap.flags));
  unmap.argsz = sizeof(unmap);
  SetReply(unmap);
  return absl::OkStatus();
}

absl::Status VfioUserSession::GetDeviceInfo(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("DEVICE_GET_INFO", message));
  VFIOD_ASSIGN_OR_RETURN(DeviceInfoPayload request,
                         FixedPayload<DeviceInfoPayload>("DEVICE_GET_INFO", message.payload));
  if (request.argsz < sizeof(request)) {
    return Invalid("DEVICE_GET_INFO",
                   absl::StrCat("argsz ", request.argsz, " is below ", sizeof(request)));
  }
  const BackendInfo& backend = device_->description().backend;
  DeviceInfoPayload info = {};
  info.argsz = sizeof(info);
  info.flags = VFIO_DEVICE_FLAGS_PCI | (backend.reset_supported ? VFIO_DEVICE_FLAGS_RESET : 0);
  info.num_regions = static_cast<uint32_t>(backend.regions.size());
  info.num_irqs = static_cast<uint32_t>(backend.irqs.size());
  SetReply(info);
  return absl::OkStatus();
}

absl::Status VfioUserSession::GetRegionInfo(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("DEVICE_GET_REGION_INFO", message));
  VFIOD_ASSIGN_OR_RETURN(
      vfio_region_info request,
      FixedPayload<vfio_region_info>("DEVICE_GET_REGION_INFO", message.payload));
  if (request.argsz < sizeof(request)) {
    return Invalid("DEVICE_GET_REGION_INFO",
                   absl::StrCat("argsz ", request.argsz, " is below ", sizeof(request)));
  }
  const std::vector<RegionInfo>& regions = device_->description().backend.regions;
  if (request.index >= regions.size()) {
    return Invalid("DEVICE_GET_REGION_INFO",
                   absl::StrCat("region ", request.index, " of ", regions.size()));
  }
  const RegionInfo& region = regions[request.index];
  vfio_region_info info = {};
  info.index = request.index;
  info.size = region.size;
  info.flags = (region.readable ? VFIO_REGION_INFO_FLAG_READ : 0) |
               (region.writable ? VFIO_REGION_INFO_FLAG_WRITE : 0);
  // No region is mmappable here: an fd to device memory is never given out.
  vfio_region_info_cap_type type = {};
  uint32_t needed = sizeof(info);
  if (region.type.has_value()) {
    type.header.id = VFIO_REGION_INFO_CAP_TYPE;
    type.header.version = 1;
    type.header.next = 0;
    type.type = *region.type;
    type.subtype = region.subtype.value_or(0);
    needed += sizeof(type);
    info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
  }
  info.argsz = needed;
  const bool with_caps = needed > sizeof(info) && request.argsz >= needed;
  if (with_caps) info.cap_offset = sizeof(info);
  SetReply(info);
  if (with_caps) {
    reply_.resize(needed);
    std::memcpy(reply_.data() + sizeof(info), &type, sizeof(type));
  }
  return absl::OkStatus();
}

absl::Status VfioUserSession::GetRegionIoFds(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("DEVICE_GET_REGION_IO_FDS", message));
  VFIOD_ASSIGN_OR_RETURN(
      RegionIoFdsPayload request,
      FixedPayload<RegionIoFdsPayload>("DEVICE_GET_REGION_IO_FDS", message.payload));
  if (request.argsz < sizeof(request) || request.flags != 0 || request.count != 0) {
    return Invalid("DEVICE_GET_REGION_IO_FDS",
                   absl::StrCat("argsz ", request.argsz, " (at least ", sizeof(request),
                                "), flags ", request.flags, " and count ", request.count,
                                " (must be 0)"));
  }
  if (request.index >= device_->description().backend.regions.size()) {
    return Invalid("DEVICE_GET_REGION_IO_FDS", absl::StrCat("no region ", request.index));
  }
  // No sub-region is served through an fd: KVM would signal this process, which holds no
  // ioeventfd of its own.
  RegionIoFdsPayload reply{sizeof(RegionIoFdsPayload), 0, request.index, 0};
  SetReply(reply);
  return absl::OkStatus();
}

absl::Status VfioUserSession::GetIrqInfo(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("DEVICE_GET_IRQ_INFO", message));
  VFIOD_ASSIGN_OR_RETURN(vfio_irq_info request,
                         FixedPayload<vfio_irq_info>("DEVICE_GET_IRQ_INFO", message.payload));
  if (request.argsz < sizeof(request)) {
    return Invalid("DEVICE_GET_IRQ_INFO",
                   absl::StrCat("argsz ", request.argsz, " is below ", sizeof(request)));
  }
  const std::vector<IrqInfo>& irqs = device_->description().backend.irqs;
  if (request.index >= irqs.size()) {
    return Invalid("DEVICE_GET_IRQ_INFO", absl::StrCat("IRQ index ", request.index, " of ",
                                                       irqs.size()));
  }
  const IrqInfo& irq = irqs[request.index];
  vfio_irq_info info = {};
  info.argsz = sizeof(info);
  info.index = request.index;
  info.count = irq.count;
  info.flags = (irq.eventfd ? VFIO_IRQ_INFO_EVENTFD : 0) |
               (IrqIndexMaskable(irq) ? VFIO_IRQ_INFO_MASKABLE : 0) |  // MSI/MSI-X: emulated
               (irq.automasked ? VFIO_IRQ_INFO_AUTOMASKED : 0) |
               (irq.noresize ? VFIO_IRQ_INFO_NORESIZE : 0);
  SetReply(info);
  return absl::OkStatus();
}

absl::Status VfioUserSession::SetIrqs(Message& message) {
  constexpr const char* kOp = "DEVICE_SET_IRQS";
  vfio_irq_set set;
  if (message.payload.size() < sizeof(set)) {
    return Invalid(kOp, absl::StrCat("payload of ", message.payload.size(),
                                     " bytes, at least ", sizeof(set)));
  }
  std::memcpy(&set, message.payload.data(), sizeof(set));
  const absl::Span<const uint8_t> data = message.payload.subspan(sizeof(set));
  if (set.argsz != message.payload.size()) {
    return Invalid(kOp, absl::StrCat("argsz ", set.argsz, " is not the payload's ",
                                     message.payload.size(), " bytes"));
  }
  const uint32_t data_kind = set.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
  const uint32_t action = set.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
  if ((set.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)) != 0 ||
      __builtin_popcount(data_kind) != 1 || __builtin_popcount(action) != 1) {
    return Invalid(kOp, absl::StrCat("flags ", Hex(set.flags),
                                     " need exactly one data and one action flag"));
  }
  if (set.index >= kNumPciIrqIndexes) {
    return Invalid(kOp, absl::StrCat("IRQ index ", set.index, " of ", kNumPciIrqIndexes));
  }
  IrqRequest request;
  request.index = static_cast<IrqIndex>(set.index);
  request.start = set.start;
  request.count = set.count;
  request.action = action == VFIO_IRQ_SET_ACTION_TRIGGER ? IrqAction::kTrigger
                   : action == VFIO_IRQ_SET_ACTION_MASK  ? IrqAction::kMask
                                                         : IrqAction::kUnmask;
  const size_t data_bytes = data_kind == VFIO_IRQ_SET_DATA_BOOL ? set.count : 0;
  if (data.size() != data_bytes) {
    return Invalid(kOp, absl::StrCat(data.size(), " data bytes for count ", set.count,
                                     ", expected ", data_bytes));
  }
  if (data_kind != VFIO_IRQ_SET_DATA_EVENTFD) VFIOD_RETURN_IF_ERROR(NoFds(kOp, message));
  switch (data_kind) {
    case VFIO_IRQ_SET_DATA_NONE:
      request.data = IrqRequest::Data::kNone;
      break;
    case VFIO_IRQ_SET_DATA_BOOL:
      request.data = IrqRequest::Data::kBool;
      for (uint8_t value : data) request.bools.push_back(value != 0);
      break;
    default: {
      // One eventfd per vector, or none at all: the vectors' eventfds are torn down (QEMU
      // sends the -1 entries of a VFIO eventfd array this way).
      if (!message.fds.empty() && message.fds.size() != set.count) {
        return Invalid(kOp, absl::StrCat(message.fds.size(), " fds sent for count ", set.count,
                                         " (one per vector, or none)"));
      }
      // Without fds, `count` is bounded by nothing the client sent: refuse a range beyond the
      // index before allocating a slot per vector, with the device model's answers (ENOENT for
      // an index the device lacks, EINVAL for a range beyond it). Count 0xffffffff made the
      // daemon allocate 32 GiB and abort (tests/fuzz/seeds/vfio_user/bug-set-irqs-*).
      const std::vector<IrqInfo>& irqs = device_->description().backend.irqs;
      const uint32_t vectors = set.index < irqs.size() ? irqs[set.index].count : 0;
      if (vectors == 0) {
        return absl::NotFoundError(absl::StrCat(kOp, ": the device has no IRQ index ", set.index));
      }
      if (uint64_t{set.start} + set.count > vectors) {
        return absl::OutOfRangeError(absl::StrCat(kOp, ": vectors [", set.start, ", +",
                                                  set.count, ") exceed the ", vectors,
                                                  " of IRQ index ", set.index));
      }
      request.data = IrqRequest::Data::kEventfd;
      request.eventfds.resize(set.count);
      for (size_t i = 0; i < message.fds.size(); ++i) {
        absl::StatusOr<EventFd> eventfd = EventFd::Adopt(std::move(message.fds[i]));
        if (!eventfd.ok()) {
          return Invalid(kOp, absl::StrCat("fd ", i, ": ", eventfd.status().message()));
        }
        request.eventfds[i] = *std::move(eventfd);
      }
      break;
    }
  }
  const bool msi = request.index == IrqIndex::kMsi || request.index == IrqIndex::kMsix;
  if (msi && request.action == IrqAction::kTrigger) return SetMsiTriggers(std::move(request));
  return device_->SetIrqs(std::move(request));
}

namespace {

// Duplicates of `eventfds` (nullopt stays nullopt).
absl::StatusOr<std::vector<std::optional<EventFd>>> Duplicates(
    const std::vector<std::optional<EventFd>>& eventfds) {
  std::vector<std::optional<EventFd>> copies(eventfds.size());
  for (size_t i = 0; i < eventfds.size(); ++i) {
    if (!eventfds[i].has_value()) continue;
    VFIOD_ASSIGN_OR_RETURN(copies[i], eventfds[i]->Duplicate());
  }
  return copies;
}

IrqRequest EventfdTrigger(IrqIndex index, uint32_t count,
                          std::vector<std::optional<EventFd>> eventfds) {
  IrqRequest request;
  request.index = index;
  request.count = count;
  request.action = IrqAction::kTrigger;
  request.data = IrqRequest::Data::kEventfd;
  request.eventfds = std::move(eventfds);
  return request;
}

IrqRequest Disable(IrqIndex index) {
  IrqRequest request;
  request.index = index;
  request.action = IrqAction::kTrigger;
  request.data = IrqRequest::Data::kNone;
  return request;
}

}  // namespace

absl::Status VfioUserSession::SetMsiTriggers(IrqRequest request) {
  MsiTriggers& triggers = msi_[request.index == IrqIndex::kMsi ? 0 : 1];
  if (request.data == IrqRequest::Data::kNone && request.count == 0) {
    VFIOD_RETURN_IF_ERROR(device_->SetIrqs(std::move(request)));
    triggers = MsiTriggers();
    return absl::OkStatus();
  }
  if (request.data != IrqRequest::Data::kEventfd) return device_->SetIrqs(std::move(request));
  const uint32_t start = request.start;
  const uint64_t end = uint64_t{start} + request.count;
  const uint32_t vectors =
      device_->description().backend.irqs[static_cast<uint32_t>(request.index)].count;
  // A range beyond the index's vectors is the device model's to refuse (OUT_OF_RANGE).
  if (end > vectors) return device_->SetIrqs(std::move(request));
  VFIOD_ASSIGN_OR_RETURN(std::vector<std::optional<EventFd>> kept,
                         Duplicates(request.eventfds));
  const bool grows = triggers.enabled > 0 && end > triggers.enabled;
  if (!grows) {
    VFIOD_RETURN_IF_ERROR(device_->SetIrqs(std::move(request)));
  } else {
    // Every vector so far: the earlier pieces' eventfds, then this piece's.
    VFIOD_ASSIGN_OR_RETURN(std::vector<std::optional<EventFd>> all,
                           Duplicates(triggers.eventfds));
    all.resize(end);
    for (uint32_t i = 0; i < request.count; ++i) all[start + i] = std::move(request.eventfds[i]);
    const IrqIndex index = request.index;
    VFIOD_RETURN_IF_ERROR(device_->SetIrqs(Disable(index)));
    absl::Status enabled =
        device_->SetIrqs(EventfdTrigger(index, static_cast<uint32_t>(end), std::move(all)));
    if (!enabled.ok()) {
      // Put back the vectors that were enabled before this piece.
      absl::StatusOr<std::vector<std::optional<EventFd>>> before = Duplicates(triggers.eventfds);
      if (before.ok()) {
        (void)device_->SetIrqs(EventfdTrigger(index, triggers.enabled, *std::move(before)));
      }
      return enabled;
    }
  }
  if (triggers.enabled == 0) triggers.eventfds.clear();
  triggers.eventfds.resize(std::max<uint64_t>(triggers.eventfds.size(), end));
  for (uint32_t i = 0; i < kept.size(); ++i) triggers.eventfds[start + i] = std::move(kept[i]);
  triggers.enabled = static_cast<uint32_t>(triggers.eventfds.size());
  return absl::OkStatus();
}

absl::StatusOr<RegionAccessPayload> VfioUserSession::CheckRegionAccess(
    const char* operation, absl::Span<const uint8_t> payload, bool write) const {
  RegionAccessPayload access;
  if (payload.size() < sizeof(access)) {
    return Invalid(operation, absl::StrCat("payload of ", payload.size(), " bytes, at least ",
                                           sizeof(access)));
  }
  std::memcpy(&access, payload.data(), sizeof(access));
  const size_t data_bytes = write ? access.count : 0;
  if (payload.size() - sizeof(access) != data_bytes) {
    return Invalid(operation, absl::StrCat(payload.size() - sizeof(access),
                                           " data bytes for count ", access.count));
  }
  if (access.count == 0 || access.count > negotiated_->max_data_xfer_size) {
    return Invalid(operation, absl::StrCat("count ", access.count, " is not between 1 and ",
                                           negotiated_->max_data_xfer_size));
  }
  const std::vector<RegionInfo>& regions = device_->description().backend.regions;
  if (access.region >= regions.size() || regions[access.region].size == 0) {
    return Invalid(operation, absl::StrCat("region ", access.region, " does not exist"));
  }
  const RegionInfo& region = regions[access.region];
  VFIOD_RETURN_IF_ERROR(CheckRegionBounds(operation, region, access.offset, access.count));
  return access;
}

// Config space is accessed in naturally aligned 4/2/1-byte pieces, as vfio-pci does.
absl::Status VfioUserSession::ReadConfigRange(uint64_t offset, absl::Span<uint8_t> data) {
  if (offset % 4 == 0 && data.size() % 4 == 0) {
    VFIOD_ASSIGN_OR_RETURN(
        std::vector<uint8_t> bytes,
        device_->DumpConfig(static_cast<uint32_t>(offset), static_cast<uint32_t>(data.size())));
    std::memcpy(data.data(), bytes.data(), data.size());
    return absl::OkStatus();
  }
  for (size_t done = 0; done < data.size();) {
    const uint64_t at = offset + done;
    const size_t left = data.size() - done;
    const uint32_t size = (at % 4 == 0 && left >= 4) ? 4 : (at % 2 == 0 && left >= 2) ? 2 : 1;
    VFIOD_ASSIGN_OR_RETURN(uint32_t value,
                           device_->ReadConfig(static_cast<uint32_t>(at), size));
    std::memcpy(data.data() + done, &value, size);
    done += size;
  }
  return absl::OkStatus();
}

absl::Status VfioUserSession::WriteConfigRange(uint64_t offset, absl::Span<const uint8_t> data) {
  for (size_t done = 0; done < data.size();) {
    const uint64_t at = offset + done;
    const size_t left = data.size() - done;
    const uint32_t size = (at % 4 == 0 && left >= 4) ? 4 : (at % 2 == 0 && left >= 2) ? 2 : 1;
    uint32_t value = 0;
    std::memcpy(&value, data.data() + done, size);
    VFIOD_RETURN_IF_ERROR(device_->WriteConfig(static_cast<uint32_t>(at), size, value));
    done += size;
  }
  return absl::OkStatus();
}

absl::Status VfioUserSession::RegionRead(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("REGION_READ", message));
  VFIOD_ASSIGN_OR_RETURN(RegionAccessPayload access,
                         CheckRegionAccess("REGION_READ", message.payload, /*write=*/false));
  reply_.resize(sizeof(access) + access.count);
  std::memcpy(reply_.data(), &access, sizeof(access));
  absl::Span<uint8_t> data(reply_.data() + sizeof(access), access.count);
  if (access.region == kConfigRegionIndex) return ReadConfigRange(access.offset, data);
  VFIOD_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                         device_->ReadRegion(access.region, access.offset, access.count));
  std::memcpy(data.data(), bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::Status VfioUserSession::RegionWrite(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("REGION_WRITE", message));
  VFIOD_ASSIGN_OR_RETURN(RegionAccessPayload access,
                         CheckRegionAccess("REGION_WRITE", message.payload, /*write=*/true));
  const absl::Span<const uint8_t> data = message.payload.subspan(sizeof(access));
  if (access.region == kConfigRegionIndex) {
    VFIOD_RETURN_IF_ERROR(WriteConfigRange(access.offset, data));
  } else {
    VFIOD_RETURN_IF_ERROR(device_->WriteRegion(access.region, access.offset, data));
  }
  SetReply(access);
  return absl::OkStatus();
}

absl::Status VfioUserSession::Reset(const Message& message) {
  VFIOD_RETURN_IF_ERROR(NoFds("DEVICE_RESET", message));
  if (!message.payload.empty()) {
    return Invalid("DEVICE_RESET", absl::StrCat("payload of ", message.payload.size(),
                                                " bytes, expected none"));
  }
  // The interrupt configuration stays, as with VFIO_DEVICE_RESET (PciDevice::Reset).
  return device_->Reset();
}

}  // namespace vfiod::vfio_user
