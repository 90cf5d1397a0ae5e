#!/usr/bin/env bash
# Prints KEY=VALUE lines (eval-able with `export`) that let libguestfs/virt-v2v run here: no host
# kernel is installed in /boot on these machines, so supermin gets Debian's cloud kernel
# (downloaded once into the cache, modules indexed with depmod), and KVM is unusable, so the
# appliance runs under TCG.
set -euo pipefail
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
mkdir -p "$cache_root/debs" "$cache_root/kernels"
log() { echo "libguestfs-env: $*" >&2; }

# the package linux-image-cloud-amd64 depends on (apt's candidate), e.g. linux-image-6.1.0-28-cloud-amd64
dep_of() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ && !n++ {print $2}'; }
kpkg="${CROSSVISOR_KERNEL_PKG:-$(dep_of)}"
if [[ -z "$kpkg" ]]; then
  apt-get update -qq >&2 # a fresh machine has no package lists yet
  kpkg="$(dep_of)"
fi
[[ -n "$kpkg" ]] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
tree="$cache_root/kernels/$kpkg"
exec 9>"$cache_root/kernels/.lock"
flock 9
if [[ ! -f "$tree/done" ]]; then
  debs=("$cache_root/debs/${kpkg}_"*.deb)
  if [[ ! -f "${debs[0]}" ]]; then
    work="$(mktemp -d)"
    log "apt-get download $kpkg"
    (cd "$work" && apt-get download -qq "$kpkg" 2>/dev/null) || { apt-get update -qq >&2; (cd "$work" && apt-get download -qq "$kpkg" 2>/dev/null); }
    mv "$work"/*.deb "$cache_root/debs/"
    rm -rf "$work"
    debs=("$cache_root/debs/${kpkg}_"*.deb)
  fi
  rm -rf "$tree.tmp"
  dpkg-deb -x "${debs[0]}" "$tree.tmp"
  # supermin's mini initrd reads modules.dep, which the .deb leaves to its postinst.
  krel_dir=("$tree.tmp"/lib/modules/*)
  depmod -b "$tree.tmp" "$(basename "${krel_dir[0]}")"
  rm -rf "$tree"
  mv "$tree.tmp" "$tree"
  touch "$tree/done"
fi
krel_dir=("$tree"/lib/modules/*)
krel="$(basename "${krel_dir[0]}")"
# supermin copies the host's /lib/modules directory entry itself before the SUPERMIN_MODULES tree.
mkdir -p /lib/modules
echo "SUPERMIN_KERNEL=$tree/boot/vmlinuz-$krel"
echo "SUPERMIN_KERNEL_VERSION=$krel"
echo "SUPERMIN_MODULES=$tree/lib/modules/$krel"
echo "LIBGUESTFS_BACKEND=direct"
echo "LIBGUESTFS_BACKEND_SETTINGS=force_tcg"
