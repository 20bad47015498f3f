#!/usr/bin/env bash
# Builds vfiod and runs every test: the Bazel tests, then the VM lab suite (vfiod against real
# vfio-pci devices in a QEMU guest: tests/lab/run_lab_suite.sh). Installs what it needs first
# (tools/bootstrap.sh). Extra arguments go to `bazel test` (e.g. --config=asan, or a target
# pattern after --). VFIOD_LAB=0 skips the lab suite.
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
# Test cases that skipped (a passing target may have skipped all of them): each target with the
# reasons its cases gave, so nothing absent passes silently.
skips=""
while read -r target; do
  xml=bazel-testlogs/${target#//}
  xml=${xml/://}/test.xml
  [[ -f $xml ]] || continue
  n=$(grep -c 'result="skipped"' "$xml")
  ((n > 0)) || continue
  skips+="  $target: $n skipped"$'\n'
  skips+=$(sed -n 's/.*<skipped message="\([^"]*\)".*/\1/p' "$xml" |
    sed 's/^[^&]*&#x0A;//; s/&#x0A;/ /g; s/^/    /' | sort -u)$'\n'
done < <(grep -oP '^//\S+(?=\s+(\(cached\) )?PASSED)' "$log")
if [[ -n $skips ]]; then
  echo "test: skipped test cases:"
  printf '%s' "$skips"
  summary+="; $(grep -c ' skipped$' <<<"$skips") passing targets skipped test cases (listed above)"
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
