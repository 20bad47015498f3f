#!/bin/sh
# The QEMU step of tools/demo.sh: an unmodified QEMU 11 (-accel qtest) attached over vfio-user to
# a running vfiod that serves an edu device (the real one in the VM lab, or sim:edu), driven by
# tests/vmm:qemu_edu_demo (ids through config space, BAR0, a factorial, a DMA round trip through
# QEMU's guest RAM), with `vfioctl state` run while QEMU owns the device (QEMU is the owner, its
# guest RAM is mapped for DMA) and again after it quit (no owner, nothing mapped). POSIX sh: it
# runs under bash, dash and the lab guest's busybox sh. Exits non-zero at the first failing step.
#
# Usage: demo_qemu.sh VFIOCTL QEMU_EDU_DEMO QEMU VFIO_USER_SOCKET GRPC_SOCKET
set -eu
vfioctl=${1:?usage: demo_qemu.sh VFIOCTL QEMU_EDU_DEMO QEMU VFIO_USER_SOCKET GRPC_SOCKET}
demo=${2:?}
qemu=${3:?}
vfu=${4:?}
sock=${5:?}

step() { printf '\n=== %s\n' "$*"; }

during=/tmp/demo-qemu-state.$$
"$demo" --qemu "$qemu" --vfio-user "$vfu" \
  --then "'$vfioctl' --socket '$sock' state | tee '$during'"
# What the observer saw while QEMU ran: QEMU as the owner, with its RAM mapped for DMA.
grep -q '^Owner attached: yes' "$during" || { echo "demo_qemu: QEMU was not the owner"; exit 1; }
if sed -n '/^DMA mappings:/,/^$/p' "$during" | grep -q '^  none'; then
  echo "demo_qemu: no DMA mapping while QEMU ran"
  exit 1
fi
rm -f "$during"

step "vfioctl state after QEMU quit: no owner, nothing mapped, interrupts disabled"
after=$("$vfioctl" --socket "$sock" state)
printf '%s\n' "$after"
printf '%s\n' "$after" | grep -q '^Owner attached: no' || { echo "demo_qemu: still owned"; exit 1; }
printf '%s\n' "$after" | sed -n '/^DMA mappings:/,/^$/p' | grep -q '^  none' ||
  { echo "demo_qemu: DMA mappings left"; exit 1; }
echo "demo_qemu: every step succeeded"
