#!/usr/bin/env bash
# The VM lab suite: vfiod against real Linux vfio-pci devices, in one boot of the lab's guest
# (tools/lab/lab.sh; QEMU's edu, e1000e, nvme, virtio-net and pci-testdev bound to vfio-pci).
#
#   tests/lab/run_lab_suite.sh [--keep] [PART...]
#
# Builds what it needs, boots the lab once and runs tests/lab/guest_suite.sh in the guest, which
# runs, in order:
#   edu_scenario  tests/edu_scenario_test, unchanged, with VFIOD_DEVICE=$LAB_EDU
#   owner_loss    tests/owner_loss_test, unchanged (SIGKILLed owner; spawn mode)
#   zoo           tests/lab/zoo_test: every zoo device served, `vfioctl --json info/config`
#                 compared with sysfs, MSI-X all vectors + mask/unmask, kernel-checked owner
#                 loss, vfiod SIGKILLed and restarted on the same device
#   jailed_ioctl  tests/lab/jailed_ioctl_test: a process jailed and filtered like vfiod, on the
#                 real edu device's fds, lives through SET_IRQS and dies by SIGSYS on
#                 PCI_HOT_RESET (MAP_DMA's number) and other requests on the device fd
#   jail          tests/jail_test, unchanged, on the real edu device: the serving process seen
#                 through /proc, as root with CAP_SYS_RESOURCE (RLIMIT_MEMLOCK raised, not
#                 clamped as on a host without it)
#   policy_kernel seccomp/policy_kernel_test, unchanged, on the guest's kernel, which has the
#                 i386 system-call entry (VFIOD_EXPECT_I386_ENTRY=1): the i386 case is checked
#                 even where the host's kernel has no such entry
#   walkthrough   the vfioctl walk-through of tools/demo.sh on the real edu device
#   qemu_walkthrough  the QEMU step of tools/demo.sh (tools/demo_qemu.sh) on the real edu
#   qemu_real     tests/lab/qemu_real_test: QEMU 11 (lab.sh --qemu11 puts it in the guest) under
#                 qtest attached over vfio-user to vfiod on edu, e1000e and nvme: config space
#                 and BARs through QEMU against sysfs and vfiod's gRPC ReadRegion, edu's
#                 factorial and DMA through QEMU's guest RAM, QEMU SIGKILLed with DMA mapped and
#                 interrupts on (no mapping, IRQ or bus master left; /proc/interrupts clean), a
#                 new QEMU on the same daemon
#   host_request  tests/lab/host_request_test: the edu device unbound from vfio-pci while vfiod
#                 serves it: without an owner REQ trigger vfiod stops (exit 0) and the unbind
#                 returns; with one, the owner's eventfd gets the request, and vfiod stops
#                 after the owner goes (the kernel's 10 s re-request); rebound afterwards
# and prints a summary with timings, every skipped test and every check reported not
# applicable. Exit codes are the lab's: 0 every part passed, 1 a part failed, 2 the lab (or the
# build) failed. Environment: see tools/lab/README.md (LAB_CACHE, LAB_ACCEL, LAB_TIMEOUT, ...);
# BAZEL (default bazel); VFIOD_LAB_VFIOD: a vfiod binary the parts use instead of the build's
# (e.g. one built from an older commit, to see a lab test fail without a fix).
set -uo pipefail
cd "$(dirname "$0")/../.."

keep=()
if [[ ${1:-} == --keep ]]; then
  keep=(--keep)
  shift
fi
parts=("$@")

BAZEL=${BAZEL:-bazel}
t_start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

targets=(//daemon:vfiod //client:vfioctl //tests:edu_scenario_test //tests:owner_loss_test
  //tests:owner_process //tests/lab:zoo_test //tests/lab:jailed_ioctl_test //tests:jail_test
  //seccomp:policy_kernel_test //tests/lab:qemu_real_test //tests/vmm:qemu_edu_demo
  //tests/lab:host_request_test)
echo "lab-suite: building ${targets[*]}"
if ! "$BAZEL" build "${targets[@]}"; then
  echo "lab-suite: RESULT: ERROR (the build failed)" >&2
  exit 2
fi
bin=$("$BAZEL" info bazel-bin 2>/dev/null) || { echo "lab-suite: bazel info bazel-bin failed" >&2; exit 2; }
t_build=$(elapsed "$t_start")

# Everything goes to /suite in the guest (links to the files' real paths, which the lab also
# stages, so $ORIGIN RUNPATHs resolve).
suite=/suite
adds=(
  --add "${VFIOD_LAB_VFIOD:-$bin/daemon/vfiod}:$suite/vfiod"
  --add "$bin/client/vfioctl:$suite/vfioctl"
  --add "$bin/tests/edu_scenario_test:$suite/edu_scenario_test"
  --add "$bin/tests/owner_loss_test:$suite/owner_loss_test"
  --add "$bin/tests/lab/zoo_test:$suite/zoo_test"
  --add "$bin/tests/lab/jailed_ioctl_test:$suite/jailed_ioctl_test"
  --add "$bin/tests/jail_test:$suite/jail_test"
  --add "$bin/seccomp/policy_kernel_test:$suite/policy_kernel_test"
  --add "$bin/tests/lab/qemu_real_test:$suite/qemu_real_test"
  --add "$bin/tests/lab/host_request_test:$suite/host_request_test"
  --add "$bin/tests/vmm/qemu_edu_demo:$suite/qemu_edu_demo"
  --add "$PWD/tools/demo_qemu.sh:$suite/demo_qemu.sh"
  --add "${VFIOD_LAB_VFIOD:-$bin/daemon/vfiod}:$suite/runfiles/vfiod/daemon/vfiod"
  --add "$bin/tests/owner_process:$suite/runfiles/vfiod/tests/owner_process"
  --add "$PWD/tools/demo_walkthrough.sh:$suite/demo_walkthrough.sh"
)
# cc_test binaries link the project's libraries dynamically from $ORIGIN/../_solib_k8 (Bazel's
# fastbuild); the lab stages shared libraries at the path ldd names, which is not where $ORIGIN
# points from the binary's real path, so put them there too.
declare -A solibs=()
for test in tests/edu_scenario_test tests/owner_loss_test tests/lab/zoo_test \
  tests/lab/jailed_ioctl_test tests/jail_test seccomp/policy_kernel_test tests/lab/qemu_real_test \
  tests/lab/host_request_test; do
  while read -r lib; do
    solibs[$lib]=1
  done < <(ldd "$bin/$test" | awk '$3 ~ /\/_solib_[^\/]*\// {print $3}')
done
for lib in "${!solibs[@]}"; do
  dir=$(basename "$(dirname "$lib")")
  adds+=(--add "$lib:$(realpath "$bin")/$dir/$(basename "$lib")")
done

# QEMU 11 in the guest (about 68 MB more initramfs) only for a run with a qemu_* part.
qemu11=()
if ((${#parts[@]} == 0)) || [[ " ${parts[*]} " == *" qemu_"* ]]; then qemu11=(--qemu11); fi

console=$(mktemp /tmp/vfiod-lab-suite.XXXXXX)
labout=$(mktemp /tmp/vfiod-lab-suite-stderr.XXXXXX)
trap 'rm -f "$console" "$labout"' EXIT

echo "lab-suite: booting the lab (${parts[*]:-all parts})"
t_lab=$(date +%s.%N)
tools/lab/lab.sh run --timeout "${LAB_TIMEOUT:-300}" "${qemu11[@]}" "${keep[@]}" "${adds[@]}" --log "$console" \
  -- "$PWD/tests/lab/guest_suite.sh" "$suite" "${parts[@]}" 2> >(tee "$labout" >&2)
lab_rc=$?
wait # for tee
t_lab=$(elapsed "$t_lab")

echo
echo "lab-suite: summary"
printf '  %-16s %-6s %s\n' PART RESULT SECONDS
n_parts=0
n_failed=0
while read -r line; do
  name=$(sed -n 's/.* name=\([^ ]*\).*/\1/p' <<<"$line")
  result=$(sed -n 's/.* result=\([^ ]*\).*/\1/p' <<<"$line")
  seconds=$(sed -n 's/.* seconds=\([^ ]*\).*/\1/p' <<<"$line")
  printf '  %-16s %-6s %s\n' "$name" "$result" "$seconds"
  n_parts=$((n_parts + 1))
  [[ $result == PASS ]] || n_failed=$((n_failed + 1))
done < <(grep -a '^LAB-SUITE-PART:' "$console" | tr -d '\r')
# One line per failed or skipped test (gtest's result line, which ends with its time), and
# one per check reported not applicable (tests/host_report.h).
grep -aE '^\[ *(FAILED|SKIPPED) *\] [A-Za-z].* \([0-9]+ ms\)|^not applicable: ' "$console" |
  tr -d '\r' | sed -E 's/, where GetParam\(\) = / /; s/^/  /'
lab_summary=$(grep -a '^lab: result:' "$labout" | tail -n 1)
echo "  ${lab_summary#lab: }"
echo "  build ${t_build}s, lab run ${t_lab}s, whole suite $(elapsed "$t_start")s"

case $lab_rc in
  0)
    if ((n_parts == 0)); then
      echo "lab-suite: RESULT: ERROR (no part reported)"
      exit 2
    fi
    echo "lab-suite: RESULT: PASS ($n_parts parts)"
    exit 0
    ;;
  1)
    echo "lab-suite: RESULT: FAIL ($n_failed of $n_parts parts failed)"
    exit 1
    ;;
  *)
    echo "lab-suite: RESULT: ERROR (the lab failed, exit $lab_rc; see above)"
    exit 2
    ;;
esac
