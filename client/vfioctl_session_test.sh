#!/usr/bin/env bash
# vfioctl's session runner, against fake_vfiod in listen mode (no real daemon): echo, comments,
# one connection and fd channel for memory commands, guest-memory fill/dump/compare, the watch
# stream, expect-error, stopping at the first failure and --keep-going, exit codes.
set -uo pipefail

vfioctl=$1
fake=$2
# Under /tmp: Bazel's TEST_TMPDIR is too long for a UNIX socket's path.
dir=$(mktemp -d /tmp/vfioctl-test.XXXXXX) || { echo "FAIL: mktemp -d under /tmp failed"; exit 1; }
"$fake" --listen="$dir/s" &
fake_pid=$!
trap 'kill "$fake_pid" 2>/dev/null; wait "$fake_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 200); do [[ -S $dir/s && -S $dir/s.fds ]] && break; sleep 0.05; done
if [[ ! -S $dir/s || ! -S $dir/s.fds ]]; then
  echo "FAIL: fake_vfiod did not listen on $dir/s within 10 s"
  exit 1
fi

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# run NAME EXPECTED_EXIT [vfioctl args...] < script: output in $dir/out, stderr in $dir/err.
run() {
  local name=$1 expected=$2
  shift 2
  "$vfioctl" --socket "$dir/s" "$@" >"$dir/out" 2>"$dir/err"
  local status=$?
  if ((status != expected)); then
    fail "$name: exit $status, expected $expected"
    sed 's/^/  out: /' "$dir/out"
    sed 's/^/  err: /' "$dir/err"
  fi
}
expect_out() { grep -qF -- "$2" "$dir/out" || fail "$1: no \"$2\" in output: $(cat "$dir/out")"; }
expect_err() { grep -qF -- "$2" "$dir/err" || fail "$1: no \"$2\" on stderr: $(cat "$dir/err")"; }
no_out() { ! grep -qF -- "$2" "$dir/out" || fail "$1: unexpected \"$2\" in output"; }

run ok 0 session <<'SCRIPT'
# a comment, then a blank line

memory create 8K buf   # trailing comment
memory fill buf 0 16 seq
memory fill buf 0x1000 16 seq
memory compare buf 0 0x1000 16
memory dump buf 0 16
memory fill buf 16 4 random:1
expect-error DATA_LOSS memory compare buf 0 0x1000 32
expect-error UNIMPLEMENTED region read32 0 0
irq watch-start msi
irq wait msi 5s
irq wait msi 5s
irq wait msi 5s
expect-error DEADLINE_EXCEEDED irq wait msi 50ms
irq watch-stop
sleep 1ms
SCRIPT
expect_out ok "> memory create 8K buf"
expect_out ok "memory 7: 0x2000 bytes (8K), named buf"
expect_out ok "equal: 0x10 bytes at 0x0 and 0x1000"
expect_out ok "00000000: 03 0a 11 18 1f 26 2d 34 3b 42 49 50 57 5e 65 6c"
expect_out ok "failed as expected: DATA_LOSS: the ranges differ first at +0x10"
expect_out ok "failed as expected: UNIMPLEMENTED"
expect_out ok "MSI vector 2 count 1"
expect_out ok "failed as expected: DEADLINE_EXCEEDED: no MSI interrupt within 50ms"
no_out ok "comment"

run stops-at-first-failure 1 session <<'SCRIPT'
sleep 1ms
region read32 0 0
sleep 2ms
SCRIPT
expect_out stops-at-first-failure "> region read32 0 0"
no_out stops-at-first-failure "> sleep 2ms"
expect_err stops-at-first-failure "vfioctl: line 2: region read32: UNIMPLEMENTED"
expect_err stops-at-first-failure "session stopped at line 2"

printf 'region read32 0 0\nsleep 2ms\n' >"$dir/script"
run keep-going 1 session --keep-going "$dir/script" </dev/null
expect_out keep-going "> sleep 2ms"
expect_err keep-going "1 of 2 commands failed"

run usage-error 2 session <<'SCRIPT'
memory create 4K
memory fill 7 0 4 0x100
sleep 1ms
SCRIPT
expect_err usage-error "line 2: memory fill: bad PATTERN"
no_out usage-error "> sleep 1ms"

run not-local-memory 1 session <<'SCRIPT'
memory dump 5 0 4
SCRIPT
expect_err not-local-memory "NOT_FOUND: memory 5 was not created by this vfioctl"

run wait-without-watch 1 session <<'SCRIPT'
irq wait msi 10ms
SCRIPT
expect_err wait-without-watch "irq watch-start first"

run nested 2 session <<'SCRIPT'
session
SCRIPT

run json 0 --json session <<'SCRIPT'
memory create 4K m
memory fill m 0 2 0x5a
memory dump m 0 4
SCRIPT
expect_out json '{"command":"memory create 4K m","line":1}'
# vfioctl's JSON convention: lowerCamelCase keys, 64-bit values as decimal strings.
expect_out json '{"memoryId":"7","size":"4096","name":"m"}'
expect_out json '{"memoryId":"7","offset":"0","data":"5a5a0000"}'

run expect-error-mismatch 1 expect-error NOT_FOUND region read32 0 0
expect_err expect-error-mismatch "expected NOT_FOUND, got UNIMPLEMENTED"
run expect-error-bad-code 2 expect-error NOPE info
run missing-file 1 session "$dir/missing"

if ((failures > 0)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "PASS"
