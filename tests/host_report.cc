#include "tests/host_report.h"

#include <string.h>

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

}  // namespace vfiod::testing
