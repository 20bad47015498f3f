#!/usr/bin/env bash
# Builds vfiod and runs every test: the Bazel tests, then the VM lab suite (vfiod against real
# vfio-pci devices in a QEMU guest: tests/lab/run_lab_suite.sh). Installs what it needs first
# (tools/bootstrap.sh). Extra arguments go to `bazel test` (e.g. --config=asan, or a target
# pattern after --). VFIOD_LAB=0 skips the lab suite.
#
# After the Bazel tests it lists, from their logs, every skipped test with its reason and every
# check reported not applicable on this host (tests/host_report.h), so that nothing a missing
# host feature ruled out passes silently (README.md, "What the tests need from the host").
set -uo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh || exit 1

log=$(mktemp /tmp/vfiod-test.XXXXXX)
trap 'rm -f "$log"' EXIT
bazel build //... || exit 1
bazel test //... "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=$(grep -cE '^//\S+\s+(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//\S+\s+.*(FAILED|TIMEOUT|NO STATUS|INCOMPLETE)' "$log")
summary="bazel: $passed passed, $failed failed"

# host_notes: one line per skipped test ("TARGET TEST: skipped: REASON") and per check not
# applicable ("TARGET: not applicable: CHECK: REASON"), from the logs of the tests just run.
host_notes() {
  local target file
  grep -oE '^//[^ ]+' "$log" | sort -u | while read -r target; do
    file="bazel-testlogs/${target#//}"
    file="${file/://}/test.log"
    [[ -f $file ]] || continue
    # A skip's reason is the first line after gtest's "FILE:LINE: Skipped" (the daemon's log
    # may follow it before the SKIPPED line).
    awk -v target="$target" '
      /: Skipped$/ { collecting = 1; reason = ""; next }
      collecting && /^\[  SKIPPED \] .* \([0-9]+ ms\)$/ {
        name = $0
        sub(/^\[  SKIPPED \] /, "", name)
        sub(/( \([0-9]+ ms\)|, where GetParam\(\) = .*)$/, "", name)
        print target " " name ": skipped: " (reason == "" ? "(no reason given)" : reason)
        collecting = 0
        next
      }
      collecting && NF > 0 && reason == "" { reason = $0 }
      /^not applicable: / { print target ": " $0 }
    ' "$file"
  done
}
notes=$(host_notes)
if [[ -n $notes ]]; then
  echo
  echo "Skipped, or not applicable on this host (README.md, \"What the tests need from the host\"):"
  sed 's/^/  /' <<<"$notes"
  summary+=" ($(grep -c ': skipped: ' <<<"$notes") skipped, $(grep -c ': not applicable: ' \
    <<<"$notes") not applicable on this host: listed above)"
fi

if [[ ${VFIOD_LAB:-1} != 0 ]]; then
  tests/lab/run_lab_suite.sh
  lab_status=$?
  case $lab_status in
    0) summary+="; lab suite: PASS" ;;
    1) summary+="; lab suite: FAIL" ;;
    *) summary+="; lab suite: ERROR (exit $lab_status)" ;;
  esac
  ((status != 0)) || status=$lab_status
else
  summary+="; lab suite: skipped (VFIOD_LAB=0)"
fi
echo "$summary"
exit "$status"
