#!/usr/bin/env bash
# The systemd units in tools/systemd/ parse and hang together: `systemd-analyze verify` on one
# device's instance (the service and its three socket units), with ExecStart pointing at the
# vfiod under test. Any complaint fails the test. Without systemd-analyze on the host the check
# is reported not applicable (tests/host_report.h's format).
#
# Usage: systemd_units_test.sh VFIOD UNIT...
set -uo pipefail

vfiod=$(realpath "$1")
shift
if ! command -v systemd-analyze >/dev/null; then
  echo "not applicable: systemd-analyze verify of tools/systemd: systemd-analyze is not installed"
  exit 0
fi
dir=$(mktemp -d /tmp/vfiod-units.XXXXXX)
trap 'rm -rf "$dir"' EXIT
# A PCI address (0000:03:00.0) is the real instance name, but systemd-analyze cannot verify a
# unit file whose name has a colon ("Couldn't process aliases"); the instance does not matter
# to what is checked.
instance=edu
units=()
for unit in "$@"; do
  name=$(basename "$unit")
  name=${name/@./@$instance.}
  sed "s|/usr/local/bin/vfiod|$vfiod|" "$unit" >"$dir/$name"
  units+=("$dir/$name")
done
output=$(systemd-analyze verify "${units[@]}" 2>&1)
status=$?
if ((status != 0)) || [[ -n $output ]]; then
  echo "FAIL: systemd-analyze verify exited $status:"
  echo "$output"
  exit 1
fi
echo "PASS: ${#units[@]} units verified as instance $instance"
