// qemu_edu_demo: the QEMU step of tools/demo.sh. An unmodified QEMU 11 under the qtest
// accelerator (no guest CPU: this program plays the guest) attaches `-device vfio-user-pci` to a
// running vfiod serving an edu device (real under vfio-pci in the VM lab, or sim:edu), then,
// through QEMU, reads the ids from config space, programs BAR0, computes a factorial and does a
// DMA round trip through QEMU's guest RAM (a shared memfd that QEMU registers with vfiod in
// DMA_MAP). While QEMU still owns the device it runs the --then command (tools/demo.sh: `vfioctl
// state`, which shows QEMU as the owner with its DMA windows), then QEMU quits (SIGTERM).
//
//   qemu_edu_demo --qemu PATH --vfio-user SOCKET [--then 'SHELL COMMAND']
//
// Exit status 0 when every step worked, 1 otherwise (the failing step is printed).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/vmm/qtest_vmm.h"

namespace vfiod::vmm {
namespace {

constexpr PciBdf kSlot = {0, 4, 0};
constexpr uint64_t kBar0 = 0xe0000000;
constexpr uint64_t kGuestSource = 0x200000, kGuestBack = 0x300000, kEduBuffer = 0x40000;
constexpr uint32_t kDmaBytes = 1024;
// Guest RAM: holds the buffers, and stays within an 8 MiB RLIMIT_MEMLOCK (a root without
// CAP_SYS_RESOURCE, where vfiod's simulated IOMMU charges the mapped RAM as type1 does).
constexpr uint64_t kMemoryMb = 6;

void Step(const std::string& text) { printf("\n=== %s\n", text.c_str()); fflush(stdout); }

int Fail(const std::string& what, const absl::Status& status) {
  fprintf(stderr, "qemu_edu_demo: FAILED: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

absl::Status PollBar0(QtestVmm& q, uint64_t offset, uint32_t mask, uint32_t want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (true) {
    absl::StatusOr<uint32_t> v = q.Readl(kBar0 + offset);
    if (!v.ok()) return v.status();
    if ((*v & mask) == want) return absl::OkStatus();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrFormat("BAR0+0x%x stays 0x%08x", offset, *v));
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
}

int Run(const std::string& qemu, const std::string& socket, const std::string& then) {
  absl::StatusOr<std::string> version = RunForOutput({qemu, "--version"}, absl::Seconds(30));
  if (!version.ok()) return Fail(qemu + " --version", version.status());
  Step(absl::StrFormat(
      "QEMU 11 attaches to vfiod over vfio-user: -machine q35 -accel qtest (no guest CPU: this "
      "program plays the guest), %d MiB of shared memfd RAM, -device vfio-user-pci socket=%s "
      "at 00:04.0",
      kMemoryMb, socket));
  printf("%s", version->substr(0, version->find('\n') + 1).c_str());
  QtestVmmOptions options;
  options.qemu_path = qemu;
  options.vfio_user_socket = socket;
  options.memory_mb = kMemoryMb;
  options.start_timeout = absl::Seconds(60);
  options.command_timeout = absl::Seconds(30);
  absl::StatusOr<std::unique_ptr<QtestVmm>> started = QtestVmm::Start(options);
  if (!started.ok()) return Fail("starting QEMU", started.status());
  QtestVmm& q = **started;
  printf("QEMU (pid %d) attached and answered in %s\n", q.pid(),
         absl::FormatDuration(q.start_duration()).c_str());

  Step("config space through QEMU (0xcf8/0xcfc; QEMU forwards it to vfiod as REGION_READ of "
       "region 7)");
  absl::StatusOr<uint32_t> ids = q.ConfigRead(kSlot, 0x00, 4);
  absl::StatusOr<uint32_t> klass = q.ConfigRead(kSlot, 0x08, 4);
  if (!ids.ok()) return Fail("config read", ids.status());
  if (!klass.ok()) return Fail("config read", klass.status());
  printf("vendor:device %04x:%04x, class %06x\n", *ids & 0xffff, *ids >> 16, *klass >> 8);
  if (*ids != 0x11e81234) return Fail("ids", absl::NotFoundError("not an edu device"));

  Step(absl::StrFormat("BAR0 at 0x%x, memory decode and bus mastering on (config writes)", kBar0));
  for (auto [offset, value] : {std::pair<uint32_t, uint32_t>{0x10, kBar0}, {0x04, 0x0006}}) {
    absl::Status s = q.ConfigWrite(kSlot, offset, offset == 0x04 ? 2 : 4, value);
    if (!s.ok()) return Fail("config write", s);
  }
  absl::StatusOr<uint32_t> ident = q.Readl(kBar0);
  if (!ident.ok()) return Fail("readl BAR0", ident.status());
  printf("readl BAR0+0x00 (ident) = 0x%08x\n", *ident);

  Step("factorial through QEMU: writel BAR0+0x08 10, poll status, readl BAR0+0x08");
  if (absl::Status s = q.Writel(kBar0 + 0x08, 10); !s.ok()) return Fail("writel", s);
  if (absl::Status s = PollBar0(q, 0x20, 0x1, 0); !s.ok()) return Fail("factorial", s);
  absl::StatusOr<uint32_t> factorial = q.Readl(kBar0 + 0x08);
  if (!factorial.ok()) return Fail("readl", factorial.status());
  printf("10! = %u\n", *factorial);
  if (*factorial != 3628800) return Fail("factorial", absl::DataLossError("wrong value"));

  Step(absl::StrFormat("DMA round trip through QEMU's guest RAM: %u bytes RAM 0x%x -> device "
                       "buffer 0x%x -> RAM 0x%x",
                       kDmaBytes, kGuestSource, kEduBuffer, kGuestBack));
  std::string pattern(kDmaBytes, '\0');
  for (uint32_t i = 0; i < kDmaBytes; ++i) pattern[i] = static_cast<char>(i * 7 + 1);
  if (absl::Status s = q.MemWrite(kGuestSource, pattern); !s.ok()) return Fail("write RAM", s);
  if (absl::Status s = q.MemWrite(kGuestBack, std::string(kDmaBytes, '\0')); !s.ok()) {
    return Fail("write RAM", s);
  }
  for (auto [src, dst, cmd] : {std::tuple<uint64_t, uint64_t, uint32_t>{kGuestSource, kEduBuffer, 1},
                               {kEduBuffer, kGuestBack, 3}}) {
    for (auto [reg, value] : {std::pair<uint64_t, uint32_t>{0x80, static_cast<uint32_t>(src)},
                              {0x88, static_cast<uint32_t>(dst)},
                              {0x90, kDmaBytes},
                              {0x98, cmd}}) {
      if (absl::Status s = q.Writel(kBar0 + reg, value); !s.ok()) return Fail("writel", s);
    }
    if (absl::Status s = PollBar0(q, 0x98, 0x1, 0); !s.ok()) return Fail("DMA", s);
  }
  absl::StatusOr<std::string> back = q.MemRead(kGuestBack, kDmaBytes);
  if (!back.ok()) return Fail("read RAM", back.status());
  if (*back != pattern) {
    size_t at = 0;
    while (at < pattern.size() && (*back)[at] == pattern[at]) ++at;
    return Fail("DMA", absl::DataLossError(absl::StrFormat(
                           "the data came back changed from byte %u (0x%02x, not 0x%02x)", at,
                           static_cast<uint8_t>((*back)[at]), static_cast<uint8_t>(pattern[at]))));
  }
  printf("the %u bytes came back unchanged\n", kDmaBytes);

  if (!then.empty()) {
    Step("while QEMU owns the device: " + then);
    const int status = system(then.c_str());
    if (status != 0) {
      return Fail(then, absl::InternalError(absl::StrFormat("exit status %d", status)));
    }
  }

  Step("QEMU quits (SIGTERM); vfiod ends its session like any owner's");
  absl::StatusOr<int> status = q.Kill(SIGTERM);
  if (!status.ok()) return Fail("stopping QEMU", status.status());
  printf("QEMU exited (%s)\n", WIFEXITED(*status)
                                    ? absl::StrFormat("status %d", WEXITSTATUS(*status)).c_str()
                                    : strsignal(WTERMSIG(*status)));
  return 0;
}

}  // namespace
}  // namespace vfiod::vmm

int main(int argc, char** argv) {
  std::string qemu, socket, then;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 < argc && arg == "--qemu") {
      qemu = argv[++i];
    } else if (i + 1 < argc && arg == "--vfio-user") {
      socket = argv[++i];
    } else if (i + 1 < argc && arg == "--then") {
      then = argv[++i];
    } else {
      qemu.clear();
      break;
    }
  }
  if (qemu.empty() || socket.empty()) {
    fprintf(stderr, "usage: qemu_edu_demo --qemu PATH --vfio-user SOCKET [--then 'COMMAND']\n");
    return 2;
  }
  return vfiod::vmm::Run(qemu, socket, then);
}
