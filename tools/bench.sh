#!/usr/bin/env bash
# Latency benchmark of vfiod against its baselines, in one run, pinned to one CPU
# (docs/PERFORMANCE.md). Never a test: no timing assertions anywhere.
#   tools/bench.sh [--iterations=N] [--rounds=N] [--cross_cpu] [--vfiod_args=--seccomp=log,...]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
bazel build -c opt //daemon:vfiod //tests/bench:vfiod_bench
# The -c opt output folder itself: bazel-bin follows whichever build ran last.
bin="$(bazel info -c opt bazel-bin 2>/dev/null)"
exec "$bin/tests/bench/vfiod_bench" --vfiod="$bin/daemon/vfiod" "$@"
