// Context: what one vfioctl process holds while it runs commands: the global options, the
// output, the connection to the daemon (one session on it), ownership, the guest memory it
// created and its IRQ watch stream. A single command runs in a fresh Context; `session` runs
// every line in the same one, so ownership, memory and the watch stream carry over from line
// to line. Commands get the Context as their only argument (command.h's Handler).
//
// Not thread-safe: one thread runs commands.
#ifndef VFIOD_CLIENT_CLI_CONTEXT_H_
#define VFIOD_CLIENT_CLI_CONTEXT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli/output.h"
#include "client/guest_memory.h"
#include "client/vfio_client.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {

class Context;

// vfioctl's options before the command (vfioctl --help).
struct GlobalOptions {
  std::string socket;                         // --socket, else $VFIOD_SOCKET
  bool json = false;                          // --json
  absl::Duration timeout = absl::Seconds(5);  // --timeout: each call's deadline, and connecting
  bool claim = false;                         // --claim: claim ownership as soon as connected
};

// Runs command lines; implemented by the dispatcher (dispatch.h). Commands that run other
// commands (session, expect-error) go through it, so they parse and run exactly like the
// command line does.
class LineRunner {
 public:
  virtual ~LineRunner() = default;
  // Parses and runs `words` (command first) in `ctx`. Returns the command's status: usage errors
  // as UsageError() with the command's name in the message, the daemon's errors unchanged.
  virtual absl::Status Run(Context& ctx, const std::vector<std::string>& words) = 0;
  // The same, reporting a failure on stderr as "vfioctl: <where><command>: ..." (where:
  // "line 3: " in a session). Returns the exit code (command.h).
  virtual int RunAndReport(Context& ctx, const std::vector<std::string>& words,
                           absl::string_view where) = 0;
};

class Context {
 public:
  // `runner` and `out` must outlive this.
  Context(GlobalOptions options, LineRunner& runner, std::ostream& out);
  // Finish()es.
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const GlobalOptions& options() const { return options_; }
  Output& out() { return out_; }
  LineRunner& runner() { return runner_; }

  // --- The connection -------------------------------------------------------------------------

  // Connects to options().socket unless connected already, with the fd channel when
  // `fd_channel` or in a session, and with --claim claims ownership. Errors: a UsageError when
  // there is no socket; the connection's error; the claim's error with "claim: " before its
  // message. After an error connect_failed() is true and a session stops.
  absl::Status Connect(bool fd_channel);
  bool connected() const { return client_ != nullptr; }
  bool connect_failed() const { return connect_failed_; }
  // The connection. Requires connected() (the dispatcher connects before running a command
  // whose role is not Role::kNone).
  VfioClient& client() { return *client_; }

  // Whether this connection claimed ownership (--claim or claim) and has not released it.
  bool owner() const { return owner_; }
  void set_owner(bool owner) { owner_ = owner; }

  // --- Sessions and nesting -------------------------------------------------------------------

  bool in_session() const { return in_session_; }
  void set_in_session(bool in_session) { in_session_ = in_session; }
  // How many commands are running: 1 for a command, 2 for one run by expect-error. The
  // dispatcher counts.
  int depth() const { return depth_; }
  void set_depth(int depth) { depth_ = depth; }

  // --- Guest memory created by `memory create` ------------------------------------------------

  // A memory ID operand: a NAME given to memory create, or a number. UsageError for a word that
  // names no memory.
  absl::StatusOr<uint64_t> MemoryId(const std::string& text) const;
  // The local mapping of memory `id`; NOT_FOUND when this vfioctl did not create it.
  absl::StatusOr<client::GuestMemory*> LocalMemory(uint64_t id);
  bool HasMemoryName(const std::string& name) const { return memory_names_.count(name) != 0; }
  // Keeps the mapping of memory `id`, under `name` when not empty.
  void AddMemory(uint64_t id, client::GuestMemory memory, const std::string& name);
  void ForgetMemory(uint64_t id);
  // The daemon forgot every registration (ownership released): forget every mapping.
  void ForgetAllMemory();

  // --- The watch stream of `irq watch-start` --------------------------------------------------

  // The open stream, or null.
  IrqWatch* watch() { return watch_.get(); }
  // Replaces the stream (null closes it) and drops pending events.
  void SetWatch(std::unique_ptr<IrqWatch> watch);
  // Events `irq wait` took from the stream while waiting for another index.
  std::deque<v1::IrqEvent>& pending_events() { return pending_events_; }

  // Ends what this connection holds: closes the watch stream and, if it owns the device,
  // releases ownership, so the daemon's cleanup (interrupts off, DMA unmapped, memory released)
  // is done before vfioctl exits rather than when the daemon notices the closed connection.
  void Finish();

 private:
  const GlobalOptions options_;
  LineRunner& runner_;
  Output out_;
  std::unique_ptr<VfioClient> client_;
  bool connect_failed_ = false;
  bool owner_ = false;
  bool in_session_ = false;
  int depth_ = 0;
  std::map<uint64_t, client::GuestMemory> memory_;
  std::map<std::string, uint64_t> memory_names_;
  std::unique_ptr<IrqWatch> watch_;
  std::deque<v1::IrqEvent> pending_events_;
};

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_CONTEXT_H_
