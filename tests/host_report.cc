#include "tests/host_report.h"

#include <string.h>

#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace vfiod::testing {

void ReportNotApplicable(const std::string& check, const std::string& reason) {
  const std::string line = absl::StrCat(check, ": ", reason);
  std::cout << "not applicable: " << line << std::endl;
  ::testing::Test::RecordProperty("not_applicable", line);
}

std::string SignalText(int signal) {
  return absl::StrCat("signal ", signal, " (", ::strsignal(signal), ")");
}

bool IdMapped(const std::string& map_path, uint32_t id) {
  std::ifstream in(map_path);
  uint64_t inside, outside, count;
  while (in >> inside >> outside >> count) {
    if (id >= inside && id - inside < count) return true;
  }
  return false;
}

}  // namespace vfiod::testing
