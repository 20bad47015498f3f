// Malformed request bodies: INVALID_ARGUMENT, not gRPC's INTERNAL.
//
// gRPC's server deserializes a request before any handler runs; when the bytes are not a valid
// protobuf encoding of the method's request message (garbage, a truncated or 11-byte varint, a
// stray end-group tag, a length past the end, invalid UTF-8 in a string field, no message at
// all) it answers by itself (INTERNAL on the synchronous API, UNIMPLEMENTED with no message on
// the callback API that the device service uses, CallbackUnaryHandler) and the handler, with
// its role check, never runs. That is a client error, so the daemon's
// contract (proto/vfiod/v1/vfiod.proto) says INVALID_ARGUMENT.
//
// A server interceptor does the mapping, for the methods of vfiod.v1.VfioDevice only: on
// POST_RECV_MESSAGE the server hands it the deserialized request, which is null exactly when
// deserialization failed; for such a call it rewrites the status at PRE_SEND_STATUS to
// INVALID_ARGUMENT "<Method>: the request is not a valid vfiod.v1.<Request> message". A call
// whose request parsed is never touched, so an INTERNAL that a handler returns (a device or
// kernel failure) stays INTERNAL. Other services (health, reflection) keep gRPC's behaviour.
#ifndef VFIOD_DAEMON_SERVICE_MALFORMED_REQUEST_H_
#define VFIOD_DAEMON_SERVICE_MALFORMED_REQUEST_H_

#include <memory>
#include <vector>

#include "grpcpp/support/server_interceptor.h"

namespace vfiod {

// The interceptor factories to install with ServerBuilder::experimental().
// SetInterceptorCreators() on the server that serves VfioDeviceService.
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MalformedRequestInterceptors();

}  // namespace vfiod

#endif  // VFIOD_DAEMON_SERVICE_MALFORMED_REQUEST_H_
