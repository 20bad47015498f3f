#include "daemon/service/malformed_request.h"

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/support/interceptor.h"
#include "grpcpp/support/status.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod {
namespace {

using grpc::experimental::InterceptionHookPoints;

class MalformedRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  // `message` outlives the interceptor (the factory owns it).
  explicit MalformedRequestInterceptor(const std::string* message) : message_(message) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      malformed_ = true;
    }
    if (malformed_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      methods->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, *message_));
    }
    methods->Proceed();
  }

 private:
  const std::string* const message_;
  bool malformed_ = false;  // the hook points of one call run one after another
};

class MalformedRequestFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // One message per method of vfiod.v1.VfioDevice, by path ("/vfiod.v1.VfioDevice/ReadConfig").
  MalformedRequestFactory() {
    const google::protobuf::ServiceDescriptor* service =
        v1::ReadConfigRequest::descriptor()->file()->FindServiceByName("VfioDevice");
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* method = service->method(i);
      messages_.emplace(
          absl::StrCat("/", service->full_name(), "/", method->name()),
          absl::StrCat(method->name(), ": the request is not a valid ",
                       method->input_type()->full_name(), " message (protobuf decoding failed)"));
    }
  }

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (info->method() == nullptr) return nullptr;
    auto it = messages_.find(absl::string_view(info->method()));
    if (it == messages_.end()) return nullptr;  // another service
    return new MalformedRequestInterceptor(&it->second);
  }

 private:
  absl::flat_hash_map<std::string, std::string> messages_;  // fixed after construction
};

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MalformedRequestInterceptors() {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<MalformedRequestFactory>());
  return factories;
}

}  // namespace vfiod
