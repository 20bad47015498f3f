// Owner-loss cleanup figure (a benchmark, not a test): how long vfiod's owner-loss cleanup
// takes with a large DMA mapping, and whether another client is served meanwhile.
//
// Starts vfiod (--listen, its log in --log), connects an owner that registers a sealed memfd of
// --size bytes and DMA-maps all of it at --iova (on the kernel backend type1 pins every page),
// and an observer that calls GetState back to back on its own connection. Then the owner
// disconnects. The cleanup's duration is the daemon's own figure (`cleanup_us` of its "owner
// detached" log line, daemon/service/session_manager.cc); the observer's calls that began and
// ended inside the cleanup (the interval that line closes; both clocks are this machine's
// CLOCK_REALTIME) show whether it was served during it. Prints a summary and a JSON line.
//
//   owner_loss_figure --vfiod=PATH --device=DEV [--size=1073741824] [--iova=0x40000000]
//                     [--vfiod_args=--max-dma-bytes=2G,...]
// tools/figures/owner_loss_lab.sh runs it on the VM lab's real edu device.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/vfio_client.h"

ABSL_FLAG(std::string, vfiod, "", "Path of the vfiod binary.");
ABSL_FLAG(std::string, device, "sim:edu", "The device vfiod serves (--device).");
ABSL_FLAG(std::vector<std::string>, vfiod_args, {}, "More vfiod arguments, comma separated.");
ABSL_FLAG(uint64_t, size, uint64_t{1} << 30, "Bytes the owner registers and DMA-maps.");
ABSL_FLAG(std::string, iova, "0x40000000", "Where the owner maps them.");
ABSL_FLAG(std::string, socket, "/tmp/olf.sock", "vfiod's --listen socket.");
ABSL_FLAG(std::string, log, "/tmp/olf-vfiod.log", "vfiod's log.");

namespace vfiod {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The value of `key=` in a logfmt line ("" when absent).
std::string Field(absl::string_view line, absl::string_view key) {
  for (absl::string_view word : absl::StrSplit(line, ' ')) {
    if (absl::ConsumePrefix(&word, key) && absl::ConsumePrefix(&word, "=")) {
      return std::string(word);
    }
  }
  return "";
}

pid_t StartVfiod() {
  std::vector<std::string> args = {absl::GetFlag(FLAGS_vfiod),
                                   absl::StrCat("--device=", absl::GetFlag(FLAGS_device)),
                                   absl::StrCat("--listen=", absl::GetFlag(FLAGS_socket))};
  for (const std::string& arg : absl::GetFlag(FLAGS_vfiod_args)) args.push_back(arg);
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  int log =
      ::open(absl::GetFlag(FLAGS_log).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log < 0 || ::dup2(log, 2) != 2) ::_exit(12);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  ::_exit(13);
}

struct Call {
  absl::Time begin;
  absl::Time end;
  bool ok = false;
  bool owner_attached = false;
};

// GetState back to back on its own connection until stopped.
class Observer {
 public:
  explicit Observer(std::unique_ptr<VfioClient> client) : client_(std::move(client)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Observer() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Call> calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  bool SawOwnerGone() {
    absl::MutexLock lock(&mu_);
    return !calls_.empty() && calls_.back().ok && !calls_.back().owner_attached;
  }

 private:
  void Loop() {
    while (!stop_.load()) {
      Call call;
      call.begin = absl::Now();
      absl::StatusOr<v1::DeviceState> state = client_->GetState();
      call.end = absl::Now();
      call.ok = state.ok();
      call.owner_attached = state.ok() && state->owner_attached();
      absl::MutexLock lock(&mu_);
      calls_.push_back(call);
    }
  }

  std::unique_ptr<VfioClient> client_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

absl::Duration Median(std::vector<absl::Duration> values) {
  if (values.empty()) return absl::ZeroDuration();
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::Status Run() {
  const uint64_t size = absl::GetFlag(FLAGS_size);
  uint64_t iova = 0;
  if (!absl::SimpleHexAtoi(absl::GetFlag(FLAGS_iova), &iova)) {
    return absl::InvalidArgumentError("--iova: not a hex number");
  }
  const std::string log_path = absl::GetFlag(FLAGS_log);
  const pid_t vfiod = StartVfiod();
  if (vfiod < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains(ReadAll(log_path), "msg=serving ")) {
    if (absl::Now() > deadline || ::waitpid(vfiod, nullptr, WNOHANG) != 0) {
      return absl::UnavailableError(absl::StrCat("vfiod did not serve:\n", ReadAll(log_path)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }

  ConnectOptions slow;
  slow.default_timeout = absl::Seconds(300);
  absl::StatusOr<std::unique_ptr<VfioClient>> owner =
      VfioClient::Connect(absl::GetFlag(FLAGS_socket), slow);
  if (!owner.ok()) return owner.status();
  if (absl::Status s = (*owner)->ClaimOwnership(); !s.ok()) return s;
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("guest", size);
  if (!memfd.ok()) return memfd.status();
  absl::StatusOr<v1::RegisterMemoryResponse> memory = (*owner)->RegisterMemory(memfd->get(), size);
  if (!memory.ok()) return memory.status();
  const absl::Time map_start = absl::Now();
  if (absl::Status s = (*owner)->MapDma(iova, size, memory->memory_id(), 0); !s.ok()) return s;
  const absl::Duration map_time = absl::Now() - map_start;
  std::printf("owner_loss_figure: %llu bytes registered and DMA-mapped at 0x%llx in %.1f ms\n",
              static_cast<unsigned long long>(size), static_cast<unsigned long long>(iova),
              Ms(map_time));

  ConnectOptions quick;
  quick.fd_channel = false;
  quick.default_timeout = absl::Seconds(60);
  absl::StatusOr<std::unique_ptr<VfioClient>> observer_client =
      VfioClient::Connect(absl::GetFlag(FLAGS_socket), quick);
  if (!observer_client.ok()) return observer_client.status();
  Observer observer(*std::move(observer_client));
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time closed = absl::Now();
  owner->reset();  // the owner disconnects: owner loss
  const absl::Time gone_deadline = absl::Now() + absl::Seconds(120);
  while (!observer.SawOwnerGone() && absl::Now() < gone_deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  absl::SleepFor(absl::Milliseconds(300));
  observer.Stop();
  ::kill(vfiod, SIGTERM);
  int status = 0;
  ::waitpid(vfiod, &status, 0);

  std::string detached;
  for (absl::string_view line : absl::StrSplit(ReadAll(log_path), '\n')) {
    if (absl::StrContains(line, "msg=\"owner detached")) detached = std::string(line);
  }
  int64_t cleanup_us = -1;
  absl::Time detached_at;
  std::string error;
  if (detached.empty() || !absl::SimpleAtoi(Field(detached, "cleanup_us"), &cleanup_us) ||
      !absl::ParseTime("%Y-%m-%dT%H:%M:%E*SZ", Field(detached, "ts"), &detached_at, &error)) {
    return absl::DataLossError(
        absl::StrCat("no \"owner detached\" line with cleanup_us and ts:\n", ReadAll(log_path)));
  }
  const absl::Time cleanup_begin = detached_at - absl::Microseconds(cleanup_us);

  std::vector<absl::Duration> before, during;
  absl::Duration longest_overlapping;
  absl::Time longest_begin;
  int failed = 0;
  for (const Call& call : observer.calls()) {
    if (!call.ok) ++failed;
    if (call.end < closed) before.push_back(call.end - call.begin);
    if (call.begin >= cleanup_begin && call.end <= detached_at) {
      during.push_back(call.end - call.begin);
    }
    if (call.end > cleanup_begin && call.begin < detached_at &&
        call.end - call.begin > longest_overlapping) {
      longest_overlapping = call.end - call.begin;
      longest_begin = call.begin;
    }
  }
  std::printf(
      "owner_loss_figure: cleanup %.3f ms (vfiod's cleanup_us), began %.1f ms after the owner "
      "closed its connection\n",
      cleanup_us / 1000.0, Ms(cleanup_begin - closed));
  std::printf(
      "owner_loss_figure: observer GetState calls: %zu begun and answered inside the cleanup "
      "(median %.2f ms); median %.2f ms before the owner closed (%zu calls); longest call "
      "overlapping the cleanup %.2f ms; %d failed calls\n",
      during.size(), Ms(Median(during)), Ms(Median(before)), before.size(), Ms(longest_overlapping),
      failed);
  std::printf(
      "{\"size\": %llu, \"map_ms\": %.1f, \"cleanup_ms\": %.3f, \"observer_calls_inside\": %zu, "
      "\"observer_median_inside_ms\": %.2f, \"observer_median_before_ms\": %.2f, "
      "\"observer_longest_overlapping_ms\": %.2f, \"observer_failed\": %d, "
      "\"vfiod_exit\": %d}\n",
      static_cast<unsigned long long>(size), Ms(map_time), cleanup_us / 1000.0, during.size(),
      Ms(Median(during)), Ms(Median(before)), Ms(longest_overlapping), failed,
      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  std::printf("owner_loss_figure: vfiod's line: %s\n", detached.c_str());
  std::printf(
      "owner_loss_figure: the longest overlapping call began at %+.1f ms into the cleanup\n",
      Ms(longest_begin - cleanup_begin));
  // The cleanup's stages, with --log-level=debug (daemon/base/owner_cleanup.cc).
  for (absl::string_view line : absl::StrSplit(ReadAll(log_path), '\n')) {
    absl::Time at;
    if (!absl::StrContains(line, "msg=\"owner cleanup\"") ||
        !absl::ParseTime("%Y-%m-%dT%H:%M:%E*SZ", Field(line, "ts"), &at, &error)) {
      continue;
    }
    std::printf("owner_loss_figure: %+9.1f ms stage %s\n", Ms(at - cleanup_begin),
                std::string(line.substr(line.find("step="))).c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace vfiod

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status status = vfiod::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "owner_loss_figure: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
