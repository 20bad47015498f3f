#!/usr/bin/env bash
# Builds vfiod and runs every test: the Bazel tests, then the VM lab suite (vfiod against real
# vfio-pci devices in a QEMU guest: tests/lab/run_lab_suite.sh). Installs what it needs first
# (tools/bootstrap.sh). Extra arguments go to `bazel test` (e.g. --config=asan, or a target
# pattern after --). VFIOD_LAB=0 skips the lab suite.
#
# After the Bazel tests it lists, from their logs, every skipped test with its reason and every
# check reported not applicable on this host (tests/host_report.h), so that nothing a missing
# host feature ruled out passes silently (README.md, "What the tests need from the host").
#
# Then the guest boots on a vfiod device (tests/vmm/run_guest_boot.sh: QEMU 11 boots the lab's
# kernel twice, without and with an emulated IOMMU, its edu served by vfiod over vfio-user;
# about 20 s); VFIOD_GUEST_BOOT=0 skips them. It reports SKIPPED (and runs its control on
# QEMU's own edu) when vfiod has no vfio-user server.
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
if [[ ${VFIOD_GUEST_BOOT:-1} == 0 || ${VFIOD_QEMU11:-} == none ]]; then
  summary+="; guest boot: skipped (VFIOD_GUEST_BOOT=0 or VFIOD_QEMU11=none)"
else
  tests/vmm/run_guest_boot.sh
  boot_status=$?
  case $boot_status in
    0) summary+="; guest boot on vfiod: PASS" ;;
    1) summary+="; guest boot on vfiod: FAIL" ;;
    3) summary+="; guest boot on vfiod: SKIPPED (vfiod has no --vfio-user; the control on QEMU's edu passed)" ;;
    *) summary+="; guest boot on vfiod: ERROR (exit $boot_status)" ;;
  esac
  if ((boot_status != 3 && status == 0)); then status=$boot_status; fi
fi
echo "$summary"
exit "$status"
