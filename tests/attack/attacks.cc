#include "tests/attack/attacks.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/unique_fd.h"
#include "daemon/transport/unix_socket.h"
#include "daemon/vfio_user/protocol.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/attack/http2_raw.h"
#include "tests/vfio_user/vfio_user_client.h"

namespace vfiod::attack {
namespace {

constexpr absl::Duration kMountTimeout = absl::Seconds(5);
constexpr absl::Duration kPollInterval = absl::Milliseconds(20);

// --- Asynchronous unary calls kept in flight ----------------------------------------------------

struct CallSpec {
  std::string method;
  std::string body;
};

struct PendingCall {
  CallSpec spec;
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
};

struct CallCounts {
  uint64_t started = 0;
  uint64_t ok = 0;
  std::map<std::string, uint64_t> errors;  // by "CODE: message" of the first of its kind
  std::string Summary() const {
    std::vector<std::string> parts;
    for (const auto& [error, count] : errors) parts.push_back(absl::StrCat(count, "x ", error));
    return absl::StrCat(started, " started, ", ok, " ok",
                        parts.empty() ? "" : absl::StrCat("; ", absl::StrJoin(parts, "; ")));
  }
};

// Keeps `in_flight` unary calls outstanding on one channel to `socket_path`, each replaced by
// the next as it completes, until signals.stop; `next` says what the n-th call is, `finished`
// sees each completion. Notifies signals.ready once the first `in_flight` calls are started.
CallCounts KeepCallsInFlight(
    const std::string& socket_path, int in_flight, const std::function<CallSpec(uint64_t)>& next,
    const std::function<void(const CallSpec&, const grpc::Status&)>& finished,
    AttackSignals& signals) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  std::set<PendingCall*> live;
  CallCounts counts;
  auto start = [&] {
    auto* call = new PendingCall;
    call->spec = next(counts.started++);
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    grpc::Slice slice(call->spec.body);
    grpc::ByteBuffer request(&slice, 1);
    call->reader = stub.PrepareUnaryCall(&call->context, call->spec.method, request, &queue);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call);
    live.insert(call);
  };
  auto finish = [&](void* tag) {
    auto* call = static_cast<PendingCall*>(tag);
    live.erase(call);
    if (call->status.ok()) {
      ++counts.ok;
    } else {
      ++counts.errors[absl::StrCat(call->status.error_code(), " ", call->status.error_message())];
    }
    finished(call->spec, call->status);
    delete call;
  };
  for (int i = 0; i < in_flight; ++i) start();
  signals.ready.Notify();
  void* tag;
  bool ok;
  while (!signals.stop.HasBeenNotified()) {
    const auto event =
        queue.AsyncNext(&tag, &ok, absl::ToChronoTime(absl::Now() + absl::Milliseconds(100)));
    if (event != grpc::CompletionQueue::GOT_EVENT) continue;
    finish(tag);
    if (!signals.stop.HasBeenNotified()) start();
  }
  for (PendingCall* call : live) call->context.TryCancel();
  while (!live.empty() && queue.Next(&tag, &ok)) finish(tag);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return counts;
}

// Waits until `done` or `signals.stop`, checking every kPollInterval, for at most `timeout`.
bool WaitFor(const std::function<bool()>& done, AttackSignals& signals, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline || signals.stop.HasBeenNotified()) return false;
    absl::SleepFor(kPollInterval);
  }
  return true;
}

// Raw HTTP/2 connections with a stream window of 0, each with `calls` calls of `method`, held
// until stopped.
AttackReport HoldRawCalls(const AttackTarget& target, int connections, int calls,
                          const std::string& method, AttackSignals& signals) {
  std::vector<RawHttp2Connection> held;
  AttackReport report;
  for (int c = 0; c < connections && report.status.ok(); ++c) {
    absl::StatusOr<RawHttp2Connection> connection =
        RawHttp2Connection::Open(target.socket_path, RawHttp2Options{});
    if (!connection.ok()) {
      report.status = connection.status();
      break;
    }
    for (int i = 0; i < calls && report.status.ok(); ++i) {
      report.status = connection->StartCall(method, "").status();
    }
    held.push_back(*std::move(connection));
  }
  auto answered = [&] {
    int total = 0;
    for (const RawHttp2Connection& connection : held) total += connection.AnsweredCalls();
    return total;
  };
  const int expected = connections * calls;
  if (report.status.ok() &&
      !WaitFor([&] { return answered() == expected; }, signals, kMountTimeout)) {
    report.status = absl::DeadlineExceededError(absl::StrCat("the daemon answered ", answered(),
                                                             " of ", expected, " calls within ",
                                                             absl::FormatDuration(kMountTimeout)));
  }
  const int answered_at_start = answered();
  signals.ready.Notify();
  signals.stop.WaitForNotification();
  int alive = 0;
  for (const RawHttp2Connection& connection : held) alive += connection.Alive() ? 1 : 0;
  report.summary =
      absl::StrCat(expected, " calls of ", method, " on ", connections, " window-0 connection(s), ",
                   answered_at_start, " answered with headers or a reset; ", alive, " of ",
                   held.size(), " connection(s) still open at the end");
  return report;
}

}  // namespace

// --- RunningAttack ------------------------------------------------------------------------------

RunningAttack::RunningAttack(AttackFunction attack, AttackTarget target)
    : target_(std::move(target)) {
  thread_ = std::thread([this, attack = std::move(attack)] {
    report_ = attack(target_, signals_);
    if (!signals_.ready.HasBeenNotified()) signals_.ready.Notify();
  });
}

RunningAttack::~RunningAttack() { Stop(); }

absl::Status RunningAttack::WaitReady(absl::Duration timeout) {
  if (signals_.ready.WaitForNotificationWithTimeout(timeout)) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("the attack was not in place within ", absl::FormatDuration(timeout)));
}

const AttackReport& RunningAttack::Stop() {
  if (!stopped_) {
    stopped_ = true;
    if (!signals_.stop.HasBeenNotified()) signals_.stop.Notify();
    thread_.join();
  }
  return report_;
}

// --- The attacks --------------------------------------------------------------------------------

AttackReport WindowZeroCalls(const AttackTarget& target, const WindowZeroOptions& options,
                             AttackSignals& signals) {
  return HoldRawCalls(target, options.connections, options.calls_per_connection, options.method,
                      signals);
}

AttackReport ManyObserverCalls(const AttackTarget& target, const ObserverCallsOptions& options,
                               AttackSignals& signals) {
  CallCounts counts = KeepCallsInFlight(
      target.socket_path, options.in_flight,
      [&](uint64_t) {
        return CallSpec{options.method, ""};
      },
      [](const CallSpec&, const grpc::Status&) {}, signals);
  return AttackReport{absl::OkStatus(),
                      absl::StrCat(options.in_flight, " concurrent ", options.method,
                                   " calls kept in flight: ", counts.Summary())};
}

AttackReport UnreadIrqWatches(const AttackTarget& target, int streams, AttackSignals& signals) {
  return HoldRawCalls(target, 1, streams, "/vfiod.v1.VfioDevice/WatchIrqs", signals);
}

AttackReport ConnectionChurn(const AttackTarget& target, int workers, AttackSignals& signals) {
  std::atomic<uint64_t> connections{0}, answered{0}, failed{0};
  std::atomic<int> workers_started{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      bool counted = false;
      while (!signals.stop.HasBeenNotified()) {
        absl::StatusOr<RawHttp2Connection> connection =
            RawHttp2Connection::Open(target.socket_path, RawHttp2Options{65535, true});
        if (connection.ok() &&
            connection->StartCall("/vfiod.v1.VfioDevice/GetDeviceInfo", "").ok()) {
          ++connections;
          const absl::Time deadline = absl::Now() + absl::Milliseconds(200);
          while (connection->AnsweredCalls() == 0 && absl::Now() < deadline) {
            absl::SleepFor(absl::Milliseconds(1));
          }
          if (connection->AnsweredCalls() > 0) ++answered;
        } else {
          ++failed;
          absl::SleepFor(absl::Milliseconds(5));
        }
        if (!counted) {
          counted = true;
          if (++workers_started == workers) signals.ready.Notify();
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return AttackReport{absl::OkStatus(), absl::StrCat(workers, " loops opened ", connections.load(),
                                                     " gRPC connections (", answered.load(),
                                                     " calls answered within 200 ms), ",
                                                     failed.load(), " connects or sends failed")};
}

AttackReport HeldConnections(const AttackTarget& target, HeldKind kind, int count,
                             AttackSignals& signals) {
  const bool fd_channel = kind == HeldKind::kUnboundFdChannel;
  const std::string path = fd_channel ? target.socket_path + ".fds" : target.socket_path;
  uint64_t opened = 0, closed_by_daemon = 0, connect_failures = 0;
  std::string first_failure;
  auto open = [&]() -> UniqueFd {
    absl::StatusOr<UniqueFd> socket =
        ConnectUnixSocket(path, fd_channel ? UnixSocketKind::kSeqPacket : UnixSocketKind::kStream);
    if (socket.ok() && kind == HeldKind::kPrefaceOnly &&
        ::send(socket->get(), kHttp2ClientPreface.data(), kHttp2ClientPreface.size(),
               MSG_NOSIGNAL) != static_cast<ssize_t>(kHttp2ClientPreface.size())) {
      socket = absl::UnavailableError("send of the preface failed");
    }
    if (!socket.ok()) {
      if (connect_failures++ == 0) first_failure = std::string(socket.status().message());
      return UniqueFd();
    }
    ++opened;
    return *std::move(socket);
  };
  std::vector<UniqueFd> held(count);
  const absl::Time mount_deadline = absl::Now() + kMountTimeout;
  while (!signals.stop.HasBeenNotified()) {
    int open_now = 0;
    for (UniqueFd& socket : held) {
      if (!socket.valid()) socket = open();
      open_now += socket.valid() ? 1 : 0;
    }
    if (!signals.ready.HasBeenNotified() && (open_now == count || absl::Now() > mount_deadline)) {
      signals.ready.Notify();
    }
    std::vector<pollfd> polls;
    for (const UniqueFd& socket : held) {
      polls.push_back({socket.valid() ? socket.get() : -1, POLLRDHUP, 0});
    }
    if (::poll(polls.data(), polls.size(), 50) <= 0) continue;
    for (size_t i = 0; i < polls.size(); ++i) {
      if (polls[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
        ++closed_by_daemon;
        held[i].Reset();
      }
    }
  }
  static constexpr const char* kNames[] = {"silent gRPC connections (no HTTP/2 preface)",
                                           "gRPC connections that sent only the HTTP/2 preface",
                                           "unbound fd channels"};
  AttackReport report;
  report.summary =
      absl::StrCat(count, " ", kNames[static_cast<int>(kind)], " held: ", opened, " opened, ",
                   closed_by_daemon, " closed by the daemon, ", connect_failures,
                   " connects failed", first_failure.empty() ? "" : " (" + first_failure + ")");
  return report;
}

AttackReport LogFlood(const AttackTarget& target, int workers, AttackSignals& signals) {
  if (target.vfio_user_path.empty()) {
    signals.ready.Notify();
    return AttackReport{
        absl::FailedPreconditionError("log flood: the daemon has no vfio-user socket"), ""};
  }
  std::atomic<uint64_t> versions{0}, versions_accepted{0}, fd_messages{0}, grpc_connections{0};
  std::atomic<int> workers_started{0};
  // VERSION 0.0 whose JSON puts invalid UTF-8 where a number belongs: refused, never an owner.
  std::vector<uint8_t> version = {0, 0, 0, 0};
  const std::string json = "{\"capabilities\": {\"max_msg_fds\": \"\xff\xfe\xc3\x28\"}}";
  version.insert(version.end(), json.begin(), json.end());
  version.push_back(0);
  const std::string garbage = "\xff\xfe\xc3\x28 not utf-8 \x80\x81";
  auto round = [&] {
    // Connected without blocking (a daemon that stopped accepting must not hold the flood),
    // then blocking with timeouts, as the test client reads its replies.
    if (absl::StatusOr<UniqueFd> socket =
            ConnectUnixSocket(target.vfio_user_path, UnixSocketKind::kStream);
        socket.ok() && SetBlocking(*socket).ok()) {
      const timeval timeout = {1, 0};
      ::setsockopt(socket->get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      ::setsockopt(socket->get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
      testing::VfioUserClient client(*std::move(socket));
      absl::StatusOr<testing::VfioUserClient::Reply> reply =
          client.Call(vfio_user::Command::kVersion, version);
      ++versions;
      if (reply.ok() && !reply->error()) ++versions_accepted;
    }
    if (absl::StatusOr<UniqueFd> channel =
            ConnectUnixSocket(target.socket_path + ".fds", UnixSocketKind::kSeqPacket);
        channel.ok()) {
      if (::send(channel->get(), garbage.data(), garbage.size(), MSG_NOSIGNAL) > 0) ++fd_messages;
    }
    if (absl::StatusOr<RawHttp2Connection> connection =
            RawHttp2Connection::Open(target.socket_path, RawHttp2Options{65535, true});
        connection.ok()) {
      ++grpc_connections;
    }
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      round();
      if (++workers_started == workers) signals.ready.Notify();
      while (!signals.stop.HasBeenNotified()) round();
    });
  }
  for (std::thread& thread : threads) thread.join();
  AttackReport report;
  if (versions_accepted > 0) {
    report.status = absl::InternalError(absl::StrCat(
        versions_accepted.load(), " VERSION requests with invalid JSON were accepted"));
  }
  report.summary = absl::StrCat(workers, " loops sent ", versions.load(),
                                " vfio-user VERSIONs with invalid UTF-8, ", fd_messages.load(),
                                " garbage fd-channel messages, opened and closed ",
                                grpc_connections.load(), " gRPC connections");
  return report;
}

AttackReport MalformedBodies(const AttackTarget& target, int in_flight, AttackSignals& signals) {
  static const std::pair<const char*, const char*> kCalls[] = {
      {"/vfiod.v1.VfioDevice/ReadConfig", "\xff\xff\xff\xff"},
      {"/vfiod.v1.VfioDevice/MapDma", "\x08\x80\x80"},
      {"/vfiod.v1.VfioDevice/SetIrqs", "\x0c"},
      {"/vfiod.v1.VfioDevice/ClaimOwnership",
       "\x1a\x05"
       "ab"},
      {"/vfiod.v1.VfioDevice/ReadRegion", "\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"},
  };
  uint64_t wrong = 0;
  std::string first_wrong;
  CallCounts counts = KeepCallsInFlight(
      target.socket_path, in_flight,
      [&](uint64_t n) {
        const auto& [method, body] = kCalls[n % std::size(kCalls)];
        return CallSpec{method, body};
      },
      [&](const CallSpec& spec, const grpc::Status& status) {
        if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
            status.error_code() == grpc::StatusCode::CANCELLED) {
          return;
        }
        if (wrong++ == 0) {
          first_wrong =
              absl::StrCat(spec.method, ": ", status.error_code(), " ", status.error_message());
        }
      },
      signals);
  // Answers other than INVALID_ARGUMENT are the daemon's behaviour under load, reported here;
  // the malformed-body rule itself is hostile_input_test's.
  return AttackReport{
      absl::OkStatus(),
      absl::StrCat(in_flight, " concurrent malformed bodies kept in flight: ", counts.Summary(),
                   wrong == 0
                       ? ""
                       : absl::StrCat("; ", wrong, " not INVALID_ARGUMENT, first: ", first_wrong))};
}

}  // namespace vfiod::attack
