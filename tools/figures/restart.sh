#!/usr/bin/env bash
# Restart figure (a benchmark, not a test): vfiod SIGKILLed and restarted on the same device N
# times; each new daemon must serve and be claimable.
#   bazel build //daemon:vfiod //client:vfioctl && tools/figures/restart.sh 100 [DEVICE]
cd "$(dirname "$0")/../.."
n=${1:-100}; device=${2:-sim:edu}; ok=0
for i in $(seq 1 $n); do
  rm -f /tmp/rs.sock /tmp/rs.sock.fds /tmp/rs.vfu
  bazel-bin/daemon/vfiod --device="$device" --listen=/tmp/rs.sock --vfio-user=/tmp/rs.vfu 2>/dev/null &
  pid=$!
  for t in $(seq 1 100); do bazel-bin/client/vfioctl --socket /tmp/rs.sock info >/dev/null 2>&1 && break; sleep 0.05; done
  if bazel-bin/client/vfioctl --socket /tmp/rs.sock --claim claim >/dev/null 2>&1; then ok=$((ok+1)); fi
  kill -KILL $pid; wait $pid 2>/dev/null
done
echo "restart: $ok/$n served and could be claimed after a SIGKILL of the previous daemon"
