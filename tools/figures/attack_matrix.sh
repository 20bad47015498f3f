#!/usr/bin/env bash
# Attack matrix figure (a benchmark, not a test): each attack of the hardening issue against a
# fresh daemon on the simulated edu device, with the owner's workflow run during it; one
# PASS/FAIL line per attack with the owner's failed calls and its ReadRegion p50/p99 next to the
# no-attack baseline of the same run; ends with "N/M pass". See tests/attack/attack_matrix.cc.
#   tools/figures/attack_matrix.sh [--rows=window0,observer-calls] [--bar_reads=200] [--list]
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //daemon:vfiod //tests/attack:attack_matrix >&2
exec bazel-bin/tests/attack/attack_matrix --vfiod="$PWD/bazel-bin/daemon/vfiod" "$@"
