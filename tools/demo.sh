#!/usr/bin/env bash
# A walk through vfiod on a QEMU edu device with vfioctl: device description, config space, then
# one owner session that exercises the edu registers, a DMA round trip through guest memory and
# an MSI delivered to a daemon-owned eventfd; then the observer's view
# (tools/demo_walkthrough.sh). Then a real VMM on the same daemon (tools/demo_qemu.sh): an
# unmodified QEMU 11 (tools/lab/qemu11.sh: Debian trixie-backports, pinned, cached, never
# installed) attaches with -device vfio-user-pci under the qtest accelerator and, driven by
# tests/vmm:qemu_edu_demo, reads the ids, computes a factorial and does a DMA round trip through
# its guest RAM, while `vfioctl state` shows QEMU as the owner with its DMA mappings; after QEMU
# quits, nothing is left. Exits 0 only when every step succeeded.
#
#   tools/demo.sh          the REAL edu device: boots the VM lab (tools/lab/lab.sh; QEMU guest
#                          with the device bound to vfio-pci, QEMU 11 inside it), starts vfiod
#                          --device=<its PCI address> in the guest and walks through it there
#   tools/demo.sh --sim    the simulated edu device (vfiod --device=sim:edu) on this machine,
#                          QEMU 11 on this machine too
set -euo pipefail
cd "$(dirname "$0")/.."

mode=lab
case ${1:-} in
  "") ;;
  --sim) mode=sim ;;
  --lab) mode=lab ;;
  *)
    echo "usage: tools/demo.sh [--sim]" >&2
    exit 2
    ;;
esac

tools/bootstrap.sh
bazel build //daemon:vfiod //client:vfioctl //tests/vmm:qemu_edu_demo
# QEMU 11 for the QEMU step (fetched once into .lab-cache/qemu11, then no network).
qemu11=$(tools/lab/qemu11.sh fetch)

if [[ $mode == lab ]]; then
  bin=$(bazel info bazel-bin 2>/dev/null)
  echo "demo: booting the VM lab; vfiod serves the real edu device (vfio-pci) inside it"
  # guest_suite.sh's walkthrough part: vfiod --device=$LAB_EDU, then tools/demo_walkthrough.sh;
  # its qemu_walkthrough part: vfiod --vfio-user on the same device, then tools/demo_qemu.sh
  # with QEMU 11 in the guest (lab.sh --qemu11).
  status=0
  tools/lab/lab.sh run --timeout "${LAB_TIMEOUT:-180}" --qemu11 --env LAB_SUITE_VERBOSE=1 \
    --add "$bin/daemon/vfiod:/demo/vfiod" --add "$bin/client/vfioctl:/demo/vfioctl" \
    --add "$bin/tests/vmm/qemu_edu_demo:/demo/qemu_edu_demo" \
    --add "$PWD/tools/demo_walkthrough.sh:/demo/demo_walkthrough.sh" \
    --add "$PWD/tools/demo_qemu.sh:/demo/demo_qemu.sh" \
    -- "$PWD/tests/lab/guest_suite.sh" /demo walkthrough qemu_walkthrough || status=$?
  case $status in
    0) echo "demo: every step succeeded (real edu device under vfio-pci)" ;;
    1) echo "demo: FAILED: a step failed in the guest (see above)" >&2 ;;
    *) echo "demo: FAILED: the VM lab failed (exit $status; see above)" >&2 ;;
  esac
  exit "$status"
fi

vfiod=bazel-bin/daemon/vfiod
vfioctl=bazel-bin/client/vfioctl
dir=$(mktemp -d /tmp/vfiod.XXXXXX)
sock=$dir/edu.sock
vfu=$dir/edu.vfu
daemon_pid=

cleanup() {
  local status=$?
  if [[ -n $daemon_pid ]] && kill -TERM "$daemon_pid" 2>/dev/null; then
    for _ in $(seq 50); do
      kill -0 "$daemon_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
  if ((status == 0)); then
    echo "demo: every step succeeded"
  else
    echo "demo: FAILED (exit $status); daemon log follows" >&2
    [[ -f $dir.log ]] && cat "$dir.log" >&2
  fi
  rm -f "$dir.log"
  exit "$status"
}
trap cleanup EXIT

step() { printf '\n=== %s\n' "$*"; }

step "starting vfiod --device=sim:edu --listen=$sock --vfio-user=$vfu"
"$vfiod" --device=sim:edu --listen="$sock" --vfio-user="$vfu" 2>"$dir.log" &
daemon_pid=$!
for _ in $(seq 100); do
  [[ -S $sock && -S $sock.fds ]] && break
  kill -0 "$daemon_pid" 2>/dev/null || { echo "demo: vfiod exited at start-up" >&2; exit 1; }
  sleep 0.1
done
[[ -S $sock ]] || { echo "demo: no socket at $sock after 10s" >&2; exit 1; }

"$PWD/tools/demo_walkthrough.sh" "$vfioctl" "$sock"

step "a real VMM on the same daemon: QEMU 11 attaches to $vfu (-device vfio-user-pci)"
"$PWD/tools/demo_qemu.sh" "$vfioctl" bazel-bin/tests/vmm/qemu_edu_demo "$qemu11" "$vfu" "$sock"
