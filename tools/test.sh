#!/usr/bin/env bash
# Builds vfiod and runs every test: the Bazel tests, then the VM lab suite (vfiod against real
# vfio-pci devices in a QEMU guest: tests/lab/run_lab_suite.sh). Installs what it needs first
# (tools/bootstrap.sh). Extra arguments go to `bazel test` (e.g. --config=asan, or a target
# pattern after --). VFIOD_LAB=0 skips the lab suite.
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
