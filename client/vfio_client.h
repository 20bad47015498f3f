// VfioClient: the C++ client library of vfiod, for VMMs and tools.
//
// A VfioClient is one session with one daemon: a gRPC connection (whose identity on the daemon
// is the session, so ownership belongs to this object) plus, optionally, the fd channel bound to
// that session. Two ways to get one:
//  - Connect(): to a daemon in listen mode at `socket_path`, with its fd channel at
//    `socket_path + ".fds"`. The session starts as an observer; ClaimOwnership() to become owner.
//  - Spawn(): starts the daemon binary with inherited socketpairs. The session is the owner from
//    the start, and the destructor terminates the daemon.
//
// Every RPC method blocks until the daemon answers or the per-call deadline
// (options.default_timeout) passes. Errors are absl::Status values carrying the gRPC code
// unchanged (DEADLINE_EXCEEDED for a timeout, UNAVAILABLE when the daemon is gone) and the
// daemon's message.
//
// Thread-safety: all methods may be called concurrently from any thread (gRPC stubs are
// thread-safe; the fd channel serializes its exchanges with a mutex). Terminate() and the
// destructor must not race with other calls.
//
// Latency: a call is made and completed in the calling thread (about 4-5x a raw UNIX-socket
// round trip; docs/PERFORMANCE.md). If anything else in the process uses gRPC's callback API
// (grpc::ClientUnaryReactor, GenericStub::UnaryCall with a callback, a CallbackService), gRPC
// 1.51 starts threads that poll its shared epoll set for the rest of the process's life, and
// every call here then pays a thread hand-off: measured about +18 us per call.
//
// Fds: methods taking fds never take ownership; the kernel duplicates them into the daemon.
// A session lives as long as its connection. If the connection breaks, ownership and the fd
// channel binding are gone: a spawned client's calls fail with UNAVAILABLE; a connected
// client's gRPC channel may reconnect, but as a new observer session without an fd channel.
// Make a new client instead of relying on that.
#ifndef VFIOD_CLIENT_VFIO_CLIENT_H_
#define VFIOD_CLIENT_VFIO_CLIENT_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/fd_channel_client.h"
#include "client/unique_fd.h"
#include "proto/vfiod/v1/vfiod.grpc.pb.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace vfiod {

struct ConnectOptions {
  // Deadline of each unary RPC, of connecting, and of each fd-channel exchange.
  absl::Duration default_timeout = absl::Seconds(5);
  // Open `<socket>.fds` and bind it to the session. Without it, fd methods fail with
  // FAILED_PRECONDITION.
  bool fd_channel = true;
};

struct SpawnOptions {
  // Path of the vfiod binary (executed as is, no PATH search).
  std::string binary_path;
  // Extra arguments, e.g. {"--device=sim:edu"}. The client adds --connection-fd=N and, with
  // `fd_channel`, --fd-channel-fd=M.
  std::vector<std::string> args;
  bool fd_channel = true;
  absl::Duration default_timeout = absl::Seconds(5);
  // How long the destructor's Terminate() waits after SIGTERM before SIGKILL.
  absl::Duration terminate_timeout = absl::Seconds(5);
};

// A live WatchIrqs stream. A background thread reads events into a queue; Next() takes them.
// Thread-safe: Next() and Cancel() may be called from any thread. The destructor cancels the
// stream and joins the reader thread.
class IrqWatch {
 public:
  ~IrqWatch();
  IrqWatch(const IrqWatch&) = delete;
  IrqWatch& operator=(const IrqWatch&) = delete;

  // The next event, waiting up to `timeout` (absl::InfiniteDuration() to wait forever).
  // std::nullopt: no event within `timeout`. Once the stream has ended and every queued event
  // was taken, returns its final status: CANCELLED after Cancel(), the daemon's error, or
  // OUT_OF_RANGE if the daemon ended the stream normally.
  absl::StatusOr<std::optional<v1::IrqEvent>> Next(absl::Duration timeout);

  // Waits up to `timeout` until the daemon has answered the call's start (its response
  // headers, which vfiod sends once the subscription exists, so interrupts from then on are
  // streamed) or the stream has ended. DEADLINE_EXCEEDED when neither happened in time; the
  // stream's final status when it has already ended with no event queued.
  absl::Status WaitStarted(absl::Duration timeout);

  // Ends the stream (idempotent). Events already queued can still be taken.
  void Cancel();

  // Whether the stream has ended (events may still be queued).
  bool done() const;

 private:
  friend class VfioClient;
  IrqWatch() = default;
  bool Ready() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return done_ || !events_.empty(); }
  bool StartedOrDone() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return started_ || done_; }
  void ReadLoop(std::unique_ptr<grpc::ClientReader<v1::IrqEvent>> reader);

  // The call refers to the channel by raw pointer: keep it alive as long as the call.
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::ClientContext> context_;
  mutable absl::Mutex mu_;
  std::deque<v1::IrqEvent> events_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  std::thread reader_;
};

class VfioClient {
 public:
  // Connects to a daemon in listen mode. With options.fd_channel, also connects the fd channel,
  // reads its hello and binds it to the session.
  static absl::StatusOr<std::unique_ptr<VfioClient>> Connect(const std::string& socket_path,
                                                             ConnectOptions options = {});

  // Starts options.binary_path with a connected stream socketpair (gRPC) and, with
  // options.fd_channel, a seqpacket socketpair (fd channel); the child inherits only those two
  // and stdin/stdout/stderr. Returns once the daemon's fd-channel hello arrived (or, without fd
  // channel, once gRPC is connected). On failure the child is killed and reaped.
  static absl::StatusOr<std::unique_ptr<VfioClient>> Spawn(SpawnOptions options);

  // Terminates a spawned daemon (see Terminate()).
  ~VfioClient();
  VfioClient(const VfioClient&) = delete;
  VfioClient& operator=(const VfioClient&) = delete;

  // --- Spawn mode -----------------------------------------------------------------------------

  // The spawned daemon's pid; -1 when connected, or after Terminate().
  pid_t pid() const { return pid_; }
  // Sends SIGTERM, waits up to `timeout` for the daemon to exit, then SIGKILLs it; reaps it in
  // every case. Returns the wait status (as from waitpid). FAILED_PRECONDITION when there is no
  // spawned daemon. Later RPCs fail with UNAVAILABLE.
  absl::StatusOr<int> Terminate(absl::Duration timeout = absl::Seconds(5));

  // --- Device description and config space ----------------------------------------------------

  absl::StatusOr<v1::DeviceInfo> GetDeviceInfo();
  // `size`: 1, 2 or 4, naturally aligned. The little-endian value.
  absl::StatusOr<uint32_t> ReadConfig(uint32_t offset, uint32_t size);
  absl::Status WriteConfig(uint32_t offset, uint32_t size, uint32_t value);  // owner
  // Config bytes from `offset` (dword aligned); `length` 0 means to the end.
  absl::StatusOr<std::string> DumpConfig(uint32_t offset = 0, uint32_t length = 0);

  // --- Regions --------------------------------------------------------------------------------

  // The bytes read; `size` is 1..Limits.max_region_access_bytes.
  absl::StatusOr<std::string> ReadRegion(uint32_t index, uint64_t offset, uint32_t size);
  absl::Status WriteRegion(uint32_t index, uint64_t offset, absl::string_view data);  // owner
  // Little-endian register helpers.
  absl::StatusOr<uint32_t> ReadRegion32(uint32_t index, uint64_t offset);
  absl::Status WriteRegion32(uint32_t index, uint64_t offset, uint32_t value);  // owner
  absl::StatusOr<uint64_t> ReadRegion64(uint32_t index, uint64_t offset);
  absl::Status WriteRegion64(uint32_t index, uint64_t offset, uint64_t value);  // owner

  // --- Fd passing, memory and DMA (owner) -----------------------------------------------------

  // Sends `fds` on the fd channel and returns their tokens (lowercase hex), in order. The
  // caller keeps its fds. FAILED_PRECONDITION without an fd channel. All or none: when a send of
  // several batches fails part way, the tokens the daemon gave for the earlier batches are
  // released (ReleaseFdTokens) before the error returns, so the daemon holds none of this
  // send's fds; the fds of a batch that timed out are released when its late reply is read
  // (at the next SendFds, or ReleaseStrayFdTokens). A send refused with RESOURCE_EXHAUSTED is
  // tried once more when releasing such late tokens freed room.
  //
  // Why not close and reopen the fd channel after a timeout (closing drops the channel's
  // tokens daemon-side): closing a channel bound to the owner is an owner loss (every DMA
  // mapping, IRQ and memory registration is torn down), and a spawned daemon's channel cannot
  // be reopened at all.
  absl::StatusOr<std::vector<std::string>> SendFds(absl::Span<const int> fds);
  // Releases the fd channel's stray tokens (FdChannelClient::TakeStrayTokens) with the
  // ReleaseFdTokens RPC; tokens the daemon no longer holds (consumed, or dropped at an owner
  // loss) are skipped. Returns how many fds the daemon closed. On an RPC failure other than
  // NOT_FOUND the remaining tokens are kept for the next call.
  absl::StatusOr<uint32_t> ReleaseStrayFdTokens();

  // A zero-filled memfd of `size` bytes (MFD_CLOEXEC | MFD_ALLOW_SEALING) with the seals
  // F_SEAL_SHRINK (RegisterMemory requires it), F_SEAL_GROW and F_SEAL_SEAL.
  static absl::StatusOr<client::UniqueFd> CreateSealedMemfd(const std::string& name,
                                                            uint64_t size);

  // Sends `memfd` and registers `size` bytes of it (0: its whole size).
  absl::StatusOr<v1::RegisterMemoryResponse> RegisterMemory(int memfd, uint64_t size);
  // Registers memory already sent with SendFds. `fd_token` goes as it is (a bytes field).
  absl::StatusOr<v1::RegisterMemoryResponse> RegisterMemoryToken(const std::string& fd_token,
                                                                 uint64_t size);
  absl::Status UnregisterMemory(uint64_t memory_id);

  absl::Status MapDma(uint64_t iova, uint64_t size, uint64_t memory_id, uint64_t offset,
                      bool device_read = true, bool device_write = true);
  absl::StatusOr<v1::UnmapDmaResponse> UnmapDma(uint64_t iova, uint64_t size);

  // --- Interrupts (owner, except WatchIrqs) ---------------------------------------------------

  absl::Status SetIrqs(const v1::SetIrqsRequest& request);
  // TRIGGER with client eventfds for vectors [start, start + eventfds.size()); an entry of -1
  // tears that vector down.
  absl::Status SetIrqEventfds(v1::IrqIndex index, uint32_t start, absl::Span<const int> eventfds);
  // TRIGGER with daemon-owned eventfds, whose interrupts WatchIrqs streams.
  absl::Status EnableIrqWatch(v1::IrqIndex index, uint32_t start, uint32_t count);
  // `action` (MASK, UNMASK or TRIGGER) with DATA_NONE on [start, start + count).
  absl::Status SetIrqAction(v1::IrqIndex index, uint32_t start, uint32_t count,
                            v1::IrqAction action);
  // The INTx resample eventfd (UNMASK with an eventfd on vector 0).
  absl::Status SetIntxResampleFd(int eventfd);
  // TRIGGER with count 0: disables every vector of `index`.
  absl::Status DisableIrqs(v1::IrqIndex index);

  // Streams interrupts of `indexes` (empty: all). Any role. Returns once the daemon has
  // registered the subscription (every interrupt from then on is streamed), or the stream's
  // error (e.g. RESOURCE_EXHAUSTED beyond the daemon's watcher limit).
  absl::StatusOr<std::unique_ptr<IrqWatch>> WatchIrqs(absl::Span<const v1::IrqIndex> indexes = {});

  // --- Reset, state, roles --------------------------------------------------------------------

  absl::Status Reset();  // owner
  absl::StatusOr<v1::DeviceState> GetState();
  absl::Status ClaimOwnership();
  absl::Status ReleaseOwnership();

  // The raw stub, for calls this class does not wrap. Thread-safe.
  v1::VfioDevice::Stub* stub() { return stub_.get(); }
  bool has_fd_channel() const { return fd_channel_ != nullptr; }
  absl::Duration default_timeout() const { return timeout_; }

 private:
  VfioClient(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout);

  // A context with the per-call deadline.
  std::unique_ptr<grpc::ClientContext> NewContext() const;
  absl::Status BindFdChannel();
  // ReleaseFdTokens for `tokens` (at most v1::kFdChannelMaxFdsPerMessage).
  absl::StatusOr<uint32_t> ReleaseTokens(const std::vector<std::string>& tokens);
  // After a request that should have consumed `tokens` failed: releases whichever the daemon
  // still holds (a request refused before it took its tokens leaves them).
  void ReleaseUnconsumed(std::vector<std::string> tokens);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::VfioDevice::Stub> stub_;
  std::unique_ptr<client::FdChannelClient> fd_channel_;
  const absl::Duration timeout_;
  pid_t pid_ = -1;
  absl::Duration terminate_timeout_ = absl::Seconds(5);
};

}  // namespace vfiod

#endif  // VFIOD_CLIENT_VFIO_CLIENT_H_
