// grpc_echo_server: a bare synchronous gRPC echo server on a UNIX socket, with gRPC's default
// server options and nothing else (no vfiod code). vfiod_bench spawns it as the "bare gRPC"
// baseline, so that a vfiod RPC is compared with bare gRPC of the same payload in the same run.
//
//   grpc_echo_server --listen=PATH
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "grpcpp/grpcpp.h"
#include "tests/bench/echo.grpc.pb.h"

ABSL_FLAG(std::string, listen, "", "UNIX socket path to serve on.");

namespace vfiod::bench {
namespace {

class EchoService final : public Echo::Service {
  grpc::Status Unary(grpc::ServerContext*, const EchoMessage* request,
                     EchoMessage* response) override {
    response->set_data(request->data());
    return grpc::Status::OK;
  }
  grpc::Status Bidi(grpc::ServerContext*,
                    grpc::ServerReaderWriter<EchoMessage, EchoMessage>* stream) override {
    EchoMessage message;
    while (stream->Read(&message)) {
      if (!stream->Write(message)) break;
    }
    return grpc::Status::OK;
  }
};

int Run() {
  const std::string path = absl::GetFlag(FLAGS_listen);
  if (path.empty()) {
    std::fprintf(stderr, "grpc_echo_server: --listen is required\n");
    return 2;
  }
  EchoService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    std::fprintf(stderr, "grpc_echo_server: could not serve on %s\n", path.c_str());
    return 1;
  }
  server->Wait();  // until killed
  return 0;
}

}  // namespace
}  // namespace vfiod::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return vfiod::bench::Run();
}
