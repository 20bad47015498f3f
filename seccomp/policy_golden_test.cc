// `vfiod --print-policy` (the policy as the daemon loads it) must equal the checked-in golden
// text seccomp/vfiod.pfc, so that any change to the policy shows in review. After an intended
// change: bazel run //daemon:vfiod -- --print-policy > seccomp/vfiod.pfc
//
// The text is libseccomp's, so it depends on the library the build links (Debian 12's 2.5.4):
// a mismatch under another version names both versions.
#include <seccomp.h>
#include <stdio.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "seccomp/policy.h"

namespace vfiod::seccomp {
namespace {

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace != nullptr ? workspace : "vfiod", "/", path);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Output(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  EXPECT_EQ(::pclose(pipe), 0) << command;
  return out;
}

// The libseccomp version vfiod.pfc was printed with.
constexpr char kGoldenLibseccomp[] = "2.5.4";

// A note naming both versions when the linked libseccomp is not kGoldenLibseccomp, else "".
std::string LibseccompNote() {
  const scmp_version* version = seccomp_version();
  const std::string linked = absl::StrCat(version->major, ".", version->minor, ".", version->micro);
  if (linked == kGoldenLibseccomp) return "";
  return absl::StrCat(" (vfiod.pfc was printed by libseccomp ", kGoldenLibseccomp,
                      "; this build links libseccomp ", linked,
                      ", which may print the same policy differently)");
}

TEST(PolicyGoldenTest, PrintPolicyMatchesTheGoldenFile) {
  const std::string golden = ReadFile(Runfile("seccomp/vfiod.pfc"));
  ASSERT_FALSE(golden.empty());
  const std::string printed = Output(Runfile("daemon/vfiod") + " --print-policy");
  EXPECT_EQ(printed, golden)
      << "the policy changed: review it, then bazel run //daemon:vfiod -- --print-policy > "
         "seccomp/vfiod.pfc"
      << LibseccompNote();
  // And the binary prints exactly what the library builds.
  absl::StatusOr<std::string> text = PolicyText(PolicyMode::kKill);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, printed);
}

TEST(PolicyGoldenTest, TheGoldenPolicyKillsByDefault) {
  const std::string golden = ReadFile(Runfile("seccomp/vfiod.pfc"));
  EXPECT_NE(golden.find("action KILL_PROCESS;"), std::string::npos);
  EXPECT_EQ(golden.find("action LOG"), std::string::npos);
  EXPECT_EQ(golden.find("action TRAP"), std::string::npos);
}

}  // namespace
}  // namespace vfiod::seccomp
