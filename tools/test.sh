#!/usr/bin/env bash
# Builds vfiod and runs every test. Installs what it needs first (tools/bootstrap.sh).
# Extra arguments go to `bazel test` (e.g. --config=asan, or a target pattern after --).
set -uo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh || exit 1

log=$(mktemp /tmp/vfiod-test.XXXXXX)
trap 'rm -f "$log"' EXIT
bazel build //... || exit 1
bazel test //... "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=$(grep -cE '^//\S+\s+(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//\S+\s+.*(FAILED|TIMEOUT|NO STATUS|INCOMPLETE)' "$log")
echo "bazel: $passed passed, $failed failed"
exit "$status"
