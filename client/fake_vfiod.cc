// fake_vfiod: a stand-in for vfiod in spawn mode, for vfio_client_test only.
//
// Serves a few RPCs of vfiod.v1.VfioDevice on the inherited --connection-fd and answers the fd
// channel on --fd-channel-fd, enough to test VfioClient::Spawn without the real daemon:
//   GetDeviceInfo  name "fake", or "leaked fds: ..." when it inherited fds it should not have.
//   DumpConfig     a minimal edu-like config space.
//   ReadConfig     0x11e81234 at offset 0 size 4, else OUT_OF_RANGE.
//   RegisterMemory OK (memory_id 7) for a token the fd channel issued; else NOT_FOUND.
//   WatchIrqs      three MSI events on vectors 0, 1, 2, then waits for cancellation.
//   BindFdChannel  OK for the key of a channel accepted on `<listen>.fds`; else NOT_FOUND.
// --listen=PATH also serves gRPC at PATH and fd channels at PATH.fds (listen mode).
// --ignore-sigterm makes it ignore SIGTERM (to test the SIGKILL fallback).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "client/fd_channel_client.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/server_posix.h"
#include "proto/vfiod/v1/fd_channel.h"
#include "proto/vfiod/v1/vfiod.grpc.pb.h"

namespace {

using vfiod::v1::FdChannelReply;
using vfiod::v1::FdToken;

absl::Mutex tokens_mu;
std::set<std::string>* issued_tokens = new std::set<std::string>();
std::set<std::string>* channel_keys = new std::set<std::string>();

std::string LeakedFds(int keep_a, int keep_b) {
  std::vector<std::string> leaked;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return "no /proc";
  while (dirent* entry = readdir(dir)) {
    int fd;
    if (!absl::SimpleAtoi(entry->d_name, &fd)) continue;
    if (fd <= 2 || fd == keep_a || fd == keep_b || fd == dirfd(dir)) continue;
    leaked.push_back(entry->d_name);
  }
  closedir(dir);
  return absl::StrJoin(leaked, ",");
}

class FakeService final : public vfiod::v1::VfioDevice::Service {
 public:
  explicit FakeService(std::string leaked) : leaked_(std::move(leaked)) {}

  grpc::Status GetDeviceInfo(grpc::ServerContext*, const vfiod::v1::GetDeviceInfoRequest*,
                             vfiod::v1::DeviceInfo* info) override {
    info->set_name(leaked_.empty() ? "fake" : absl::StrCat("leaked fds: ", leaked_));
    return grpc::Status::OK;
  }

  grpc::Status ReadConfig(grpc::ServerContext*, const vfiod::v1::ReadConfigRequest* request,
                          vfiod::v1::ReadConfigResponse* response) override {
    if (request->offset() == 0 && request->size() == 4) {
      response->set_value(0x11e81234);
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                        absl::StrCat("ReadConfig: offset ", request->offset(), " size ",
                                     request->size(), " is outside config space (256)"));
  }

  grpc::Status DumpConfig(grpc::ServerContext*, const vfiod::v1::DumpConfigRequest*,
                          vfiod::v1::DumpConfigResponse* response) override {
    std::string config(256, '\0');
    const uint8_t header[] = {0x34, 0x12, 0xe8, 0x11, 0x02, 0x00, 0x10, 0x00,
                              0x10, 0x00, 0xff, 0x00};
    std::memcpy(config.data(), header, sizeof(header));
    config[0x34] = 0x40;
    config[0x3d] = 1;
    config[0x40] = 0x05;
    config[0x42] = static_cast<char>(0x80);
    response->set_data(config);
    return grpc::Status::OK;
  }

  grpc::Status RegisterMemory(grpc::ServerContext*,
                              const vfiod::v1::RegisterMemoryRequest* request,
                              vfiod::v1::RegisterMemoryResponse* response) override {
    absl::MutexLock lock(&tokens_mu);
    if (issued_tokens->erase(request->fd_token()) == 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("RegisterMemory: unknown fd token \"", request->fd_token(),
                                       "\""));
    }
    response->set_memory_id(7);
    response->set_size(request->size());
    return grpc::Status::OK;
  }

  grpc::Status BindFdChannel(grpc::ServerContext*, const vfiod::v1::BindFdChannelRequest* request,
                             vfiod::v1::BindFdChannelResponse*) override {
    absl::MutexLock lock(&tokens_mu);
    if (channel_keys->count(request->channel_key()) == 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "BindFdChannel: unknown key");
    }
    return grpc::Status::OK;
  }

  grpc::Status WatchIrqs(grpc::ServerContext* context, const vfiod::v1::WatchIrqsRequest*,
                         grpc::ServerWriter<vfiod::v1::IrqEvent>* writer) override {
    for (uint32_t vector = 0; vector < 3; ++vector) {
      vfiod::v1::IrqEvent event;
      event.set_index(vfiod::v1::IRQ_INDEX_MSI);
      event.set_vector(vector);
      event.set_count(1);
      writer->Write(event);
    }
    while (!context->IsCancelled()) usleep(10000);
    return grpc::Status::CANCELLED;
  }

 private:
  const std::string leaked_;
};

void ServeFdChannel(int fd) {
  uint32_t next_token = 1;
  for (;;) {
    vfiod::v1::FdChannelSend header;
    iovec iov = {&header, sizeof(header)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) return;
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.push_back(received);
      }
    }
    std::vector<char> reply_bytes(sizeof(FdChannelReply) + fds.size() * sizeof(FdToken));
    FdChannelReply reply = {};
    reply.magic = vfiod::v1::kFdChannelMagic;
    reply.sequence = header.sequence;
    reply.count = fds.size();
    std::memcpy(reply_bytes.data(), &reply, sizeof(reply));
    for (size_t i = 0; i < fds.size(); ++i) {
      FdToken token = {};
      uint32_t value = next_token++;
      std::memcpy(token.bytes, &value, sizeof(value));
      std::memcpy(reply_bytes.data() + sizeof(reply) + i * sizeof(token), &token, sizeof(token));
      absl::MutexLock lock(&tokens_mu);
      issued_tokens->insert(vfiod::client::FdTokenToHex(token));
      close(fds[i]);
    }
    send(fd, reply_bytes.data(), reply_bytes.size(), MSG_NOSIGNAL);
  }
}

int listen_socket(int fd) { return ::listen(fd, 8); }

void SendHello(int fd, uint8_t key_byte) {
  vfiod::v1::FdChannelHello hello = {};
  hello.magic = vfiod::v1::kFdChannelMagic;
  hello.version = vfiod::v1::kFdChannelVersion;
  hello.max_fds_per_message = vfiod::v1::kFdChannelMaxFdsPerMessage;
  std::memset(hello.channel_key, key_byte, sizeof(hello.channel_key));
  {
    absl::MutexLock lock(&tokens_mu);
    channel_keys->insert(std::string(reinterpret_cast<char*>(hello.channel_key),
                                     sizeof(hello.channel_key)));
  }
  send(fd, &hello, sizeof(hello), MSG_NOSIGNAL);
}

void AcceptFdChannels(int listener) {
  for (uint8_t key = 1;; ++key) {
    int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    SendHello(fd, key);
    std::thread(ServeFdChannel, fd).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  int connection_fd = -1;
  int fd_channel_fd = -1;
  std::string listen;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--connection-fd=")) {
      if (!absl::SimpleAtoi(arg, &connection_fd)) return 2;
    } else if (absl::ConsumePrefix(&arg, "--fd-channel-fd=")) {
      if (!absl::SimpleAtoi(arg, &fd_channel_fd)) return 2;
    } else if (absl::ConsumePrefix(&arg, "--listen=")) {
      listen = std::string(arg);
    } else if (arg == "--ignore-sigterm") {
      signal(SIGTERM, SIG_IGN);
    } else if (arg == "--exit-early") {
      return 3;
    }
  }
  if (connection_fd < 0 && listen.empty()) return 2;
  const std::string leaked = LeakedFds(connection_fd, fd_channel_fd);

  FakeService service(leaked);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  if (!listen.empty()) {
    builder.AddListeningPort("unix:" + listen, grpc::InsecureServerCredentials());
    int listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un address = {};
    address.sun_family = AF_UNIX;
    const std::string fds_path = listen + ".fds";
    std::strncpy(address.sun_path, fds_path.c_str(), sizeof(address.sun_path) - 1);
    if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        listen_socket(listener) != 0) {
      return 4;
    }
    std::thread(AcceptFdChannels, listener).detach();
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (connection_fd >= 0) {
    fcntl(connection_fd, F_SETFL, fcntl(connection_fd, F_GETFL) | O_NONBLOCK);
    grpc::AddInsecureChannelFromFd(server.get(), connection_fd);
  }

  if (fd_channel_fd >= 0) {
    SendHello(fd_channel_fd, 0);
    std::thread(ServeFdChannel, fd_channel_fd).detach();
  }
  server->Wait();
  return 0;
}
