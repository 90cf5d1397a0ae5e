#!/usr/bin/env bash
# Builds (once) the debootstrapped Debian 12 root tree that every image of build-guest-image.sh
# starts from: minbase + systemd/udev + initramfs-tools + busybox (the app's httpd and the
# initramfs's shell) + dbus (systemd-logind needs it to act on the ACPI power button) + iproute2.
# No kernel and no bootloader: each image adds its own. Prints "BASE=<dir>" (the tree is <dir>/root).
#
# Cached under ${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/guests/base-<key>; the key hashes this
# script, the suite, the mirror and the candidate versions of the main packages, so a point
# release rebuilds and an unchanged one costs one apt-cache call.
set -euo pipefail
suite="${CROSSVISOR_GUEST_SUITE:-bookworm}"
mirror="${CROSSVISOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PKGS=systemd-sysv,udev,initramfs-tools,zstd,kmod,e2fsprogs,busybox,dbus,iproute2
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
dir="$cache_root/guests"
mkdir -p "$dir"
log() { echo "build-guest-base: $*" >&2; }

candidates() {
  apt-cache policy systemd udev initramfs-tools busybox dbus 2>/dev/null | awk '/^[a-z]/ {p=$1} /Candidate:/ {print p, $2}'
}
vers="$(candidates)"
if [[ -z "$vers" || "$vers" == *"(none)"* ]]; then
  apt-get update -qq >&2
  vers="$(candidates)"
fi
key="$( { cat "${BASH_SOURCE[0]}"; echo "$suite $mirror $PKGS"; echo "$vers"; } | sha256sum | cut -c1-16)"
out="$dir/base-$key"
if [[ -f "$out/done" ]]; then
  echo "BASE=$out"
  exit 0
fi
exec 9>"$dir/.base.lock"
flock 9
if [[ -f "$out/done" ]]; then
  echo "BASE=$out"
  exit 0
fi
t0=$SECONDS
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
log "debootstrap $suite ($PKGS)"
debootstrap --variant=minbase --include="$PKGS" "$suite" "$out.tmp/root" "$mirror" >"$out.tmp/debootstrap.log" 2>&1 ||
  { tail -20 "$out.tmp/debootstrap.log" >&2; exit 1; }
rm -rf "$out.tmp/root"/var/cache/apt/archives/*.deb
chroot "$out.tmp/root" dpkg-query -W -f='${Package} ${Version}\n' >"$out.tmp/packages"
echo "$vers" >"$out.tmp/candidates"
rm -rf "$out"
mv "$out.tmp" "$out"
echo $((SECONDS - t0)) >"$out/build_seconds"
touch "$out/done"
log "built $out in $((SECONDS - t0)) s"
echo "BASE=$out"
