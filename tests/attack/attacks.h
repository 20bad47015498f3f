// Attacks on a running vfiod, for the attack matrix (attack_matrix.cc) and the owner-capacity
// test (tests/owner_capacity_test.cc). Each attack is a function that mounts itself against a
// daemon's sockets, says when it is in place, keeps going until told to stop, and reports what
// it did. None of them is the owner: every one is something an observer (any allowed uid) can
// do, and the daemon must keep serving its owner through all of them.
//
// Thread-safety: an attack function runs on the thread that calls it (RunningAttack gives it one)
// and shares nothing with other attacks; AttackSignals is thread-safe. Blocking: an attack
// function blocks until `stop` is notified, and returns within about a second of it.
#ifndef VFIOD_TESTS_ATTACK_ATTACKS_H_
#define VFIOD_TESTS_ATTACK_ATTACKS_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace vfiod::attack {

// The daemon under attack: its gRPC socket (the fd channel is `socket_path + ".fds"`) and its
// vfio-user socket (empty when it has none).
struct AttackTarget {
  std::string socket_path;
  std::string vfio_user_path;
};

// How an attack and whoever runs it talk: the attack notifies `ready` once it is in place (or
// once it has given up mounting itself, with an error in its report); the runner notifies
// `stop`.
struct AttackSignals {
  absl::Notification ready;
  absl::Notification stop;
};

// What an attack did. `status` is OK when it was mounted as described; an error says what it
// could not do (the daemon's refusals it expects are counted in `summary`, not errors).
struct AttackReport {
  absl::Status status;
  std::string summary;
};

using AttackFunction = std::function<AttackReport(const AttackTarget&, AttackSignals&)>;

// Runs an attack on a thread of its own. The destructor stops it (if Stop() was not called).
class RunningAttack {
 public:
  RunningAttack(AttackFunction attack, AttackTarget target);
  ~RunningAttack();
  RunningAttack(const RunningAttack&) = delete;
  RunningAttack& operator=(const RunningAttack&) = delete;

  // Waits up to `timeout` for the attack to be in place. DEADLINE_EXCEEDED if it is not.
  absl::Status WaitReady(absl::Duration timeout);
  // Tells the attack to stop, waits for it and returns its report (once; later calls return
  // the same report).
  const AttackReport& Stop();

 private:
  AttackTarget target_;
  AttackSignals signals_;
  AttackReport report_;
  bool stopped_ = false;
  std::thread thread_;
};

// --- The attacks ----------------------------------------------------------------------------

// Item 1: `connections` raw HTTP/2 connections, each advertising a stream window of 0 and never
// granting more or reading, each starting `calls_per_connection` calls of `method` (a full path,
// e.g. "/vfiod.v1.VfioDevice/GetDeviceInfo", with an empty request). The daemon can answer none of
// them: a server that gives each call a thread until its response is written gives them all
// away. In place once the daemon has dealt with every call (response headers or a reset).
struct WindowZeroOptions {
  int connections = 1;
  int calls_per_connection = 16;
  std::string method = "/vfiod.v1.VfioDevice/GetDeviceInfo";
};
AttackReport WindowZeroCalls(const AttackTarget& target, const WindowZeroOptions& options,
                             AttackSignals& signals);

// Item 1: `in_flight` concurrent unary calls of `method` (empty request) through one gRPC
// channel, each replaced by a new one as it completes, until stopped. Asynchronous calls on a
// completion queue (not gRPC's callback API, which would slow every other call of this
// process). In place once all are started.
struct ObserverCallsOptions {
  int in_flight = 2000;
  std::string method = "/vfiod.v1.VfioDevice/GetState";
};
AttackReport ManyObserverCalls(const AttackTarget& target, const ObserverCallsOptions& options,
                               AttackSignals& signals);

// Item 1: `streams` WatchIrqs streams (all indexes) on one raw HTTP/2 connection with a stream
// window of 0: a reader that never reads. In place once the daemon answered every stream.
AttackReport UnreadIrqWatches(const AttackTarget& target, int streams, AttackSignals& signals);

// Items 2 and 3: `workers` loops that each open a gRPC connection, make one GetDeviceInfo call,
// and close it again, as fast as they can. In place once every loop completed a connection.
AttackReport ConnectionChurn(const AttackTarget& target, int workers, AttackSignals& signals);

// Item 2: `count` connections held open and silent, reopened whenever the daemon closes one:
enum class HeldKind {
  kSilentGrpc,        // gRPC socket, nothing sent (not even the HTTP/2 preface)
  kPrefaceOnly,       // gRPC socket, the 24-byte HTTP/2 client preface and then nothing
  kUnboundFdChannel,  // fd channel, never bound to a session (its hello is never read)
};
AttackReport HeldConnections(const AttackTarget& target, HeldKind kind, int count,
                             AttackSignals& signals);

// Item 3: `workers` loops flooding the daemon's log: vfio-user VERSION requests whose JSON holds
// invalid UTF-8, fd channel messages of invalid UTF-8 garbage, and gRPC connections opened and
// closed (each one an accept and a close line). Needs target.vfio_user_path. In place once
// every loop completed a round.
AttackReport LogFlood(const AttackTarget& target, int workers, AttackSignals& signals);

// Item 11: `in_flight` concurrent calls whose bodies are not valid protobuf encodings of their
// requests, over several methods, replaced as they complete. Answers other than
// INVALID_ARGUMENT (e.g. a refusal under load) are counted in the summary. In place once all
// are started.
AttackReport MalformedBodies(const AttackTarget& target, int in_flight, AttackSignals& signals);

}  // namespace vfiod::attack

#endif  // VFIOD_TESTS_ATTACK_ATTACKS_H_
