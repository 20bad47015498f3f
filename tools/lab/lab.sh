#!/usr/bin/env bash
# The vfiod VM lab: boots a QEMU guest (Debian's 6.1 kernel, emulated Intel VT-d) whose emulated
# PCI devices are bound to vfio-pci, and runs a program inside it. See tools/lab/README.md.
#
#   tools/lab/lab.sh run [OPTIONS] -- PROGRAM [ARGS...]
#   tools/lab/lab.sh selftest [OPTIONS]
#   tools/lab/lab.sh sysfs-facts [--out FILE] [OPTIONS]
#   tools/lab/lab.sh fetch | latest-kernel | help
#
# Exit codes: 0 pass, 1 the program failed, 2 the lab itself failed (or a usage error).
set -euo pipefail
shopt -s lastpipe

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_DIR/../.." && pwd)
# shellcheck source=kernel.pin
source "$LAB_DIR/kernel.pin"

KERNEL_RELEASE=${LAB_KERNEL_PACKAGE#linux-image-}
CACHE_DIR=$(realpath -m "${LAB_CACHE:-$REPO_ROOT/.lab-cache}")
QEMU=${LAB_QEMU:-qemu-system-x86_64}
BUSYBOX=/bin/busybox
HOST_PACKAGES=(qemu-system-x86 busybox-static xz-utils cpio)
# The modules the guest loads; their dependencies are added from the modules' own .modinfo.
# uio_pci_generic is there for programs that want a kernel-counted INTx without an IOMMU
# (tests/vmm's guest boot); init does not load it.
GUEST_MODULES=(vfio vfio_iommu_type1 vfio_pci vfio_pci_core irqbypass uio uio_pci_generic)
# What the cached kernel folder and base initramfs were built with (a change rebuilds them).
MODULES_STAMP="kernel=$LAB_KERNEL_DEB_SHA256 modules=${GUEST_MODULES[*]}"
# cryptomgr.notests skips the crypto self-tests: 0.4 s of the boot under TCG.
KERNEL_CMDLINE="console=ttyS0 intel_iommu=on panic=-1 quiet cryptomgr.notests"
# The zoo's NICs have no network backend on purpose; QEMU warns about it (not shown).
EXPECTED_QEMU_WARNING='warning: nic .* has no peer'
# Bump when the layout of the cached base initramfs changes.
BASE_FORMAT=1

# The device zoo: name|vendor|device|QEMU arguments. Each device is found in the guest by its
# ids, bound to vfio-pci, and named in LAB_DEVICES. The devices behind a PCIe root port
# (which has ACS, so each gets its own IOMMU group) show a PCIe capability and extended
# capabilities; edu and pci-testdev sit on the root bus as conventional PCI devices.
ZOO=(
  "edu|0x1234|0x11e8|-device edu"
  "e1000e|0x8086|0x10d3|-device pcie-root-port,id=rp1,chassis=1 -device e1000e,bus=rp1"
  "nvme|0x1b36|0x0010|-device pcie-root-port,id=rp2,chassis=2 -device nvme,serial=lab0,bus=rp2"
  "virtio-net|0x1af4|0x1041|-device pcie-root-port,id=rp3,chassis=3 -device virtio-net-pci,bus=rp3"
  "pci-testdev|0x1b36|0x0005|-device pci-testdev"
)

# ---------------------------------------------------------------------------------------------
# Messages and errors

log() { echo "lab: $*" >&2; }

# Temporary folders removed on exit, whatever the exit path.
TMP_DIRS=()
WORK=""
on_exit() {
  local d
  for d in "${TMP_DIRS[@]}"; do
    rm -rf "$d"
  done
  if [[ -n $WORK ]]; then
    if ((KEEP)); then
      log "work folder kept: $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
}
trap on_exit EXIT

# make_temp_dir VAR PARENT: a fresh folder under PARENT, removed on exit.
make_temp_dir() {
  local -n ref=$1
  ref=$(mktemp -d "$2/tmp.XXXXXX")
  TMP_DIRS+=("$ref")
}
die() {
  echo "lab: error: $*" >&2
  exit 2
}

usage() {
  cat <<'EOF'
usage: tools/lab/lab.sh COMMAND [OPTIONS]

commands:
  run [OPTIONS] -- PROGRAM [ARGS...]
                     boot the guest, bind the lab devices to vfio-pci, run PROGRAM in it.
                     PROGRAM with a '/' is a host file copied into the guest at the same path,
                     with every shared library it needs (and PROGRAM.runfiles if present);
                     without a '/' it is a guest command (busybox applets, lab-selftest, ...).
  selftest [OPTIONS] check that every lab device is bound to vfio-pci in its own IOMMU group
  sysfs-facts [--out FILE] [OPTIONS]
                     print what the guest kernel reports in sysfs for each lab device (JSON)
  shell [OPTIONS]    an interactive shell in the guest on this terminal (Ctrl-A X quits)
  fetch              download and prepare the kernel and the base initramfs (cached)
  latest-kernel      print the kernel.pin lines for the newest kernel in the apt archive
  help               this text

options:
  --timeout S        give up after S seconds (default 120; LAB_TIMEOUT)
  --keep             keep the work folder (initramfs, console log, QEMU command line)
  --add HOST[:GUEST] put a host file or folder into the guest (repeatable; default: same path);
                     shared libraries of ELF files in it are added too
  --env NAME=VALUE   set an environment variable for the program (repeatable)
  --mem MB           guest memory (default 1024)
  --log FILE         copy the console log to FILE
  -q, --quiet        do not stream the console; show its tail on failure
  --no-zoo           no lab devices (the program brings its own with --qemu-arg)
  --no-iommu         no emulated VT-d (and no intel_iommu=on): DMA addresses are guest-physical
  --qemu-arg ARG     one more QEMU argument (repeatable), after the zoo's
  --qemu11           QEMU 11 in the guest (tools/lab/qemu11.sh guest-cpio, about 68 MB more
                     initramfs): /opt/qemu11/qemu11, also as $VFIOD_QEMU11 for the program

exit codes: 0 pass, 1 the program failed, 2 lab failure (no result, timeout, setup, usage)
environment: LAB_CACHE (cache folder, default <repo>/.lab-cache), LAB_ACCEL (auto|tcg|kvm),
             LAB_TIMEOUT, LAB_QEMU (QEMU binary), LAB_KERNEL_ARGS (more guest kernel arguments)
EOF
}

# ---------------------------------------------------------------------------------------------
# Host packages and the cache

ensure_host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; } ||
    die "apt-get install ${missing[*]} failed"
}

# Serializes cache updates between concurrent lab runs.
lock_cache() {
  mkdir -p "$CACHE_DIR"
  exec {CACHE_LOCK_FD}>"$CACHE_DIR/.lock"
  flock "$CACHE_LOCK_FD"
}

unlock_cache() {
  flock -u "$CACHE_LOCK_FD"
}

deb_path() {
  echo "$CACHE_DIR/debs/${LAB_KERNEL_PACKAGE}_${LAB_KERNEL_VERSION}_amd64.deb"
}

kernel_dir() {
  echo "$CACHE_DIR/kernel/${LAB_KERNEL_PACKAGE}_${LAB_KERNEL_VERSION}"
}

verify_deb() {
  local deb=$1 sum
  sum=$(sha256sum "$deb" | cut -d' ' -f1)
  [[ $sum == "$LAB_KERNEL_DEB_SHA256" ]] ||
    die "$deb: sha256 $sum does not match the pin $LAB_KERNEL_DEB_SHA256 (tools/lab/kernel.pin)"
}

download_kernel_deb() {
  local deb tmp
  deb=$(deb_path)
  [[ -f $deb ]] && return 0
  mkdir -p "$(dirname "$deb")"
  make_temp_dir tmp "$CACHE_DIR"
  local -a apt_opts=(-q)
  # As root, apt drops to the _apt user, which cannot write here: keep root for this download.
  if [[ $(id -u) -eq 0 ]]; then apt_opts+=(-o APT::Sandbox::User=root); fi
  log "downloading $LAB_KERNEL_PACKAGE=$LAB_KERNEL_VERSION (about 70 MB)"
  if ! (cd "$tmp" && apt-get download "${apt_opts[@]}" "$LAB_KERNEL_PACKAGE=$LAB_KERNEL_VERSION") >&2; then
    log "the pinned kernel is not in the apt archive (stale pin, or run apt-get update);"
    log "the newest one is: $(latest_kernel_lines | tr '\n' ' ')"
    die "apt-get download $LAB_KERNEL_PACKAGE=$LAB_KERNEL_VERSION failed"
  fi
  # apt-get download has checked the file against the archive's signed index; the pin's own
  # hash also guards against the archive serving different bytes under the same version.
  verify_deb "$tmp/$(basename "$deb")"
  mv "$tmp/$(basename "$deb")" "$deb"
}

# The newest kernel in the archive, as kernel.pin lines.
latest_kernel_lines() {
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  [[ -n $pkg ]] || { echo "(unknown: apt-cache depends linux-image-amd64 failed)"; return 0; }
  apt-cache show "$pkg" | awk -v pkg="$pkg" '
    /^Version:/ && !v {v = $2} /^SHA256:/ && !s {s = $2}
    END {print "LAB_KERNEL_PACKAGE=" pkg; print "LAB_KERNEL_VERSION=" v; print "LAB_KERNEL_DEB_SHA256=" s}'
}

# modinfo_depends KO: the module names KO depends on (from its .modinfo section).
modinfo_depends() {
  tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | tr ',' ' '
}

# deb_extract DEB DEST PATTERN...: extracts the members matching the tar wildcards. (dpkg-deb -x
# writes all 400 MB of the package, about 9 s; this pass writes the few files needed in 2 s.)
deb_extract() {
  local deb=$1 dest=$2
  shift 2
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dest" --wildcards "$@" ||
    die "extracting $* from $deb failed"
}

# Extracts vmlinux and the guest modules from the cached .deb into the kernel folder.
prepare_kernel() {
  local kdir tmp bz offset deb
  kdir=$(kernel_dir)
  deb=$(deb_path)
  [[ -f $kdir/.complete && $(cat "$kdir/.complete") == "$MODULES_STAMP" ]] && return 0
  verify_deb "$deb"
  log "extracting $LAB_KERNEL_PACKAGE (vmlinux and the vfio modules)"
  rm -rf "$kdir"
  mkdir -p "$kdir"
  make_temp_dir tmp "$CACHE_DIR"
  local mods=./lib/modules/$KERNEL_RELEASE
  deb_extract "$deb" "$tmp" "./boot/vmlinuz-$KERNEL_RELEASE" "./boot/config-$KERNEL_RELEASE" \
    "$mods/modules.order" "$mods/modules.builtin" "$mods/kernel/drivers/vfio/*" "$mods/kernel/virt/*"

  # vmlinux out of the bzImage: the payload is one xz stream (with the x86 BCJ filter, which
  # busybox xzcat cannot decode); QEMU boots the ELF through PVH, about 2 s faster under TCG.
  bz=$tmp/boot/vmlinuz-$KERNEL_RELEASE
  [[ -f $bz ]] || die "$bz missing in $deb"
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | head -n1 | cut -d: -f1)
  [[ -n $offset ]] || die "no xz stream in $bz"
  # (xz stops at the end of the stream, so tail may die of SIGPIPE: only xz's status counts.)
  xz -dc --single-stream <(tail -c +$((offset + 1)) "$bz") >"$kdir/vmlinux" ||
    die "decompressing the kernel in $bz failed"
  [[ $(head -c4 "$kdir/vmlinux" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] ||
    die "$kdir/vmlinux is not an ELF file"
  cp "$tmp/boot/config-$KERNEL_RELEASE" "$kdir/config"

  # The guest modules and, transitively, their dependencies (read from each module's .modinfo;
  # modules.order names every module of the package), at their paths in the tree. A dependency
  # outside the folders extracted above is extracted in another pass.
  local src=$tmp/lib/modules/$KERNEL_RELEASE dst=$kdir/modroot/lib/modules/$KERNEL_RELEASE
  local -A by_name=() wanted=()
  local ko name dep queue=("${GUEST_MODULES[@]}") later=() absent=()
  while IFS= read -r ko; do
    name=${ko##*/}
    name=${name%.ko}
    by_name[${name//-/_}]=$ko
  done <"$src/modules.order"
  while ((${#queue[@]} > 0)); do
    for name in "${queue[@]}"; do
      name=${name//-/_}
      [[ -n ${wanted[$name]:-} ]] && continue
      [[ -n ${by_name[$name]:-} ]] || die "module $name not found in $deb"
      if [[ ! -f $src/${by_name[$name]} ]]; then
        later+=("$name")
        absent+=("$mods/${by_name[$name]}")
        continue
      fi
      wanted[$name]=${by_name[$name]}
      for dep in $(modinfo_depends "$src/${by_name[$name]}"); do
        later+=("$dep")
      done
    done
    if ((${#absent[@]} > 0)); then
      deb_extract "$deb" "$tmp" "${absent[@]}"
    fi
    queue=("${later[@]}") later=() absent=()
  done
  for name in "${!wanted[@]}"; do
    mkdir -p "$dst/$(dirname "${wanted[$name]}")"
    cp "$src/${wanted[$name]}" "$dst/${wanted[$name]}"
  done
  cp "$src/modules.builtin" "$src/modules.order" "$dst/"
  "$BUSYBOX" depmod -b "$kdir/modroot" "$KERNEL_RELEASE" || die "busybox depmod failed"
  echo "$MODULES_STAMP" >"$kdir/.complete"
}

# The part of the initramfs every run shares: busybox with its applet links, the modules,
# a merged-/usr skeleton like Debian 12 (so host library paths resolve), and /etc basics.
build_base_cpio() {
  local kdir stamp stage applet
  kdir=$(kernel_dir)
  stamp="format=$BASE_FORMAT $MODULES_STAMP busybox=$(sha256sum "$BUSYBOX" | cut -d' ' -f1)"
  [[ -f $kdir/base.cpio && -f $kdir/base.stamp && $(cat "$kdir/base.stamp") == "$stamp" ]] && return 0
  [[ $(head -c4 "$BUSYBOX" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] || die "$BUSYBOX is not an ELF file"
  if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the lab needs busybox-static"
  fi
  log "building the base initramfs"
  make_temp_dir stage "$CACHE_DIR"
  mkdir -p "$stage"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,dev,proc,sys,tmp,run,root,lab/tools}
  ln -s usr/bin "$stage/bin"
  ln -s usr/sbin "$stage/sbin"
  ln -s usr/lib "$stage/lib"
  ln -s usr/lib64 "$stage/lib64"
  cp "$BUSYBOX" "$stage/usr/bin/busybox"
  # Applet links; never one named busybox (it would point at itself: ELOOP).
  while IFS= read -r applet; do
    [[ ${applet##*/} == busybox ]] && continue
    applet=${applet#/}
    case $applet in
      bin/* | sbin/*) applet=usr/$applet ;;
    esac
    [[ -e $stage/$applet || -L $stage/$applet ]] && continue
    if [[ $applet == */* && ! -d $stage/${applet%/*} ]]; then mkdir -p "$stage/${applet%/*}"; fi
    ln -s /usr/bin/busybox "$stage/$applet"
  done < <("$BUSYBOX" --list-full)
  cp -a "$kdir/modroot/lib/modules" "$stage/usr/lib/"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
  chmod 1777 "$stage/tmp"
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$kdir/base.cpio.tmp" ||
    die "cpio of the base initramfs failed"
  mv "$kdir/base.cpio.tmp" "$kdir/base.cpio"
  echo "$stamp" >"$kdir/base.stamp"
}

# Debian's security archive keeps only the current kernel ABI, so the pin goes stale whenever
# bookworm-security moves on. A cached or downloadable pinned kernel is always used; otherwise
# the archive's current 6.1 kernel is, with a warning to update kernel.pin, so that the lab (and
# CI) keeps working. Its integrity then rests on apt's signed index, whose SHA256 becomes the pin.
resolve_kernel_pin() {
  [[ -f $(deb_path) ]] && return 0
  if [[ -n $(apt-cache madison "$LAB_KERNEL_PACKAGE" 2>/dev/null |
    awk -v v="$LAB_KERNEL_VERSION" '$3 == v')
  ]]; then
    return 0
  fi
  local lines
  lines=$(latest_kernel_lines)
  [[ $lines == LAB_KERNEL_PACKAGE=linux-image-6.1.* ]] ||
    die "the pinned kernel $LAB_KERNEL_PACKAGE=$LAB_KERNEL_VERSION is not in the apt archive and no 6.1 kernel replaces it: $lines"
  log "WARNING: the pinned kernel $LAB_KERNEL_PACKAGE=$LAB_KERNEL_VERSION is no longer in the apt archive;"
  log "WARNING: using the archive's current one instead. Update tools/lab/kernel.pin with:"
  printf '%s\n' "$lines" >&2
  eval "$lines"
  KERNEL_RELEASE=${LAB_KERNEL_PACKAGE#linux-image-}
}

fetch() {
  ensure_host_packages
  command -v "$QEMU" >/dev/null || die "$QEMU not found"
  lock_cache
  resolve_kernel_pin
  download_kernel_deb
  prepare_kernel
  build_base_cpio
  unlock_cache
}

# ---------------------------------------------------------------------------------------------
# The per-run initramfs: /init, the guest tools, the program, added files, shared libraries

# Guest paths use Debian 12's merged /usr: /bin, /sbin, /lib, /lib64 are links into /usr in the
# base archive, so a file at /lib/x is staged as /usr/lib/x (a real lib/ folder in the run's
# archive would replace the link).
guest_norm() {
  local p=$1
  case $p in
    /bin/* | /sbin/* | /lib/* | /lib64/*) p=/usr$p ;;
  esac
  echo "$p"
}

is_elf() {
  [[ -f $1 && $(head -c4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' ') == 7f454c46 ]]
}

# stage_file HOSTFILE GUESTPATH: copies the file's content to its real path in the guest and
# makes GUESTPATH a link to it when the two differ, so $ORIGIN (Bazel's RUNPATHs) resolves as
# on the host.
stage_file() {
  local host=$1 guest real
  guest=$(guest_norm "$2")
  real=$(guest_norm "$(realpath -e "$host")")
  if [[ ! -e $STAGE$real ]]; then
    mkdir -p "$STAGE$(dirname "$real")"
    cp -L --preserve=mode "$host" "$STAGE$real"
  fi
  if [[ $guest != "$real" && ! -e $STAGE$guest && ! -L $STAGE$guest ]]; then
    mkdir -p "$STAGE$(dirname "$guest")"
    ln -s "$real" "$STAGE$guest"
  fi
  if is_elf "$host"; then ELF_FILES+=("$host"); fi
}

# stage_path HOSTPATH GUESTPATH: a file (see stage_file) or a folder (copied, links followed).
stage_path() {
  local host=$1 guest f
  guest=$(guest_norm "$2")
  [[ -e $host ]] || die "--add: $host does not exist"
  if [[ -d $host ]]; then
    mkdir -p "$STAGE$guest"
    cp -rL --preserve=mode "$host/." "$STAGE$guest/" || die "copying $host into the guest failed"
    while IFS= read -r -d '' f; do
      if is_elf "$f"; then ELF_FILES+=("$f"); fi
    done < <(find -L "$host" -type f -print0)
  else
    stage_file "$host" "$guest"
  fi
}

# Adds every shared library (and the dynamic loader) of the staged ELF files, at its host path.
stage_libraries() {
  local elf out lib
  local -A seen=()
  for elf in "${ELF_FILES[@]}"; do
    out=$(ldd "$elf" 2>&1) || continue # static, or not an executable/library
    if grep -q 'not found' <<<"$out"; then
      die "$elf: missing shared libraries on the host: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
    fi
    while IFS= read -r lib; do
      [[ -n $lib && -z ${seen[$lib]:-} ]] || continue
      seen[$lib]=1
      stage_file "$lib" "$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out")
  done
}

shell_quote() {
  local s=$1
  printf "'%s'" "${s//\'/\'\\\'\'}"
}

# build_run_cpio PROGRAM ARGS...: the run's own archive, appended to the base archive.
build_run_cpio() {
  local prog=$1 guest_prog host_prog entry host guest cwd name vendor device
  shift
  STAGE=$WORK/stage
  ELF_FILES=()
  mkdir -p "$STAGE/lab/tools"
  cp "$LAB_DIR/guest/init" "$STAGE/init"
  cp "$LAB_DIR/guest/lab-lib.sh" "$LAB_DIR/guest/lab-pci-facts.awk" \
    "$LAB_DIR/guest/lab-selftest" "$LAB_DIR/guest/lab-sysfs-facts" "$STAGE/lab/tools/"
  chmod 0755 "$STAGE/init" "$STAGE/lab/tools/lab-selftest" "$STAGE/lab/tools/lab-sysfs-facts"
  for entry in "${ZOO[@]}"; do
    ((NO_ZOO)) && break
    IFS='|' read -r name vendor device _ <<<"$entry"
    echo "$name $vendor $device"
  done >"$STAGE/lab/devices"

  if [[ $prog == */* ]]; then
    [[ -f $prog ]] || die "program $prog not found on the host"
    host_prog=$(realpath -s "$prog")
    guest_prog=$(guest_norm "$host_prog")
    stage_file "$host_prog" "$guest_prog"
    if [[ -d $host_prog.runfiles ]]; then
      stage_path "$host_prog.runfiles" "$guest_prog.runfiles"
    fi
  else
    if ! "$BUSYBOX" --list | grep -qxF "$prog" && [[ ! -f $LAB_DIR/guest/$prog ]]; then
      usage_error "'$prog' is neither a busybox applet nor a lab tool in the guest; a host program needs a path with a '/' (e.g. ./$prog)"
    fi
    guest_prog=$prog
  fi
  for entry in "${ADDS[@]}"; do
    host=${entry%%:*}
    guest=${entry#*:}
    [[ $entry == *:* ]] || guest=$host
    host=$(realpath -s "$host")
    [[ $guest == /* ]] || guest=$(realpath -sm "$guest")
    stage_path "$host" "$guest"
  done
  stage_libraries

  # The program runs in the host's current folder path (created empty unless added).
  cwd=$(guest_norm "$PWD")
  mkdir -p "$STAGE$cwd"
  {
    echo "# generated by tools/lab/lab.sh"
    echo "export PATH=/lab/tools:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
    for entry in "${ENVS[@]}"; do
      echo "export ${entry%%=*}=$(shell_quote "${entry#*=}")"
    done
    echo "cd $(shell_quote "$cwd") || exit 125"
    printf 'exec'
    printf ' %s' "$(shell_quote "$guest_prog")"
    for entry in "$@"; do
      printf ' %s' "$(shell_quote "$entry")"
    done
    echo
  } >"$STAGE/lab/run.sh"

  (cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$WORK/run.cpio" ||
    die "cpio of the run's initramfs failed"
  cat "$(kernel_dir)/base.cpio" "${EXTRA_CPIOS[@]}" "$WORK/run.cpio" >"$WORK/initramfs.cpio"
  rm -f "$WORK/run.cpio"
}

# ---------------------------------------------------------------------------------------------
# QEMU

qemu_args() {
  local accel=$1 entry name vendor device args
  local machine=q35
  if [[ $accel == kvm ]]; then
    machine=q35,kernel-irqchip=split # intremap=on needs it under KVM
  fi
  QEMU_ARGS=(-accel "$accel" -cpu max -machine "$machine" -m "$MEM_MB" -smp 1
    -nodefaults -no-user-config -display none -serial stdio -no-reboot -nic none)
  if ! ((NO_IOMMU)); then QEMU_ARGS+=(-device intel-iommu,intremap=on); fi
  for entry in "${ZOO[@]}"; do
    ((NO_ZOO)) && break
    IFS='|' read -r name vendor device args <<<"$entry"
    read -ra args <<<"$args"
    QEMU_ARGS+=("${args[@]}")
  done
  QEMU_ARGS+=("${QEMU_EXTRA[@]}")
  local cmdline=$KERNEL_CMDLINE
  if ((NO_IOMMU)); then cmdline=${cmdline/intel_iommu=on /}; fi
  QEMU_ARGS+=(-kernel "$(kernel_dir)/vmlinux" -initrd "$WORK/initramfs.cpio"
    -append "$cmdline${LAB_KERNEL_ARGS:+ $LAB_KERNEL_ARGS}")
}

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

# run_guest ACCEL TIMEOUT: boots the guest with the prepared initramfs; streams the console
# (unless quiet) into $WORK/console.log and sets RESULT (PASS, FAIL rc=N, ERROR ..., or empty),
# QEMU_STATUS and the T_* timestamps.
run_guest() {
  local accel=$1 timeout=$2 line
  qemu_args "$accel"
  printf '%q ' "$QEMU" "${QEMU_ARGS[@]}" >"$WORK/qemu.cmdline"
  echo >>"$WORK/qemu.cmdline"
  RESULT="" T_INIT="" T_READY="" T_DONE=""
  : >"$WORK/console.log"
  T_START=$(now)
  set +e
  timeout --kill-after=5 "$timeout" "$QEMU" "${QEMU_ARGS[@]}" </dev/null 2>"$WORK/qemu.stderr" |
    while IFS= read -r line || [[ -n $line ]]; do
      line=${line//$'\r'/}
      printf '%s\n' "$line" >>"$WORK/console.log"
      ((QUIET)) || printf '%s\n' "$line"
      case $line in
        *LAB-INIT:*) [[ -n $T_INIT ]] || T_INIT=$(now) ;;
        *LAB-READY:*) T_READY=$(now) ;;
        *LAB-DONE:*) T_DONE=$(now) ;;
        *LAB-RESULT:*) RESULT=${line#*LAB-RESULT: } ;;
      esac
    done
  QEMU_STATUS=${PIPESTATUS[0]}
  set -e
  T_END=$(now)
}

show_failure_context() {
  echo "---- last 40 console lines ($WORK/console.log) ----" >&2
  tail -n 40 "$WORK/console.log" >&2
  if grep -qv "$EXPECTED_QEMU_WARNING" "$WORK/qemu.stderr"; then
    echo "---- QEMU stderr ----" >&2
    grep -v "$EXPECTED_QEMU_WARNING" "$WORK/qemu.stderr" | tail -n 20 >&2
  fi
}

# Picks tcg or kvm. KVM only where the CPU shows vmx/svm, /dev/kvm is usable, and a probe boot
# reaches its result in time (cached per host kernel and QEMU version).
choose_accel() {
  local want=${LAB_ACCEL:-auto} key cached
  case $want in
    tcg | kvm) echo "$want"; return 0 ;;
    auto) ;;
    *) die "LAB_ACCEL must be auto, tcg or kvm, not '$want'" ;;
  esac
  if ! grep -qwE 'vmx|svm' /proc/cpuinfo || [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
    echo tcg
    return 0
  fi
  key="$(uname -r) $("$QEMU" --version | head -n1)"
  if [[ -f $CACHE_DIR/kvm-probe ]] && [[ $(head -n1 "$CACHE_DIR/kvm-probe") == "$key" ]]; then
    sed -n 2p "$CACHE_DIR/kvm-probe"
    return 0
  fi
  log "probing KVM (a short boot; the result is cached in $CACHE_DIR/kvm-probe)"
  cached=tcg
  (
    QUIET=1
    MEM_MB=512
    ENVS=() ADDS=() EXTRA_CPIOS=()
    KEEP=0
    trap on_exit EXIT # a subshell does not run its parent's EXIT trap
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfiod-lab-probe.XXXXXX")
    build_run_cpio true
    run_guest kvm 20
    [[ $RESULT == PASS ]]
  ) >/dev/null 2>&1 && cached=kvm
  printf '%s\n%s\n' "$key" "$cached" >"$CACHE_DIR/kvm-probe"
  echo "$cached"
}

# ---------------------------------------------------------------------------------------------
# Commands

QUIET=0 KEEP=0 TIMEOUT=${LAB_TIMEOUT:-120} MEM_MB=1024 LOG_COPY="" OUT=""
ADDS=() ENVS=() NO_ZOO=0 NO_IOMMU=0 QEMU_EXTRA=() WITH_QEMU11=0 EXTRA_CPIOS=()

# parse_options COMMAND ARGS...: sets the option globals and PROGRAM_ARGV.
parse_options() {
  local cmd=$1
  shift
  PROGRAM_ARGV=()
  while (($# > 0)); do
    case $1 in
      --timeout) (($# >= 2)) || usage_error "--timeout needs a value"; TIMEOUT=$2; shift 2 ;;
      --keep) KEEP=1; shift ;;
      --add) (($# >= 2)) || usage_error "--add needs a value"; ADDS+=("$2"); shift 2 ;;
      --env)
        (($# >= 2)) || usage_error "--env needs a value"
        [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || usage_error "--env wants NAME=VALUE, not '$2'"
        ENVS+=("$2"); shift 2 ;;
      --mem) (($# >= 2)) || usage_error "--mem needs a value"; MEM_MB=$2; shift 2 ;;
      --log) (($# >= 2)) || usage_error "--log needs a value"; LOG_COPY=$2; shift 2 ;;
      --out)
        [[ $cmd == sysfs-facts ]] || usage_error "--out is for sysfs-facts"
        (($# >= 2)) || usage_error "--out needs a value"; OUT=$2; shift 2 ;;
      -q | --quiet) QUIET=1; shift ;;
      --no-zoo) NO_ZOO=1; shift ;;
      --no-iommu) NO_IOMMU=1; shift ;;
      --qemu11) WITH_QEMU11=1; shift ;;
      --qemu-arg) (($# >= 2)) || usage_error "--qemu-arg needs a value"; QEMU_EXTRA+=("$2"); shift 2 ;;
      --) shift; PROGRAM_ARGV=("$@"); break ;;
      *) usage_error "unknown option '$1'" ;;
    esac
  done
  [[ $TIMEOUT =~ ^[0-9]+$ && $TIMEOUT -gt 0 ]] || usage_error "--timeout wants whole seconds"
  [[ $MEM_MB =~ ^[0-9]+$ && $MEM_MB -ge 256 ]] || usage_error "--mem wants MB (at least 256)"
  if [[ $cmd == run ]]; then
    ((${#PROGRAM_ARGV[@]} > 0)) || usage_error "run needs -- PROGRAM [ARGS...]"
  elif ((${#PROGRAM_ARGV[@]} > 0)); then
    usage_error "$cmd takes no program"
  fi
}

usage_error() {
  echo "lab: usage error: $*" >&2
  echo "lab: see tools/lab/lab.sh help" >&2
  exit 2
}

# QEMU 11 in the guest (--qemu11): the cached archive of tools/lab/qemu11.sh guest-cpio (the
# runner at /opt/qemu11/qemu11, the part of the tree QEMU opens under /opt/qemu11/root) goes
# between the base archive and the run's; the program gets VFIOD_QEMU11 (tests/vmm's name).
add_qemu11() {
  local archive
  ((WITH_QEMU11)) || return 0
  archive=$("$LAB_DIR/qemu11.sh" guest-cpio) || die "QEMU 11 for the guest: tools/lab/qemu11.sh guest-cpio failed"
  EXTRA_CPIOS+=("$archive")
  ENVS+=("VFIOD_QEMU11=/opt/qemu11/qemu11")
}

# lab_run PROGRAM ARGS...: the whole lab run; returns 0, 1 or 2.
lab_run() {
  local t0 t_prep accel status timing
  t0=$(now)
  fetch
  add_qemu11
  accel=$(choose_accel)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfiod-lab.XXXXXX")
  build_run_cpio "$@"
  t_prep=$(now)
  log "booting ($accel, $(du -h "$WORK/initramfs.cpio" | cut -f1) initramfs, timeout ${TIMEOUT}s)"
  run_guest "$accel" "$TIMEOUT"
  if [[ -n $LOG_COPY ]]; then cp "$WORK/console.log" "$LOG_COPY"; fi

  timing="prepare $(elapsed "$t0" "$t_prep")s"
  if [[ -n $T_INIT ]]; then timing+=", qemu start to init $(elapsed "$T_START" "$T_INIT")s"; fi
  if [[ -n $T_READY && -n $T_INIT ]]; then timing+=", devices bound $(elapsed "$T_INIT" "$T_READY")s"; fi
  if [[ -n $T_READY && -n $T_DONE ]]; then timing+=", program $(elapsed "$T_READY" "$T_DONE")s"; fi
  timing+=", guest total $(elapsed "$T_START" "$T_END")s, whole run $(elapsed "$t0" "$T_END")s"

  case $RESULT in
    PASS) status=0 ;;
    "FAIL rc="*) status=1 ;;
    ERROR*) status=2; log "lab failure in the guest: ${RESULT#ERROR }" ;;
    *)
      status=2
      if ((QEMU_STATUS == 124 || QEMU_STATUS == 137)); then
        log "timed out after ${TIMEOUT}s without a LAB-RESULT marker"
      else
        log "the guest ended without a LAB-RESULT marker (QEMU exit status $QEMU_STATUS)"
      fi
      ;;
  esac
  if ((status != 0)); then
    show_failure_context
  elif ! ((QUIET)); then
    grep -v "$EXPECTED_QEMU_WARNING" "$WORK/qemu.stderr" | sed 's/^/lab: qemu: /' >&2 || true
  fi
  log "result: ${RESULT:-none} (exit $status; accel $accel; $timing)"
  return "$status"
}

# An interactive shell in the guest on this terminal (Ctrl-A X quits QEMU). No markers judged.
cmd_shell() {
  local accel
  fetch
  add_qemu11
  accel=$(choose_accel)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfiod-lab.XXXXXX")
  build_run_cpio setsid -c sh
  : >"$STAGE/lab/interactive"
  (cd "$STAGE" && echo ./lab/interactive | cpio -o -H newc -R 0:0 --quiet) >>"$WORK/initramfs.cpio"
  qemu_args "$accel"
  QEMU_ARGS=("${QEMU_ARGS[@]/#stdio/mon:stdio}")
  log "interactive guest shell ($accel); 'exit' or Ctrl-A X ends it"
  "$QEMU" "${QEMU_ARGS[@]}" || true
}

cmd_sysfs_facts() {
  local expected
  QUIET=1
  lab_run lab-sysfs-facts # set -e: a failed run exits here with its status
  expected=$(sed -n 's/.*LAB-FACTS-END: count=\([0-9]*\).*/\1/p' "$WORK/console.log")
  [[ -n $expected && $(grep -c '^LAB-FACTS: ' "$WORK/console.log") == "$expected" ]] ||
    die "the facts on the console are incomplete (see $WORK/console.log with --keep)"
  {
    printf '{"kernel":"%s","qemu":"%s","devices":[\n' "$KERNEL_RELEASE" "$("$QEMU" --version | head -n1)"
    sed -n 's/^LAB-FACTS: //p' "$WORK/console.log" | sed '$!s/$/,/'
    printf ']}\n'
  } >"${OUT:-/dev/stdout}"
  if [[ -n $OUT ]]; then log "facts of $expected devices written to $OUT"; fi
  return 0
}

main() {
  local cmd=${1:-help}
  (($# > 0)) && shift
  case $cmd in
    run) parse_options run "$@"; lab_run "${PROGRAM_ARGV[@]}" ;;
    selftest) parse_options selftest "$@"; lab_run lab-selftest ;;
    sysfs-facts) parse_options sysfs-facts "$@"; cmd_sysfs_facts ;;
    shell) parse_options shell "$@"; cmd_shell ;;
    fetch) fetch; log "ready: $(kernel_dir)" ;;
    latest-kernel) latest_kernel_lines ;;
    help | -h | --help) usage ;;
    *) usage_error "unknown command '$cmd'" ;;
  esac
}

main "$@"
