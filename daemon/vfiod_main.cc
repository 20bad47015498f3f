// vfiod: serves one PCI device (Linux vfio-pci, or a simulated device) over gRPC and vfio-user.
//
//   vfiod --device=sim:edu --listen=/run/vfiod/edu.sock
//   vfiod --device=sim:edu --listen=/run/vfiod/edu.sock --vfio-user=/run/vfiod/edu.vfu
//   vfiod --device=sim:edu --connection-fd=3 --fd-channel-fd=4     (spawned by a VMM)
//   vfiod --device=sim:edu --vfio-user-fd=3                        (spawned by a vfio-user VMM)
//
// Start-up order: parse flags, open the device and query everything immutable, create (or
// adopt) every socket, enter the jail and load the seccomp policy (no thread exists before this
// point), then start the device's, the transport's and gRPC's threads and serve until
// SIGTERM/SIGINT, or until the spawn-mode owner is gone when there is no listening socket.
// With the jail on, the process the caller started stays outside as a launcher (see
// daemon/jail/jail.h) and the daemon serves as pid 1 of its own pid namespace.
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
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/base/internal/sysinfo.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/logging.h"
#include "daemon/base/owner_cleanup.h"
#include "daemon/base/sanitizers.h"
#include "daemon/base/status_macros.h"
#include "daemon/jail/jail.h"
#include "daemon/jail/launcher_credentials.h"
#include "daemon/pci/pci_device.h"
#include "daemon/service/call_admission.h"
#include "daemon/service/malformed_request.h"
#include "daemon/service/session_manager.h"
#include "daemon/service/vfio_device_callbacks.h"
#include "daemon/service/vfio_device_service.h"
#include "daemon/sim/sim_backend.h"
#include "daemon/transport/connection_registry.h"
#include "daemon/socket_activation.h"
#include "daemon/transport/peer_credential_source.h"
#include "daemon/transport/transport.h"
#include "daemon/version.h"
#include "daemon/vfio/vfio_backend.h"
#include "daemon/vfio_user/vfio_user_server.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "seccomp/fd_layout.h"
#include "seccomp/policy.h"

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
ABSL_FLAG(std::string, vfio_user, "",
          "Serve vfio-user (QEMU's -device vfio-user-pci) on this UNIX socket path. The first "
          "connection that completes VERSION while nobody owns the device becomes the owner.");
ABSL_FLAG(int, vfio_user_fd, -1,
          "Spawn mode: a connected stream socket inherited from a vfio-user VMM; its peer is the "
          "owner. Without --listen or --vfio-user, the daemon exits when it closes.");
ABSL_FLAG(uint32_t, max_vfio_user_connections, 4,
          "Concurrent vfio-user connections (one owner; the others wait for their VERSION reply "
          "and are refused).");
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
ABSL_FLAG(uint32_t, max_connections, 64,
          "Concurrent gRPC connections, and concurrent fd channels.");
ABSL_FLAG(uint32_t, max_fd_tokens, 0,
          "Unused fds a session may hold on its fd channels (0: 64, or the device's largest IRQ "
          "vector count plus 16 if that is more, so one SetIrqs can name every vector).");
ABSL_FLAG(uint32_t, max_observer_calls, 16,
          "Calls of non-owners in progress at once, all connections together (the owner's "
          "calls are never refused for capacity).");
ABSL_FLAG(uint32_t, max_observer_calls_per_connection, 4,
          "Calls of one non-owner connection in progress at once.");
ABSL_FLAG(int, grpc_max_threads, 16,
          "Threads for gRPC's synchronous services (health checking, reflection); the device "
          "service does not use them.");
ABSL_FLAG(std::string, jail, "on",
          "on: confine the daemon before serving (fds pinned, rlimits, namespaces, an empty "
          "read-only root, no capabilities, no_new_privs; daemon/jail/jail.h). off: for "
          "development only.");
ABSL_FLAG(std::string, seccomp, "kill",
          "kill: any system call outside the policy (seccomp/policy.cc) kills the daemon. log: "
          "the kernel logs such calls and allows them. off: no filter. log and off are for "
          "development only.");
ABSL_FLAG(std::string, uid, "", "Under the jail, serve as this uid (needs root).");
ABSL_FLAG(std::string, gid, "", "Under the jail, serve as this gid (needs root).");
ABSL_FLAG(uint64_t, max_dma_bytes, uint64_t{1} << 30,
          "Memory the device may have mapped for DMA at once: the jail sets RLIMIT_MEMLOCK to "
          "it (the kernel's type1 IOMMU charges pinned pages there).");
ABSL_FLAG(bool, version, false, "Print vfiod's version and exit.");
ABSL_FLAG(bool, print_policy, false,
          "Print the seccomp policy of --seccomp as it would be loaded (libseccomp's PFC text) "
          "and exit.");

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

absl::StatusOr<std::unique_ptr<DeviceBackend>> OpenBackend(absl::string_view device,
                                                        uint64_t max_dma_bytes) {
  if (absl::StartsWith(device, "sim:")) {
    return CreateSimulatedBackend(device.substr(4), max_dma_bytes);
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

sigset_t TerminationSignalSet() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  return signals;
}

// Blocks the termination signals in every thread: call before any thread exists.
absl::Status BlockTerminationSignals() {
  sigset_t signals = TerminationSignalSet();
  if (pthread_sigmask(SIG_BLOCK, &signals, nullptr) != 0) {
    return absl::InternalError("pthread_sigmask failed");
  }
  return absl::OkStatus();
}

// A signalfd that reports the (blocked) termination signals.
absl::StatusOr<UniqueFd> TerminationSignalFd() {
  sigset_t signals = TerminationSignalSet();
  int fd = ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, "signalfd");
  return UniqueFd(fd);
}

// How the daemon confines itself (--jail, --seccomp, --uid, --gid).
struct SandboxSettings {
  bool jail = true;
  std::optional<seccomp::PolicyMode> policy = seccomp::PolicyMode::kKill;  // nullopt: off
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
};

absl::StatusOr<std::optional<uint32_t>> ParseId(const std::string& text, absl::string_view flag) {
  if (text.empty()) return std::optional<uint32_t>();
  uint32_t id;
  if (!absl::SimpleAtoi(text, &id)) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", text, "\" is not a number"));
  }
  return std::optional<uint32_t>(id);
}

absl::StatusOr<SandboxSettings> ParseSandboxFlags() {
  SandboxSettings settings;
  const std::string jail = absl::GetFlag(FLAGS_jail);
  if (jail != "on" && jail != "off") {
    return absl::InvalidArgumentError(absl::StrCat("--jail: \"", jail, "\" is not on or off"));
  }
  settings.jail = jail == "on";
  const std::string policy = absl::GetFlag(FLAGS_seccomp);
  if (policy == "kill") {
    settings.policy = seccomp::PolicyMode::kKill;
  } else if (policy == "log") {
    settings.policy = seccomp::PolicyMode::kLog;
  } else if (policy == "off") {
    settings.policy = std::nullopt;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--seccomp: \"", policy, "\" is not kill, log or off"));
  }
  VFIOD_ASSIGN_OR_RETURN(settings.uid, ParseId(absl::GetFlag(FLAGS_uid), "uid"));
  VFIOD_ASSIGN_OR_RETURN(settings.gid, ParseId(absl::GetFlag(FLAGS_gid), "gid"));
  if ((settings.uid.has_value() || settings.gid.has_value()) && !settings.jail) {
    return absl::InvalidArgumentError("--uid and --gid need --jail=on");
  }
  return settings;
}

// Makes Abseil count the machine's CPUs while /sys is still visible. It counts once and caches
// the count; counted inside the jail (no /sys, no /proc) it falls back to the affinity mask,
// which is 1 CPU when the daemon is pinned (as the benchmark pins it, or a cpuset might), and
// absl::Mutex (gRPC's locks) then never spins or yields before it sleeps: every gRPC call pays
// extra futex sleeps and wake-ups. Measured on this machine, pinned, jail on: 48 -> 38 us per
// unary call, client 2.0 -> 1.2 context switches per call (docs/PERFORMANCE.md). gRPC's own
// count (gpr_cpu_num_cores) made no difference.
void PrimeCpuCountBeforeJail() { (void)absl::base_internal::NumCPUs(); }

// Pins the kept fds, enters the jail and loads the seccomp policy, as `settings` say. Called
// after every socket exists and before any thread does. With the jail on, returns in the jailed
// daemon only (the launcher exits inside jail::Enter), with the daemon's end of the credential
// channel to the launcher; with the jail off, an invalid fd.
absl::StatusOr<UniqueFd> Confine(const SandboxSettings& settings, DeviceBackend* backend,
                                 Transport* transport, UniqueFd* signal_fd, UniqueFd* notify_fd,
                                 const jail::JailOptions& jail_options) {
  if (!settings.jail && !settings.policy.has_value()) {
    LogWarning("no jail and no seccomp policy (--jail=off --seccomp=off): development only");
    return UniqueFd();
  }
  // The fixed fd layout (seccomp/fd_layout.h): the policy allows VFIO ioctls by these numbers.
  std::vector<jail::KeptFd> kept;
  const DeviceBackend::JailFds device_fds = backend->FdsForJail();
  if (device_fds.vfio_container != nullptr) {
    kept.push_back({device_fds.vfio_container, seccomp::kVfioContainerFd, "VFIO container"});
  }
  if (device_fds.vfio_group != nullptr) {
    kept.push_back({device_fds.vfio_group, seccomp::kVfioGroupFd, "VFIO group"});
  }
  if (device_fds.vfio_device != nullptr) {
    kept.push_back({device_fds.vfio_device, seccomp::kVfioDeviceFd, "VFIO device"});
  }
  int next = seccomp::kFirstOtherKeptFd;
  kept.push_back({signal_fd, next++, "signalfd"});
  if (notify_fd != nullptr) kept.push_back({notify_fd, next++, "service manager notify socket"});
  for (UniqueFd* fd : transport->FdsForJail()) kept.push_back({fd, next++, "socket"});
  VFIOD_RETURN_IF_ERROR(jail::PinFds(kept));
  UniqueFd launcher_channel;
  if (settings.jail) {
    VFIOD_ASSIGN_OR_RETURN(launcher_channel, jail::Enter(jail_options));
  } else {
    LogWarning("--jail=off: serving unconfined (development only)");
  }
  if (settings.policy.has_value()) {
    VFIOD_RETURN_IF_ERROR(seccomp::Load(*settings.policy));
    if (*settings.policy != seccomp::PolicyMode::kKill) {
      LogWarning("--seccomp=log: forbidden system calls are logged, not killed (development "
                 "only)");
    }
  } else {
    LogWarning("--seccomp=off: no system call filter (development only)");
  }
  LogInfo("confined", {{"jail", settings.jail ? "on" : "off"},
                       {"seccomp", absl::GetFlag(FLAGS_seccomp)},
                       {"kept_fds", absl::StrCat(kept.size())}});
  return launcher_channel;
}

// Under the jail, peers are named by the launcher, which reads SO_PEERCRED in the host's
// namespaces (daemon/jail/launcher_credentials.h): real pids and uids. A query blocks the
// transport's event thread for at most LauncherCredentialClient::kDefaultTimeout.
class LauncherPeerCredentialSource final : public PeerCredentialSource {
 public:
  explicit LauncherPeerCredentialSource(UniqueFd channel) : client_(std::move(channel)) {}
  absl::StatusOr<PeerCredentials> PeerOf(const UniqueFd& socket) override {
    VFIOD_ASSIGN_OR_RETURN(jail::HostCredentials host, client_.Query(socket));
    PeerCredentials peer;
    peer.pid = host.pid;
    peer.uid = host.uid;
    peer.gid = host.gid;
    return peer;
  }

 private:
  jail::LauncherCredentialClient client_;
};

// Everything the flags say, validated, before anything is opened.
struct Config {
  std::string device;
  LogLevel log_level = LogLevel::kInfo;
  SandboxSettings sandbox;
  TransportOptions transport;  // sockets; registry and handler are set once they exist
  ConnectionQuotas quotas;
  SessionOptions sessions;     // max_fd_tokens 0: chosen from the device (ChooseFdTokenLimit)
  DeviceLimits limits;
  uint64_t max_dma_bytes = 0;
  int grpc_max_threads = 16;
  CallAdmissionOptions admission;
  bool observer_bar_reads = false;
};

// The overflow uid is never allowed, whoever the daemon runs as: every uid that is not mapped
// into the reading process's user namespace reads as it, so allowing it would admit every such
// user, root included. Peers are named in the host's namespaces (by the launcher under the
// jail), so any other uid can be allowed, also by a daemon started without root.
absl::Status RefuseOverflowUid(const std::vector<uid_t>& allowed,
                               const std::vector<uid_t>& owners) {
  const uid_t overflow = KernelOverflowUid();
  const uid_t self = ::geteuid();
  for (const auto& [flag, uids] : {std::pair<const char*, const std::vector<uid_t>*>{
                                       "--allow-uid", &allowed},
                                   {"--owner-uid", &owners}}) {
    for (uid_t uid : *uids) {
      if (uid != overflow) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": uid ", uid,
          " is the kernel's overflow uid (/proc/sys/kernel/overflowuid): "
          "a peer whose uid is not mapped into the reader's user namespace reads as it, so "
          "allowing it would admit every unmapped user, root included",
          uid == self ? "; this daemon runs as that uid, so give --allow-uid explicitly" : ""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> ParseConfig(ActivatedSockets activated) {
  Config config;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &config.log_level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level: \"", absl::GetFlag(FLAGS_log_level), "\" is not a level"));
  }
  VFIOD_ASSIGN_OR_RETURN(config.sandbox, ParseSandboxFlags());
  config.device = absl::GetFlag(FLAGS_device);
  if (config.device.empty()) return absl::InvalidArgumentError("--device is required");

  TransportOptions& transport = config.transport;
  transport.listen_path = absl::GetFlag(FLAGS_listen);
  transport.vfio_user_path = absl::GetFlag(FLAGS_vfio_user);
  VFIOD_ASSIGN_OR_RETURN(transport.socket_mode, ParseMode(absl::GetFlag(FLAGS_socket_mode)));
  VFIOD_ASSIGN_OR_RETURN(transport.spawn_connection,
                         InheritedSocket(absl::GetFlag(FLAGS_connection_fd), "connection-fd"));
  VFIOD_ASSIGN_OR_RETURN(transport.spawn_fd_channel,
                         InheritedSocket(absl::GetFlag(FLAGS_fd_channel_fd), "fd-channel-fd"));
  VFIOD_ASSIGN_OR_RETURN(transport.spawn_vfio_user,
                         InheritedSocket(absl::GetFlag(FLAGS_vfio_user_fd), "vfio-user-fd"));
  if (activated.any() && (!transport.listen_path.empty() || !transport.vfio_user_path.empty())) {
    return absl::InvalidArgumentError(
        "sockets were passed by socket activation: --listen and --vfio-user are not used then");
  }
  if (activated.fd_channel.valid() && !activated.grpc.valid()) {
    return absl::InvalidArgumentError(
        "socket activation: an fd-channel socket (\"fds\") without a gRPC one (\"grpc\")");
  }
  transport.activated_grpc = std::move(activated.grpc);
  transport.activated_fd_channel = std::move(activated.fd_channel);
  transport.activated_vfio_user = std::move(activated.vfio_user);
  if (transport.listen_path.empty() && transport.vfio_user_path.empty() &&
      !transport.spawn_connection.valid() && !transport.spawn_vfio_user.valid() &&
      !transport.activated_grpc.valid() && !transport.activated_vfio_user.valid()) {
    return absl::InvalidArgumentError(
        "one of --listen, --vfio-user, --connection-fd or --vfio-user-fd is required (or "
        "sockets passed by socket activation)");
  }
  if (transport.spawn_fd_channel.valid() && !transport.spawn_connection.valid()) {
    return absl::InvalidArgumentError("--fd-channel-fd needs --connection-fd");
  }
  if (transport.spawn_connection.valid() && transport.spawn_vfio_user.valid()) {
    return absl::InvalidArgumentError(
        "--connection-fd and --vfio-user-fd both name the owner: give one");
  }
  VFIOD_ASSIGN_OR_RETURN(transport.allowed_uids,
                         ParseUids(absl::GetFlag(FLAGS_allow_uid), "allow-uid"));
  if (transport.allowed_uids.empty()) transport.allowed_uids = {::getuid()};
  config.quotas.max_grpc = absl::GetFlag(FLAGS_max_connections);
  config.quotas.max_fd_channels = absl::GetFlag(FLAGS_max_connections);
  config.quotas.max_vfio_user = absl::GetFlag(FLAGS_max_vfio_user_connections);

  VFIOD_ASSIGN_OR_RETURN(config.sessions.owner_uids,
                         ParseUids(absl::GetFlag(FLAGS_owner_uid), "owner-uid"));
  if (config.sessions.owner_uids.empty()) config.sessions.owner_uids = transport.allowed_uids;
  config.sessions.max_fd_tokens = absl::GetFlag(FLAGS_max_fd_tokens);
  VFIOD_RETURN_IF_ERROR(RefuseOverflowUid(transport.allowed_uids, config.sessions.owner_uids));

  DeviceLimits& limits = config.limits;
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
  config.max_dma_bytes = absl::GetFlag(FLAGS_max_dma_bytes);
  config.grpc_max_threads = absl::GetFlag(FLAGS_grpc_max_threads);
  config.admission.max_observer_calls = absl::GetFlag(FLAGS_max_observer_calls);
  config.admission.max_calls_per_connection =
      absl::GetFlag(FLAGS_max_observer_calls_per_connection);
  if (config.admission.max_observer_calls == 0 || config.admission.max_calls_per_connection == 0) {
    return absl::InvalidArgumentError(
        "--max-observer-calls and --max-observer-calls-per-connection must be at least 1");
  }
  config.observer_bar_reads = absl::GetFlag(FLAGS_observer_bar_reads);
  return config;
}

// VFIO takes all of an index's eventfds in one SET_IRQS, so a session must be able to hold one
// token per vector of the largest index (nvme has 65 MSI-X vectors, some devices 2048).
uint32_t ChooseFdTokenLimit(uint32_t flag, const DeviceBackend& backend) {
  if (flag != 0) return flag;
  uint32_t largest_irq_index = 0;
  for (const IrqInfo& irq : backend.Info().irqs) {
    largest_irq_index = std::max(largest_irq_index, irq.count);
  }
  return std::max<uint32_t>(64, largest_irq_index + 16);
}

// Every fd the daemon may hold at once: the fixed ones; gRPC's, the transport's and the IRQ
// watcher's own (epoll, eventfds); per gRPC connection its socket and the transport's duplicate;
// per fd channel its socket and its unconsumed received fds; per vfio-user connection its
// socket and one message's fds; registered memory; per IRQ vector a trigger, a watch or mask
// eventfd, and the vfio-user owner's duplicate of its MSI/MSI-X trigger.
uint64_t MaxOpenFiles(const Config& config, const PciDevice& device,
                      const vfio_user::ServerLimits& vfio_user_limits) {
  uint64_t irq_vectors = 0;
  for (const IrqInfo& irq : device.description().backend.irqs) irq_vectors += irq.count;
  return seccomp::kFixedFdLimit + 64 + 2 * uint64_t{config.quotas.max_grpc} +
         config.quotas.max_fd_channels * (1 + uint64_t{config.sessions.max_fd_tokens}) +
         config.quotas.max_vfio_user * vfio_user::VfioUserServer::FdsPerConnection(
                                           vfio_user_limits) +
         config.limits.max_memory_regions + 3 * irq_vectors;
}

// gRPC, with no listening port of its own: the transport hands it checked connections.
std::unique_ptr<grpc::Server> BuildGrpcServer(const Config& config, VfioDeviceCallbacks* service) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  grpc::ResourceQuota quota("vfiod");
  quota.SetMaxThreads(config.grpc_max_threads);
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
  builder.RegisterService(service);
  builder.experimental().SetInterceptorCreators(MalformedRequestInterceptors());
  return builder.BuildAndStart();
}

// Waits for a termination signal, the stop event (the spawn-mode owner is gone) or the host's
// request for the device (its REQ trigger fired: e.g. an unbind from vfio-pci, which waits for
// the daemon to release the device); the reason it stopped.
absl::StatusOr<std::string> ServeUntilStopped(const UniqueFd& signal_fd, const EventFd& stop,
                                              const EventFd& host_request) {
  struct pollfd waits[3] = {{signal_fd.get(), POLLIN, 0},
                            {stop.fd().get(), POLLIN, 0},
                            {host_request.fd().get(), POLLIN, 0}};
  while (true) {
    if (::poll(waits, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "poll");
    }
    if (waits[0].revents & POLLIN) {
      struct signalfd_siginfo info;
      if (::read(signal_fd.get(), &info, sizeof(info)) == sizeof(info)) {
        // vfiod has nothing to reload: its configuration is its command line.
        if (info.ssi_signo == SIGHUP) {
          LogInfo("SIGHUP: nothing to reload (the configuration is the command line); ignored");
          continue;
        }
        return absl::StrCat("signal ", info.ssi_signo);
      }
    }
    if (waits[1].revents & POLLIN) return std::string("the spawn-mode owner is gone");
    if (waits[2].revents & POLLIN) {
      LogWarning("the host requested the device (vfio-pci REQ, e.g. an unbind): releasing it");
      return std::string("the host requested the device");
    }
  }
}

// libprotobuf's own messages (e.g. a request string that is not UTF-8) become logfmt lines,
// escaped and rate-limited like every other line.
void RouteProtobufLogs() {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel level, const char* filename,
                                     int line, const std::string& message) {
    const LogLevel ours = level >= google::protobuf::LOGLEVEL_ERROR     ? LogLevel::kError
                          : level >= google::protobuf::LOGLEVEL_WARNING ? LogLevel::kWarning
                                                                        : LogLevel::kInfo;
    Log(ours, "libprotobuf", {{"message", message},
                              {"source", absl::StrCat(filename, ":", line)}});
  });
}

absl::Status Run() {
  // Writes to a socket whose peer left must fail with EPIPE, not kill the daemon.
  ::signal(SIGPIPE, SIG_IGN);
  RouteProtobufLogs();
  // First, before anything opens an fd: the sockets a service manager passed sit at fd 3 on.
  VFIOD_ASSIGN_OR_RETURN(ActivatedSockets activated, TakeActivatedSockets());
  VFIOD_ASSIGN_OR_RETURN(UniqueFd notify, OpenNotifySocket());
  VFIOD_RETURN_IF_ERROR(BlockTerminationSignals());
  VFIOD_ASSIGN_OR_RETURN(Config config, ParseConfig(std::move(activated)));
  SetLogLevel(config.log_level);

  // Signalled by the IRQ watcher when the host asks for the device back (PciDevice::Start);
  // created after the jail, and declared before the device so that it outlives the watcher.
  std::optional<EventFd> host_request;
  // 1. The device, and everything immutable about it.
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<DeviceBackend> backend, OpenBackend(config.device, config.max_dma_bytes));
  DeviceBackend* const backend_for_jail = backend.get();
  config.sessions.max_fd_tokens = ChooseFdTokenLimit(config.sessions.max_fd_tokens, *backend);
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<PciDevice> device,
                         PciDevice::Create(std::move(backend), config.limits));
  const DeviceDescription& description = device->description();
  LogInfo("device opened", {{"device", description.backend.name},
                            {"vendor", absl::StrCat(absl::Hex(description.vendor_id))},
                            {"device_id", absl::StrCat(absl::Hex(description.device_id))}});

  // 2. Sessions, protocol handlers and sockets. Whatever is owner-scoped registers its release
  // with `cleanup`, which runs at every owner loss.
  OwnerCleanup cleanup;
  device->RegisterOwnerCleanup(cleanup);
  // Created after the jail (which closes every fd it does not keep); used from the transport's
  // and the vfio-user connections' threads, which start later still.
  std::optional<EventFd> stop;
  const bool nobody_else_can_connect =
      config.transport.listen_path.empty() && config.transport.vfio_user_path.empty() &&
      !config.transport.activated_grpc.valid() && !config.transport.activated_vfio_user.valid();
  if (nobody_else_can_connect) {
    // Spawn mode only: when the VMM is gone, the daemon's work is done.
    config.sessions.on_spawn_owner_gone = [&stop] { (void)stop->Signal(); };
  }
  const uint32_t max_fd_tokens = config.sessions.max_fd_tokens;
  SessionManager sessions(&cleanup, config.sessions);
  vfio_user::ServerOptions vfio_user_options;
  vfio_user_options.limits = vfio_user::LimitsFor(*device);
  vfio_user::VfioUserServer vfio_user(device.get(), &sessions, &cleanup, vfio_user_options);
  ConnectionRegistry registry(config.quotas);
  config.transport.registry = &registry;
  config.transport.vfio_user = &vfio_user;
  std::vector<std::string> socket_files;
  if (!config.transport.listen_path.empty()) {
    socket_files = {config.transport.listen_path, absl::StrCat(config.transport.listen_path, ".fds")};
  }
  if (!config.transport.vfio_user_path.empty()) {
    socket_files.push_back(config.transport.vfio_user_path);
  }
  const std::string listen_path = config.transport.listen_path;
  const std::string vfio_user_path = config.transport.vfio_user_path;
  // Names the peers of accepted connections; set once the jail is entered, and it outlives the
  // transport, which uses it on its event thread.
  std::unique_ptr<PeerCredentialSource> peer_credentials;
  VFIOD_ASSIGN_OR_RETURN(std::unique_ptr<Transport> transport,
                         Transport::Create(std::move(config.transport), &sessions));
  sessions.set_transport(transport.get());

  // 3. The jail and the seccomp policy: no thread exists yet.
  jail::JailOptions jail_options;
  jail_options.memlock_bytes = config.max_dma_bytes;
  jail_options.max_open_files = MaxOpenFiles(config, *device, vfio_user_options.limits);
  jail_options.uid = config.sandbox.uid;
  jail_options.gid = config.sandbox.gid;
  jail_options.socket_files = socket_files;
  VFIOD_ASSIGN_OR_RETURN(UniqueFd signal_fd, TerminationSignalFd());
  PrimeCpuCountBeforeJail();
  VFIOD_ASSIGN_OR_RETURN(UniqueFd launcher_channel,
                         Confine(config.sandbox, backend_for_jail, transport.get(), &signal_fd,
                                 notify.valid() ? &notify : nullptr, jail_options));
  if (launcher_channel.valid()) {
    peer_credentials = std::make_unique<LauncherPeerCredentialSource>(std::move(launcher_channel));
  } else {
    peer_credentials = std::make_unique<SocketPeerCredentialSource>();
  }
  VFIOD_ASSIGN_OR_RETURN(EventFd stop_event, EventFd::Create());
  stop.emplace(std::move(stop_event));
  VFIOD_ASSIGN_OR_RETURN(EventFd host_request_event, EventFd::Create());
  host_request.emplace(std::move(host_request_event));
  // From here on no log line waits for stderr (daemon/base/logging.h).
  StartAsyncLogging();

  // 4. Threads: the device's (simulated device worker, IRQ watcher), then gRPC's, then the
  // transport's, which hands out connections.
  VFIOD_RETURN_IF_ERROR(device->Start([&host_request] { (void)host_request->Signal(); }));
  ServiceOptions service_options;
  service_options.daemon_version = kVfiodVersion;
  service_options.observer_bar_reads = config.observer_bar_reads;
  service_options.max_fd_tokens = max_fd_tokens;
  VfioDeviceService service(device.get(), &sessions, transport.get(), service_options);
  CallAdmission admission(config.admission);
  VfioDeviceCallbacks callbacks(&service, &admission);
  std::unique_ptr<grpc::Server> server = BuildGrpcServer(config, &callbacks);
  if (server == nullptr) return absl::InternalError("gRPC server failed to start");
  VFIOD_RETURN_IF_ERROR(transport->Start(server.get(), peer_credentials.get()));
  LogInfo("serving", {{"device", description.backend.name},
                      {"listen", listen_path.empty() ? "-" : listen_path},
                      {"vfio_user", vfio_user_path.empty() ? "-" : vfio_user_path},
                      {"pid", absl::StrCat(::getpid())}});
  absl::Status notified = NotifyReady(notify, absl::StrCat("serving ", description.backend.name));
  if (!notified.ok()) LogWarning("readiness notification failed", {{"error", notified.ToString()}});

  // 5. Until told to stop.
  VFIOD_ASSIGN_OR_RETURN(std::string reason, ServeUntilStopped(signal_fd, *stop, *host_request));
  LogInfo("stopping", {{"reason", reason}});
  transport->Shutdown();
  vfio_user.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // Every connection has ended, and with it any owner (its loss ran the cleanup); should one
  // remain, release what it held.
  if (sessions.GetSummary().owner_attached) cleanup.Run("daemon stopping");
  LogInfo("stopped");
  StopAsyncLogging();
  return absl::OkStatus();
}

}  // namespace
}  // namespace vfiod

// AddressSanitizer builds only: LeakSanitizer's exit-time check reads /proc/self/task, which the
// jail's empty root does not have, so it would turn every jailed daemon's clean exit into a
// failure. Leaks are found in-process instead, by the unit and fuzz tests under --config=asan
// and --config=fuzz, which run the same code without the jail.
#ifdef VFIOD_ADDRESS_SANITIZER
extern "C" const char* __lsan_default_options() { return "detect_leaks=0"; }
#endif

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "serves one PCI device over gRPC and vfio-user.\n"
      "  vfiod --device=sim:edu --listen=PATH [--vfio-user=PATH]\n"
      "  vfiod --device=sim:edu --vfio-user-fd=N\n"
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
  if (absl::GetFlag(FLAGS_version)) {
    std::printf("vfiod %s\n", vfiod::kVfiodVersion);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  if (absl::GetFlag(FLAGS_print_policy)) {
    const vfiod::seccomp::PolicyMode mode = absl::GetFlag(FLAGS_seccomp) == "log"
                                                ? vfiod::seccomp::PolicyMode::kLog
                                                : vfiod::seccomp::PolicyMode::kKill;
    absl::StatusOr<std::string> text = vfiod::seccomp::PolicyText(mode);
    if (!text.ok()) {
      vfiod::LogError("vfiod --print-policy failed", {{"error", text.status().ToString()}});
      return 1;
    }
    std::fwrite(text->data(), 1, text->size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  absl::Status status = vfiod::Run();
  if (!status.ok()) {
    vfiod::LogError("vfiod failed", {{"error", status.ToString()}});
    return 1;
  }
  return 0;
}
