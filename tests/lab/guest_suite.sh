#!/bin/sh
# The lab suite's guest side (busybox sh), started by tests/lab/run_lab_suite.sh through
# `tools/lab/lab.sh run`: runs each part against the real vfio-pci devices of the lab and prints
#   LAB-SUITE-PART: name=NAME result=PASS|FAIL rc=N seconds=S
# per part, then exits 0 only if every part passed.
#
# Usage: guest_suite.sh SUITE_DIR [PART...]
# (parts: edu_scenario owner_loss zoo jailed_ioctl jail policy_kernel walkthrough
# qemu_walkthrough qemu_real host_request; default all, host_request last: it unbinds and
# rebinds the edu device). With LAB_SUITE_VERBOSE=1 a part's output is shown as it runs (tools/demo.sh).
# SUITE_DIR holds vfiod, vfioctl, edu_scenario_test, owner_loss_test, zoo_test,
# jailed_ioctl_test, jail_test, policy_kernel_test, qemu_real_test, host_request_test, qemu_edu_demo,
# demo_walkthrough.sh, demo_qemu.sh and
# runfiles/vfiod/{daemon/vfiod,tests/owner_process}.
set -u
suite=${1:?usage: guest_suite.sh SUITE_DIR [PART...]}
shift
parts=${*:-edu_scenario owner_loss zoo jailed_ioctl jail policy_kernel walkthrough qemu_walkthrough qemu_real host_request}

export VFIOD_BINARY=$suite/vfiod
export VFIOCTL_BINARY=$suite/vfioctl
export OWNER_PROCESS=$suite/runfiles/vfiod/tests/owner_process
export TEST_SRCDIR=$suite/runfiles TEST_WORKSPACE=vfiod
export VFIOD_DEVICE=$LAB_EDU
export GTEST_COLOR=no

uptime_cs() { read -r up _ </proc/uptime && echo "${up%.*}${up#*.}"; }

failed=0
# part NAME COMMAND...: runs one part, its output in /tmp/NAME.log; shows the gtest result lines
# (a skipped test's with its reason: the first line after gtest's "FILE:LINE: Skipped") and the
# "not applicable" lines when it passes, and the whole log (bounded) when it fails.
part() {
  name=$1
  shift
  echo "LAB-SUITE-BEGIN: name=$name"
  start=$(uptime_cs)
  if [ "${LAB_SUITE_VERBOSE:-0}" = 1 ]; then
    "$@"
  else
    "$@" >"/tmp/$name.log" 2>&1
  fi
  rc=$?
  end=$(uptime_cs)
  elapsed=$((end - start))
  seconds=$((elapsed / 100)).$(printf '%02d' $((elapsed % 100)))
  if [ "${LAB_SUITE_VERBOSE:-0}" = 1 ]; then
    [ "$rc" -eq 0 ] && result=PASS || { result=FAIL; failed=1; }
  elif [ "$rc" -eq 0 ]; then
    result=PASS
    awk '/: Skipped$/ { skipping = 1; reason = ""; next }
      skipping && /^\[  SKIPPED \]/ { print $0 (reason == "" ? "" : ": " reason); skipping = 0; next }
      skipping && NF > 0 && reason == "" { reason = $0; next }
      /^\[ *(OK|SKIPPED|PASSED|FAILED) *\]|^walkthrough:|^demo_qemu:|^qemu_real:|^host_request:|^not applicable: / { print }' \
      "/tmp/$name.log"
  else
    result=FAIL
    failed=1
    echo "--- $name failed (rc=$rc); its output (last 400 lines):"
    tail -n 400 "/tmp/$name.log"
    echo "--- end of $name output"
  fi
  echo "LAB-SUITE-PART: name=$name result=$result rc=$rc seconds=$seconds"
}

# The walk-through of tools/demo.sh, on the real edu device.
walkthrough() {
  sock=/tmp/walkthrough.sock
  printf '\n=== starting vfiod --device=%s --listen=%s (the real edu device, vfio-pci)\n' \
    "$LAB_EDU" "$sock"
  "$VFIOD_BINARY" --device="$LAB_EDU" --listen="$sock" 2>/tmp/walkthrough-vfiod.log &
  pid=$!
  i=0
  while [ ! -S "$sock.fds" ] && [ $i -lt 200 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.05
    i=$((i + 1))
  done
  "$suite/demo_walkthrough.sh" "$VFIOCTL_BINARY" "$sock"
  rc=$?
  kill -TERM "$pid"
  wait "$pid"
  daemon_rc=$?
  if [ "$rc" -ne 0 ] || [ "$daemon_rc" -ne 0 ]; then
    echo "walkthrough: vfioctl exit $rc, vfiod exit $daemon_rc; vfiod log:"
    cat /tmp/walkthrough-vfiod.log
    [ "$rc" -ne 0 ] || rc=1
  fi
  return "$rc"
}

# The LAB_DEVICES entries of edu, e1000e and nvme.
qemu_real_devices() {
  for entry in $LAB_DEVICES; do
    case ${entry%%=*} in edu | e1000e | nvme) printf '%s ' "$entry" ;; esac
  done
}

# The QEMU step of tools/demo.sh on the real edu device: vfiod --vfio-user (and --listen for
# vfioctl), QEMU 11 (lab.sh --qemu11) driven by qemu_edu_demo, then tools/demo_qemu.sh's checks.
qemu_walkthrough() {
  sock=/tmp/qwalk.sock
  vfu=/tmp/qwalk.vfu
  printf '\n=== starting vfiod --device=%s --listen=%s --vfio-user=%s (the real edu, vfio-pci)\n' \
    "$LAB_EDU" "$sock" "$vfu"
  "$VFIOD_BINARY" --device="$LAB_EDU" --listen="$sock" --vfio-user="$vfu" 2>/tmp/qwalk-vfiod.log &
  pid=$!
  i=0
  while { [ ! -S "$sock.fds" ] || [ ! -S "$vfu" ]; } && [ $i -lt 200 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.05
    i=$((i + 1))
  done
  "$suite/demo_qemu.sh" "$VFIOCTL_BINARY" "$suite/qemu_edu_demo" "${VFIOD_QEMU11:-/opt/qemu11/qemu11}" \
    "$vfu" "$sock"
  rc=$?
  kill -TERM "$pid"
  wait "$pid"
  daemon_rc=$?
  if [ "$rc" -ne 0 ] || [ "$daemon_rc" -ne 0 ]; then
    echo "qemu_walkthrough: demo exit $rc, vfiod exit $daemon_rc; vfiod log:"
    cat /tmp/qwalk-vfiod.log
    [ "$rc" -ne 0 ] || rc=1
  fi
  return "$rc"
}

for p in $parts; do
  case $p in
    edu_scenario) part edu_scenario "$suite/edu_scenario_test" ;;
    owner_loss) part owner_loss "$suite/owner_loss_test" ;;
    zoo) part zoo "$suite/zoo_test" ;;
    jailed_ioctl) part jailed_ioctl "$suite/jailed_ioctl_test" ;;
    jail) part jail "$suite/jail_test" ;;
    # The guest's kernel has the i386 entry: its absence there would leave the i386 case
    # unchecked everywhere, so it is a failure.
    policy_kernel) part policy_kernel env VFIOD_EXPECT_I386_ENTRY=1 "$suite/policy_kernel_test" ;;
    walkthrough) part walkthrough walkthrough ;;
    qemu_walkthrough) part qemu_walkthrough qemu_walkthrough ;;
    # QEMU 11 on the real devices (run_lab_suite.sh boots with lab.sh --qemu11). The devices
    # QEMU attaches to: edu, e1000e and nvme (virtio-net and pci-testdev add time, not cases).
    qemu_real) part qemu_real env LAB_DEVICES="$(qemu_real_devices)" "$suite/qemu_real_test" ;;
    host_request) part host_request "$suite/host_request_test" ;;
    *)
      echo "guest_suite: unknown part $p"
      failed=1
      ;;
  esac
done
exit $failed
