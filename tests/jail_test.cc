// The serving daemon under its defaults (jail on, --seccomp=kill), seen from outside through
// /proc: seccomp filter mode, no_new_privs, no capabilities, only the expected fds, an empty
// root, its own namespaces, pid 1 inside; the launcher forwards SIGTERM, removes the socket
// files, and its SIGKILL takes the daemon down. Also the development switches (--jail=off,
// --seccomp=log|off), which no other test uses.
//
// Runs as root here and in the VM lab; as another user the daemon adds a user namespace.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/vfio_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"

namespace vfiod {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::map<std::string, std::string> ProcStatus(pid_t pid) {
  std::map<std::string, std::string> fields;
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 1));
    if (parts.size() == 2) {
      fields[parts[0]] = std::string(absl::StripAsciiWhitespace(parts[1]));
    }
  }
  return fields;
}

std::vector<std::string> DirEntries(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return names;
  while (struct dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

std::string Link(const std::string& path) {
  char buffer[4096];
  ssize_t n = ::readlink(path.c_str(), buffer, sizeof(buffer));
  return n < 0 ? std::string() : std::string(buffer, static_cast<size_t>(n));
}

bool ProcessGone(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string content;
    std::getline(stat, content);
    // Gone, or a zombie waiting for the reaper.
    if (!stat.is_open() || content.empty() || content.find(") Z") != std::string::npos) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

// Whether `id` is mapped in this user namespace (a uid_map or gid_map: "inside outside count"
// lines).
bool IdMapped(const std::string& map_path, uint32_t id) {
  std::ifstream in(map_path);
  uint64_t inside, outside, count;
  while (in >> inside >> outside >> count) {
    if (id >= inside && id - inside < count) return true;
  }
  return false;
}

// Drives a few calls so that gRPC's threads exist.
void Exercise(const std::string& socket_path) {
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(socket_path);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->ClaimOwnership().ok());
  absl::StatusOr<v1::DeviceInfo> info = (*client)->GetDeviceInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  absl::StatusOr<uint32_t> vendor = (*client)->ReadConfig(0, 2);
  ASSERT_TRUE(vendor.ok()) << vendor.status();
}

TEST(JailTest, ServingProcessIsConfined) {
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Exercise((*daemon)->socket_path());
  absl::StatusOr<pid_t> serving = (*daemon)->ServingPid();
  ASSERT_TRUE(serving.ok());
  ASSERT_NE(*serving, (*daemon)->pid()) << "no jailed child under the launcher";
  const pid_t pid = *serving;

  std::map<std::string, std::string> status = ProcStatus(pid);
  EXPECT_EQ(status["Seccomp"], testing::DaemonProcess::ExpectedSeccompMode());
  EXPECT_EQ(status["NoNewPrivs"], "1");
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(status[set], "0000000000000000") << set;
  }
  // pid 1 of its own pid namespace.
  std::vector<std::string> nspid = absl::StrSplit(status["NSpid"], '\t');
  ASSERT_EQ(nspid.size(), 2u) << status["NSpid"];
  EXPECT_EQ(nspid[1], "1");
  // Its own mount, ipc, uts, net and pid namespaces.
  for (const char* ns : {"mnt", "ipc", "uts", "net", "pid"}) {
    EXPECT_NE(Link(absl::StrCat("/proc/", pid, "/ns/", ns)), Link(absl::StrCat("/proc/self/ns/", ns)))
        << ns;
  }
  // An empty root.
  EXPECT_TRUE(DirEntries(absl::StrCat("/proc/", pid, "/root")).empty());
  // Only the expected fds: /dev/null on 0 and 1, the log pipe on 2, VFIO fds on 3..5 when the
  // device is real, and otherwise sockets and anonymous inodes (eventfd, epoll, signalfd);
  // nothing else of the file system.
  const bool vfio = !absl::StartsWith(testing::DaemonProcess::DeviceName(), "sim:");
  for (const std::string& name : DirEntries(absl::StrCat("/proc/", pid, "/fd"))) {
    int fd;
    ASSERT_TRUE(absl::SimpleAtoi(name, &fd));
    const std::string target = Link(absl::StrCat("/proc/", pid, "/fd/", name));
    if (fd <= 1) {
      EXPECT_EQ(target, "/dev/null") << fd;
    } else if (fd == 2) {
      EXPECT_THAT(target, StartsWith("pipe:")) << fd;
    } else if (vfio && fd >= 3 && fd <= 5) {
      EXPECT_THAT(target, StartsWith("/dev/vfio/")) << fd;
    } else {
      EXPECT_TRUE(absl::StartsWith(target, "socket:") || absl::StartsWith(target, "anon_inode:"))
          << "fd " << fd << " -> " << target;
    }
  }
  // The figures for the record.
  std::cout << "serving process: VmRSS " << status["VmRSS"] << ", threads " << status["Threads"]
            << ", fds " << DirEntries(absl::StrCat("/proc/", pid, "/fd")).size() << std::endl;

  // SIGTERM to the launcher reaches the daemon (pid 1 of its namespace) and both exit 0; the
  // launcher removes the socket files the daemon could not reach.
  const std::string socket_path = (*daemon)->socket_path();
  absl::StatusOr<int> exit_status = (*daemon)->Terminate();
  ASSERT_TRUE(exit_status.ok()) << exit_status.status();
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0) << *exit_status;
  struct stat st;
  EXPECT_NE(::lstat(socket_path.c_str(), &st), 0);
  EXPECT_NE(::lstat((socket_path + ".fds").c_str(), &st), 0);
}

// --uid/--gid: the serving process runs as that user and group with no supplementary groups,
// still with no capabilities, and serves a client of the daemon's own uid (the allowed set is
// taken before the switch).
TEST(JailTest, ServesAsTheGivenUidAndGid) {
  constexpr uid_t kNobody = 65534;
  if (::getuid() != 0) GTEST_SKIP() << "--uid/--gid need root";
  std::ifstream setgroups("/proc/self/setgroups");
  std::string setgroups_mode;
  std::getline(setgroups, setgroups_mode);
  if (setgroups_mode == "deny") {
    GTEST_SKIP() << "this user namespace denies setgroups (a sandbox): --uid/--gid cannot work";
  }
  for (const char* map : {"/proc/self/uid_map", "/proc/self/gid_map"}) {
    if (!IdMapped(map, kNobody)) GTEST_SKIP() << kNobody << " is not mapped in " << map;
  }
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start({absl::StrCat("--uid=", kNobody),
                                     absl::StrCat("--gid=", kNobody)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Exercise((*daemon)->socket_path());
  absl::StatusOr<pid_t> serving = (*daemon)->ServingPid();
  ASSERT_TRUE(serving.ok());
  ASSERT_NE(*serving, (*daemon)->pid());
  std::map<std::string, std::string> status = ProcStatus(*serving);
  const std::string all_nobody = absl::StrJoin(std::vector<uid_t>(4, kNobody), "\t");
  EXPECT_EQ(status["Uid"], all_nobody);
  EXPECT_EQ(status["Gid"], all_nobody);
  EXPECT_EQ(status["Groups"], "");
  EXPECT_EQ(status["Seccomp"], testing::DaemonProcess::ExpectedSeccompMode());
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(status[set], "0000000000000000") << set;
  }
  absl::StatusOr<int> exit_status = (*daemon)->Terminate();
  ASSERT_TRUE(exit_status.ok()) << exit_status.status();
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0) << *exit_status;
}

TEST(JailTest, KillingTheLauncherKillsTheDaemon) {
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<pid_t> serving = (*daemon)->ServingPid();
  ASSERT_TRUE(serving.ok());
  ASSERT_NE(*serving, (*daemon)->pid());
  ASSERT_EQ(::kill((*daemon)->pid(), SIGKILL), 0);
  EXPECT_TRUE(ProcessGone(*serving, absl::Seconds(5))) << "the jailed daemon outlived its launcher";
}

TEST(JailTest, SwitchesForDevelopment) {
  struct Case {
    std::vector<std::string> args;
    std::string seccomp;  // expected Seccomp: field
    bool jailed;
  };
  for (const Case& c : std::vector<Case>{{{"--jail=off", "--seccomp=off"}, "0", false},
                                         {{"--jail=off"},
                                          testing::DaemonProcess::ExpectedSeccompMode(),
                                          false},
                                         {{"--seccomp=log"}, "2", true}}) {
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
        testing::DaemonProcess::Start(c.args);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    Exercise((*daemon)->socket_path());
    absl::StatusOr<pid_t> serving = (*daemon)->ServingPid();
    ASSERT_TRUE(serving.ok());
    EXPECT_EQ(*serving != (*daemon)->pid(), c.jailed);
    EXPECT_EQ(ProcStatus(*serving)["Seccomp"], c.seccomp);
    absl::StatusOr<int> exit_status = (*daemon)->Terminate();
    ASSERT_TRUE(exit_status.ok()) << exit_status.status();
    EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0) << *exit_status;
  }
}

TEST(JailTest, BadSwitchesAreRefused) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--jail=maybe"},
           {"--seccomp=trap"},
           {"--uid=x"},
           {"--gid=-1"},
           {"--jail=off", "--uid=1"}}) {
    absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
        testing::DaemonProcess::Start(args);
    EXPECT_FALSE(daemon.ok()) << absl::StrJoin(args, " ");
  }
}

}  // namespace
}  // namespace vfiod
