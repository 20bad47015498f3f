#!/usr/bin/env bash
# QEMU 11 (Debian trixie-backports) for the vfio-user tests, without touching the host's system.
#
#   tools/lab/qemu11.sh [fetch]       download (only what the cache lacks), verify, extract;
#                                     prints the runner's path (tools/lab/qemu11) on stdout
#   tools/lab/qemu11.sh --check       fetch, then print the version the runner reports; exit 0
#                                     only when it is the pinned QEMU and runs (also: check)
#   tools/lab/qemu11.sh run ARGS...   fetch, then run qemu-system-x86_64 ARGS (via the runner)
#   tools/lab/qemu11.sh root          fetch, then print the extracted tree's path
#   tools/lab/qemu11.sh latest-pin    print a qemu11.pin with the archive's current versions
#   tools/lab/qemu11.sh guest-cpio    fetch, then print the path of a cpio archive (newc) holding
#                                     the runner at /opt/qemu11/qemu11 and what qemu-system-x86_64
#                                     opens under -accel qtest at /opt/qemu11/root (cached; the
#                                     VM lab appends it to its initramfs: lab.sh run --qemu11)
#
# The packages are pinned by name, version and .deb sha256 in tools/lab/qemu11.pin. apt runs with
# a private configuration under the cache (its own sources.list naming trixie and
# trixie-backports, its own lists, an empty dpkg status, a preferences file preferring
# trixie-backports for qemu-* and seabios): /etc/apt is read for nothing but apt's defaults, and
# nothing is installed. The .debs are cached in $LAB_CACHE/qemu11/debs (default
# <repo>/.lab-cache) and re-used without any network access while their sha256 match the pin;
# each is unpacked with `dpkg-deb -x` into $LAB_CACHE/qemu11/root. tools/lab/qemu11 runs the
# binary from there through trixie's own dynamic loader (see that file).
#
# A pinned version that is no longer in the archive (a trixie point release, a new backport):
# the current versions are used instead, with a WARNING and the lines to put in the pin; with
# QEMU11_STRICT_PIN=1 that is an error. Exit codes: 0 ready, 2 failure (message on stderr).
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_DIR/../.." && pwd)
PIN_FILE=${QEMU11_PIN:-$LAB_DIR/qemu11.pin}
RUNNER=$LAB_DIR/qemu11
CACHE_DIR=$(realpath -m "${LAB_CACHE:-$REPO_ROOT/.lab-cache}")
Q_DIR=$CACHE_DIR/qemu11
DEB_DIR=$Q_DIR/debs
ROOT_DIR=$Q_DIR/root
APT_DIR=$Q_DIR/apt
ARCHIVE=${QEMU11_ARCHIVE:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# The packages that the preferences take from trixie-backports (everything else: trixie).
BACKPORTED='qemu-* seabios'

log() { echo "qemu11: $*" >&2; }
die() {
  echo "qemu11: error: $*" >&2
  exit 2
}
now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

TMP_DIRS=()
trap 'for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done' EXIT
make_temp_dir() {
  local -n ref=$1
  ref=$(mktemp -d "$2/tmp.XXXXXX")
  TMP_DIRS+=("$ref")
}

# Serializes cache updates between concurrent users (tools/test.sh, the guest boot, a developer).
lock_cache() {
  mkdir -p "$Q_DIR"
  exec {LOCK_FD}>"$Q_DIR/.lock"
  flock "$LOCK_FD"
}

# ---------------------------------------------------------------------------------------------
# The pin

# read_pin FILE: sets PIN_NAMES, PIN_VERSION[name], PIN_SHA[name] from NAME VERSION SHA256 lines.
declare -a PIN_NAMES=()
declare -A PIN_VERSION=() PIN_SHA=()
read_pin() {
  local name version sha rest
  PIN_NAMES=() PIN_VERSION=() PIN_SHA=()
  while read -r name version sha rest; do
    [[ -z $name || $name == \#* ]] && continue
    [[ -n $sha && -z $rest && $sha =~ ^[0-9a-f]{64}$ ]] || die "$1: malformed line '$name $version $sha $rest'"
    PIN_NAMES+=("$name")
    PIN_VERSION[$name]=$version
    PIN_SHA[$name]=$sha
  done <"$1"
  ((${#PIN_NAMES[@]} > 0)) || die "$1 names no package"
}

# The effective pin as text (what the extracted tree's stamp records).
pin_text() {
  local name
  for name in "${PIN_NAMES[@]}"; do
    echo "$name ${PIN_VERSION[$name]} ${PIN_SHA[$name]}"
  done
}

deb_file() { echo "$DEB_DIR/${1}_${PIN_VERSION[$1]//:/%3a}.deb"; }

deb_ok() {
  local f
  f=$(deb_file "$1")
  [[ -f $f && $(sha256sum "$f" | cut -d' ' -f1) == "${PIN_SHA[$1]}" ]]
}

# ---------------------------------------------------------------------------------------------
# The private apt configuration

APT_OPTS=()
setup_apt() {
  mkdir -p "$APT_DIR"/{etc/empty.d,lists/partial,cache/archives/partial}
  : >"$APT_DIR/status"
  cat >"$APT_DIR/etc/sources.list" <<EOF
deb [signed-by=$KEYRING] $ARCHIVE trixie main
deb [signed-by=$KEYRING] $ARCHIVE trixie-backports main
EOF
  # Without it apt refuses qemu 11 (seabios (> 1.17.0-1~) but 1.16.3-2 is to be installed).
  cat >"$APT_DIR/etc/preferences" <<EOF
Package: $BACKPORTED
Pin: release n=trixie-backports
Pin-Priority: 990
EOF
  APT_OPTS=(-q
    -o "Dir::Etc::sourcelist=$APT_DIR/etc/sources.list"
    -o "Dir::Etc::sourceparts=$APT_DIR/etc/empty.d"
    -o "Dir::Etc::preferences=$APT_DIR/etc/preferences"
    -o "Dir::Etc::preferencesparts=$APT_DIR/etc/empty.d"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::State::status=$APT_DIR/status"
    -o "Dir::Cache=$APT_DIR/cache"
    -o APT::Architecture=amd64 -o APT::Architectures::=amd64
    -o Acquire::Languages=none)
  # As root, apt drops to the _apt user, which cannot write into the cache: keep root.
  if [[ $(id -u) -eq 0 ]]; then APT_OPTS+=(-o APT::Sandbox::User=root); fi
}

APT_UPDATED=0
apt_update() {
  ((APT_UPDATED)) && return 0
  setup_apt
  log "apt-get update (private lists in $APT_DIR: trixie, trixie-backports)"
  apt-get "${APT_OPTS[@]}" update >"$APT_DIR/update.log" 2>&1 ||
    die "apt-get update failed (is $ARCHIVE reachable?): $(tail -n 3 "$APT_DIR/update.log" | tr '\n' ' ')"
  APT_UPDATED=1
}

# available_versions NAME...: "NAME VERSION" for every version of those packages the archive's
# index has (one apt-cache call: each costs about 0.5 s of parsing the lists).
available_versions() {
  apt-cache "${APT_OPTS[@]}" show "$@" 2>/dev/null |
    awk '/^Package:/ {p = $2} /^Version:/ {print p, $2}'
}

# latest_pin_lines: NAME VERSION SHA256 of the archive's candidate of each pinned package name.
latest_pin_lines() {
  local name policy shows version sha
  apt_update
  # One apt-cache call per question for all packages (each call parses the lists again).
  policy=$(apt-cache "${APT_OPTS[@]}" policy "${PIN_NAMES[@]}" 2>/dev/null |
    awk '/^[^ ]/ {sub(":$", "", $1); p = $1} /Candidate:/ {print p, $2}')
  local -A candidate=()
  while read -r name version; do candidate[$name]=$version; done <<<"$policy"
  local -a specs=()
  for name in "${PIN_NAMES[@]}"; do
    version=${candidate[$name]:-}
    [[ -n $version && $version != "(none)" ]] ||
      die "package $name is not in the archive any more: the package list in $PIN_FILE needs review"
    specs+=("$name=$version")
  done
  shows=$(apt-cache "${APT_OPTS[@]}" show "${specs[@]}" 2>/dev/null |
    awk '/^Package:/ {p = $2} /^Version:/ {v = $2} /^SHA256:/ {print p, v, $2}')
  for name in "${PIN_NAMES[@]}"; do
    sha=$(awk -v p="$name" -v v="${candidate[$name]}" '$1 == p && $2 == v {print $3; exit}' <<<"$shows")
    [[ -n $sha ]] || die "no SHA256 for $name=${candidate[$name]} in the archive's index"
    echo "$name ${candidate[$name]} $sha"
  done
}

cmd_latest_pin() {
  read_pin "$PIN_FILE"
  sed -n '/^#/!q; p' "$PIN_FILE"
  latest_pin_lines
}

# When a pinned version has left the archive: use the archive's current set (like lab.sh does
# with its kernel), loudly; or fail under QEMU11_STRICT_PIN=1.
fall_back_to_archive() {
  local gone=$1 lines tmp
  log "the pinned $gone is no longer in the archive (Debian keeps only the current versions)."
  if [[ ${QEMU11_STRICT_PIN:-0} == 1 ]]; then
    die "QEMU11_STRICT_PIN=1: update the pin: tools/lab/qemu11.sh latest-pin > $PIN_FILE.new && mv $PIN_FILE.new $PIN_FILE"
  fi
  lines=$(latest_pin_lines)
  log "WARNING: using the archive's current versions instead. Update tools/lab/qemu11.pin:"
  log "WARNING:   tools/lab/qemu11.sh latest-pin > $PIN_FILE.new && mv $PIN_FILE.new $PIN_FILE"
  log "WARNING: (differences from the pin below)"
  diff <(pin_text) <(echo "$lines") | sed -n 's/^[<>]/qemu11:   &/p' >&2 || true
  make_temp_dir tmp "$Q_DIR"
  echo "$lines" >"$tmp/pin"
  read_pin "$tmp/pin"
}

# ---------------------------------------------------------------------------------------------
# Download, verify, extract

download_missing() {
  local name missing=() tmp f got
  for name in "${PIN_NAMES[@]}"; do
    deb_ok "$name" || missing+=("$name")
  done
  ((${#missing[@]} == 0)) && return 0
  apt_update
  local have
  have=$(available_versions "${missing[@]}")
  for name in "${missing[@]}"; do
    if ! grep -qxF "$name ${PIN_VERSION[$name]}" <<<"$have"; then
      fall_back_to_archive "$name=${PIN_VERSION[$name]}"
      download_missing
      return 0
    fi
  done
  log "downloading ${#missing[@]} of ${#PIN_NAMES[@]} packages"
  mkdir -p "$DEB_DIR"
  make_temp_dir tmp "$Q_DIR"
  local -a specs=()
  for name in "${missing[@]}"; do specs+=("$name=${PIN_VERSION[$name]}"); done
  (cd "$tmp" && apt-get "${APT_OPTS[@]}" download "${specs[@]}") >"$tmp.log" 2>&1 ||
    die "apt-get download failed: $(tail -n 5 "$tmp.log" | tr '\n' ' ')"
  rm -f "$tmp.log"
  for name in "${missing[@]}"; do
    f=$(compgen -G "$tmp/${name}_*.deb" | head -n1) || true
    [[ -n $f ]] || die "apt-get download gave no .deb for $name"
    got=$(sha256sum "$f" | cut -d' ' -f1)
    # apt has checked the file against the archive's signed index; the pin's own hash also
    # guards against the archive serving other bytes under the same version.
    [[ $got == "${PIN_SHA[$name]}" ]] ||
      die "$name=${PIN_VERSION[$name]}: sha256 $got does not match the pin ${PIN_SHA[$name]} ($PIN_FILE)"
    mv "$f" "$(deb_file "$name")"
  done
}

# Unpacks every .deb into a fresh tree and swaps it in; the stamp records the effective pin.
extract() {
  local stamp tmp name
  stamp=$(pin_text | sha256sum | cut -d' ' -f1)
  [[ -f $ROOT_DIR/.complete && $(cat "$ROOT_DIR/.complete") == "$stamp" ]] && return 0
  log "extracting ${#PIN_NAMES[@]} packages into $ROOT_DIR"
  make_temp_dir tmp "$Q_DIR"
  for name in "${PIN_NAMES[@]}"; do
    deb_ok "$name" || die "$(deb_file "$name"): missing or not matching the pin"
    dpkg-deb -x "$(deb_file "$name")" "$tmp/root" || die "dpkg-deb -x $(deb_file "$name") failed"
  done
  check_closure "$tmp/root"
  pin_text >"$tmp/root/.pin"
  echo "$stamp" >"$tmp/root/.complete"
  rm -rf "$ROOT_DIR"
  mv "$tmp/root" "$ROOT_DIR"
}

# Every shared library that qemu-system-x86_64 and its qtest module need resolves inside the tree
# (a package list gone stale after a pin update shows here, not as a failure in a test).
check_closure() {
  local r=$1 ld=$1/usr/lib64/ld-linux-x86-64.so.2 f out
  [[ -x $ld ]] || die "no loader at $ld (libc6 missing from the pin?)"
  for f in "$r/usr/bin/qemu-system-x86_64" "$r"/usr/lib/x86_64-linux-gnu/qemu/accel-qtest.so; do
    [[ -f $f ]] || die "$f missing from the extracted packages"
    out=$("$ld" --library-path "$r/usr/lib/x86_64-linux-gnu" --list "$f" 2>&1) ||
      die "the loader cannot resolve $f: $out"
    if grep -q 'not found' <<<"$out"; then
      die "$f needs libraries no pinned package provides (add their packages to $PIN_FILE): $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
    fi
    # Resolved to the host's own libraries instead of the tree's: a missing package too.
    if awk '$2 == "=>" {print $3}' <<<"$out" | grep -v "^$r/" | grep -q .; then
      die "$f resolves libraries outside the tree: $(awk '$2 == "=>" {print $3}' <<<"$out" | grep -v "^$r/" | tr '\n' ' ')"
    fi
  done
}

fetch() {
  local t0
  t0=$(now)
  command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
  read_pin "$PIN_FILE"
  lock_cache
  download_missing
  extract
  flock -u "$LOCK_FD"
  FETCH_SECONDS=$(elapsed "$t0" "$(now)")
}

cmd_check() {
  local want out
  fetch
  want=${PIN_VERSION[qemu-system-x86]:-}
  out=$("$RUNNER" --version 2>&1) || die "the runner failed: $out"
  echo "$out" | head -n1
  # "QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-2~bpo13+1)"
  [[ -n $want && $out == *"(Debian $want)"* ]] ||
    die "the runner reports '$(head -n1 <<<"$out")', not the pinned qemu-system-x86 $want"
  # (-device vfio-user-pci,help loads only the modules it needs; "-device help" loads them all
  # and complains about the host's QEMU 7.2 modules for the ones the pin leaves out.)
  out=$("$RUNNER" -machine q35 -accel qtest -display none -nodefaults -device vfio-user-pci,help 2>&1) ||
    die "qemu -accel qtest -device vfio-user-pci,help failed: $(head -n 3 <<<"$out")"
  grep -q 'socket=<SocketAddress>' <<<"$out" || die "this QEMU's vfio-user-pci has no socket property"
  log "ready in ${FETCH_SECONDS}s: $RUNNER (root $ROOT_DIR; qtest and vfio-user-pci present)"
}

# The part of the tree that QEMU opens for a q35 machine under -accel qtest (seen with strace:
# the binary, its ELF closure as trixie's loader resolves it, the qtest module, SeaBIOS and
# kvmvapic.bin), plus the few x86 option ROMs a -kernel boot would load: 69 MB of the tree's
# 146 MB. In a cpio archive at /opt/qemu11/root, with the runner at /opt/qemu11/qemu11 (which
# prefers a root next to itself). Rebuilt when the tree's stamp or the runner changes.
GUEST_FIRMWARE=(seabios/bios-256k.bin seabios/bios.bin qemu/kvmvapic.bin qemu/linuxboot_dma.bin
  qemu/pvh.bin qemu/multiboot_dma.bin)
cmd_guest_cpio() {
  local r=$ROOT_DIR out=$Q_DIR/guest.cpio stamp tmp stage ld lib f
  stamp="$(cat "$r/.complete") runner=$(sha256sum "$RUNNER" | cut -d' ' -f1) files=${GUEST_FIRMWARE[*]}"
  if [[ -f $out && -f $out.stamp && $(cat "$out.stamp") == "$stamp" ]]; then
    echo "$out"
    return 0
  fi
  command -v cpio >/dev/null || die "cpio not found"
  log "building the guest's QEMU 11 archive ($out)"
  make_temp_dir tmp "$Q_DIR"
  stage=$tmp/opt/qemu11/root
  ld=$r/usr/lib64/ld-linux-x86-64.so.2
  mkdir -p "$stage/usr/bin" "$stage/usr/lib64" "$stage/usr/lib/x86_64-linux-gnu/qemu" \
    "$stage/usr/share/seabios" "$stage/usr/share/qemu"
  cp -L "$ld" "$stage/usr/lib64/"
  cp -L "$r/usr/bin/qemu-system-x86_64" "$stage/usr/bin/"
  cp -L "$r/usr/lib/x86_64-linux-gnu/qemu/accel-qtest.so" "$stage/usr/lib/x86_64-linux-gnu/qemu/"
  # Each library under the name the loader looks up (its soname), content dereferenced.
  for f in "$r/usr/bin/qemu-system-x86_64" "$r/usr/lib/x86_64-linux-gnu/qemu/accel-qtest.so"; do
    "$ld" --library-path "$r/usr/lib/x86_64-linux-gnu" --list "$f" |
      awk '$2 == "=>" && $3 ~ /\// {print $3}' | while read -r lib; do
      [[ $lib == /* ]] || lib=$PWD/$lib
      [[ -e $stage/usr/lib/x86_64-linux-gnu/${lib##*/} ]] ||
        cp -L "$lib" "$stage/usr/lib/x86_64-linux-gnu/" || die "copying $lib failed"
    done
  done
  for f in "${GUEST_FIRMWARE[@]}"; do
    cp -L "$r/usr/share/$f" "$stage/usr/share/$f" || die "$r/usr/share/$f missing"
  done
  cp "$r/.pin" "$r/.complete" "$stage/"
  cp "$RUNNER" "$tmp/opt/qemu11/qemu11"
  chmod 0755 "$tmp/opt/qemu11/qemu11"
  (cd "$tmp" && find opt | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp" ||
    die "cpio of the guest tree failed"
  mv "$out.tmp" "$out"
  echo "$stamp" >"$out.stamp"
  log "guest archive: $(du -h "$out" | cut -f1)"
  echo "$out"
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d; s/^# \{0,1\}//; p}' "${BASH_SOURCE[0]}"; }

main() {
  local cmd=${1:-fetch}
  (($# > 0)) && shift
  case $cmd in
    fetch) fetch; log "ready in ${FETCH_SECONDS}s"; echo "$RUNNER" ;;
    --check | check) cmd_check ;;
    run) fetch; exec "$RUNNER" "$@" ;;
    root) fetch; echo "$ROOT_DIR" ;;
    latest-pin) cmd_latest_pin ;;
    guest-cpio) fetch; lock_cache; cmd_guest_cpio ;;
    help | -h | --help) usage ;;
    *) die "unknown command '$cmd' (see tools/lab/qemu11.sh help)" ;;
  esac
}

main "$@"
