# Bash completion for vfioctl: its commands, subcommands and flags, and gRPC code names after
# expect-error. vfioctl itself answers (`vfioctl __complete WORDS...` prints what may follow
# WORDS, from its command table), so completion always matches the binary being run. Where a
# value is expected (a socket, a file, a number) the shell completes file names.
#
# Install (README.md, "vfioctl"): copy to /usr/share/bash-completion/completions/vfioctl, or
# `source` it from ~/.bashrc.

_vfioctl() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local candidates
  candidates=$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null) ||
    return 0
  local IFS=$'\n'
  # shellcheck disable=SC2207  # one candidate a line, none with spaces
  COMPREPLY=($(compgen -W "$candidates" -- "$cur"))
}

complete -o default -o bashdefault -F _vfioctl vfioctl
