#!/bin/sh
# Guest-side smoke test of the project's binaries in the VM lab (busybox sh):
#   tools/lab/lab.sh run --add bazel-bin/daemon/vfiod --add bazel-bin/client/vfioctl \
#     -- tools/lab/examples/vfiod-smoke.sh
# Starts vfiod on the simulated edu device and on the real edu device ($LAB_EDU, vfio-pci),
# and asks each for `vfioctl info`. Exit 0 when the simulated device answers; the real one is
# reported (its backend may not exist yet) and fails the run only with SMOKE_REQUIRE_REAL=1.
set -u
bin=${VFIOD_BIN:-$PWD/bazel-bin}
vfiod=$bin/daemon/vfiod
vfioctl=$bin/client/vfioctl
rc=0

# serve NAME DEVICE: runs vfiod --device=DEVICE on /tmp/NAME.sock and queries it; returns 0 if
# vfioctl info succeeded.
serve() {
  name=$1 device=$2 sock=/tmp/$1.sock
  echo "smoke: --- vfiod --device=$device"
  "$vfiod" --device="$device" --listen="$sock" --log-level=info &
  pid=$!
  i=0
  while [ ! -S "$sock" ] && [ $i -lt 100 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
  done
  if [ ! -S "$sock" ]; then
    wait "$pid"
    echo "smoke: vfiod --device=$device did not serve (exit status $?)"
    return 1
  fi
  "$vfioctl" --socket "$sock" info
  status=$?
  echo "smoke: vfioctl info exit status $status"
  [ "$status" -ne 0 ] || { "$vfioctl" --socket "$sock" config | head -n 40; }
  kill -TERM "$pid"
  wait "$pid"
  echo "smoke: vfiod exit status $?"
  return $status
}

"$vfioctl" --help >/dev/null 2>&1
echo "smoke: vfioctl --help exit status $? (the dynamically linked binary runs)"
serve sim sim:edu || rc=1
if serve real "$LAB_EDU"; then
  echo "smoke: real edu device $LAB_EDU served"
else
  echo "smoke: real edu device $LAB_EDU NOT served"
  [ "${SMOKE_REQUIRE_REAL:-0}" = 1 ] && rc=1
fi
exit $rc
