#!/usr/bin/env bash
# The bash completion script with the real vfioctl: commands, subcommands, flags, gRPC codes
# after expect-error, and nothing (file names) where a value goes.
set -uo pipefail

vfioctl=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
script=$2
# shellcheck source=/dev/null
source "$script"
complete -p vfioctl >/dev/null || { echo "FAIL: no completion registered for vfioctl"; exit 1; }

failures=0
# complete WORD... : completes the last WORD (may be empty) after `vfioctl WORD...`.
complete_words() {
  COMP_WORDS=("$vfioctl" "$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _vfioctl
}
# offers EXPECTED WORD...: EXPECTED is among the completions.
offers() {
  local expected=$1
  shift
  complete_words "$@"
  if ! printf '%s\n' "${COMPREPLY[@]}" | grep -qxF -- "$expected"; then
    echo "FAIL: vfioctl $* <TAB>: no \"$expected\" in: ${COMPREPLY[*]}"
    failures=$((failures + 1))
  fi
}
# offers_nothing WORD...: no candidates (the shell then completes file names).
offers_nothing() {
  complete_words "$@"
  if ((${#COMPREPLY[@]} != 0)); then
    echo "FAIL: vfioctl $* <TAB>: expected nothing, got: ${COMPREPLY[*]}"
    failures=$((failures + 1))
  fi
}

offers info ""
offers top t
offers --socket --so
offers region --json re
offers read32 region rea
offers poll32 --socket /tmp/s region ""
offers --raw config --r
offers --enable irq watch --en
offers --interval top --in
offers --keep-going session --
offers PERMISSION_DENIED expect-error PERM
offers write32 expect-error PERMISSION_DENIED region wr
offers_nothing --socket ""
offers_nothing irq watch --count ""
offers_nothing nosuchcommand ""

if ((failures > 0)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "PASS"
