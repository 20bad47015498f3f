#!/bin/sh
# The vfioctl walk-through of tools/demo.sh, against a running vfiod serving a QEMU edu device
# (simulated on the host, or the real one in the VM lab). POSIX sh: it runs under bash, dash and
# the lab guest's busybox sh. Exits non-zero at the first failing step.
#
# Usage: demo_walkthrough.sh VFIOCTL SOCKET
set -eu
vfioctl=${1:?usage: demo_walkthrough.sh VFIOCTL SOCKET}
sock=${2:?usage: demo_walkthrough.sh VFIOCTL SOCKET}

step() { printf '\n=== %s\n' "$*"; }
ctl() { "$vfioctl" --socket "$sock" "$@"; }

step "vfioctl info: the device description"
ctl info

step "vfioctl config: config space, decoded like lspci -vv"
ctl config

step "vfioctl config --raw: config space as a hex dump"
ctl config --raw

step "vfioctl config read 0x04 2: the command register, to set bus mastering (bit 2) in the session"
command=$(ctl config read 0x04 2)
command_with_bus_master=$(printf '0x%04x' $((command | 0x4)))
echo "command $command -> $command_with_bus_master"

step "vfioctl --claim session: one connection owns the device for a whole script"
# Unquoted heredoc: only $command_with_bus_master is expanded.
ctl --claim session <<EOF
# --- edu registers (BAR0) ---
# region poll32 with timeout 0s is a check: it fails unless the register holds the value.
# identification: 0x010000ed (edu version 1.0)
region read32 0 0x00
region poll32 0 0x00 0xffffffff 0x010000ed 0s
# liveness: reads back the inverse of what was written
region write32 0 0x04 0x12345678
region poll32 0 0x04 0xffffffff 0xedcba987 0s
# factorial: write 10, wait until status bit 0 (computing) clears, read 10! = 3628800
region write32 0 0x08 10
region poll32 0 0x20 0x1 0x0
region poll32 0 0x08 0xffffffff 3628800 0s
region read32 0 0x08

# --- bus mastering: the command register written back with bit 2 (the device may DMA) ---
config read 0x04 2
config write 0x04 2 $command_with_bus_master
config read 0x04 2

# --- DMA round trip through guest memory ---
memory create 64K guest
memory fill guest 0 1024 seq
# nothing at 0x2000 yet: the round trip below has to put it there
expect-error DATA_LOSS memory compare guest 0 0x2000 1024
dma map 0x100000 64K guest 0 rw
# RAM -> device: 1024 bytes from IOVA 0x100000 to the device buffer at 0x40000
region write32 0 0x80 0x100000
region write32 0 0x88 0x40000
region write32 0 0x90 1024
region write32 0 0x98 1
region poll32 0 0x98 0x1 0x0
# device -> RAM: back to IOVA 0x102000 (guest offset 0x2000)
region write32 0 0x80 0x40000
region write32 0 0x88 0x102000
region write32 0 0x90 1024
region write32 0 0x98 3
region poll32 0 0x98 0x1 0x0
memory compare guest 0 0x2000 1024
memory dump guest 0 64
memory dump guest 0x2000 64

# --- an interrupt: MSI vector 0 on a daemon-owned eventfd, streamed to this session ---
irq watch-start MSI
irq enable-watch MSI 0 1
region write32 0 0x60 1
irq wait MSI 3s
region poll32 0 0x24 0xffffffff 1 0s
region write32 0 0x64 1
region poll32 0 0x24 0xffffffff 0 0s

state
EOF

step "an observer may not write: expect-error PERMISSION_DENIED"
ctl expect-error PERMISSION_DENIED region write32 0 0x04 1

step "vfioctl state, from an observer after the session: owner released, nothing mapped"
ctl state
echo "walkthrough: every step succeeded"
