#!/usr/bin/env bash
# A walk through vfiod on a QEMU edu device with vfioctl: device description, config space, then
# one owner session that exercises the edu registers, a DMA round trip through guest memory and
# an MSI delivered to a daemon-owned eventfd; then the observer's view
# (tools/demo_walkthrough.sh). Exits 0 only when every step succeeded.
#
#   tools/demo.sh          the REAL edu device: boots the VM lab (tools/lab/lab.sh; QEMU guest
#                          with the device bound to vfio-pci), starts vfiod --device=<its PCI
#                          address> in the guest and walks through it there
#   tools/demo.sh --sim    the simulated edu device (vfiod --device=sim:edu) on this machine
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
bazel build //daemon:vfiod //client:vfioctl

if [[ $mode == lab ]]; then
  bin=$(bazel info bazel-bin 2>/dev/null)
  echo "demo: booting the VM lab; vfiod serves the real edu device (vfio-pci) inside it"
  # guest_suite.sh's walkthrough part: vfiod --device=$LAB_EDU, then tools/demo_walkthrough.sh.
  status=0
  tools/lab/lab.sh run --timeout "${LAB_TIMEOUT:-180}" --env LAB_SUITE_VERBOSE=1 \
    --add "$bin/daemon/vfiod:/demo/vfiod" --add "$bin/client/vfioctl:/demo/vfioctl" \
    --add "$PWD/tools/demo_walkthrough.sh:/demo/demo_walkthrough.sh" \
    -- "$PWD/tests/lab/guest_suite.sh" /demo walkthrough || status=$?
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

step "starting vfiod --device=sim:edu --listen=$sock"
"$vfiod" --device=sim:edu --listen="$sock" 2>"$dir.log" &
daemon_pid=$!
for _ in $(seq 100); do
  [[ -S $sock && -S $sock.fds ]] && break
  kill -0 "$daemon_pid" 2>/dev/null || { echo "demo: vfiod exited at start-up" >&2; exit 1; }
  sleep 0.1
done
[[ -S $sock ]] || { echo "demo: no socket at $sock after 10s" >&2; exit 1; }

"$PWD/tools/demo_walkthrough.sh" "$vfioctl" "$sock"
