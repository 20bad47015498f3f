// QtestVmm: an unmodified QEMU 11 driven from a test through QEMU's qtest protocol.
//
// QEMU runs `-machine q35 -accel qtest` (no guest CPU executes): the test plays the guest. It
// reads and writes guest-physical memory and I/O ports (so PCI config space through 0xcf8/0xcfc,
// BARs once programmed, guest RAM) and sees the interrupt controller's inputs. With a
// vfio-user socket, QEMU attaches `-device vfio-user-pci` to that server exactly as it would
// for a booted guest: the server sees the same vfio-user traffic (VERSION, DMA_MAP of guest
// RAM as memfd-backed shared memory, region and IRQ setup, config and BAR accesses).
//
// Protocol (QEMU's docs/devel/testing/qtest.rst, system/qtest.c): one text line per command on
// a UNIX socket that the test listens on and QEMU connects to (`-qtest unix:PATH`); each
// command gets one reply line, "OK [VALUE]" or "FAIL REASON" / "ERR REASON". Asynchronously,
// after `irq_intercept_in QOM-PATH`, QEMU sends "IRQ raise N" / "IRQ lower N" whenever input N
// of that device changes level; these may arrive at any time and are recorded, never returned
// as replies.
//
// QEMU 11 comes from $VFIOD_QEMU11 (tools/lab/qemu11, which tools/lab/qemu11.sh prepares and
// tools/test.sh passes to Bazel tests); FindQemu11() says why it is absent so tests can skip
// with the reason printed.
//
// Not thread-safe: one thread drives one QtestVmm.
#ifndef VFIOD_TESTS_VMM_QTEST_VMM_H_
#define VFIOD_TESTS_VMM_QTEST_VMM_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vfiod::vmm {

// The QEMU 11 a test may use.
struct Qemu11 {
  std::string path;     // what to execute (usually tools/lab/qemu11)
  std::string version;  // the first line of `--version`
};

// $VFIOD_QEMU11 when it is set, executable, answers --version within 10 s and reports major
// version 11 or later (vfio-user-pci exists from 10.1; the project tests the pinned 11.1).
// Otherwise NOT_FOUND (unset) or FAILED_PRECONDITION, with a message that says what is absent
// and how to provide it; tests skip with that message.
absl::StatusOr<Qemu11> FindQemu11();

// Runs `argv` (no shell, stdin /dev/null) and returns its stdout and stderr together, after it
// exited with status 0 (or any status with `any_status`); FAILED_PRECONDITION otherwise, with
// the output; DEADLINE_EXCEEDED (the process killed) after `timeout`.
absl::StatusOr<std::string> RunForOutput(const std::vector<std::string>& argv,
                                         absl::Duration timeout, bool any_status = false);

// A PCI function on bus 0..255.
struct PciBdf {
  uint8_t bus = 0;
  uint8_t device = 0;
  uint8_t function = 0;
};

// The 0xcf8 value that selects `offset` (dword aligned down) of `bdf`'s config space, with the
// enable bit set.
uint32_t ConfigAddress(PciBdf bdf, uint32_t offset);

struct QtestVmmOptions {
  // Required: the QEMU binary or runner (Qemu11::path).
  std::string qemu_path;
  // When set: `-device {"driver":"vfio-user-pci","socket":{"type":"unix","path":...},
  // "addr":pci_slot}`. The server must already listen (QEMU gives up at once otherwise).
  std::string vfio_user_socket;
  // The device's slot and function on bus 0, QEMU's "addr" syntax.
  std::string pci_slot = "04.0";
  // x-msg-timeout of vfio-user-pci in ms (0: QEMU's default, 5000).
  uint32_t vfio_user_msg_timeout_ms = 0;
  // Guest RAM: a shared memfd (`memory-backend-memfd,share=on`), so that QEMU passes it to the
  // vfio-user server as fds in DMA_MAP. Without `shared_ram`, ordinary anonymous RAM (the server
  // then gets DMA_MAP messages without fds).
  uint64_t memory_mb = 256;
  bool shared_ram = true;
  // More QEMU arguments, appended.
  std::vector<std::string> extra_args;
  // Whole start-up: QEMU connecting to the qtest socket and answering the first command (which
  // QEMU only processes after the machine, with the vfio-user device, is realized).
  absl::Duration start_timeout = absl::Seconds(20);
  // Each command's reply.
  absl::Duration command_timeout = absl::Seconds(10);
};

// One async interrupt line event.
struct IrqEvent {
  int line = 0;
  bool raised = false;
  absl::Time when;
};

class QtestVmm {
 public:
  // Listens on a fresh qtest socket (under /tmp: a short path), starts QEMU, accepts its
  // connection and sends a first command. On any failure QEMU is killed and reaped, and the
  // status says what happened with QEMU's stderr (e.g. "QEMU exited during start-up (exit 1):
  // ... Failed to connect to '/x.sock': No such file or directory"). UNAVAILABLE when QEMU
  // exited or closed the socket, DEADLINE_EXCEEDED on the start timeout.
  static absl::StatusOr<std::unique_ptr<QtestVmm>> Start(QtestVmmOptions options);

  // Kills QEMU (SIGKILL) if it still runs, reaps it and removes its folder.
  ~QtestVmm();
  QtestVmm(const QtestVmm&) = delete;
  QtestVmm& operator=(const QtestVmm&) = delete;

  pid_t pid() const { return pid_; }
  // From spawning QEMU to its first reply: the vfio-user attach included.
  absl::Duration start_duration() const { return start_duration_; }
  // The full QEMU command line, for messages.
  const std::vector<std::string>& argv() const { return argv_; }
  // What QEMU wrote to stderr so far.
  std::string Stderr() const;

  // Sends `signal` and waits up to `timeout` for QEMU to exit; returns the wait status. After
  // a timeout, SIGKILL. FAILED_PRECONDITION when QEMU had already been reaped.
  absl::StatusOr<int> Kill(int signal, absl::Duration timeout = absl::Seconds(10));
  // Whether QEMU still runs (reaps it when it has exited).
  bool Running();

  // --- The protocol ---------------------------------------------------------------------------

  // Sends one command line (no newline) and returns its reply after "OK" (without the
  // leading space; empty for a bare "OK"). FAIL/ERR replies give INTERNAL with the reply;
  // UNAVAILABLE when QEMU closed the socket; DEADLINE_EXCEEDED after command_timeout.
  absl::StatusOr<std::string> Command(absl::string_view line);

  // I/O ports.
  absl::Status Outb(uint16_t port, uint8_t value);
  absl::Status Outw(uint16_t port, uint16_t value);
  absl::Status Outl(uint16_t port, uint32_t value);
  absl::StatusOr<uint8_t> Inb(uint16_t port);
  absl::StatusOr<uint16_t> Inw(uint16_t port);
  absl::StatusOr<uint32_t> Inl(uint16_t port);

  // Guest-physical accesses of one width (RAM or MMIO; QEMU dispatches them as the CPU would).
  absl::StatusOr<uint8_t> Readb(uint64_t addr);
  absl::StatusOr<uint16_t> Readw(uint64_t addr);
  absl::StatusOr<uint32_t> Readl(uint64_t addr);
  absl::StatusOr<uint64_t> Readq(uint64_t addr);
  absl::Status Writeb(uint64_t addr, uint8_t value);
  absl::Status Writew(uint64_t addr, uint16_t value);
  absl::Status Writel(uint64_t addr, uint32_t value);
  absl::Status Writeq(uint64_t addr, uint64_t value);

  // Bytes of guest-physical memory (qtest `read ADDR SIZE`, `write ADDR SIZE 0xHEX`).
  absl::StatusOr<std::string> MemRead(uint64_t addr, uint64_t size);
  absl::Status MemWrite(uint64_t addr, absl::string_view bytes);

  // PCI config space through the 0xcf8/0xcfc mechanism. `size` 1, 2 or 4, naturally aligned.
  absl::StatusOr<uint32_t> ConfigRead(PciBdf bdf, uint32_t offset, uint32_t size);
  absl::Status ConfigWrite(PciBdf bdf, uint32_t offset, uint32_t size, uint32_t value);

  // --- Interrupts -----------------------------------------------------------------------------

  // Intercepts the GPIO inputs of the device at `qom_path` (q35: "ioapic"; partial QOM paths
  // resolve when unique). From then on its input lines no longer reach it, and QEMU reports
  // their changes, which IrqLevel()/WaitIrq()/irq_events() show.
  absl::Status InterceptIrqIn(absl::string_view qom_path);
  // The last reported level of intercepted line `line` (false when never reported), after
  // reading whatever QEMU has already sent.
  bool IrqLevel(int line);
  // Waits until line `line` is at `level` (immediately if it already is).
  absl::Status WaitIrq(int line, bool level, absl::Duration timeout);
  // Waits until any line in [first, last] is at `level`; returns the lowest such line.
  absl::StatusOr<int> WaitAnyIrq(int first, int last, bool level, absl::Duration timeout);
  // Every line event so far, in order.
  const std::vector<IrqEvent>& irq_events() const { return irq_events_; }

 private:
  QtestVmm() = default;
  // Reads one reply line, recording async IRQ lines, until `deadline`.
  absl::StatusOr<std::string> ReadReply(absl::Time deadline);
  // Fills buffer_ with what can be read until `deadline` (at least one byte unless it passes).
  absl::Status Fill(absl::Time deadline);
  // Takes whole lines out of buffer_: IRQ lines are recorded; the first other line is moved to
  // *reply (if not null) and true is returned.
  bool TakeLines(std::string* reply);
  absl::Status Unavailable(absl::string_view what);
  absl::StatusOr<uint64_t> ReadValue(absl::string_view command);

  QtestVmmOptions options_;
  std::vector<std::string> argv_;
  std::string dir_;
  int fd_ = -1;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  std::string buffer_;
  std::map<int, bool> irq_levels_;
  std::vector<IrqEvent> irq_events_;
  absl::Duration start_duration_;
};

}  // namespace vfiod::vmm

#endif  // VFIOD_TESTS_VMM_QTEST_VMM_H_
