// vfiod latency benchmark: a 4-byte BAR read through vfiod next to its baselines, measured in
// one run with every process pinned to the same CPU (see docs/PERFORMANCE.md for why):
//   raw      16-byte AF_UNIX ping-pong between two processes (the transport's floor)
//   grpc     a unary grpc.health.v1.Health/Check on the same daemon (gRPC's own floor)
//   vfiod    ReadRegion(BAR0, 0x04, 4) on the simulated edu device (owner session)
//   backend  the same read as a direct in-process call on the simulated backend
// Also reports the daemon's idle RSS and thread count. Prints a table and a JSON line.
//
//   vfiod_bench --vfiod=PATH [--iterations=N] [--warmup=N] [--cpu=N] [--cross-cpu]
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/vfio_client.h"
#include "daemon/backend/device_backend.h"
#include "daemon/sim/sim_backend.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/daemon_process.h"

ABSL_FLAG(std::string, vfiod, "", "Path of the vfiod binary (default: the runfile).");
ABSL_FLAG(int, iterations, 20000, "Measured round trips per case.");
ABSL_FLAG(int, warmup, 2000, "Unmeasured round trips before each case.");
ABSL_FLAG(int, cpu, 0, "The CPU every process is pinned to.");
ABSL_FLAG(bool, cross_cpu, false, "Also measure with client and daemon on different CPUs.");

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
};

Stats Measure(const std::string& name, const std::function<void()>& op) {
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) op();
  std::vector<uint64_t> samples(absl::GetFlag(FLAGS_iterations));
  for (uint64_t& sample : samples) {
    uint64_t start = NowNs();
    op();
    sample = NowNs() - start;
  }
  std::sort(samples.begin(), samples.end());
  auto percentile = [&](double p) {
    return samples[std::min(samples.size() - 1, static_cast<size_t>(p * samples.size()))] / 1e3;
  };
  return Stats{name, samples.size(), percentile(0.50), percentile(0.90), percentile(0.99)};
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
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon = testing::DaemonProcess::Start();
  if (!daemon.ok()) {
    std::fprintf(stderr, "vfiod: %s\n", daemon.status().ToString().c_str());
    return 1;
  }
  absl::SleepFor(absl::Milliseconds(300));
  std::string idle_rss = ProcStatusField((*daemon)->pid(), "VmRSS");
  std::string idle_threads = ProcStatusField((*daemon)->pid(), "Threads");

  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect((*daemon)->socket_path());
  if (!client.ok() || !(*client)->ClaimOwnership().ok()) {
    std::fprintf(stderr, "connect/claim failed\n");
    return 1;
  }
  auto channel = grpc::CreateChannel("unix:" + (*daemon)->socket_path(),
                                     grpc::InsecureChannelCredentials());
  grpc::GenericStub health(channel);

  absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedBackend("edu");
  if (!backend.ok()) return 1;

  std::vector<Stats> results;
  char ping[16] = "vfiod-ping-pong";
  auto raw = [&](int fd) {
    return [&, fd] {
      if (write(fd, ping, sizeof(ping)) != sizeof(ping) || read(fd, ping, sizeof(ping)) != sizeof(ping)) {
        std::abort();  // the benchmark's own echo child died: nothing to measure
      }
    };
  };
  results.push_back(Measure("raw 16-byte UNIX ping-pong", raw(echo.fd)));
  uint8_t buffer[4];
  results.push_back(Measure("direct backend ReadRegion 4 B", [&] {
    (void)(*backend)->ReadRegion(0, 0x04, absl::MakeSpan(buffer));
  }));
  results.push_back(Measure("gRPC unary Health/Check", [&] {
    grpc::ClientContext context;
    grpc::Slice empty_message("");  // an empty HealthCheckRequest
    grpc::ByteBuffer request(&empty_message, 1);
    grpc::ByteBuffer response;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    health.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                     &response, [&](grpc::Status) {
                       std::lock_guard<std::mutex> lock(mu);
                       done = true;
                       cv.notify_one();
                     });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
  }));
  results.push_back(Measure("vfiod ReadRegion BAR0 4 B", [&] {
    if (!(*client)->ReadRegion32(0, 0x04).ok()) std::abort();
  }));
  if (echo_cross.fd >= 0) {
    results.push_back(Measure("raw ping-pong, other CPU", raw(echo_cross.fd)));
  }
  std::string busy_threads = ProcStatusField((*daemon)->pid(), "Threads");
  std::string busy_rss = ProcStatusField((*daemon)->pid(), "VmRSS");

  const double raw_p50 = results[0].p50;
  std::printf("vfiod benchmark: %zu round trips per case after %d warm-up, all on CPU %d\n",
              results[0].count, absl::GetFlag(FLAGS_warmup), cpu);
  std::printf("%-34s %10s %10s %10s %12s\n", "case", "p50 us", "p90 us", "p99 us", "p50 / raw");
  for (const Stats& s : results) {
    std::printf("%-34s %10.2f %10.2f %10.2f %11.2fx\n", s.name.c_str(), s.p50, s.p90, s.p99,
                s.p50 / raw_p50);
  }
  const Stats& vfiod_read = results[3];
  const Stats& grpc_floor = results[2];
  std::printf("vfiod cost over bare gRPC unary at p50: %.2f us\n", vfiod_read.p50 - grpc_floor.p50);
  std::printf("daemon idle: VmRSS %s, threads %s; after the run: VmRSS %s, threads %s\n",
              idle_rss.c_str(), idle_threads.c_str(), busy_rss.c_str(), busy_threads.c_str());
  std::printf("target: vfiod p50 <= 5x raw: %s (%.2fx)\n",
              vfiod_read.p50 <= 5 * raw_p50 ? "met" : "NOT met", vfiod_read.p50 / raw_p50);
  std::string json = "{";
  for (const Stats& s : results) {
    absl::StrAppendFormat(&json, "\"%s\":{\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f},",
                          s.name, s.p50, s.p90, s.p99);
  }
  absl::StrAppendFormat(&json, "\"idle_rss\":\"%s\",\"idle_threads\":\"%s\"}", idle_rss,
                        idle_threads);
  std::printf("JSON %s\n", json.c_str());

  client->reset();
  close(echo.fd);
  waitpid(echo.pid, nullptr, 0);
  if (echo_cross.fd >= 0) {
    close(echo_cross.fd);
    waitpid(echo_cross.pid, nullptr, 0);
  }
  return 0;
}

}  // namespace
}  // namespace vfiod

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return vfiod::Run();
}
