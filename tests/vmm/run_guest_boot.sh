#!/usr/bin/env bash
# A Linux guest on a device that vfiod serves over vfio-user, with an unmodified QEMU 11.
#
#   tests/vmm/run_guest_boot.sh [--keep] [--control] [--plain | --viommu]
#
# Two boots by default, each on a fresh vfiod: "plain" (no IOMMU) and "viommu"; --plain or
# --viommu runs one.
#
# vfiod --device=sim:edu --vfio-user=SOCK --listen=GRPC runs on the host (jailed, enforcing
# seccomp: its defaults). QEMU 11 (tools/lab/qemu11, TCG) boots the VM lab's kernel and
# initramfs (tools/lab/lab.sh run --no-zoo --no-iommu) with guest RAM in a shared memfd and
# `-device vfio-user-pci` on SOCK at 00:04.0, so the guest's edu is vfiod's. In the guest,
# tests/vmm:edu_guest_check (static) checks ids, BAR0 and the MSI capability from sysfs,
# computes factorials through an mmap of resource0, runs an edu DMA round trip into guest memory
# (physical addresses from /proc/self/pagemap: without an IOMMU, IOVA == guest-physical), and
# binds the device to uio_pci_generic to receive two INTx interrupts that the guest kernel
# handles and counts in /proc/interrupts. While the guest holds its interrupt armed
# (VMM-OBSERVE on the console), the host asks `vfioctl --socket GRPC state` as an observer and
# checks: QEMU is the owner, guest RAM is mapped for DMA, INTx is enabled. After the guest powers
# off: no owner, no mapping, no enabled interrupt, bus mastering off, and vfiod stops cleanly on
# SIGTERM.
#
# The viommu boot adds QEMU's emulated VT-d (intremap, caching-mode: QEMU's vfio needs it to follow the
# guest's mappings) with the guest booted intel_iommu=on iommu=pt (so the steps above keep
# IOVA == guest-physical), and the guest program's --vfio part: the device rebound to vfio-pci
# in the guest, a DMA round trip at guest-chosen IOVAs (VFIO_IOMMU_MAP_DMA in the guest becomes
# vIOMMU mappings, which QEMU sends to vfiod as DMA_MAP), and an MSI the guest kernel counts
# as vfio-msi. The observer then also checks MSI enabled and the IOVA window mapped.
#
# Without --vfio-user in vfiod (the server not on this branch yet) the guest runs against QEMU's
# own emulated edu instead (the control: same program, same boot) and the vfiod part is reported
# SKIPPED. --control runs the control as well (in the plain configuration).
#
# Exit codes: 0 pass, 1 a check failed, 2 the harness failed (build, fetch, boot, timeout),
# 3 skipped (no vfio-user server in vfiod; the control passed). Environment: BAZEL (default
# bazel), LAB_CACHE, LAB_TIMEOUT (default 90), VFIOD_GUEST_HOLD_MS (default 600: the guest waits that long for the observer).
set -uo pipefail
cd "$(dirname "$0")/../.."

keep=0 control=0 modes=(plain viommu)
viommu=0 # the configuration of the boot under way
for arg in "$@"; do
  case $arg in
    --keep) keep=1 ;;
    --control) control=1 ;;
    --plain) modes=(plain) ;;
    --viommu) modes=(viommu) ;;
    *) echo "usage: tests/vmm/run_guest_boot.sh [--keep] [--control] [--plain | --viommu]" >&2; exit 2 ;;
  esac
done

BAZEL=${BAZEL:-bazel}
HOLD_MS=${VFIOD_GUEST_HOLD_MS:-600}
now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
log() { echo "guest-boot: $*" >&2; }
t_start=$(now)

work=$(mktemp -d /tmp/vfiodg.XXXXXX)
vfiod_pid=""
cleanup() {
  if [[ -n $vfiod_pid ]] && kill -0 "$vfiod_pid" 2>/dev/null; then
    kill -TERM "$vfiod_pid" 2>/dev/null
    wait "$vfiod_pid" 2>/dev/null
  fi
  if ((keep)); then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# Build and fetch

targets=(//daemon:vfiod //client:vfioctl //tests/vmm:edu_guest_check)
log "building ${targets[*]}"
"$BAZEL" build "${targets[@]}" 2>"$work/build.log" || {
  tail -n 30 "$work/build.log" >&2
  log "RESULT: ERROR (the build failed)"
  exit 2
}
bin=$("$BAZEL" info bazel-bin 2>/dev/null) || { log "RESULT: ERROR (bazel info failed)"; exit 2; }
vfiod=$bin/daemon/vfiod vfioctl=$bin/client/vfioctl guest_check=$bin/tests/vmm/edu_guest_check
t_fetch=$(now)
qemu11=$(tools/lab/qemu11.sh fetch) || { log "RESULT: ERROR (QEMU 11 is absent: tools/lab/qemu11.sh fetch failed)"; exit 2; }
log "QEMU 11 ready in $(elapsed "$t_fetch")s: $("$qemu11" --version | head -n1)"
t_prep=$(elapsed "$t_start")

# boot NAME LOG QEMU-DEVICE-ARGS...: the lab guest on QEMU 11 with edu_guest_check, in the
# configuration $viommu says, its files in $run_dir; reacts to VMM-OBSERVE by saving vfioctl's
# view in $run_dir/observe{,-msi}.{txt,json} (when vfiod runs). Sets BOOT_RC (lab.sh's exit
# code) and BOOT_SUMMARY (lab.sh's result line).
boot() {
  local name=$1 console=$2 line
  shift 2
  local -a qemu_args=() guest_args=(--hold-ms="$HOLD_MS")
  local kernel_args=""
  if ((viommu)); then
    # The IOMMU before the device (QEMU wants it created first).
    qemu_args+=(--qemu-arg -device --qemu-arg intel-iommu,intremap=on,caching-mode=on)
    kernel_args="intel_iommu=on iommu=pt"
    guest_args+=(--vfio)
  fi
  for line in "$@"; do qemu_args+=(--qemu-arg "$line"); done
  log "$name: booting the guest (QEMU 11, TCG, 256 MiB, $( ((viommu)) && echo "VT-d, iommu=pt" || echo "no IOMMU"))"
  LAB_QEMU=$qemu11 LAB_ACCEL=tcg LAB_KERNEL_ARGS=$kernel_args tools/lab/lab.sh run --no-zoo \
    --no-iommu --mem 256 --timeout "${LAB_TIMEOUT:-90}" --log "$console" "${qemu_args[@]}" \
    -- "$guest_check" "${guest_args[@]}" 2>"$run_dir/lab.stderr" |
    while IFS= read -r line; do
      line=${line//$'\r'/}
      case $line in
        VMM-OBSERVE:*)
          echo "  $line"
          if [[ -n $vfiod_pid ]]; then
            # observe.* for the INTx hold, observe-msi.* for the MSI hold.
            local what=observe
            [[ $line == *msi-armed* ]] && what=observe-msi
            "$vfioctl" --socket "$run_dir/grpc.sock" state >"$run_dir/$what.txt" 2>&1
            "$vfioctl" --socket "$run_dir/grpc.sock" --json state >"$run_dir/$what.json" 2>&1
            echo "  (observer: vfioctl state taken)"
          fi
          ;;
        EDU-* | LAB-RESULT:* | LAB-INIT:* | LAB-DONE:*) echo "  $line" ;;
      esac
    done
  BOOT_RC=${PIPESTATUS[0]}
  BOOT_SUMMARY=$(grep -a '^lab: result:' "$run_dir/lab.stderr" | tail -n1)
  if ((BOOT_RC == 2)); then
    sed 's/^/  /' "$run_dir/lab.stderr" | tail -n 40 >&2
  fi
  echo "  ${BOOT_SUMMARY#lab: }"
}

control_run() {
  viommu=0 run_dir=$work/control
  mkdir -p "$run_dir"
  boot control "$run_dir/console" -device edu,addr=04.0
  CONTROL_RC=$BOOT_RC
}

# ---------------------------------------------------------------------------------------------
# Without the vfio-user server: the control only

# (The whole help first: grep -q in a pipe would SIGPIPE vfiod and fail the pipeline.)
vfiod_help=$("$vfiod" --help 2>&1)
if ! grep -q -- '--vfio-user' <<<"$vfiod_help"; then
  reason="vfiod has no vfio-user server ($vfiod --help does not name --vfio-user)"
  log "SKIPPED: $reason; running the control (QEMU 11's own edu) instead"
  control_run
  echo "guest-boot: prepare ${t_prep}s, whole $(elapsed "$t_start")s"
  if ((CONTROL_RC != 0)); then
    log "RESULT: ERROR (the control run failed, exit $CONTROL_RC: the harness, not vfiod)"
    exit 2
  fi
  log "RESULT: SKIPPED ($reason; the control passed)"
  exit 3
fi
if ((control)); then
  control_run
  ((CONTROL_RC == 0)) || { log "RESULT: ERROR (the control run failed, exit $CONTROL_RC)"; exit 2; }
fi

# ---------------------------------------------------------------------------------------------
# vfiod

failures=0
check() { # check OK NAME DETAIL
  if [[ $1 == 1 ]]; then echo "  HOST-CHECK: PASS $2 $3"; else
    echo "  HOST-CHECK: FAIL $2 $3"
    failures=$((failures + 1))
  fi
}
has() { grep -q -- "$1" "$2" 2>/dev/null && echo 1 || echo 0; }
lacks() { grep -q -- "$1" "$2" 2>/dev/null && echo 0 || echo 1; }

# vfiod_run MODE: a fresh vfiod, one boot in MODE (plain or viommu), the observer's checks.
# Returns 0 pass, 1 a check failed, 2 the boot or vfiod failed.
vfiod_run() {
  local mode=$1 t_vfiod guest_rc raised command master vfiod_rc
  run_dir=$work/$mode
  mkdir -p "$run_dir"
  viommu=0
  [[ $mode == viommu ]] && viommu=1
  failures=0
  if [[ -n $vfiod_pid ]] && kill -0 "$vfiod_pid" 2>/dev/null; then # a failed mode's
    kill -TERM "$vfiod_pid" && wait "$vfiod_pid"
  fi
  t_vfiod=$(now)
  "$vfiod" --device=sim:edu --vfio-user="$run_dir/vu.sock" --listen="$run_dir/grpc.sock" \
    2>"$run_dir/vfiod.log" &
  vfiod_pid=$!
  local deadline=$((SECONDS + 20))
  until [[ -S $run_dir/vu.sock ]] && "$vfioctl" --socket "$run_dir/grpc.sock" --timeout 1s state >/dev/null 2>&1; do
    if ! kill -0 "$vfiod_pid" 2>/dev/null || ((SECONDS > deadline)); then
      tail -n 20 "$run_dir/vfiod.log" >&2
      log "$mode: ERROR (vfiod did not start serving)"
      return 2
    fi
    sleep 0.05
  done
  log "$mode: vfiod serves (pid $vfiod_pid, $(elapsed "$t_vfiod")s): vfio-user $run_dir/vu.sock, gRPC $run_dir/grpc.sock"

  local device_json="{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$run_dir/vu.sock\"},\"addr\":\"04.0\"}"
  boot "$mode" "$run_dir/console" \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    -device "$device_json"
  guest_rc=$BOOT_RC

  # The observer's view, during and after

  if [[ -f $run_dir/observe.json ]]; then
    echo "  vfioctl state while the guest held INTx armed:"
    sed -n '/^Owner attached/p; /^DMA mappings/,/^$/p; /^IRQs/,/^$/p' "$run_dir/observe.txt" | sed 's/^/    /'
    check "$(has '"ownerAttached":true' "$run_dir/observe.json")" observer-owner "QEMU is the owner"
    check "$(has '"dmaMappings":\[{' "$run_dir/observe.json")" observer-dma \
      "$(grep -o '"iova":"[0-9]*"' "$run_dir/observe.json" | wc -l) DMA mapping(s) of guest RAM"
    check "$(has '"index":"IRQ_INDEX_INTX","enabled":true' "$run_dir/observe.json")" observer-intx \
      "INTx enabled with QEMU's eventfd"
  else
    check 0 observer "the guest never reached VMM-OBSERVE"
  fi

  if ((viommu)); then
    if [[ -f $run_dir/observe-msi.json ]]; then
      echo "  vfioctl state while the guest held MSI armed (vfio-pci in the guest):"
      sed -n '/^DMA mappings/,/^$/p; /^  MSI/,/^  REQ/p' "$run_dir/observe-msi.txt" | sed 's/^/    /'
      check "$(has '"index":"IRQ_INDEX_MSI","enabled":true' "$run_dir/observe-msi.json")" observer-msi \
        "MSI enabled with QEMU's eventfd"
      # The guest's VFIO_IOMMU_MAP_DMA at IOVA 0x100000 arrives as a DMA_MAP at that IOVA.
      check "$(has '"iova":"1048576"' "$run_dir/observe-msi.json")" observer-viommu-dma \
        "a DMA window at the guest's IOVA 0x100000"
    else
      check 0 observer-msi "the guest never reached VMM-OBSERVE: msi-armed"
    fi
  fi

  # QEMU has exited (the guest powered off): vfiod has dropped everything and still serves.
  sleep 0.2
  "$vfioctl" --socket "$run_dir/grpc.sock" --json state >"$run_dir/after.json" 2>&1
  check "$(has '"ownerAttached":false' "$run_dir/after.json")" after-owner "no owner after QEMU exited"
  check "$(lacks '"dmaMappings":\[{' "$run_dir/after.json")" after-dma "no DMA mapping left"
  check "$(lacks '"enabled":true' "$run_dir/after.json")" after-irqs "no interrupt enabled"
  # The guest's two interrupts were raised by vfiod's device model, not by QEMU.
  raised=$(grep -o '"device":{[^}]*}' "$run_dir/after.json" | grep -o '"interrupts":"[0-9]*"' | tr -dc 0-9)
  check "$( ((${raised:-0} >= 2)) && echo 1 || echo 0)" after-device-interrupts \
    "vfiod's edu raised ${raised:-no} interrupt(s)"
  command=$("$vfioctl" --socket "$run_dir/grpc.sock" config read 4 2 2>&1)
  master=$((command & 4))
  check "$([[ $command =~ ^(0x)?[0-9a-fA-F]+$ ]] && ((master == 0)) && echo 1 || echo 0)" \
    after-bus-master "command register $command"

  kill -TERM "$vfiod_pid"
  wait "$vfiod_pid"
  vfiod_rc=$?
  vfiod_pid=""
  check "$( ((vfiod_rc == 0)) && echo 1 || echo 0)" vfiod-exit "vfiod's exit status on SIGTERM: $vfiod_rc"
  # (A system call outside the seccomp policy kills the daemon: the launcher then dies of SIGSYS,
  # a non-zero status above, and the log says so.)
  if grep -q 'SIGSYS' "$run_dir/vfiod.log"; then
    check 0 vfiod-seccomp "$(grep 'SIGSYS' "$run_dir/vfiod.log" | head -n 3)"
  fi

  if ((guest_rc == 2)); then
    log "$mode: ERROR (the guest boot failed; see above)"
    return 2
  fi
  if ((guest_rc != 0 || failures != 0)); then
    tail -n 15 "$run_dir/vfiod.log" | sed 's/^/  vfiod: /'
    log "$mode: FAIL (guest exit $guest_rc, $failures host check(s) failed)"
    return 1
  fi
  log "$mode: PASS"
  return 0
}

# ---------------------------------------------------------------------------------------------
# Every mode, then the verdict

declare -A mode_rc=()
overall=0
for mode in "${modes[@]}"; do
  vfiod_run "$mode"
  mode_rc[$mode]=$?
  if ((mode_rc[$mode] == 2)); then
    overall=2
  elif ((mode_rc[$mode] != 0 && overall == 0)); then
    overall=1
  fi
done
verdicts=""
for mode in "${modes[@]}"; do
  case ${mode_rc[$mode]} in
    0) verdicts+=" $mode=PASS" ;;
    1) verdicts+=" $mode=FAIL" ;;
    *) verdicts+=" $mode=ERROR" ;;
  esac
done
echo "guest-boot: prepare ${t_prep}s, whole $(elapsed "$t_start")s;$verdicts"
case $overall in
  0) log "RESULT: PASS" ;;
  1) log "RESULT: FAIL" ;;
  *) log "RESULT: ERROR" ;;
esac
exit "$overall"
