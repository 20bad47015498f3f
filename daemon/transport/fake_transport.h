// FakeTransport: a Transport stand-in for driving the service layer in-process, without sockets
// (unit tests, the service fuzzer).
//
// A grpc::ServerContext made outside a call has no peer (peer() is empty), so
// ConnectionForPeer answers with the connection the test names with set_caller(), whatever the
// peer; nullopt stands for a connection the transport does not know. The fd-channel closes the
// session layer asks for are queued, for the test to report back (SessionManager::
// OnFdChannelClosed) as the transport's event thread would. Not thread-safe.
#ifndef VFIOD_DAEMON_TRANSPORT_FAKE_TRANSPORT_H_
#define VFIOD_DAEMON_TRANSPORT_FAKE_TRANSPORT_H_

#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "daemon/base/unique_fd.h"
#include "daemon/transport/transport.h"

namespace vfiod {

class FakeTransport final : public Transport {
 public:
  absl::Status Start(grpc::Server*, PeerCredentialSource*) override { return absl::OkStatus(); }
  std::vector<UniqueFd*> FdsForJail() override { return {}; }
  std::optional<ConnectionId> ConnectionForPeer(absl::string_view) const override {
    return caller_;
  }
  void CloseFdChannel(FdChannelId id) override { to_close_.push_back(id); }
  void Shutdown() override {}

  // The connection every following call comes from.
  void set_caller(std::optional<ConnectionId> caller) { caller_ = caller; }
  // The channels CloseFdChannel was asked to close since the last call, in order.
  std::vector<FdChannelId> TakeCloseRequests() { return std::exchange(to_close_, {}); }

 private:
  std::optional<ConnectionId> caller_;
  std::vector<FdChannelId> to_close_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_TRANSPORT_FAKE_TRANSPORT_H_
