#!/bin/sh
# Restart figure on a real device (a benchmark, not a test): in the VM lab's guest, N rounds on
# the real edu device bound to vfio-pci. Each round starts vfiod, an owner (one `vfioctl
# --claim session`) registers 2 MiB of memory, maps 64 KiB of it for DMA, enables MSI vector 0
# (a watch eventfd) and reads BAR0's identification register (0x010000ed); then the serving
# (jailed) daemon is SIGKILLed while the owner is still connected. The next round's daemon must
# start on the same device and serve all of that again. Prints one line per round and
#   restart_lab: N/N rounds served ...
#
# On the host (builds, boots the lab once, runs itself in the guest):
#   tools/figures/restart_lab.sh [ROUNDS]        (default 20)
# In the guest (LAB_EDU set by the lab): restart_lab.sh ROUNDS VFIOD VFIOCTL
set -u

if [ -z "${LAB_EDU:-}" ]; then
  cd "$(dirname "$0")/../.." || exit 2
  rounds=${1:-20}
  ${BAZEL:-bazel} build //daemon:vfiod //client:vfioctl || exit 2
  bin=$(${BAZEL:-bazel} info bazel-bin 2>/dev/null) || exit 2
  exec tools/lab/lab.sh run --timeout "${LAB_TIMEOUT:-600}" \
    --add "$bin/daemon/vfiod:/figure/vfiod" --add "$bin/client/vfioctl:/figure/vfioctl" \
    -- "$PWD/tools/figures/restart_lab.sh" "$rounds" /figure/vfiod /figure/vfioctl
fi

rounds=$1 vfiod=$2 vfioctl=$3
sock=/tmp/rl.sock
log=/tmp/rl-vfiod.log
out=/tmp/rl-owner.out
fifo=/tmp/rl-owner.in
ok=0

uptime_ms() { read -r up _ </proc/uptime && echo "$((${up%.*}${up#*.} * 10))"; }

# One round; returns 0 when the daemon served the owner's work, and leaves it SIGKILLed.
round() {
  : >"$log"
  t0=$(uptime_ms)
  "$vfiod" --device="$LAB_EDU" --listen="$sock" 2>"$log" &
  launcher=$!
  i=0
  until grep -q 'msg=serving ' "$log"; do
    i=$((i + 1))
    if [ $i -gt 400 ] || ! kill -0 "$launcher" 2>/dev/null; then
      echo "  vfiod did not serve; its log:"
      sed 's/^/    /' "$log"
      wait "$launcher"
      return 1
    fi
    sleep 0.05
  done
  t_serve=$(($(uptime_ms) - t0))
  # The owner: one connection holding memory, a mapping and an MSI trigger until it is killed.
  # Its commands come through a fifo this shell keeps open, so it stays connected.
  rm -f "$fifo" && mkfifo "$fifo"
  "$vfioctl" --socket "$sock" --claim session <"$fifo" >"$out" 2>&1 &
  owner=$!
  exec 3>"$fifo"
  printf '%s\n' 'memory create 0x200000 guest' 'dma map 0x100000 0x10000 1 0' \
    'irq enable-watch msi 0 1' 'region read32 0 0' 'state' >&3
  i=0
  until grep -q '^Device counters' "$out"; do
    i=$((i + 1))
    if [ $i -gt 400 ] || ! kill -0 "$owner" 2>/dev/null; then break; fi
    sleep 0.05
  done
  t_owner=$(($(uptime_ms) - t0))
  served=1
  grep -q '^mapped IOVA 0x100000-0x10ffff to memory 1' "$out" || served=0
  grep -q '^0x010000ed$' "$out" || served=0
  grep -q '^  MSI: enabled' "$out" || served=0
  grep -q '^Owner attached: yes' "$out" || served=0
  # SIGKILL the serving daemon itself (the launcher's child), not the launcher.
  daemon=$(sed -n 's/.*msg="jail: launcher started" daemon_pid=\([0-9]*\).*/\1/p' "$log")
  if [ -n "$daemon" ]; then kill -KILL "$daemon"; else kill -KILL "$launcher"; served=0; fi
  wait "$launcher"
  status=$?
  exec 3>&-
  kill "$owner" 2>/dev/null
  wait "$owner" 2>/dev/null
  echo "  served in ${t_serve} ms, owner's work done at ${t_owner} ms, launcher status $status"
  if [ $served -ne 1 ]; then
    echo "  the owner's work failed; its output:"
    sed 's/^/    /' "$out"
    return 1
  fi
  return 0
}

for r in $(seq 1 "$rounds"); do
  echo "restart_lab: round $r"
  if round; then ok=$((ok + 1)); fi
done
echo "restart_lab: $ok/$rounds rounds served (start, claim, 2 MiB registered, 64 KiB DMA-mapped, MSI on, BAR0 read) on the real edu $LAB_EDU, each daemon SIGKILLed with its owner attached"
[ "$ok" -eq "$rounds" ]
