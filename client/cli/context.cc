#include "client/cli/context.h"

#include <cstdint>
#include <iterator>
#include <memory>
#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "client/cli/output.h"
#include "client/cli_parse.h"
#include "client/guest_memory.h"
#include "client/vfio_client.h"

namespace vfiod::cli {

Context::Context(GlobalOptions options, LineRunner& runner, std::ostream& out)
    : options_(std::move(options)), runner_(runner), out_(options_.json, out) {}

Context::~Context() { Finish(); }

absl::Status Context::Connect(bool fd_channel) {
  if (client_ != nullptr) return absl::OkStatus();
  if (options_.socket.empty()) return UsageError("no --socket (or $VFIOD_SOCKET)");
  ConnectOptions connect;
  connect.default_timeout = options_.timeout;
  connect.fd_channel = fd_channel || in_session_;
  absl::StatusOr<std::unique_ptr<VfioClient>> client =
      VfioClient::Connect(options_.socket, connect);
  if (!client.ok()) {
    connect_failed_ = true;
    return client.status();
  }
  if (options_.claim) {
    absl::Status status = (*client)->ClaimOwnership();
    if (!status.ok()) {
      connect_failed_ = true;
      return absl::Status(status.code(), absl::StrCat("claim: ", status.message()));
    }
    owner_ = true;
  }
  client_ = *std::move(client);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Context::MemoryId(const std::string& text) const {
  if (auto it = memory_names_.find(text); it != memory_names_.end()) return it->second;
  if (!text.empty() && absl::ascii_isalpha(static_cast<unsigned char>(text[0]))) {
    return UsageError(absl::StrCat("no memory named \"", text, "\" (memory create SIZE NAME)"));
  }
  absl::StatusOr<uint64_t> id = client::ParseNumber(text, "memory ID");
  if (!id.ok()) return UsageError(id.status().message());
  return id;
}

absl::StatusOr<client::GuestMemory*> Context::LocalMemory(uint64_t id) {
  auto it = memory_.find(id);
  if (it == memory_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "memory ", id, " was not created by this vfioctl (memory create), so it cannot see it"));
  }
  return &it->second;
}

void Context::AddMemory(uint64_t id, client::GuestMemory memory, const std::string& name) {
  memory_.insert_or_assign(id, std::move(memory));
  if (!name.empty()) memory_names_[name] = id;
}

void Context::ForgetMemory(uint64_t id) {
  memory_.erase(id);
  for (auto it = memory_names_.begin(); it != memory_names_.end();) {
    it = it->second == id ? memory_names_.erase(it) : std::next(it);
  }
}

void Context::ForgetAllMemory() {
  memory_.clear();
  memory_names_.clear();
}

void Context::SetWatch(std::unique_ptr<IrqWatch> watch) {
  if (watch_ != nullptr) watch_->Cancel();
  watch_ = std::move(watch);
  pending_events_.clear();
}

void Context::Finish() {
  SetWatch(nullptr);
  if (owner_ && client_ != nullptr) {
    // Best effort: when it fails, the daemon cleans up once it sees the connection close.
    (void)client_->ReleaseOwnership();
    owner_ = false;
  }
  ForgetAllMemory();
  out_.Flush();
}

}  // namespace vfiod::cli
