#!/usr/bin/env bash
# Installs every Debian package vfiod needs to build and test. Idempotent: does nothing when all
# are present. Needs root (apt-get); elsewhere run it with sudo, or install the list by hand.
set -euo pipefail

packages=(
  bazel-bootstrap
  g++ pkgconf
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libseccomp-dev libgtest-dev libgmock-dev
  # vfioctl: its command line, its JSON, and the completion framework its script plugs into
  libcli11-dev nlohmann-json3-dev bash-completion
  clang libclang-rt-14-dev
  python3
  # the VM lab (tools/lab/lab.sh): QEMU, the guest's busybox, the kernel's xz, the initramfs
  qemu-system-x86 busybox-static xz-utils cpio
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "bootstrap: missing packages: ${missing[*]}" >&2
  echo "bootstrap: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "bootstrap: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
