// DaemonProcess: a real vfiod binary started for a test, listening on fresh short socket paths
// under /tmp (TEST_TMPDIR is longer than sun_path allows): gRPC (and its fd channel) and
// vfio-user, served together.
//
// The binary is $VFIOD_BINARY when set (the VM lab points it at its copy), else the //daemon:vfiod
// runfile. The device is $VFIOD_DEVICE when set, else "sim:edu". The daemon runs with its
// defaults: jailed, under the enforcing seccomp policy (only a sanitizer build adds
// --seccomp=off). pid() is the process the test started: with the jail, the launcher, whose exit
// status is the daemon's; ServingPid() is the jailed daemon itself. A SIGSYS death (the policy
// killed the daemon) is a test failure wherever it is observed. Terminate() (and the
// destructor) sends SIGTERM, waits, then SIGKILLs; the socket folder is removed.
#ifndef VFIOD_TESTS_DAEMON_PROCESS_H_
#define VFIOD_TESTS_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"

namespace vfiod::testing {

class DaemonProcess {
 public:
  // Starts vfiod with --device and --listen plus `extra_args`, and waits until the socket
  // accepts connections. When vfiod exits during start-up and this host cannot create the
  // namespaces the jail needs (not root, and no unprivileged user namespaces; or a namespace
  // type the kernel lacks), the error says which and why.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(
      const std::vector<std::string>& extra_args = {});
  // As Start(extra_args), with the daemon's stderr (the launcher's, which relays the daemon's
  // log) on `log` instead of this process's stderr: a file, or a pipe nobody reads.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(
      const std::vector<std::string>& extra_args, const UniqueFd& log);
  ~DaemonProcess();

  const std::string& socket_path() const { return socket_path_; }
  const std::string& vfio_user_path() const { return vfio_user_path_; }
  pid_t pid() const { return pid_; }
  // The process serving gRPC: the launcher's child under the jail, else pid(). An error where
  // /proc cannot be listed.
  absl::StatusOr<pid_t> ServingPid() const;
  // The exit status (as from waitpid) after SIGTERM, or after SIGKILL if it did not stop.
  absl::StatusOr<int> Terminate(absl::Duration timeout = absl::Seconds(5));
  // True while the process has not exited.
  bool Running();

  // Path of the vfiod binary and of a sibling test binary (runfiles or env), and the device.
  static std::string BinaryPath();
  static std::string RunfilePath(const std::string& workspace_relative);
  static std::string DeviceName();
  // The arguments every test daemon gets before its own: none, except in a sanitizer build,
  // whose runtime cannot live under the seccomp policy: there "--seccomp=off" (the jail stays
  // on). Every test that starts vfiod itself (spawn mode) passes these too.
  static std::vector<std::string> BaseArgs();
  // The Seccomp: field of /proc/<pid>/status of a daemon started with BaseArgs() and no
  // --seccomp of its own: "2" (filter), or "0" in a sanitizer build.
  static std::string ExpectedSeccompMode();

 private:
  DaemonProcess() = default;
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> StartWithLog(
      const std::vector<std::string>& extra_args, const UniqueFd* log);
  void Exited(int status);
  std::string dir_;
  std::string socket_path_;
  std::string vfio_user_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_status_ = 0;
};

// Starts `argv[0]` with arguments; stdout/stderr inherited. Returns the pid.
absl::StatusOr<pid_t> SpawnProcess(const std::vector<std::string>& argv);

}  // namespace vfiod::testing

#endif  // VFIOD_TESTS_DAEMON_PROCESS_H_
