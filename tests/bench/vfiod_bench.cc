// vfiod latency benchmark: a 4-byte BAR read through vfiod next to its baselines, measured in
// one run with every process pinned to the same CPU (see docs/PERFORMANCE.md for why):
//   raw      16-byte AF_UNIX ping-pong between two processes (the transport's floor)
//   echo     bare gRPC: a 4-byte unary echo and a 4-byte bidi-stream ping-pong with
//            grpc_echo_server (sync server, default options, no vfiod code): gRPC's own floor
//   health   a unary grpc.health.v1.Health/Check on the daemon (gRPC's default health service,
//            which in 1.51 is a callback-API service: more thread hand-offs than a sync one)
//   vfiod    ReadRegion(BAR0, 0x04, 4) on the simulated edu device (owner session)
//   vfio-user the daemon's vfio-user endpoint (--vfio-user, jail and seccomp on), from a lean
//            client loop in this process (one sendmsg per request, one recv per reply):
//            REGION_READ of BAR0's ID register (4 B), a non-posted REGION_WRITE of edu's scratch
//            register 0x04 (4 B), and posted writes (No_reply): batches of --posted_batch writes
//            followed by one REGION_READ that drains them, reported per write (batch time / N)
//   backend  the same read as a direct in-process call on the simulated backend
//   grpc cb  the Health/Check again through gRPC's callback client API, measured last
// Every gRPC call is blocking, in the calling thread, as VfioClient makes them, except the last.
// Every blocking case runs before the first callback-API call: in gRPC 1.51 (epoll1 poller) the
// first callback call starts threads that poll gRPC's shared epoll set for the rest of the
// process's life, and from then on every blocking call in the process pays a thread hand-off
// (about +18 us, 1.5 -> 3.9 context switches per call in the client). See docs/PERFORMANCE.md.
// Every case runs --rounds times in turn and reports its median round. Also reports context
// switches per call (this process + the peer: the echo child, the echo server or the daemon,
// over its live threads) and the daemon's idle RSS and thread count (with the jail on, of the
// serving process, not the launcher). Prints a table and a JSON line.
//
//   vfiod_bench --vfiod=PATH [--vfiod_args=ARG,...] [--echo_server=PATH] [--iterations=N]
//               [--warmup=N] [--rounds=N] [--cpu=N] [--cross_cpu]
#include <dirent.h>
#include <linux/vfio.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/vfio_client.h"
#include "daemon/backend/device_backend.h"
#include "daemon/vfio_user/protocol.h"
#include "daemon/sim/sim_backend.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/echo.grpc.pb.h"
#include "tests/daemon_process.h"
#include "tests/vfio_user/vfio_user_client.h"

ABSL_FLAG(std::string, vfiod, "", "Path of the vfiod binary (default: the runfile).");
ABSL_FLAG(std::vector<std::string>, vfiod_args, {},
          "Extra vfiod arguments, comma-separated (e.g. --seccomp=log).");
ABSL_FLAG(std::string, echo_server, "",
          "Path of grpc_echo_server (default: next to this binary).");
ABSL_FLAG(int, iterations, 20000, "Measured round trips per case.");
ABSL_FLAG(int, warmup, 2000, "Unmeasured round trips before each case.");
ABSL_FLAG(int, rounds, 3, "Measure every case this many times in turn; report the median round.");
ABSL_FLAG(int, cpu, 0, "The CPU every process is pinned to.");
ABSL_FLAG(bool, cross_cpu, false, "Also measure with client and daemon on different CPUs.");
ABSL_FLAG(int, posted_batch, 16,
          "Posted vfio-user REGION_WRITEs per measured batch (then one REGION_READ drains them).");

namespace vfiod {
namespace {

uint64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

struct Stats {
  std::string name;
  size_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0;  // microseconds
  double client_csw = -1, daemon_csw = -1;  // context switches per measured call; -1: not known
};

// Voluntary + involuntary context switches of this whole process (all threads).
long SelfContextSwitches() {
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return usage.ru_nvcsw + usage.ru_nivcsw;
}

// The same for another process, per live thread (tid -> count). Empty without a process.
std::map<std::string, long> ThreadContextSwitches(pid_t pid) {
  std::map<std::string, long> counts;
  if (pid <= 0) return counts;
  std::string dir = absl::StrCat("/proc/", pid, "/task");
  DIR* tasks = opendir(dir.c_str());
  if (tasks == nullptr) return counts;
  while (struct dirent* entry = readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream in(absl::StrCat(dir, "/", entry->d_name, "/status"));
    std::string line;
    long total = 0;
    while (std::getline(in, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
          line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::atol(line.c_str() + line.find(':') + 1);
      }
    }
    counts[entry->d_name] = total;
  }
  closedir(tasks);
  return counts;
}

// Context switches between two snapshots, over the threads alive at the second (a thread that
// exited in between is not counted, so this is a lower bound). -1 without a process.
long ContextSwitchesBetween(const std::map<std::string, long>& before,
                            const std::map<std::string, long>& after) {
  if (after.empty()) return -1;
  long total = 0;
  for (const auto& [tid, count] : after) {
    auto it = before.find(tid);
    total += count - (it == before.end() ? 0 : it->second);
  }
  return total;
}

Stats Measure(const std::string& name, const std::function<void()>& op, pid_t daemon_pid = -1) {
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) op();
  std::vector<uint64_t> samples(absl::GetFlag(FLAGS_iterations));
  const long client_before = SelfContextSwitches();
  const std::map<std::string, long> daemon_before = ThreadContextSwitches(daemon_pid);
  for (uint64_t& sample : samples) {
    uint64_t start = NowNs();
    op();
    sample = NowNs() - start;
  }
  const long client_after = SelfContextSwitches();
  const long daemon_switches =
      ContextSwitchesBetween(daemon_before, ThreadContextSwitches(daemon_pid));
  std::sort(samples.begin(), samples.end());
  auto percentile = [&](double p) {
    return samples[std::min(samples.size() - 1, static_cast<size_t>(p * samples.size()))] / 1e3;
  };
  Stats stats{name, samples.size(), percentile(0.50), percentile(0.90), percentile(0.99)};
  const double n = static_cast<double>(samples.size());
  if (client_before >= 0 && client_after >= 0) stats.client_csw = (client_after - client_before) / n;
  if (daemon_switches >= 0) stats.daemon_csw = daemon_switches / n;
  return stats;
}

bool Pin(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(pid, sizeof(set), &set) == 0;
}

// The raw baseline: a forked echo process on a socketpair (forked before gRPC exists).
struct RawEcho {
  int fd = -1;
  pid_t pid = -1;
};

RawEcho StartRawEcho(int cpu) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    Pin(0, cpu);
    close(fds[0]);
    char buffer[16];
    while (read(fds[1], buffer, sizeof(buffer)) == sizeof(buffer)) {
      if (write(fds[1], buffer, sizeof(buffer)) != sizeof(buffer)) break;
    }
    _exit(0);
  }
  close(fds[1]);
  return RawEcho{fds[0], pid};
}

std::string ProcStatusField(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::string value = line.substr(field.size() + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "?";
}

// The bare gRPC baseline server, spawned (posix_spawn) before this process uses gRPC.
struct EchoServer {
  pid_t pid = -1;
  std::string dir;
  std::string socket_path;
};

EchoServer StartEchoServer() {
  EchoServer server;
  std::string binary = absl::GetFlag(FLAGS_echo_server);
  if (binary.empty()) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return server;
    std::string path(self, n);
    binary = path.substr(0, path.rfind('/') + 1) + "grpc_echo_server";
  }
  char dir_template[] = "/tmp/vfiodbXXXXXX";
  if (mkdtemp(dir_template) == nullptr) return server;
  server.dir = dir_template;
  server.socket_path = server.dir + "/echo.sock";
  absl::StatusOr<pid_t> pid = testing::SpawnProcess({binary, "--listen=" + server.socket_path});
  if (!pid.ok()) {
    std::fprintf(stderr, "grpc_echo_server: %s\n", pid.status().ToString().c_str());
    return server;
  }
  server.pid = *pid;
  return server;
}

void StopEchoServer(const EchoServer& server) {
  if (server.pid > 0) {
    kill(server.pid, SIGTERM);
    waitpid(server.pid, nullptr, 0);
  }
  if (!server.dir.empty()) {
    unlink(server.socket_path.c_str());
    rmdir(server.dir.c_str());
  }
}

// The process that serves: with the jail on, the pid started is a launcher and the daemon is its
// only child (pid 1 of its own pid namespace); with --jail=off it is the pid started.
pid_t ServingPid(pid_t started) {
  std::ifstream in(absl::StrCat("/proc/", started, "/task/", started, "/children"));
  pid_t child = -1;
  if (in >> child && child > 0) return child;
  return started;
}

// The benchmark's vfio-user client loop: requests prepared once, each sent with one sendmsg,
// each reply taken with one recv (a reply is one sendmsg on the server's side, so one recv gets
// all of it on this otherwise idle stream). The connection and VERSION are VfioUserClient's;
// any failure aborts (there is nothing to measure then).
class VfioUserLoop {
 public:
  // Connects, negotiates (which makes this connection the device's owner) and enables memory
  // decode and bus mastering (command register, config region 7, offset 4, 2 bytes).
  static std::unique_ptr<VfioUserLoop> Open(const std::string& path) {
    absl::StatusOr<testing::VfioUserClient> client = testing::VfioUserClient::Connect(path);
    if (!client.ok()) return nullptr;
    absl::StatusOr<testing::VfioUserClient::Reply> version = client->Version();
    if (!version.ok() || version->error()) {
      std::fprintf(stderr, "vfio-user VERSION failed: %s\n",
                   version.ok() ? absl::StrCat("errno ", version->header.error).c_str()
                                : version.status().ToString().c_str());
      return nullptr;
    }
    const uint16_t command = 0x0006;
    absl::Status decode = client->RegionWrite(
        VFIO_PCI_CONFIG_REGION_INDEX, 4,
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&command), sizeof(command)));
    if (!decode.ok()) {
      std::fprintf(stderr, "vfio-user command register write: %s\n", decode.ToString().c_str());
      return nullptr;
    }
    return std::unique_ptr<VfioUserLoop>(new VfioUserLoop(std::move(*client)));
  }

  // REGION_READ of 4 bytes of BAR0 at `offset`: the value read.
  uint32_t Read32(uint64_t offset) {
    vfio_user::RegionAccessPayload access{offset, 0, 4};
    SendCommand(vfio_user::Command::kRegionRead, &access, sizeof(access), 0);
    const size_t size = ReceiveReply(vfio_user::Command::kRegionRead);
    if (size != sizeof(vfio_user::Header) + sizeof(access) + 4) std::abort();
    uint32_t value;
    std::memcpy(&value, reply_ + size - 4, 4);
    return value;
  }

  // REGION_WRITE of 4 bytes of BAR0 at `offset`; posted (No_reply) or waiting for the reply.
  void Write32(uint64_t offset, uint32_t value, bool posted) {
    struct {
      vfio_user::RegionAccessPayload access;
      uint32_t value;
    } __attribute__((packed)) write = {{offset, 0, 4}, value};
    SendCommand(vfio_user::Command::kRegionWrite, &write, sizeof(write),
                posted ? vfio_user::kFlagNoReply : 0);
    if (!posted) ReceiveReply(vfio_user::Command::kRegionWrite);
  }

 private:
  explicit VfioUserLoop(testing::VfioUserClient client) : client_(std::move(client)) {}

  void SendCommand(vfio_user::Command command, const void* payload, size_t size,
                   uint32_t flags) {
    uint8_t message[64];
    vfio_user::Header header{++id_, static_cast<uint16_t>(command),
                             static_cast<uint32_t>(sizeof(header) + size),
                             vfio_user::kTypeCommand | flags, 0};
    std::memcpy(message, &header, sizeof(header));
    std::memcpy(message + sizeof(header), payload, size);
    struct iovec io = {message, sizeof(header) + size};
    struct msghdr msg = {};
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    if (::sendmsg(client_.socket().get(), &msg, MSG_NOSIGNAL) !=
        static_cast<ssize_t>(io.iov_len)) {
      std::abort();
    }
  }

  // The reply's size; aborts on an error reply or one that does not match the last command.
  size_t ReceiveReply(vfio_user::Command command) {
    const ssize_t n = ::recv(client_.socket().get(), reply_, sizeof(reply_), 0);
    vfio_user::Header header;
    if (n < static_cast<ssize_t>(sizeof(header))) std::abort();
    std::memcpy(&header, reply_, sizeof(header));
    if (header.message_size != static_cast<uint32_t>(n) || header.message_id != id_ ||
        header.command != static_cast<uint16_t>(command) ||
        header.flags != vfio_user::kTypeReply) {
      std::abort();
    }
    return static_cast<size_t>(n);
  }

  testing::VfioUserClient client_;
  uint16_t id_ = 0x100;
  uint8_t reply_[256];
};

int Run() {
  const int cpu = absl::GetFlag(FLAGS_cpu);
  const int other_cpu = cpu == 0 ? 1 : 0;
  if (!Pin(0, cpu)) std::fprintf(stderr, "warning: could not pin to CPU %d\n", cpu);
  RawEcho echo = StartRawEcho(cpu);
  RawEcho echo_cross = absl::GetFlag(FLAGS_cross_cpu) ? StartRawEcho(other_cpu) : RawEcho{};
  if (echo.fd < 0) return 1;

  if (!absl::GetFlag(FLAGS_vfiod).empty()) setenv("VFIOD_BINARY", absl::GetFlag(FLAGS_vfiod).c_str(), 1);
  setenv("VFIOD_DEVICE", "sim:edu", 1);
  // The daemon inherits this process's affinity, so all its threads share the CPU.
  if (getenv("TMP_UNPINNED_START")) { cpu_set_t all; CPU_ZERO(&all); CPU_SET(0, &all); CPU_SET(1, &all); sched_setaffinity(0, sizeof(all), &all); }
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon = testing::DaemonProcess::Start(
      absl::GetFlag(FLAGS_vfiod_args));
  if (!daemon.ok()) {
    std::fprintf(stderr, "vfiod: %s\n", daemon.status().ToString().c_str());
    return 1;
  }
  if (getenv("TMP_UNPINNED_START")) {
    absl::SleepFor(absl::Milliseconds(300));
    for (pid_t p : {(*daemon)->pid(), ServingPid((*daemon)->pid())}) {
      DIR* d = opendir(absl::StrCat("/proc/", p, "/task").c_str());
      while (struct dirent* e = readdir(d)) if (e->d_name[0] != '.') Pin(atoi(e->d_name), cpu);
      closedir(d);
    }
    Pin(0, cpu);
  }
  EchoServer echo_server = StartEchoServer();
  if (echo_server.pid < 0) return 1;
  struct StopAtExit {
    const EchoServer& server;
    ~StopAtExit() { StopEchoServer(server); }
  } stop_echo_server{echo_server};
  absl::SleepFor(absl::Milliseconds(300));
  const pid_t daemon_pid = ServingPid((*daemon)->pid());
  std::string idle_rss = ProcStatusField(daemon_pid, "VmRSS");
  std::string idle_threads = ProcStatusField(daemon_pid, "Threads");

  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect((*daemon)->socket_path());
  if (!client.ok() || !(*client)->ClaimOwnership().ok()) {
    std::fprintf(stderr, "connect/claim failed\n");
    return 1;
  }
  auto channel = grpc::CreateChannel("unix:" + (*daemon)->socket_path(),
                                     grpc::InsecureChannelCredentials());
  grpc::GenericStub health(channel);
  auto echo_channel = grpc::CreateChannel("unix:" + echo_server.socket_path,
                                          grpc::InsecureChannelCredentials());
  if (!echo_channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(20)))) {
    std::fprintf(stderr, "grpc_echo_server did not start\n");
    return 1;
  }
  std::unique_ptr<bench::Echo::Stub> echo_stub = bench::Echo::NewStub(echo_channel);

  absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedBackend("edu");
  if (!backend.ok()) return 1;

  char ping[16] = "vfiod-ping-pong";
  auto raw = [&](int fd) {
    return [&, fd] {
      if (write(fd, ping, sizeof(ping)) != sizeof(ping) || read(fd, ping, sizeof(ping)) != sizeof(ping)) {
        std::abort();  // the benchmark's own echo child died: nothing to measure
      }
    };
  };
  const std::string kHealthCheck = "/grpc.health.v1.Health/Check";
  uint8_t buffer[4];
  bench::EchoMessage echo_request;
  echo_request.set_data(std::string(4, 'e'));
  // One stream per round, opened just before its case (an idle open stream measurably slowed
  // the stream's own round trips when other cases ran in between).
  std::unique_ptr<grpc::ClientContext> stream_context;
  std::unique_ptr<grpc::ClientReaderWriter<bench::EchoMessage, bench::EchoMessage>> stream;
  auto open_stream = [&] {
    stream_context = std::make_unique<grpc::ClientContext>();
    stream = echo_stub->Bidi(stream_context.get());
  };
  auto close_stream = [&] {
    stream->WritesDone();
    if (!stream->Finish().ok()) std::abort();
    stream.reset();
    stream_context.reset();
  };
  // Blocking, in this thread, as a generated sync stub (and so VfioClient) does it: the call's
  // completion queue is polled by the calling thread itself.
  grpc::CompletionQueue health_queue;

  struct Case {
    std::string name;
    std::function<void()> op;
    pid_t peer;
    std::function<void()> before = [] {};  // unmeasured, around the case
    std::function<void()> after = [] {};
    int per_op = 1;  // requests per op: figures are reported per request
  };
  // vfio-user: one owner at a time, so each vfio-user case takes the device over from the gRPC
  // session (ReleaseOwnership, then a vfio-user connection whose VERSION claims it) and gives it
  // back afterwards (the connection closes: owner loss; the gRPC session claims again once the
  // daemon has seen the close, and enables memory decode again, which owner loss turns off).
  // Unmeasured.
  std::unique_ptr<VfioUserLoop> vfio_user;
  auto vfio_user_open = [&] {
    if (!(*client)->ReleaseOwnership().ok()) std::abort();
    vfio_user = VfioUserLoop::Open((*daemon)->vfio_user_path());
    if (vfio_user == nullptr) std::abort();
    // Posted writes fail silently (no reply): check once that they reach the device.
    vfio_user->Write32(0x04, 0x12345678, /*posted=*/true);
    if (vfio_user->Read32(0x04) != ~0x12345678u) std::abort();
  };
  auto vfio_user_close = [&] {
    vfio_user.reset();
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (!(*client)->ClaimOwnership().ok()) {
      if (absl::Now() > deadline) std::abort();
      absl::SleepFor(absl::Milliseconds(1));
    }
    if (!(*client)->WriteConfig(4, 2, 0x0006).ok()) std::abort();
  };
  const int posted_batch = std::max(1, absl::GetFlag(FLAGS_posted_batch));
  uint32_t scratch = 0;
  std::vector<Case> cases = {
      {"raw 16-byte UNIX ping-pong", raw(echo.fd), echo.pid},
      {"direct backend ReadRegion 4 B",
       [&] { (void)(*backend)->ReadRegion(0, 0x04, absl::MakeSpan(buffer)); }, -1},
      {"bare gRPC unary echo 4 B",
       [&] {
         grpc::ClientContext context;
         bench::EchoMessage response;
         if (!echo_stub->Unary(&context, echo_request, &response).ok()) std::abort();
       },
       echo_server.pid},
      {"bare gRPC bidi-stream echo 4 B",
       [&] {
         bench::EchoMessage response;
         if (!stream->Write(echo_request) || !stream->Read(&response)) std::abort();
       },
       echo_server.pid, open_stream, close_stream},
      {"vfiod gRPC Health/Check",
       [&] {
         grpc::ClientContext context;
         grpc::Slice empty_message("");  // an empty HealthCheckRequest
         grpc::ByteBuffer request(&empty_message, 1);
         grpc::ByteBuffer response;
         grpc::Status status;
         std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
             health.PrepareUnaryCall(&context, kHealthCheck, request, &health_queue);
         call->StartCall();
         call->Finish(&response, &status, &health_queue);
         void* tag = nullptr;
         bool ok = false;
         if (!health_queue.Next(&tag, &ok) || !ok || !status.ok()) std::abort();
       },
       daemon_pid},
      {"vfiod ReadRegion BAR0 4 B",
       [&] {
         if (!(*client)->ReadRegion32(0, 0x04).ok()) std::abort();
       },
       daemon_pid},
      {"vfio-user REGION_READ BAR0 4 B",
       [&] {
         if (vfio_user->Read32(0x00) != 0x010000edu) std::abort();  // edu's ID register
       },
       daemon_pid, vfio_user_open, vfio_user_close},
      {"vfio-user REGION_WRITE 4 B",
       [&] { vfio_user->Write32(0x04, ++scratch, /*posted=*/false); }, daemon_pid,
       vfio_user_open, vfio_user_close},
      {absl::StrCat("vfio-user posted WRITE 4 B (/", posted_batch, "+rd)"),
       [&] {
         for (int i = 0; i < posted_batch; ++i) vfio_user->Write32(0x04, ++scratch, true);
         (void)vfio_user->Read32(0x00);  // drains: replied after every posted write ran
       },
       daemon_pid, vfio_user_open, vfio_user_close, posted_batch},
  };
  const size_t kRaw = 0, kGrpc = 2, kVfiod = 5, kVfioUserRead = 6, kVfioUserPosted = 8;
  if (echo_cross.fd >= 0) {
    cases.push_back({"raw ping-pong, other CPU", raw(echo_cross.fd), echo_cross.pid});
  }
  // All cases, `rounds` times in turn; each case reports its median round (by p50), so a burst
  // of load from another process on this CPU during one case does not decide its figure.
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  std::vector<std::vector<Stats>> by_case(cases.size());
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < cases.size(); ++i) {
      cases[i].before();
      Stats stats = Measure(cases[i].name, cases[i].op, cases[i].peer);
      if (cases[i].per_op > 1) {
        const double n = cases[i].per_op;
        stats.p50 /= n;
        stats.p90 /= n;
        stats.p99 /= n;
        if (stats.client_csw >= 0) stats.client_csw /= n;
        if (stats.daemon_csw >= 0) stats.daemon_csw /= n;
      }
      by_case[i].push_back(stats);
      cases[i].after();
    }
  }
  std::vector<Stats> results;
  for (std::vector<Stats>& runs : by_case) {
    std::sort(runs.begin(), runs.end(),
              [](const Stats& a, const Stats& b) { return a.p50 < b.p50; });
    results.push_back(runs[runs.size() / 2]);
  }
  // Last, once: the callback API starts gRPC threads in this process that would slow every later
  // blocking call.
  results.push_back(Measure("vfiod Health/Check, callback API", [&] {
    grpc::ClientContext context;
    grpc::Slice empty_message("");
    grpc::ByteBuffer request(&empty_message, 1);
    grpc::ByteBuffer response;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    health.UnaryCall(&context, kHealthCheck, grpc::StubOptions(), &request, &response,
                     [&](grpc::Status status) {
                       if (!status.ok()) std::abort();
                       std::lock_guard<std::mutex> lock(mu);
                       done = true;
                       cv.notify_one();
                     });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
  }, daemon_pid));
  std::string busy_threads = ProcStatusField(daemon_pid, "Threads");
  std::string busy_rss = ProcStatusField(daemon_pid, "VmRSS");

  const double raw_p50 = results[kRaw].p50;
  std::printf(
      "vfiod benchmark: %zu round trips per case after %d warm-up, all on CPU %d; "
      "median of %d rounds\n",
      results[kRaw].count, absl::GetFlag(FLAGS_warmup), cpu, rounds);
  std::printf("%-40s %8s %8s %8s %10s %14s\n", "case", "p50 us", "p90 us", "p99 us", "p50 / raw",
              "csw/call c+p");
  auto csw = [](double value) {
    return value < 0 ? std::string("-") : absl::StrFormat("%.1f", value);
  };
  for (const Stats& s : results) {
    std::printf("%-40s %8.2f %8.2f %8.2f %9.2fx %14s\n", s.name.c_str(), s.p50, s.p90, s.p99,
                s.p50 / raw_p50, absl::StrCat(csw(s.client_csw), "+", csw(s.daemon_csw)).c_str());
  }
  const Stats& vfiod_read = results[kVfiod];
  const Stats& grpc_floor = results[kGrpc];
  std::printf("vfiod cost over bare gRPC unary at p50: %.2f us\n", vfiod_read.p50 - grpc_floor.p50);
  std::printf("daemon idle: VmRSS %s, threads %s; after the run: VmRSS %s, threads %s\n",
              idle_rss.c_str(), idle_threads.c_str(), busy_rss.c_str(), busy_threads.c_str());
  std::printf("target: vfiod p50 <= 5x raw: %s (%.2fx)\n",
              vfiod_read.p50 <= 5 * raw_p50 ? "met" : "NOT met", vfiod_read.p50 / raw_p50);
  const Stats& vfio_user_read = results[kVfioUserRead];
  std::printf("target: vfio-user REGION_READ p50 <= 1.2x raw: %s (%.2fx)\n",
              vfio_user_read.p50 <= 1.2 * raw_p50 ? "met" : "NOT met",
              vfio_user_read.p50 / raw_p50);
  std::printf("posted write, net of its batch's draining read (p50s): %.2f us\n",
              results[kVfioUserPosted].p50 - vfio_user_read.p50 / posted_batch);
  std::string json = "{";
  for (const Stats& s : results) {
    absl::StrAppendFormat(&json,
                          "\"%s\":{\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
                          "\"client_csw_per_call\":%.2f,\"peer_csw_per_call\":%.2f},",
                          s.name, s.p50, s.p90, s.p99, s.client_csw, s.daemon_csw);
  }
  absl::StrAppendFormat(&json, "\"idle_rss\":\"%s\",\"idle_threads\":\"%s\"}", idle_rss,
                        idle_threads);
  std::printf("JSON %s\n", json.c_str());

  client->reset();
  // Close both ends before waiting: the cross-CPU child, forked second, holds a copy of the
  // first child's socket, which sees EOF only once that copy is gone too.
  close(echo.fd);
  if (echo_cross.fd >= 0) close(echo_cross.fd);
  waitpid(echo.pid, nullptr, 0);
  if (echo_cross.fd >= 0) waitpid(echo_cross.pid, nullptr, 0);
  return 0;
}

}  // namespace
}  // namespace vfiod

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return vfiod::Run();
}
