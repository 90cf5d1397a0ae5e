#!/usr/bin/env bash
# Builds the tiny test guest: a Debian cloud kernel + a busybox initramfs whose /init prints boot
# evidence on ttyS0 and powers off. Prints "KERNEL=<path>" and "INITRD=<path>" on stdout.
#
# Idempotent and cached under ${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/tiny-guest/<key>, where
# the key hashes this script, the init script, the kernel package version and busybox's version, so
# any input change rebuilds and an unchanged one costs ~0.3 s (one apt-cache lookup).
#
# Env: CROSSVISOR_KERNEL_PKG  kernel package to use (default: what linux-image-cloud-amd64 depends on)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
init_src="$here/tiny-init.sh"
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
mkdir -p "$cache_root/tiny-guest" "$cache_root/debs"

# Modules the init loads, in this order after their dependencies. Missing ones are skipped, so the
# list can name drivers that only some kernel flavours ship (the cloud kernel has no e1000/AHCI).
MODULES=(
  virtio_pci virtio_blk virtio_net virtio_scsi
  scsi_mod sd_mod libata ata_piix ata_generic ahci
  vmxnet3 vmw_pvscsi e1000 e1000e 8139cp
)

log() { echo "build-tiny-guest: $*" >&2; }

resolve_kernel_pkg() {
  if [[ -n "${CROSSVISOR_KERNEL_PKG:-}" ]]; then
    echo "$CROSSVISOR_KERNEL_PKG"
    return
  fi
  local dep
  dep="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ && !n++ {print $2}')"
  if [[ -z "$dep" ]]; then
    # Fresh machine with no package lists yet.
    apt-get update -qq >&2
    dep="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ && !n++ {print $2}')"
  fi
  [[ -n "$dep" ]] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
  echo "$dep"
}

kpkg="$(resolve_kernel_pkg)"
kver_pkg="$(apt-cache show --no-all-versions "$kpkg" 2>/dev/null | awk '/^Version:/ && !n++ {print $2}')"
bb_ver="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)"
[[ -n "$bb_ver" ]] || { log "busybox-static is not installed (deploy/install-system.sh)"; exit 1; }
key="$( { cat "${BASH_SOURCE[0]}" "$init_src"; echo "$kpkg $kver_pkg $bb_ver"; } | sha256sum | cut -c1-16)"
out="$cache_root/tiny-guest/$key"

emit() {
  echo "KERNEL=$out/vmlinuz"
  echo "INITRD=$out/initrd.gz"
}

if [[ -f "$out/done" ]]; then
  emit
  exit 0
fi

# One builder at a time per cache; a second caller waits and then finds the result.
exec 9>"$cache_root/tiny-guest/.lock"
flock 9
if [[ -f "$out/done" ]]; then
  emit
  exit 0
fi

t0=$SECONDS
work="$(mktemp -d "$cache_root/tiny-guest/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# (no `| head` under pipefail: an early-closing reader SIGPIPEs the writer and fails the script)
debs=("$cache_root/debs/${kpkg}_"*.deb)
deb=""
[[ -f "${debs[0]}" ]] && deb="${debs[0]}"
if [[ -z "$deb" ]]; then
  log "apt-get download $kpkg"
  # Download into a scratch dir: apt warns (harmlessly) that it cannot sandbox as _apt there.
  if ! (cd "$work" && apt-get download -qq "$kpkg" 2>/dev/null); then
    apt-get update -qq >&2
    (cd "$work" && apt-get download -qq "$kpkg" 2>/dev/null)
  fi
  mv "$work"/*.deb "$cache_root/debs/"
  debs=("$cache_root/debs/${kpkg}_"*.deb)
  deb="${debs[0]}"
fi

dpkg-deb -x "$deb" "$work/kpkg"
kdirs=("$work"/kpkg/lib/modules/*)
kdir="${kdirs[0]}"
krel="$(basename "$kdir")"

root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,lib/modules/"$krel"}
cp /bin/busybox "$root/bin/busybox"
# Only the applets /init uses: keeps the image small and the init's needs explicit.
for a in sh mount umount mkdir cat echo ls sleep insmod grep sed awk wc dd xxd head tr basename \
  readlink poweroff dmesg nproc; do
  ln -s busybox "$root/bin/$a"
done
cp "$init_src" "$root/init"
chmod 755 "$root/init"

# Resolve each module's dependency chain with the host's modinfo (reads the .ko file itself) and
# write the load order, so the init needs no modules.dep/modprobe.
declare -A seen=()
order=()
add_mod() {
  local name="$1" f deps d
  [[ -n "${seen[$name]:-}" ]] && return 0
  seen[$name]=1
  f="$(find "$kdir/kernel" \( -name "${name}.ko" -o -name "${name//_/-}.ko" \) -print -quit)"
  if [[ -z "$f" ]]; then
    grep -qE "/(${name}|${name//_/-})\.ko$" "$kdir/modules.builtin" 2>/dev/null || log "no module $name in $krel (skipped)"
    return 0
  fi
  deps="$(modinfo -F depends "$f" | tr ',' ' ')"
  for d in $deps; do add_mod "$d"; done
  cp "$f" "$root/lib/modules/$krel/"
  order+=("$(basename "$f")")
}
for m in "${MODULES[@]}"; do add_mod "$m"; done
printf '%s\n' "${order[@]}" >"$root/lib/modules/$krel/load-order"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
  gzip -9n >"$work/initrd.gz"

mkdir -p "$out.tmp"
cp "$work/kpkg/boot/vmlinuz-$krel" "$out.tmp/vmlinuz"
mv "$work/initrd.gz" "$out.tmp/initrd.gz"
printf 'kernel_pkg=%s\nkernel_version=%s\nkernel_release=%s\nbusybox=%s\nmodules=%s\n' \
  "$kpkg" "$kver_pkg" "$krel" "$bb_ver" "${order[*]}" >"$out.tmp/manifest"
chmod -R a+rX "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/done"
log "built $out in $((SECONDS - t0)) s"
emit
