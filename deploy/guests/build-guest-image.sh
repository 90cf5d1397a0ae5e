#!/usr/bin/env bash
# Builds one crossvisor guest image that boots ITSELF from its own disk (firmware -> GRUB -> the
# image's kernel -> its initramfs-tools initramfs -> root from its own root= -> systemd -> udev ->
# fstab -> its network config -> the app) and prints CV-* evidence on ttyS0 (format:
# domain/guest_evidence.py). Usage: build-guest-image.sh NAME, NAME one of
#   legacy-bios    MBR + GRUB i386-pc, generic kernel (linux-image-amd64). Ships "unborn" (root by
#                  UUID, MODULES=most); its first boot ("birth", cv-birth) pins fstab/root= to the
#                  kernel device name, MODULES=dep and the NIC name of the hardware it was born on.
#   uefi           GPT + ESP, grub-efi-amd64 at EFI/BOOT/BOOTX64.EFI, root by UUID, MODULES=most,
#                  DHCP on any NIC, cloud kernel (linux-image-cloud-amd64).
#   portable-bios  MBR + GRUB i386-pc, root by UUID, MODULES=most, DHCP on any NIC, cloud kernel.
# Prints DISK=<qcow2> and MANIFEST=<manifest.json>. Every image: first partition at 2 MiB, the
# disk range [1 MiB, 1 MiB + 64 KiB) left zero for crossvisor's content marker.
#
# No loop devices and no libguestfs: the root fs is filled with mke2fs -d, the ESP is made with
# mkfs.vfat --offset, partitions with sfdisk on the image file, and GRUB is installed by the image's
# own grub-install + update-grub in one build-time boot of the image's own kernel + initramfs under
# QEMU (init=cv-build-finish), against the real (virtio) disk.
#
# Cached under ${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/guests/<name>-<key>; the key hashes this
# script, the files under image/, the base tree's key and the candidate versions of the kernel and
# GRUB packages. The debootstrapped base tree (build-guest-base.sh) is shared by all images, and
# downloaded .debs are kept in guests/debs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
img="$here/image"
name="${1:-}"
case "$name" in
  legacy-bios) kpkg=linux-image-amd64 grubpkg=grub-pc firmware=bios ptable=mbr disk_mib=2048 ;;
  uefi) kpkg=linux-image-cloud-amd64 grubpkg=grub-efi-amd64 firmware=efi ptable=gpt disk_mib=1536 ;;
  portable-bios) kpkg=linux-image-cloud-amd64 grubpkg=grub-pc firmware=bios ptable=mbr disk_mib=1536 ;;
  *)
    echo "build-guest-image: unknown image '${name}' (expected legacy-bios, uefi or portable-bios)" >&2
    exit 2
    ;;
esac
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
dir="$cache_root/guests"
mkdir -p "$dir/debs"
log() { echo "build-guest-image[$name]: $*" >&2; }

base="$(bash "$here/build-guest-base.sh" | sed -n 's/^BASE=//p')"
[[ -f "$base/done" ]] || { log "no base tree"; exit 1; }
vers="$(apt-cache policy "$kpkg" "$grubpkg" 2>/dev/null | awk '/^[a-z]/ {p=$1} /Candidate:/ {print p, $2}')"
key="$( { cat "${BASH_SOURCE[0]}"; (cd "$img" && LC_ALL=C find . -type f -print0 | sort -z | xargs -0 sha256sum);
  echo "$name $(basename "$base") $vers ${CROSSVISOR_BIRTH_INITRAMFS:-prebuilt}"; } | sha256sum | cut -c1-16)"
out="$dir/$name-$key"
emit() {
  echo "DISK=$out/disk.qcow2"
  echo "MANIFEST=$out/manifest.json"
}
if [[ -f "$out/done" ]]; then
  emit
  exit 0
fi
exec 9>"$dir/.$name.lock"
flock 9
if [[ -f "$out/done" ]]; then
  emit
  exit 0
fi

t0=$SECONDS
work="$(mktemp -d "$dir/.build-$name.XXXXXX")"
root="$work/root"
mounts=()
cleanup() {
  local m
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
bind() {
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounts+=("$2")
}

# Deterministic identities (a rebuild with the same key is the same image).
hex="$(echo "$key $name" | sha256sum | cut -c1-48)"
root_uuid="${hex:0:8}-${hex:8:4}-4${hex:13:3}-8${hex:17:3}-${hex:20:12}"
esp_id="${hex:32:8}"
esp_uuid="${esp_id:0:4}-${esp_id:4:4}"
esp_uuid="${esp_uuid^^}"

cp -a "$base/root" "$root"
# A headless test VM reads no manuals and speaks one language: docs, man pages and translations
# are left out (as Debian's own minimized images do), here and in every package installed below.
# Every byte of the image is read, flattened, compressed and copied again by each move's export
# and conversion, so ~60 MB less is ~15 % off those stages.
cat >"$root/etc/dpkg/dpkg.cfg.d/cv-minimal" <<'X'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
X
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$root/usr/share/man" "$root/usr/share/info" -mindepth 1 -delete 2>/dev/null || true
find "$root/usr/share/locale" -mindepth 1 ! -name locale.alias -delete
install -D -m 644 "$img/cv-lib.sh" "$root/usr/local/lib/cv/cv-lib.sh"
install -D -m 755 "$img/cv-evidence" "$root/usr/local/sbin/cv-evidence"
install -D -m 755 "$img/cv-app-start" "$root/usr/local/sbin/cv-app-start"
install -D -m 755 "$img/cv-build-finish" "$root/usr/local/sbin/cv-build-finish"
install -D -m 755 "$img/initramfs-hook" "$root/etc/initramfs-tools/hooks/cv-evidence"
install -D -m 755 "$img/initramfs-local-top" "$root/etc/initramfs-tools/scripts/local-top/cv-evidence"
install -D -m 755 "$img/initramfs-local-block" "$root/etc/initramfs-tools/scripts/local-block/cv-evidence"
# Unborn legacy-bios and the portable images: an initramfs with every storage driver.
echo "MODULES=most" >"$root/etc/initramfs-tools/conf.d/cv-modules"
printf 'CV_IMAGE=%s\nCV_BUILD=%s\nCV_FIRMWARE=%s\n' "$name" "$key" "$firmware" >"$root/etc/cv-image"
echo "cv-$name" >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 cv-%s\n' "$name" >"$root/etc/hosts"
if [[ $firmware == efi ]]; then
  printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /boot/efi vfat umask=0077 0 1\n' "$root_uuid" "$esp_uuid" >"$root/etc/fstab"
  mkdir -p "$root/boot/efi"
else
  printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$root_uuid" >"$root/etc/fstab"
fi

log "installing $kpkg $grubpkg in the tree"
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
# Each build has its own apt archive dir (apt locks it; images build in parallel), seeded with
# hard links from the shared .deb cache and linked back into it afterwards.
mkdir -p "$work/archives/partial"
find "$dir/debs" -maxdepth 1 -name '*.deb' -exec ln -f -t "$work/archives" {} + 2>/dev/null || true
bind "$work/archives" "$root/var/cache/apt/archives"
# Either kernel as an install has it, minus module trees no virtual machine's boot can use: every
# storage, SCSI, ATA, NVMe and Ethernet driver stays, and ext4/vfat (the images' filesystems).
# Out go cluster, network and exotic filesystems (NFS with SunRPC, Ceph, 9p, XFS, Btrfs, ...) and
# InfiniBand (nothing of it in a VM), which MODULES=most would otherwise put in the initramfs:
# GRUB reads that file through BIOS calls and the kernel unpacks it under TCG at every boot. The
# generic kernel also loses sound, media, wireless, bluetooth, physical GPUs, IIO and staging.
# dpkg skips them at unpack, before depmod.
{
  for d in fs/xfs fs/btrfs fs/nfs fs/nfsd fs/nfs_common fs/lockd net/sunrpc fs/ceph net/ceph fs/9p net/9p \
    fs/ocfs2 fs/gfs2 fs/dlm fs/f2fs fs/jfs fs/nilfs2 fs/reiserfs fs/udf fs/smb fs/cifs fs/orangefs fs/afs \
    net/rxrpc fs/coda fs/ubifs drivers/infiniband net/rds net/smc; do
    echo "path-exclude=/lib/modules/*/kernel/$d/*"
  done
  if [[ $kpkg == linux-image-amd64 ]]; then
    for d in sound drivers/media drivers/net/wireless drivers/bluetooth net/bluetooth net/mac80211 net/wireless \
      drivers/gpu/drm/amd drivers/gpu/drm/i915 drivers/gpu/drm/nouveau drivers/gpu/drm/radeon \
      drivers/iio drivers/staging drivers/comedi drivers/isdn; do
      echo "path-exclude=/lib/modules/*/kernel/$d/*"
    done
  fi
} >"$root/etc/dpkg/dpkg.cfg.d/cv-no-hardware-modules"
export DEBIAN_FRONTEND=noninteractive
{
  chroot "$root" apt-get update -qq &&
    chroot "$root" apt-get install -y -qq --no-install-recommends "$kpkg" "$grubpkg"
} >"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; exit 1; }
find "$work/archives" -maxdepth 1 -name '*.deb' -exec ln -t "$dir/debs" {} + 2>/dev/null || true
krel="$(cd "$root/lib/modules" && ls | head -n 1)"
kver="$(chroot "$root" dpkg-query -W -f='${Version}' "$kpkg")"
kimg_pkg="$(chroot "$root" dpkg-query -W -f='${Package}' "linux-image-$krel")"
birth_initramfs=""
if [[ $name == legacy-bios ]]; then
  # Birth specializes the initramfs to MODULES=dep in the guest. A real update-initramfs there
  # takes ~150 s under TCG (mkinitramfs execs ~950 processes; 2.6 s natively), so by default the
  # build runs the same mkinitramfs natively once per boot-disk controller family, with exactly the
  # modules MODULES=dep picks for such a root disk (the controller driver chain + ext4), and birth
  # installs the one matching the controller the guest detects on itself. Set
  # CROSSVISOR_BIRTH_INITRAMFS=update for the real in-guest update-initramfs.
  birth_initramfs="${CROSSVISOR_BIRTH_INITRAMFS:-prebuilt}"
  if [[ $birth_initramfs == prebuilt ]]; then
    mkdir -p "$root/boot/cv-dep"
    cp "$root/etc/initramfs-tools/modules" "$work/modules.orig"
    declare -A FAMILY=(
      [virtio_blk]="virtio_pci virtio_blk" [virtio_scsi]="virtio_pci virtio_scsi sd_mod"
      [vmw_pvscsi]="vmw_pvscsi sd_mod" [mptsas]="mptsas sd_mod" [ata_piix]="ata_piix sd_mod"
      [ahci]="ahci sd_mod" [nvme]="nvme" [megaraid_sas]="megaraid_sas sd_mod" [sym53c8xx]="sym53c8xx sd_mod"
    )
    for drv in "${!FAMILY[@]}"; do
      printf '%s\n' ${FAMILY[$drv]} ext4 >"$root/etc/initramfs-tools/modules"
      echo "MODULES=list" >"$root/etc/initramfs-tools/conf.d/cv-modules"
      chroot "$root" mkinitramfs -o "/boot/cv-dep/initrd.img-$krel.$drv" "$krel" >>"$work/mkinitramfs.log" 2>&1 ||
        { tail -20 "$work/mkinitramfs.log" >&2; exit 1; }
    done
    cp "$work/modules.orig" "$root/etc/initramfs-tools/modules"
    echo "MODULES=most" >"$root/etc/initramfs-tools/conf.d/cv-modules"
  fi
  echo "$birth_initramfs" >"$root/etc/cv-birth-initramfs"
fi
for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}"; done
mounts=()
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
log "tree ready at $((SECONDS - t0)) s ($krel)"

cat >"$root/etc/default/grub" <<'G'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0 panic=-1"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
GRUB_DISABLE_RECOVERY=true
G

# systemd: networkd for the network config, the app and the evidence; no login prompt on ttyS0
# (it would interleave with the evidence).
units="$root/etc/systemd/system"
install -m 644 "$img/cv-app.service" "$img/cv-evidence.service" "$units/"
mkdir -p "$units/multi-user.target.wants"
for u in cv-app.service cv-evidence.service; do ln -sf "/etc/systemd/system/$u" "$units/multi-user.target.wants/$u"; done
chroot "$root" systemctl enable -q systemd-networkd.service
ln -sf /dev/null "$units/serial-getty@ttyS0.service"
# A minimal appliance's systemd: under TCG every unit costs tenths of a second, so what a headless
# test VM never uses is masked (pseudo-filesystem mounts, module preloads, timers, fsckd, utmp,
# the generators for LUKS/dm-verity/GPT-auto/SysV/hibernation; fsck of / (the image ships no fsck:
# the unit ran for nothing), the random seed (it waited on the kernel's entropy on the way to
# sysinit.target: ~3 s under TCG), module preloads and sysusers (nothing to load or create)). udev, fstab mounts, journald
# (volatile), logind (+dbus: it powers the guest off on the ACPI power button), networkd and the
# app stay. Status lines only when something fails or hangs; no systemd chatter in the kernel log.
for u in dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
  sys-kernel-config.mount sys-fs-fuse-connections.mount proc-sys-fs-binfmt_misc.automount \
  modprobe@configfs.service modprobe@dm_mod.service modprobe@drm.service modprobe@efi_pstore.service \
  modprobe@fuse.service modprobe@loop.service kmod-static-nodes.service systemd-pstore.service \
  systemd-network-generator.service systemd-journal-flush.service systemd-update-utmp.service \
  systemd-update-utmp-runlevel.service systemd-fsckd.service systemd-fsckd.socket e2scrub_reap.service \
  systemd-ask-password-console.path systemd-ask-password-wall.path systemd-binfmt.service \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
  getty@tty1.service systemd-user-sessions.service \
  systemd-fsck-root.service systemd-random-seed.service systemd-modules-load.service systemd-sysusers.service; do
  ln -sf /dev/null "$units/$u"
done
rm -rf "$units/timers.target.wants" "$units/getty.target.wants"
mkdir -p "$root/etc/systemd/system-generators"
for g in cryptsetup debug gpt-auto hibernate-resume integritysetup rc-local run system-update sysv veritysetup; do
  ln -sf /dev/null "$root/etc/systemd/system-generators/systemd-$g-generator"
done
mkdir -p "$root/etc/systemd/system.conf.d" "$root/etc/systemd/journald.conf.d"
printf '[Manager]\nShowStatus=auto\nLogLevel=notice\n' >"$root/etc/systemd/system.conf.d/cv.conf"
printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/cv.conf"
mkdir -p "$root/etc/systemd/network"
if [[ $name == legacy-bios ]]; then
  install -m 755 "$img/cv-birth" "$root/usr/local/sbin/cv-birth"
  install -m 644 "$img/cv-birth.service" "$units/"
  ln -sf /etc/systemd/system/cv-birth.service "$units/multi-user.target.wants/cv-birth.service"
  : >"$root/etc/cv-unborn"
  netcfg="networkd, [Match] Name=<NIC name at birth> (written by cv-birth)"
  if [[ $birth_initramfs == prebuilt ]]; then
    initramfs="most until birth, then dep (birth installs the dep initramfs prebuilt for the root controller it detects)"
  else
    initramfs="most until birth, then dep (update-initramfs in the guest at birth)"
  fi
  rootspec="UUID=$root_uuid until birth, then the kernel device name at birth"
else
  printf '# Any Ethernet NIC, whatever its name: the image is generalized for portability.\n[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n' \
    >"$root/etc/systemd/network/10-cv.network"
  netcfg="networkd, [Match] Type=ether (any name)"
  initramfs="most"
  rootspec="UUID=$root_uuid"
fi
cp "$root/boot/vmlinuz-$krel" "$work/vmlinuz"
cp "$root/boot/initrd.img-$krel" "$work/initrd"

log "assembling the disk at $((SECONDS - t0)) s"
raw="$work/disk.raw"
truncate -s "${disk_mib}M" "$raw"
if [[ $ptable == gpt ]]; then
  gid="${hex:24:8}-${hex:32:4}-4${hex:37:3}-9${hex:41:3}-${hex:0:12}"
  printf 'label: gpt\nlabel-id: %s\nstart=4096, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"\nstart=135168, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' "$gid" |
    sfdisk -q "$raw"
else
  printf 'label: dos\nlabel-id: 0x%s\nstart=4096, type=83, bootable\n' "${hex:40:8}" | sfdisk -q "$raw"
fi
# start/size (sectors) of partition N
part() { sfdisk -d "$raw" | awk -v p="$raw$1 " 'index($0, p) == 1 {gsub(/[=,]/, " "); for (i = 1; i <= NF; i++) {if ($i == "start") s = $(i + 1); if ($i == "size") z = $(i + 1)} print s, z}'; }
if [[ $ptable == gpt ]]; then
  read -r es ez < <(part 1)
  mkfs.vfat -F 32 -s 1 --offset="$es" -i "$esp_id" -n CVESP "$raw" $((ez / 2)) >"$work/mkfs.vfat.log" 2>&1 ||
    { cat "$work/mkfs.vfat.log" >&2; exit 1; }
  read -r rs rz < <(part 2)
  rootpart=vda2
else
  read -r rs rz < <(part 1)
  rootpart=vda1
fi
mke2fs -q -t ext4 -L cvroot -U "$root_uuid" -d "$root" -E offset=$((rs * 512)) "$raw" $((rz / 2))k
tree_mib="$(du -sm "$root" | cut -f1)"
rm -rf "$root"

log "grub-install + update-grub in the image's own build boot (QEMU TCG) at $((SECONDS - t0)) s"
tb=$SECONDS
timeout 600 qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -nodefaults -no-user-config -display none \
  -kernel "$work/vmlinuz" -initrd "$work/initrd" \
  -append "root=UUID=$root_uuid rw init=/usr/local/sbin/cv-build-finish console=ttyS0 panic=-1" \
  -drive "file=$raw,format=raw,if=virtio,cache=unsafe" -serial "file:$work/build-console.log" -no-reboot \
  >"$work/qemu.log" 2>&1 || true
grep -q 'CV-BUILD done ok=1' "$work/build-console.log" ||
  { log "build boot failed:"; tail -40 "$work/build-console.log" >&2; exit 1; }
build_boot_s=$((SECONDS - tb))
# crossvisor's marker range must be free: GRUB's core.img sits in sectors 1.. of the MBR gap.
if [[ "$(dd if="$raw" bs=65536 skip=16 count=1 2>/dev/null | tr -d '\0' | wc -c)" != 0 ]]; then
  log "bytes [1 MiB, 1 MiB + 64 KiB) are not zero after grub-install"
  exit 1
fi

mkdir -p "$out.tmp"
qemu-img convert -f raw -O qcow2 "$raw" "$out.tmp/disk.qcow2"
cp "$work/build-console.log" "$out.tmp/build-console.log"
python3 - "$out.tmp/manifest.json" <<PY
import json, sys
m = {
    "image": "$name",
    "key": "$key",
    "firmware": "$firmware",
    "partition_table": "$ptable",
    "first_partition_start_bytes": 2 * 1024 * 1024,
    "root_partition": "$rootpart",
    "root_uuid": "$root_uuid",
    "esp_uuid": "$esp_uuid" if "$firmware" == "efi" else None,
    "bootloader": "$grubpkg",
    "kernel_package": "$kpkg",
    "kernel_image_package": "$kimg_pkg",
    "kernel_version": "$kver",
    "kernel_release": "$krel",
    "initramfs_mode": "$initramfs",
    "root_spec": "$rootspec",
    "network_config": "$netcfg",
    "needs_birth": "$name" == "legacy-bios",
    "init": "systemd",
    "console": "ttyS0",
    "marker_offset": 1048576,
    "marker_reserved_bytes": 65536,
    "disk_virtual_bytes": $disk_mib * 1024 * 1024,
    "tree_mib": $tree_mib,
    "build_boot_seconds": $build_boot_s,
    "build_seconds": $((SECONDS - t0)),
    "base": "$(basename "$base")",
}
json.dump(m, open(sys.argv[1], "w"), indent=2)
PY
chmod -R a+rX "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/done"
# Older builds of this image (another key) are stale: drop them to bound the cache.
find "$dir" -maxdepth 1 -type d -name "$name-*" ! -name "$name-$key" -exec rm -rf {} +
log "built $out in $((SECONDS - t0)) s"
emit
