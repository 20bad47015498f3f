#!/usr/bin/env bash
# Builds vfiod and runs every test: the Bazel tests, then the VM lab suite (vfiod against real
# vfio-pci devices in a QEMU guest: tests/lab/run_lab_suite.sh). Installs what it needs first
# (tools/bootstrap.sh). Extra arguments go to `bazel test` (e.g. --config=asan, or a target
# pattern after --). VFIOD_LAB=0 skips the lab suite.
#
# QEMU 11 (for the vfio-user tests in tests/vmm): tools/lab/qemu11.sh fetches it into
# .lab-cache/qemu11 (pinned, cached; no network once cached) and the Bazel tests get its runner
# as --test_env=VFIOD_QEMU11=... (plus the extracted tree's stamp, so a new pin re-runs them).
# When it cannot be had, the tests skip and say why, and the summary says QEMU 11 is absent.
# VFIOD_QEMU11=PATH uses that QEMU instead; VFIOD_QEMU11=none leaves it out.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh || exit 1

log=$(mktemp /tmp/vfiod-test.XXXXXX)
trap 'rm -f "$log"' EXIT
bazel build //... || exit 1

qemu11_env=()
qemu11_note=""
if [[ ${VFIOD_QEMU11:-} == none ]]; then
  qemu11_note="QEMU 11: left out (VFIOD_QEMU11=none), tests/vmm skipped"
elif [[ -n ${VFIOD_QEMU11:-} ]]; then
  qemu11_env=(--test_env=VFIOD_QEMU11="$VFIOD_QEMU11")
elif qemu11=$(tools/lab/qemu11.sh fetch); then
  qemu11_env=(--test_env=VFIOD_QEMU11="$qemu11"
    --test_env=VFIOD_QEMU11_TREE="$(cat "${LAB_CACHE:-$PWD/.lab-cache}/qemu11/root/.complete")")
else
  qemu11_note="QEMU 11: ABSENT (tools/lab/qemu11.sh fetch failed, see above), tests/vmm skipped"
  echo "test: $qemu11_note" >&2
fi
bazel test //... "${qemu11_env[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=$(grep -cE '^//\S+\s+(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//\S+\s+.*(FAILED|TIMEOUT|NO STATUS|INCOMPLETE)' "$log")
summary="bazel: $passed passed, $failed failed"
if [[ -n $qemu11_note ]]; then summary+=" ($qemu11_note)"; fi

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
