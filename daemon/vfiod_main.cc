// vfiod: serves one PCI device (Linux vfio-pci, or a simulated device) over gRPC.
//
//   vfiod --device=sim:edu --listen=/run/vfiod/edu.sock
//   vfiod --device=sim:edu --connection-fd=3 --fd-channel-fd=4     (spawned by a VMM)
//
// Start-up order: parse flags, open the device and query everything immutable, create (or
// adopt) every socket, then start gRPC threads and serve until SIGTERM/SIGINT, or until the
// spawn-mode owner is gone when there is no listening socket.
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/session_manager.h"
#include "daemon/service/vfio_device_service.h"
#include "daemon/sim/sim_backend.h"
#include "daemon/transport/transport.h"
#include "daemon/vfio/vfio_backend.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"

ABSL_FLAG(std::string, device, "",
          "The device to serve: a PCI device bound to vfio-pci, by address (0000:00:03.0 or "
          "00:03.0) or sysfs path (/sys/bus/pci/devices/0000:00:03.0); or "
          "sim:<model>[,<option>...] for a simulated device (models: edu; options: reset).");
ABSL_FLAG(std::string, listen, "",
          "Serve gRPC on this UNIX socket path, and the fd channel on PATH.fds.");
ABSL_FLAG(std::string, socket_mode, "0600", "Permissions of the --listen sockets (octal).");
ABSL_FLAG(int, connection_fd, -1,
          "Spawn mode: a connected stream socket inherited from the VMM; its peer is the owner.");
ABSL_FLAG(int, fd_channel_fd, -1,
          "Spawn mode: a connected SOCK_SEQPACKET socket for the owner's fd channel.");
ABSL_FLAG(std::vector<std::string>, allow_uid, {},
          "Uids whose connections are accepted (comma-separated; default: the daemon's uid).");
ABSL_FLAG(std::vector<std::string>, owner_uid, {},
          "Uids that may claim ownership (default: the --allow-uid set).");
ABSL_FLAG(bool, observer_bar_reads, false,
          "Let observers read BARs (reads can have side effects on real devices).");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error.");
ABSL_FLAG(uint64_t, max_memory_bytes, uint64_t{16} << 30,
          "Total guest memory the owner may register.");
ABSL_FLAG(uint32_t, max_memory_regions, 64, "Memory registrations the owner may hold.");
ABSL_FLAG(uint32_t, max_dma_mappings, 4096, "DMA mappings the owner may hold.");
ABSL_FLAG(uint32_t, max_region_access_bytes, 64 * 1024, "Largest ReadRegion/WriteRegion.");
ABSL_FLAG(uint32_t, max_irq_watchers, 8, "Concurrent WatchIrqs streams.");
ABSL_FLAG(uint32_t, max_connections, 64, "Concurrent client connections.");
ABSL_FLAG(uint32_t, max_fd_tokens, 64, "Unused fds a session may hold on its fd channels.");
ABSL_FLAG(int, grpc_max_threads, 16, "Threads gRPC may use for calls.");

namespace vfiod {
namespace {

// Largest gRPC message either way: a region access plus framing, or a full device description.
constexpr int kMaxMessageBytes = 1 << 20;

absl::StatusOr<std::vector<uid_t>> ParseUids(const std::vector<std::string>& values,
                                             absl::string_view flag) {
  std::vector<uid_t> uids;
  for (const std::string& value : values) {
    uint32_t uid;
    if (!absl::SimpleAtoi(value, &uid)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", value,
                                                     "\" is not a uid"));
    }
    uids.push_back(uid);
  }
  return uids;
}

absl::StatusOr<mode_t> ParseMode(const std::string& text) {
  mode_t mode = 0;
  for (char c : text) {
    if (c < '0' || c > '7' || mode > 0777) {
      return absl::InvalidArgumentError(
          absl::StrCat("--socket-mode: \"", text, "\" is not octal permissions like 0600"));
    }
    mode = mode * 8 + (c - '0');
  }
  if (text.empty() || mode > 0777) {
    return absl::InvalidArgumentError(
        absl::StrCat("--socket-mode: \"", text, "\" is not octal permissions like 0600"));
  }
  return mode;
}

absl::StatusOr<std::unique_ptr<DeviceBackend>> OpenBackend(absl::string_view device) {
  if (absl::StartsWith(device, "sim:")) {
    return CreateSimulatedBackend(device.substr(4));
  }
  return OpenVfioBackend(device);
}

absl::StatusOr<UniqueFd> InheritedSocket(int fd, absl::string_view flag) {
  if (fd < 0) return UniqueFd();
  if (fd <= STDERR_FILENO) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", fd, " is a standard stream"));
  }
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", fd, ": ", ErrnoError(errno, "fcntl").message()));
  }
  return UniqueFd(fd);
}

// Blocks the termination signals in every thread (call before any thread exists) and returns a
// signalfd that reports them.
absl::StatusOr<UniqueFd> TerminationSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  if (pthread_sigmask(SIG_BLOCK, &signals, nullptr) != 0) {
    return absl::InternalError("pthread_sigmask failed");
  }
  int fd = ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, "signalfd");
  return UniqueFd(fd);
}

absl::Status Run() {
  LogLevel level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level: \"", absl::GetFlag(FLAGS_log_level), "\" is not a level"));
  }
  SetLogLevel(level);
  // Writes to a socket whose peer left must fail with EPIPE, not kill the daemon.
  ::signal(SIGPIPE, SIG_IGN);
  VFIOD_ASSIGN_OR_RETURN(UniqueFd signal_fd, TerminationSignals());

  const std::string device_name = absl::GetFlag(FLAGS_device);
  if (device_name.empty()) return absl::InvalidArgumentError("--device is required");
  TransportOptions transport_options;
  transport_options.listen_path = absl::GetFlag(FLAGS_listen);
  VFIOD_ASSIGN_OR_RETURN(transport_options.socket_mode,
                         ParseMode(absl::GetFlag(FLAGS_socket_mode)));
  VFIOD_ASSIGN_OR_RETURN(transport_options.spawn_connection,
                         InheritedSocket(absl::GetFlag(FLAGS_connection_fd), "connection-fd"));
  VFIOD_ASSIGN_OR_RETURN(transport_options.spawn_fd_channel,
                         InheritedSocket(absl::GetFlag(FLAGS_fd_channel_fd), "fd-channel-fd"));
  if (transport_options.listen_path.empty() && !transport_options.spawn_connection.valid()) {
    return absl::InvalidArgumentError("one of --listen or --connection-fd is required");
  }
  if (transport_options.spawn_fd_channel.valid() &&
      !transport_options.spawn_connection.valid()) {
    return absl::InvalidArgumentError("--fd-channel-fd needs --connection-fd");
  }
  VFIOD_ASSIGN_OR_RETURN(transport_options.allowed_uids,
                         ParseUids(absl::GetFlag(FLAGS_allow_uid), "allow-uid"));
  if (transport_options.allowed_uids.empty()) transport_options.allowed_uids = {::getuid()};
  transport_options.max_connections = absl::GetFlag(FLAGS_max_connections);

  SessionOptions session_options;
  session_options.max_fd_tokens = absl::GetFlag(FLAGS_max_fd_tokens);
  VFIOD_ASSIGN_OR_RETURN(session_options.owner_uids,
                         ParseUids(absl::GetFlag(FLAGS_owner_uid), "owner-uid"));
  if (session_options.owner_uids.empty()) {
    session_options.owner_uids = transport_options.allowed_uids;
  }
  VFIOD_ASSIGN_OR_RETURN(EventFd stop, EventFd::Create());
  if (transport_options.listen_path.empty()) {
    // Nobody else can ever connect: when the VMM is gone, the daemon's work is done.
    session_options.on_spawn_owner_gone = [&stop] { (void)stop.Signal(); };
  }

  DeviceLimits limits;
  limits.max_memory_bytes = absl::GetFlag(FLAGS_max_memory_bytes);
  limits.max_memory_regions = absl::GetFlag(FLAGS_max_memory_regions);
  limits.max_dma_mappings = absl::GetFlag(FLAGS_max_dma_mappings);
  limits.max_region_access_bytes = absl::GetFlag(FLAGS_max_region_access_bytes);
  limits.max_irq_watchers = absl::GetFlag(FLAGS_max_irq_watchers);
  if (limits.max_region_access_bytes == 0 ||
      limits.max_region_access_bytes > kMaxMessageBytes / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-region-access-bytes must be in [1, ", kMaxMessageBytes / 2, "]"));
  }

  // 1. The device, and everything immutable about it.
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<DeviceBackend> backend, OpenBackend(device_name));
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<PciDevice> device,
                         PciDevice::Create(std::move(backend), limits));
  const DeviceDescription& description = device->description();
  LogInfo("device opened", {{"device", description.backend.name},
                            {"vendor", absl::StrCat(absl::Hex(description.vendor_id))},
                            {"device_id", absl::StrCat(absl::Hex(description.device_id))}});

  // 2. Sockets.
  SessionManager sessions(device.get(), std::move(session_options));
  const std::string listen_path = transport_options.listen_path;
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<Transport> transport,
                         Transport::Create(std::move(transport_options), &sessions));
  sessions.set_transport(transport.get());

  // 3. gRPC, with no listening port of its own: the transport hands it checked connections.
  ServiceOptions service_options;
  service_options.observer_bar_reads = absl::GetFlag(FLAGS_observer_bar_reads);
  service_options.max_fd_tokens = absl::GetFlag(FLAGS_max_fd_tokens);
  VfioDeviceService service(device.get(), &sessions, transport.get(), service_options);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  grpc::ResourceQuota quota("vfiod");
  quota.SetMaxThreads(absl::GetFlag(FLAGS_grpc_max_threads));
  builder.SetResourceQuota(quota);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 32);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 8 * 1024);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return absl::InternalError("gRPC server failed to start");
  VFIOD_RETURN_IF_ERROR(transport->Start(server.get()));
  LogInfo("serving", {{"device", description.backend.name},
                      {"listen", listen_path.empty() ? "-" : listen_path},
                      {"pid", absl::StrCat(::getpid())}});

  // 4. Until told to stop.
  struct pollfd waits[2] = {{signal_fd.get(), POLLIN, 0}, {stop.fd().get(), POLLIN, 0}};
  std::string reason;
  while (reason.empty()) {
    if (::poll(waits, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "poll");
    }
    if (waits[0].revents & POLLIN) {
      struct signalfd_siginfo info;
      if (::read(signal_fd.get(), &info, sizeof(info)) == sizeof(info)) {
        reason = absl::StrCat("signal ", info.ssi_signo);
      }
    }
    if (waits[1].revents & POLLIN) reason = "the spawn-mode owner is gone";
  }
  LogInfo("stopping", {{"reason", reason}});
  transport->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  device->ReleaseOwnerResources();
  LogInfo("stopped");
  return absl::OkStatus();
}

}  // namespace
}  // namespace vfiod

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "serves one PCI device over gRPC.\n"
      "  vfiod --device=sim:edu --listen=PATH\n"
      "  vfiod --device=sim:edu --connection-fd=N [--fd-channel-fd=M]");
  // Flags are spelled with dashes (--connection-fd); abseil's names use underscores.
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> normalized;
  for (std::string& arg : args) {
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      size_t end = std::min(arg.find('='), arg.size());
      for (size_t i = 2; i < end; ++i) {
        if (arg[i] == '-') arg[i] = '_';
      }
    }
    normalized.push_back(arg.data());
  }
  normalized.push_back(nullptr);
  absl::ParseCommandLine(argc, normalized.data());
  absl::Status status = vfiod::Run();
  if (!status.ok()) {
    vfiod::LogError("vfiod failed", {{"error", status.ToString()}});
    return 1;
  }
  return 0;
}
