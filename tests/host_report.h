// Host features the tests probe for instead of assuming (README.md, "What the tests need from
// the host"). Where a probe finds a feature missing, the checks that need it cannot be made on
// this host: that is neither a pass nor a failure, and it is never silent. The test reports it
// here, and tools/test.sh lists every such report after a run.
#ifndef VFIOD_TESTS_HOST_REPORT_H_
#define VFIOD_TESTS_HOST_REPORT_H_

#include <cstdint>
#include <string>

namespace vfiod::testing {

// Prints one line "not applicable: CHECK: REASON" on stdout (the test log) and records it as
// the current test's "not_applicable" property (its XML result; a later report in the same test
// replaces the property, the printed lines keep them all). `reason` names the probe and what it
// saw. Only for checks a missing host feature rules out, never for a check that failed.
void ReportNotApplicable(const std::string& check, const std::string& reason);

// "signal 11 (Segmentation fault)": a signal as a report names it.
std::string SignalText(int signal);

// A probe: whether `id` is mapped in this process's user namespace, by `map_path`
// (/proc/self/uid_map or /proc/self/gid_map: "inside outside count" lines). False when the map
// cannot be read.
bool IdMapped(const std::string& map_path, uint32_t id);

}  // namespace vfiod::testing

#endif  // VFIOD_TESTS_HOST_REPORT_H_
