#include "tests/vmm/vfio_user_daemon.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/vmm/qtest_vmm.h"

namespace vfiod::vmm {

absl::Status VfioUserDaemon::CheckSupported() {
  const std::string binary = testing::DaemonProcess::BinaryPath();
  absl::StatusOr<std::string> help =
      RunForOutput({binary, "--help"}, absl::Seconds(10), /*any_status=*/true);
  if (!help.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot ask ", binary, " --help: ", help.status().message()));
  }
  if (!absl::StrContains(*help, "--vfio-user")) {
    return absl::FailedPreconditionError(absl::StrCat(
        "vfiod has no vfio-user server: its --help does not name --vfio-user (the server is not "
        "on this branch yet; binary ", binary, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<VfioUserDaemon>> VfioUserDaemon::Start(
    const std::vector<std::string>& extra_args) {
  std::unique_ptr<VfioUserDaemon> d(new VfioUserDaemon());
  // DaemonProcess serves vfio-user on vfio_user_path() next to gRPC.
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start(extra_args);
  if (!daemon.ok()) return daemon.status();
  d->daemon_ = std::move(*daemon);
  // gRPC serves; the vfio-user socket is bound before the jail like --listen's, but check
  // without connecting: a connection would be taken as the VMM.
  const std::string& path = d->daemon_->vfio_user_path();
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  struct stat st;
  while (stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("vfiod serves gRPC but ", path, " is no socket"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return d;
}

absl::StatusOr<std::unique_ptr<VfioClient>> VfioUserDaemon::Observer() {
  ConnectOptions options;
  options.fd_channel = false;
  return VfioClient::Connect(grpc_socket(), options);
}

}  // namespace vfiod::vmm
