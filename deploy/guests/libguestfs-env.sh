#!/usr/bin/env bash
# Prints KEY=VALUE lines (eval-able with `export`) that let libguestfs/virt-v2v run here: no host
# kernel is installed in /boot on these machines, so supermin gets the tiny guest's Debian cloud
# kernel (extracted once into the cache), and KVM is unusable, so the appliance runs under TCG.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
# The tiny-guest build downloads the kernel .deb into the cache and names it in its manifest.
kernel_path="$(bash "$here/build-tiny-guest.sh" | sed -n 's/^KERNEL=//p')"
manifest="$(dirname "$kernel_path")/manifest"
kpkg="$(sed -n 's/^kernel_pkg=//p' "$manifest")"
krel="$(sed -n 's/^kernel_release=//p' "$manifest")"
tree="$cache_root/kernels/$kpkg"
if [[ ! -f "$tree/done" ]]; then
  debs=("$cache_root/debs/${kpkg}_"*.deb)
  rm -rf "$tree.tmp"
  mkdir -p "$cache_root/kernels"
  dpkg-deb -x "${debs[0]}" "$tree.tmp"
  # supermin's mini initrd reads modules.dep, which the .deb leaves to its postinst.
  krel_dir=("$tree.tmp"/lib/modules/*)
  depmod -b "$tree.tmp" "$(basename "${krel_dir[0]}")"
  rm -rf "$tree"
  mv "$tree.tmp" "$tree"
  touch "$tree/done"
fi
# supermin copies the host's /lib/modules directory entry itself before the SUPERMIN_MODULES tree.
mkdir -p /lib/modules
echo "SUPERMIN_KERNEL=$tree/boot/vmlinuz-$krel"
echo "SUPERMIN_KERNEL_VERSION=$krel"
echo "SUPERMIN_MODULES=$tree/lib/modules/$krel"
echo "LIBGUESTFS_BACKEND=direct"
echo "LIBGUESTFS_BACKEND_SETTINGS=force_tcg"
