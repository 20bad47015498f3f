// vfioctl list: the daemons whose sockets are in a directory (e.g. /run/vfiod), one line each.
// Every socket but the fd channels (*.fds) is tried: a vfiod gRPC socket answers
// GetDeviceInfo and GetState within a short deadline; anything else (a vfio-user socket, which
// does not speak HTTP/2, or a stale socket) is listed as not a vfiod gRPC socket.
#include "client/cli/commands_list.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/format.h"
#include "client/cli/output.h"
#include "client/cli/text_table.h"
#include "client/vfio_client.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {
namespace {

// Where vfiod's sockets usually are (README.md).
constexpr char kDefaultDirectory[] = "/run/vfiod";
// The longest list waits for one socket: a vfiod answers at once.
constexpr absl::Duration kProbeTimeout = absl::Seconds(1);

struct ListArgs {
  std::string directory = kDefaultDirectory;
};

void DeclareList(CLI::App& app, ListArgs& args) {
  AddText(app, "DIR", &args.directory, "where the sockets are (default /run/vfiod)");
}

// The sockets in `directory`, sorted, without the fd channels.
absl::StatusOr<std::vector<std::string>> Sockets(const std::string& directory) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(directory.c_str()), ::closedir);
  if (dir == nullptr) {
    const int error = errno;
    return absl::NotFoundError(
        absl::StrFormat("cannot open directory %s: %s", directory, std::strerror(error)));
  }
  std::vector<std::string> sockets;
  while (dirent* entry = ::readdir(dir.get())) {
    const std::string path = absl::StrCat(directory, "/", entry->d_name);
    struct stat info;
    if (::stat(path.c_str(), &info) != 0 || !S_ISSOCK(info.st_mode)) continue;
    if (absl::EndsWith(entry->d_name, ".fds")) continue;
    sockets.push_back(path);
  }
  std::sort(sockets.begin(), sockets.end());
  return sockets;
}

struct Daemon {
  std::string socket;
  absl::Status status;  // not OK: not a vfiod gRPC socket
  v1::DeviceInfo info;
  v1::DeviceState state;
};

Daemon Probe(const std::string& socket, absl::Duration timeout) {
  Daemon daemon{socket};
  ConnectOptions options;
  options.default_timeout = std::min(timeout, kProbeTimeout);
  options.fd_channel = false;
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(socket, options);
  if (!client.ok()) {
    daemon.status = client.status();
    return daemon;
  }
  absl::StatusOr<v1::DeviceInfo> info = (*client)->GetDeviceInfo();
  if (!info.ok()) {
    daemon.status = info.status();
    return daemon;
  }
  absl::StatusOr<v1::DeviceState> state = (*client)->GetState();
  if (!state.ok()) {
    daemon.status = state.status();
    return daemon;
  }
  daemon.info = *std::move(info);
  daemon.state = *std::move(state);
  return daemon;
}

// Sessions other than list's own connection.
uint32_t OtherSessions(const v1::DeviceState& state) {
  return state.sessions() > 0 ? state.sessions() - 1 : 0;
}

absl::Status List(Context& ctx, const ListArgs& args) {
  absl::StatusOr<std::vector<std::string>> sockets = Sockets(args.directory);
  if (!sockets.ok()) return sockets.status();
  std::vector<Daemon> daemons;
  for (const std::string& socket : *sockets) {
    daemons.push_back(Probe(socket, ctx.options().timeout));
  }
  if (ctx.out().json()) {
    Json list = Json::array();
    for (const Daemon& d : daemons) {
      if (!d.status.ok()) {
        list.push_back({{"socket", d.socket},
                        {"vfiod", false},
                        {"error", absl::StrCat(absl::StatusCodeToString(d.status.code()), ": ",
                                               d.status.message())}});
        continue;
      }
      list.push_back(
          {{"socket", d.socket},
           {"vfiod", true},
           {"device", d.info.name()},
           {"backend", EnumWord(v1::BackendKind_Name(d.info.backend()), "BACKEND_KIND_")},
           {"ownerAttached", d.state.owner_attached()},
           {"sessions", OtherSessions(d.state)}});
    }
    ctx.out().Print(Json{{"directory", args.directory}, {"sockets", std::move(list)}}, "");
    return absl::OkStatus();
  }
  if (daemons.empty()) {
    ctx.out().Raw(absl::StrCat("no sockets in ", args.directory, "\n"));
    return absl::OkStatus();
  }
  TextTable table({"SOCKET", "DEVICE", "BACKEND", "OWNER", "SESSIONS"});
  for (const Daemon& d : daemons) {
    if (!d.status.ok()) {
      table.Add({d.socket, "-", "not a vfiod gRPC socket"});
      continue;
    }
    table.Add(
        {d.socket, d.info.name(), EnumWord(v1::BackendKind_Name(d.info.backend()), "BACKEND_KIND_"),
         d.state.owner_attached() ? "attached" : "none", absl::StrCat(OtherSessions(d.state))});
  }
  ctx.out().Raw(table.Render(""));
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> ListCommands() {
  return {
      {"list", "[DIR]",
       "the daemons with sockets in DIR (default /run/vfiod): device, backend, owner, sessions "
       "besides this one",
       Role::kNone, /*fd_channel=*/false, Define(DeclareList, List)},
  };
}

}  // namespace vfiod::cli
