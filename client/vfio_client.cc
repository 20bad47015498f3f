#include "client/vfio_client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/status_convert.h"
#include "grpc/grpc.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/create_channel_posix.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace vfiod {
namespace {

using client::FromGrpcStatus;
using client::UniqueFd;

absl::Status ErrnoError(absl::string_view what, int error) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (error) {
    case ENOENT:
      code = absl::StatusCode::kNotFound;
      break;
    case EACCES:
    case EPERM:
      code = absl::StatusCode::kPermissionDenied;
      break;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
      code = absl::StatusCode::kUnavailable;
      break;
    case EINVAL:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      code = absl::StatusCode::kResourceExhausted;
      break;
    default:
      break;
  }
  return absl::Status(code, absl::StrCat(what, ": ", std::strerror(error)));
}

// Unary call with the client's deadline; the gRPC status becomes an absl::Status.
template <typename Request, typename Response>
absl::StatusOr<Response> Call(
    std::unique_ptr<grpc::ClientContext> context, v1::VfioDevice::Stub* stub,
    grpc::Status (v1::VfioDevice::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
    const Request& request) {
  Response response;
  grpc::Status status = (stub->*method)(context.get(), request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

uint64_t LittleEndian(absl::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = bytes.size(); i > 0; --i) {
    value = (value << 8) | static_cast<uint8_t>(bytes[i - 1]);
  }
  return value;
}

std::string ToLittleEndian(uint64_t value, size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// Closes every fd >= 3 except `keep` (sorted). Async-signal-safe, for the child after fork().
void CloseAllExcept(const int* keep, size_t keep_count, int max_fd) {
  unsigned int next = 3;
  for (size_t i = 0; i <= keep_count; ++i) {
    const bool last = i == keep_count;
    const unsigned int end = last ? ~0u : static_cast<unsigned int>(keep[i]);
    if (!last && end < next) continue;
    if (end > next) {
      const unsigned int hi = last ? ~0u : end - 1;
      if (::syscall(SYS_close_range, next, hi, 0) != 0) {
        const int limit = last ? max_fd : static_cast<int>(hi) + 1;
        for (int fd = static_cast<int>(next); fd < limit; ++fd) ::close(fd);
      }
    }
    if (!last) next = end + 1;
  }
}

}  // namespace

// --- IrqWatch -------------------------------------------------------------------------------

IrqWatch::~IrqWatch() {
  Cancel();
  if (reader_.joinable()) reader_.join();
}

void IrqWatch::Cancel() {
  if (context_ != nullptr) context_->TryCancel();
}

bool IrqWatch::done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

absl::StatusOr<std::optional<v1::IrqEvent>> IrqWatch::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(this, &IrqWatch::Ready), timeout);
  if (!events_.empty()) {
    v1::IrqEvent event = std::move(events_.front());
    events_.pop_front();
    return std::optional<v1::IrqEvent>(std::move(event));
  }
  if (done_) return final_status_;
  return std::optional<v1::IrqEvent>();
}

absl::Status IrqWatch::WaitStarted(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(this, &IrqWatch::StartedOrDone), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "WatchIrqs: the daemon did not start the stream within ", absl::FormatDuration(timeout)));
  }
  // A call the daemon refused ends right after its (empty) headers.
  if (done_ && events_.empty()) return final_status_;
  return absl::OkStatus();
}

void IrqWatch::ReadLoop(std::unique_ptr<grpc::ClientReader<v1::IrqEvent>> reader) {
  // Returns when the response headers arrive (or the call ends without them).
  reader->WaitForInitialMetadata();
  {
    absl::MutexLock lock(&mu_);
    started_ = true;
  }
  v1::IrqEvent event;
  while (reader->Read(&event)) {
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
  }
  grpc::Status status = reader->Finish();
  absl::MutexLock lock(&mu_);
  done_ = true;
  final_status_ = status.ok() ? absl::OutOfRangeError("WatchIrqs: the daemon ended the stream")
                              : FromGrpcStatus(status);
}

// --- VfioClient: construction ---------------------------------------------------------------

VfioClient::VfioClient(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : channel_(std::move(channel)),
      stub_(v1::VfioDevice::NewStub(channel_)),
      timeout_(timeout) {}

VfioClient::~VfioClient() {
  if (pid_ > 0) (void)Terminate(terminate_timeout_);
}

std::unique_ptr<grpc::ClientContext> VfioClient::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  return context;
}

absl::StatusOr<std::unique_ptr<VfioClient>> VfioClient::Connect(const std::string& socket_path,
                                                                ConnectOptions options) {
  const std::string fd_path = socket_path + ".fds";
  sockaddr_un address = {};
  if (socket_path.empty() || fd_path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("connect: bad socket path \"", socket_path, "\""));
  }
  struct stat info;
  if (::stat(socket_path.c_str(), &info) != 0) {
    return ErrnoError(absl::StrCat("connect ", socket_path), errno);
  }
  if (!S_ISSOCK(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("connect ", socket_path, ": not a socket"));
  }

  grpc::ChannelArguments args;
  // Ownership is per connection: never share one with another channel of this process.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      "unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + options.default_timeout))) {
    return absl::UnavailableError(absl::StrCat("connect ", socket_path, ": no gRPC connection within ",
                                               absl::FormatDuration(options.default_timeout)));
  }
  std::unique_ptr<VfioClient> client(new VfioClient(std::move(channel), options.default_timeout));
  if (!options.fd_channel) return client;

  UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return ErrnoError("fd channel: socket", errno);
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, fd_path.c_str(), fd_path.size() + 1);
  int result;
  do {
    result = ::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address));
  } while (result != 0 && errno == EINTR);
  if (result != 0) return ErrnoError(absl::StrCat("fd channel: connect ", fd_path), errno);
  absl::StatusOr<std::unique_ptr<client::FdChannelClient>> fd_channel =
      client::FdChannelClient::Open(std::move(socket), options.default_timeout);
  if (!fd_channel.ok()) return fd_channel.status();
  client->fd_channel_ = std::move(*fd_channel);
  absl::Status bound = client->BindFdChannel();
  if (!bound.ok()) return client::Annotate(bound, "BindFdChannel");
  return client;
}

absl::Status VfioClient::BindFdChannel() {
  v1::BindFdChannelRequest request;
  const client::FdChannelKey& key = fd_channel_->channel_key();
  request.set_channel_key(std::string(key.begin(), key.end()));
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::BindFdChannel, request).status();
}

absl::StatusOr<std::unique_ptr<VfioClient>> VfioClient::Spawn(SpawnOptions options) {
  if (options.binary_path.empty()) return absl::InvalidArgumentError("spawn: no binary path");

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return ErrnoError("spawn: socketpair", errno);
  }
  UniqueFd grpc_ours(pair[0]), grpc_theirs(pair[1]);
  UniqueFd fds_ours, fds_theirs;
  if (options.fd_channel) {
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      return ErrnoError("spawn: socketpair", errno);
    }
    fds_ours.Reset(pair[0]);
    fds_theirs.Reset(pair[1]);
  }
  // The child reports a failed exec through this pipe; a successful exec closes it.
  if (::pipe2(pair, O_CLOEXEC) != 0) return ErrnoError("spawn: pipe2", errno);
  UniqueFd exec_read(pair[0]), exec_write(pair[1]);

  // Everything the child needs is prepared here: after fork() it may only make
  // async-signal-safe calls.
  std::vector<std::string> args;
  args.push_back(options.binary_path);
  args.insert(args.end(), options.args.begin(), options.args.end());
  args.push_back(absl::StrCat("--connection-fd=", grpc_theirs.get()));
  if (options.fd_channel) args.push_back(absl::StrCat("--fd-channel-fd=", fds_theirs.get()));
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int keep[3];
  size_t keep_count = 0;
  keep[keep_count++] = grpc_theirs.get();
  if (options.fd_channel) keep[keep_count++] = fds_theirs.get();
  keep[keep_count++] = exec_write.get();
  std::sort(keep, keep + keep_count);
  rlimit nofile = {};
  int max_fd = 65536;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20));
  }
  const int grpc_child = grpc_theirs.get();
  const int fds_child = fds_theirs.get();
  const int exec_child = exec_write.get();
  const char* path = options.binary_path.c_str();

  const pid_t pid = ::fork();
  if (pid < 0) return ErrnoError("spawn: fork", errno);
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int error = 0;
    if (::fcntl(grpc_child, F_SETFD, 0) != 0) error = errno;
    if (error == 0 && fds_child >= 0 && ::fcntl(fds_child, F_SETFD, 0) != 0) error = errno;
    if (error == 0) {
      CloseAllExcept(keep, keep_count, max_fd);
      ::execv(path, argv.data());
      error = errno;
    }
    while (::write(exec_child, &error, sizeof(error)) < 0 && errno == EINTR) {
    }
    ::_exit(127);
  }

  grpc_theirs.Reset();
  fds_theirs.Reset();
  exec_write.Reset();
  int exec_error = 0;
  ssize_t n;
  do {
    n = ::read(exec_read.get(), &exec_error, sizeof(exec_error));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return ErrnoError(absl::StrCat("spawn: exec ", options.binary_path), exec_error);
  }

  // gRPC needs a non-blocking fd: on a blocking one its calls hang.
  const int flags = ::fcntl(grpc_ours.get(), F_GETFL);
  if (flags < 0 || ::fcntl(grpc_ours.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    const int error = errno;
    ::kill(pid, SIGKILL);
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return ErrnoError("spawn: fcntl(O_NONBLOCK)", error);
  }
  grpc::ChannelArguments channel_args;
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomInsecureChannelFromFd("", grpc_ours.Release(), channel_args);
  std::unique_ptr<VfioClient> client(new VfioClient(std::move(channel), options.default_timeout));
  // From here on the client's destructor terminates the child.
  client->pid_ = pid;
  client->terminate_timeout_ = options.terminate_timeout;
  if (options.fd_channel) {
    absl::StatusOr<std::unique_ptr<client::FdChannelClient>> fd_channel =
        client::FdChannelClient::Open(std::move(fds_ours), options.default_timeout);
    if (!fd_channel.ok()) return client::Annotate(fd_channel.status(), "spawn");
    client->fd_channel_ = std::move(*fd_channel);
  }
  return client;
}

absl::StatusOr<int> VfioClient::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("Terminate: no spawned daemon");
  const pid_t pid = pid_;
  pid_ = -1;
  ::kill(pid, SIGTERM);
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t reaped = ::waitpid(pid, &status, WNOHANG);
    if (reaped == pid) return status;
    if (reaped < 0 && errno != EINTR) return ErrnoError("Terminate: waitpid", errno);
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  pid_t reaped;
  do {
    reaped = ::waitpid(pid, &status, 0);
  } while (reaped < 0 && errno == EINTR);
  if (reaped < 0) return ErrnoError("Terminate: waitpid", errno);
  return status;
}

// --- Device description and config space ----------------------------------------------------

absl::StatusOr<v1::DeviceInfo> VfioClient::GetDeviceInfo() {
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::GetDeviceInfo,
              v1::GetDeviceInfoRequest());
}

absl::StatusOr<uint32_t> VfioClient::ReadConfig(uint32_t offset, uint32_t size) {
  v1::ReadConfigRequest request;
  request.set_offset(offset);
  request.set_size(size);
  absl::StatusOr<v1::ReadConfigResponse> response =
      Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::ReadConfig, request);
  if (!response.ok()) return response.status();
  return response->value();
}

absl::Status VfioClient::WriteConfig(uint32_t offset, uint32_t size, uint32_t value) {
  v1::WriteConfigRequest request;
  request.set_offset(offset);
  request.set_size(size);
  request.set_value(value);
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::WriteConfig, request).status();
}

absl::StatusOr<std::string> VfioClient::DumpConfig(uint32_t offset, uint32_t length) {
  v1::DumpConfigRequest request;
  request.set_offset(offset);
  request.set_length(length);
  absl::StatusOr<v1::DumpConfigResponse> response =
      Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::DumpConfig, request);
  if (!response.ok()) return response.status();
  return std::move(*response->mutable_data());
}

// --- Regions --------------------------------------------------------------------------------

absl::StatusOr<std::string> VfioClient::ReadRegion(uint32_t index, uint64_t offset,
                                                   uint32_t size) {
  v1::ReadRegionRequest request;
  request.set_index(index);
  request.set_offset(offset);
  request.set_size(size);
  absl::StatusOr<v1::ReadRegionResponse> response =
      Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::ReadRegion, request);
  if (!response.ok()) return response.status();
  if (response->data().size() != size) {
    return absl::DataLossError(absl::StrFormat("ReadRegion: asked for %d bytes, got %d", size,
                                               response->data().size()));
  }
  return std::move(*response->mutable_data());
}

absl::Status VfioClient::WriteRegion(uint32_t index, uint64_t offset, absl::string_view data) {
  v1::WriteRegionRequest request;
  request.set_index(index);
  request.set_offset(offset);
  request.set_data(std::string(data));
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::WriteRegion, request).status();
}

absl::StatusOr<uint32_t> VfioClient::ReadRegion32(uint32_t index, uint64_t offset) {
  absl::StatusOr<std::string> data = ReadRegion(index, offset, 4);
  if (!data.ok()) return data.status();
  return static_cast<uint32_t>(LittleEndian(*data));
}

absl::Status VfioClient::WriteRegion32(uint32_t index, uint64_t offset, uint32_t value) {
  return WriteRegion(index, offset, ToLittleEndian(value, 4));
}

absl::StatusOr<uint64_t> VfioClient::ReadRegion64(uint32_t index, uint64_t offset) {
  absl::StatusOr<std::string> data = ReadRegion(index, offset, 8);
  if (!data.ok()) return data.status();
  return LittleEndian(*data);
}

absl::Status VfioClient::WriteRegion64(uint32_t index, uint64_t offset, uint64_t value) {
  return WriteRegion(index, offset, ToLittleEndian(value, 8));
}

// --- Fd passing, memory and DMA -------------------------------------------------------------

absl::StatusOr<std::vector<std::string>> VfioClient::SendFds(absl::Span<const int> fds) {
  if (fd_channel_ == nullptr) {
    return absl::FailedPreconditionError("SendFds: this client has no fd channel");
  }
  // Late replies to batches that timed out earlier hold tokens: release them first.
  absl::StatusOr<uint32_t> freed = ReleaseStrayFdTokens();
  const bool late_replies_due = fd_channel_->unanswered_batches() > 0;
  absl::StatusOr<std::vector<std::string>> tokens = fd_channel_->SendFds(fds, timeout_);
  // A failed send leaves the tokens of its answered batches (and this send may have read late
  // replies): release them, so that the daemon holds none of a failed send's fds.
  freed = ReleaseStrayFdTokens();
  if (tokens.status().code() == absl::StatusCode::kResourceExhausted && late_replies_due &&
      freed.ok() && *freed > 0) {
    tokens = fd_channel_->SendFds(fds, timeout_);
    (void)ReleaseStrayFdTokens();
  }
  return tokens;
}

absl::StatusOr<uint32_t> VfioClient::ReleaseTokens(const std::vector<std::string>& tokens) {
  v1::ReleaseFdTokensRequest request;
  for (const std::string& token : tokens) request.add_fd_tokens(token);
  absl::StatusOr<v1::ReleaseFdTokensResponse> response =
      Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::ReleaseFdTokens, request);
  if (!response.ok()) return response.status();
  return response->released();
}

absl::StatusOr<uint32_t> VfioClient::ReleaseStrayFdTokens() {
  if (fd_channel_ == nullptr) return 0u;
  std::vector<std::string> strays = fd_channel_->TakeStrayTokens();
  uint32_t released = 0;
  for (size_t start = 0; start < strays.size();) {
    const size_t n = std::min<size_t>(v1::kFdChannelMaxFdsPerMessage, strays.size() - start);
    std::vector<std::string> chunk(strays.begin() + start, strays.begin() + start + n);
    absl::StatusOr<uint32_t> done = ReleaseTokens(chunk);
    if (!done.ok() && n > 1 &&
        (done.status().code() == absl::StatusCode::kNotFound ||
         done.status().code() == absl::StatusCode::kInvalidArgument)) {
      // All or nothing on the daemon: one the daemon no longer holds (or a token limit below
      // the chunk) refuses the chunk. One at a time instead.
      done = 0u;
      for (const std::string& token : chunk) {
        absl::StatusOr<uint32_t> one = ReleaseTokens({token});
        if (one.ok()) {
          *done += *one;
        } else if (one.status().code() != absl::StatusCode::kNotFound) {
          done = one.status();
          break;
        }
      }
    }
    if (!done.ok() && done.status().code() != absl::StatusCode::kNotFound) {
      fd_channel_->KeepStrayTokens(std::vector<std::string>(strays.begin() + start, strays.end()));
      return client::Annotate(done.status(), "ReleaseFdTokens");
    }
    if (done.ok()) released += *done;
    start += n;
  }
  return released;
}

void VfioClient::ReleaseUnconsumed(std::vector<std::string> tokens) {
  if (fd_channel_ == nullptr || tokens.empty()) return;
  fd_channel_->KeepStrayTokens(std::move(tokens));
  (void)ReleaseStrayFdTokens();
}

absl::StatusOr<UniqueFd> VfioClient::CreateSealedMemfd(const std::string& name, uint64_t size) {
  if (size == 0) return absl::InvalidArgumentError("CreateSealedMemfd: size 0");
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return ErrnoError("CreateSealedMemfd: memfd_create", errno);
  if (size > static_cast<uint64_t>(INT64_MAX) ||
      ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoError(absl::StrCat("CreateSealedMemfd: ftruncate ", size),
                      size > static_cast<uint64_t>(INT64_MAX) ? EINVAL : errno);
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return ErrnoError("CreateSealedMemfd: F_ADD_SEALS", errno);
  }
  return fd;
}

absl::StatusOr<v1::RegisterMemoryResponse> VfioClient::RegisterMemory(int memfd, uint64_t size) {
  const int fds[] = {memfd};
  absl::StatusOr<std::vector<std::string>> tokens = SendFds(fds);
  if (!tokens.ok()) return client::Annotate(tokens.status(), "RegisterMemory");
  absl::StatusOr<v1::RegisterMemoryResponse> registered = RegisterMemoryToken(tokens->front(), size);
  if (!registered.ok()) ReleaseUnconsumed(*std::move(tokens));  // NOT_FOUND if it was consumed
  return registered;
}

absl::StatusOr<v1::RegisterMemoryResponse> VfioClient::RegisterMemoryToken(
    const std::string& fd_token, uint64_t size) {
  v1::RegisterMemoryRequest request;
  request.set_fd_token(fd_token);
  request.set_size(size);
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::RegisterMemory, request);
}

absl::Status VfioClient::UnregisterMemory(uint64_t memory_id) {
  v1::UnregisterMemoryRequest request;
  request.set_memory_id(memory_id);
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::UnregisterMemory, request)
      .status();
}

absl::Status VfioClient::MapDma(uint64_t iova, uint64_t size, uint64_t memory_id,
                                uint64_t offset, bool device_read, bool device_write) {
  v1::MapDmaRequest request;
  request.set_iova(iova);
  request.set_size(size);
  request.set_memory_id(memory_id);
  request.set_offset(offset);
  request.set_device_read(device_read);
  request.set_device_write(device_write);
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::MapDma, request).status();
}

absl::StatusOr<v1::UnmapDmaResponse> VfioClient::UnmapDma(uint64_t iova, uint64_t size) {
  v1::UnmapDmaRequest request;
  request.set_iova(iova);
  request.set_size(size);
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::UnmapDma, request);
}

// --- Interrupts -----------------------------------------------------------------------------

absl::Status VfioClient::SetIrqs(const v1::SetIrqsRequest& request) {
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::SetIrqs, request).status();
}

absl::Status VfioClient::SetIrqEventfds(v1::IrqIndex index, uint32_t start,
                                        absl::Span<const int> eventfds) {
  std::vector<int> present;
  for (int fd : eventfds) {
    if (fd >= 0) present.push_back(fd);
  }
  std::vector<std::string> tokens;
  if (!present.empty()) {
    absl::StatusOr<std::vector<std::string>> sent = SendFds(present);
    if (!sent.ok()) return client::Annotate(sent.status(), "SetIrqEventfds");
    tokens = std::move(*sent);
  }
  v1::SetIrqsRequest request;
  request.set_index(index);
  request.set_start(start);
  request.set_count(static_cast<uint32_t>(eventfds.size()));
  request.set_action(v1::IRQ_ACTION_TRIGGER);
  v1::EventfdData* data = request.mutable_eventfds();
  size_t next = 0;
  for (int fd : eventfds) data->add_fd_tokens(fd >= 0 ? tokens[next++] : std::string());
  absl::Status status = SetIrqs(request);
  if (!status.ok()) ReleaseUnconsumed(std::move(tokens));
  return status;
}

absl::Status VfioClient::EnableIrqWatch(v1::IrqIndex index, uint32_t start, uint32_t count) {
  v1::SetIrqsRequest request;
  request.set_index(index);
  request.set_start(start);
  request.set_count(count);
  request.set_action(v1::IRQ_ACTION_TRIGGER);
  request.mutable_watch();
  return SetIrqs(request);
}

absl::Status VfioClient::SetIrqAction(v1::IrqIndex index, uint32_t start, uint32_t count,
                                      v1::IrqAction action) {
  v1::SetIrqsRequest request;
  request.set_index(index);
  request.set_start(start);
  request.set_count(count);
  request.set_action(action);
  request.mutable_none();
  return SetIrqs(request);
}

absl::Status VfioClient::SetIntxResampleFd(int eventfd) {
  const int fds[] = {eventfd};
  absl::StatusOr<std::vector<std::string>> tokens = SendFds(fds);
  if (!tokens.ok()) return client::Annotate(tokens.status(), "SetIntxResampleFd");
  v1::SetIrqsRequest request;
  request.set_index(v1::IRQ_INDEX_INTX);
  request.set_start(0);
  request.set_count(1);
  request.set_action(v1::IRQ_ACTION_UNMASK);
  request.mutable_eventfds()->add_fd_tokens(tokens->front());
  absl::Status status = SetIrqs(request);
  if (!status.ok()) ReleaseUnconsumed(*std::move(tokens));
  return status;
}

absl::Status VfioClient::DisableIrqs(v1::IrqIndex index) {
  return SetIrqAction(index, 0, 0, v1::IRQ_ACTION_TRIGGER);
}

absl::StatusOr<std::unique_ptr<IrqWatch>> VfioClient::WatchIrqs(
    absl::Span<const v1::IrqIndex> indexes) {
  v1::WatchIrqsRequest request;
  for (v1::IrqIndex index : indexes) request.add_indexes(index);
  std::unique_ptr<IrqWatch> watch(new IrqWatch());
  watch->channel_ = channel_;
  watch->context_ = std::make_unique<grpc::ClientContext>();
  std::unique_ptr<grpc::ClientReader<v1::IrqEvent>> reader =
      stub_->WatchIrqs(watch->context_.get(), request);
  if (reader == nullptr) return absl::InternalError("WatchIrqs: no stream");
  watch->reader_ = std::thread(&IrqWatch::ReadLoop, watch.get(), std::move(reader));
  // The daemon sends the stream's headers once the subscription exists: from then on no
  // interrupt is missed. A stream that fails at once (e.g. too many watchers) reports here.
  absl::Status started = watch->WaitStarted(timeout_);
  if (!started.ok()) return client::Annotate(started, "WatchIrqs");
  return watch;
}

// --- Reset, state, roles --------------------------------------------------------------------

absl::Status VfioClient::Reset() {
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::Reset, v1::ResetRequest())
      .status();
}

absl::StatusOr<v1::DeviceState> VfioClient::GetState() {
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::GetState, v1::GetStateRequest());
}

absl::Status VfioClient::ClaimOwnership() {
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::ClaimOwnership,
              v1::ClaimOwnershipRequest())
      .status();
}

absl::Status VfioClient::ReleaseOwnership() {
  return Call(NewContext(), stub_.get(), &v1::VfioDevice::Stub::ReleaseOwnership,
              v1::ReleaseOwnershipRequest())
      .status();
}

}  // namespace vfiod
