// VfioUserDaemon: vfiod serving one device to a VMM over vfio-user (`--vfio-user=PATH`) and to
// observers over gRPC (`--listen=PATH`) at the same time, started like every test daemon
// (tests/daemon_process.h: $VFIOD_BINARY or the //daemon:vfiod runfile, the device
// $VFIOD_DEVICE or sim:edu, jailed and under the enforcing seccomp policy: BaseArgs()).
//
// Not thread-safe.
#ifndef VFIOD_TESTS_VMM_VFIO_USER_DAEMON_H_
#define VFIOD_TESTS_VMM_VFIO_USER_DAEMON_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/vfio_client.h"
#include "tests/daemon_process.h"

namespace vfiod::vmm {

class VfioUserDaemon {
 public:
  // OK when the vfiod binary offers --vfio-user (its --help names the flag); otherwise
  // FAILED_PRECONDITION saying what is absent. Tests skip with that message.
  static absl::Status CheckSupported();

  // Starts vfiod (DaemonProcess: --listen and --vfio-user on fresh socket paths under /tmp) plus
  // `extra_args`; returns once gRPC serves and the vfio-user socket exists.
  static absl::StatusOr<std::unique_ptr<VfioUserDaemon>> Start(
      const std::vector<std::string>& extra_args = {});
  // Stops vfiod (SIGTERM, then SIGKILL); DaemonProcess removes its socket folder.
  ~VfioUserDaemon() = default;

  const std::string& vfio_user_socket() const { return daemon_->vfio_user_path(); }
  const std::string& grpc_socket() const { return daemon_->socket_path(); }
  testing::DaemonProcess& process() { return *daemon_; }

  // A new observer session on the gRPC socket (no fd channel).
  absl::StatusOr<std::unique_ptr<VfioClient>> Observer();

 private:
  VfioUserDaemon() = default;
  std::unique_ptr<testing::DaemonProcess> daemon_;
};

}  // namespace vfiod::vmm

#endif  // VFIOD_TESTS_VMM_VFIO_USER_DAEMON_H_
