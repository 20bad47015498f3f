#!/usr/bin/env bash
# Latency benchmark of vfiod against its baselines, in one run, pinned to one CPU.
#   tools/bench.sh [--iterations=N] [--cross_cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
bazel build -c opt //daemon:vfiod //tests/bench:vfiod_bench
exec bazel-bin/tests/bench/vfiod_bench --vfiod="$PWD/bazel-bin/daemon/vfiod" "$@"
