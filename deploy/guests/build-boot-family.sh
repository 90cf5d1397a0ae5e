#!/usr/bin/env bash
# Builds a guest FAMILY image with no crossvisor part in it, named for the boot behaviour it
# reproduces (issue 23), in the pattern of build-plain-image.sh (same base tree, same minimized
# Debian 12, ssh key made for the build, content-hash cache, [1 MiB, 2 MiB) left zero). Usage:
# build-boot-family.sh NAME, NAME one of
#   vmware-born  a VM that has only ever lived on VMware's LSI/PVSCSI: open-vm-tools installed and
#                enabled, no QEMU guest agent, / named by its kernel device name /dev/sda1 in fstab
#                and in GRUB's root= (GRUB_DISABLE_LINUX_UUID=true, update-grub run while the disk
#                was sda). BIOS, MBR, openssh-server.
#   uefi-nvram   UEFI, GPT + ESP, GRUB installed by grub-install at \EFI\debian\grubx64.efi with
#                its Boot#### entry written to the firmware's NVRAM (as Debian's installer does),
#                and no removable-media fallback \EFI\BOOT\BOOTX64.EFI. The OVMF variable store
#                holding that entry ships beside the disk (nvram.fd): it belongs to the VM, not to
#                the disk, so a move that carries only the disk (OVF import) leaves it behind.
# Prints DISK=, MANIFEST=, SSH_KEY= (and NVRAM= for uefi-nvram). Cached under
# ${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/guests/<name>-<key>.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:-}"
case "$name" in
  vmware-born) extra="openssh-server open-vm-tools" grubpkg=grub-pc firmware=bios ;;
  uefi-nvram) extra="openssh-server efibootmgr" grubpkg=grub-efi-amd64 firmware=efi ;;
  *)
    echo "build-boot-family: unknown image '${name}' (expected vmware-born or uefi-nvram)" >&2
    exit 2
    ;;
esac
kpkg=linux-image-amd64 disk_mib=2048
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
dir="$cache_root/guests"
mkdir -p "$dir/debs"
log() { echo "build-boot-family[$name]: $*" >&2; }

base="$(bash "$here/build-guest-base.sh" | sed -n 's/^BASE=//p')"
[[ -f "$base/done" ]] || { log "no base tree"; exit 1; }
vers="$(apt-cache policy $kpkg $grubpkg $extra 2>/dev/null | awk '/^[a-z]/ {p=$1} /Candidate:/ {print p, $2}')"
[[ $firmware == efi ]] && vers="$vers $(sha256sum "$OVMF_CODE" "$OVMF_VARS" | cut -c1-16 | tr '\n' ' ')"
key="$( { cat "${BASH_SOURCE[0]}"; echo "$name $(basename "$base") $vers"; } | sha256sum | cut -c1-16)"
out="$dir/$name-$key"
emit() {
  echo "DISK=$out/disk.qcow2"
  echo "MANIFEST=$out/manifest.json"
  echo "SSH_KEY=$out/ssh/id_ed25519"
  [[ $firmware != efi ]] || echo "NVRAM=$out/nvram.fd"
}
if [[ -f "$out/done" ]]; then emit; exit 0; fi
exec 9>"$dir/.$name.lock"
flock 9
if [[ -f "$out/done" ]]; then emit; exit 0; fi

t0=$SECONDS
work="$(mktemp -d "$dir/.build-$name.XXXXXX")"
root="$work/root"
mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mounts+=("$2"); }
hex="$(echo "$key $name" | sha256sum | cut -c1-48)"
root_uuid="${hex:0:8}-${hex:8:4}-4${hex:13:3}-8${hex:17:3}-${hex:20:12}"
esp_id="${hex:24:8}"
esp_uuid="${esp_id:0:4}-${esp_id:4:4}"
esp_uuid="${esp_uuid^^}"

cp -a "$base/root" "$root"
cat >"$root/etc/dpkg/dpkg.cfg.d/minimal" <<'X'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
X
for d in sound drivers/media drivers/net/wireless drivers/bluetooth net/bluetooth net/mac80211 net/wireless \
  drivers/gpu/drm/amd drivers/gpu/drm/i915 drivers/gpu/drm/nouveau drivers/gpu/drm/radeon drivers/iio \
  drivers/staging drivers/infiniband fs/xfs fs/btrfs fs/ocfs2 fs/gfs2 fs/f2fs fs/jfs fs/nilfs2 fs/reiserfs; do
  echo "path-exclude=/lib/modules/*/kernel/$d/*"
done >"$root/etc/dpkg/dpkg.cfg.d/no-hardware-modules"
echo "$name" >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$name" >"$root/etc/hosts"
case "$name" in
  # what an installer on VMware's LSI/PVSCSI wrote when device names were stable enough for it
  vmware-born) printf '/dev/sda1 / ext4 errors=remount-ro 0 1\n' >"$root/etc/fstab" ;;
  uefi-nvram)
    printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /boot/efi vfat umask=0077 0 1\n' "$root_uuid" "$esp_uuid" >"$root/etc/fstab"
    mkdir -p "$root/boot/efi"
    ;;
esac

bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
mkdir -p "$work/archives/partial"
find "$dir/debs" -maxdepth 1 -name '*.deb' -exec ln -f -t "$work/archives" {} + 2>/dev/null || true
bind "$work/archives" "$root/var/cache/apt/archives"
export DEBIAN_FRONTEND=noninteractive
log "installing $kpkg $grubpkg $extra"
{
  chroot "$root" apt-get update -qq &&
    chroot "$root" apt-get install -y -qq --no-install-recommends $kpkg $grubpkg $extra
} >"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; exit 1; }
find "$work/archives" -maxdepth 1 -name '*.deb' -exec ln -f -t "$dir/debs" {} + 2>/dev/null || true
krel="$(cd "$root/lib/modules" && ls | head -n 1)"
for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}"; done
mounts=()
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin

cat >"$root/etc/default/grub" <<'G'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
G
# vmware-born: root= by kernel device name, as update-grub writes it with this set (the build boot
# shows it the disk as sda, as VMware's SCSI controllers do)
[[ $name != vmware-born ]] || echo "GRUB_DISABLE_LINUX_UUID=true" >>"$root/etc/default/grub"
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/10-dhcp.network"
chroot "$root" systemctl enable -q systemd-networkd.service
[[ $name != vmware-born ]] || chroot "$root" systemctl enable -q open-vm-tools.service
mkdir -p "$work/ssh" "$root/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C "$name-operator" -f "$work/ssh/id_ed25519"
install -m 600 "$work/ssh/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 700 "$root/root/.ssh"
rm -f "$root"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$root/etc/ssh/ssh_host_ed25519_key"
cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$work/ssh/host_ed25519_key.pub"
# The image's own grub-install in its one build boot; the script deletes itself first.
if [[ $firmware == efi ]]; then
  # as Debian's installer: the NVRAM entry "debian" -> \EFI\debian\grubx64.efi, no removable path
  install_cmd='mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null; mkdir -p /boot/efi; mount /boot/efi || ok=0
grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian --no-uefi-secure-boot >/dev/console 2>&1 || ok=0
[ -e /boot/efi/EFI/BOOT ] && { echo "BUILD-FINISH removable path present" >/dev/console; ok=0; }
efibootmgr -v >/dev/console 2>&1 || ok=0
ls -R /boot/efi >/dev/console'
  bootdisk=/dev/vda
else
  install_cmd='grub-install --target=i386-pc /dev/sda >/dev/console 2>&1 || ok=0'
  bootdisk=/dev/sda
fi
cat >"$root/usr/local/sbin/build-finish" <<F
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ -z "\${FROM_RUN:-}" ]; then cp "\$0" /run/build-finish; rm -f "\$0"; FROM_RUN=1 exec /bin/sh /run/build-finish; fi
mount -o remount,rw /
ok=1
$install_cmd
update-grub >/dev/console 2>&1 || ok=0
sed -n 's/^[[:space:]]*linux[[:space:]].* \\(root=[^ ]*\\).*/GRUB-\\1/p' /boot/grub/grub.cfg | head -n 1 >/dev/console
[ -d /boot/efi/EFI ] && umount /boot/efi
sync
mount -o remount,ro / || ok=0
echo "BUILD-FINISH ok=\$ok" >/dev/console
echo o >/proc/sysrq-trigger
sleep 30
F
chmod 755 "$root/usr/local/sbin/build-finish"
cp "$root/boot/vmlinuz-$krel" "$work/vmlinuz"
cp "$root/boot/initrd.img-$krel" "$work/initrd"

raw="$work/disk.raw"
truncate -s "${disk_mib}M" "$raw"
part() { sfdisk -d "$raw" | awk -v p="$raw$1 " 'index($0, p) == 1 {gsub(/[=,]/, " "); for (i = 1; i <= NF; i++) {if ($i == "start") s = $(i + 1); if ($i == "size") z = $(i + 1)} print s, z}'; }
if [[ $firmware == efi ]]; then
  gid="${hex:24:8}-${hex:32:4}-4${hex:37:3}-9${hex:41:3}-${hex:0:12}"
  printf 'label: gpt\nlabel-id: %s\nstart=4096, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"\nstart=135168, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' "$gid" |
    sfdisk -q "$raw"
  read -r es ez < <(part 1)
  mkfs.vfat -F 32 -s 1 --offset="$es" -i "$esp_id" -n ESP "$raw" $((ez / 2)) >"$work/mkfs.vfat.log" 2>&1 ||
    { cat "$work/mkfs.vfat.log" >&2; exit 1; }
  read -r rs rz < <(part 2)
  cp "$OVMF_VARS" "$work/nvram.fd"
  fw=(-machine q35 -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE" -drive "if=pflash,format=raw,unit=1,file=$work/nvram.fd")
  disk=(-drive "file=$raw,format=raw,if=virtio,cache=unsafe")
else
  printf 'label: dos\nlabel-id: 0x%s\nstart=4096, type=83, bootable\n' "${hex:40:8}" | sfdisk -q "$raw"
  read -r rs rz < <(part 1)
  fw=()
  # the disk on a SCSI controller, named sda, as on VMware
  disk=(-device virtio-scsi-pci,id=scsi0 -drive "file=$raw,format=raw,if=none,id=d0,cache=unsafe" -device scsi-hd,drive=d0,bus=scsi0.0)
fi
mke2fs -q -t ext4 -L root -U "$root_uuid" -d "$root" -E offset=$((rs * 512)) "$raw" $((rz / 2))k
rm -rf "$root"
log "grub-install in the build boot at $((SECONDS - t0)) s"
timeout 900 qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -nodefaults -no-user-config -display none "${fw[@]}" \
  -kernel "$work/vmlinuz" -initrd "$work/initrd" \
  -append "root=UUID=$root_uuid rw init=/usr/local/sbin/build-finish console=ttyS0 panic=-1" \
  "${disk[@]}" -serial "file:$work/build-console.log" -no-reboot \
  >"$work/qemu.log" 2>&1 || true
grep -q 'BUILD-FINISH ok=1' "$work/build-console.log" || { log "build boot failed:"; tail -40 "$work/build-console.log" "$work/qemu.log" >&2; exit 1; }
if [[ $name == vmware-born ]]; then
  grep -a -q "GRUB-root=${bootdisk}1" "$work/build-console.log" || { log "update-grub did not write root=${bootdisk}1:"; grep -a "root=" "$work/build-console.log" | tail -3 >&2; exit 1; }
else
  grep -q 'Boot[0-9A-F]\{4\}\* debian' "$work/build-console.log" || { log "no NVRAM entry 'debian'"; tail -30 "$work/build-console.log" >&2; exit 1; }
fi
if [[ "$(dd if="$raw" bs=65536 skip=16 count=16 2>/dev/null | tr -d '\0' | wc -c)" != 0 ]]; then
  log "bytes [1 MiB, 2 MiB) are not zero after grub-install"; exit 1
fi
mkdir -p "$out.tmp"
qemu-img convert -f raw -O qcow2 "$raw" "$out.tmp/disk.qcow2"
cp -r "$work/ssh" "$out.tmp/ssh"
chmod 600 "$out.tmp/ssh/id_ed25519"
cp "$work/build-console.log" "$out.tmp/build-console.log"
[[ $firmware != efi ]] || cp "$work/nvram.fd" "$out.tmp/nvram.fd"
python3 - "$out.tmp/manifest.json" <<PY
import json, sys
json.dump({
    "image": "$name", "key": "$key", "firmware": "$firmware", "kernel_package": "$kpkg", "kernel_release": "$krel",
    "bootloader": "$grubpkg", "packages": "$extra".split(), "root_uuid": "$root_uuid",
    "root_spec": "/dev/sda1 (fstab and GRUB root=)" if "$name" == "vmware-born" else "UUID=$root_uuid",
    "efi_boot": "NVRAM entry 'debian' -> \\\\EFI\\\\debian\\\\grubx64.efi, no \\\\EFI\\\\BOOT\\\\BOOTX64.EFI" if "$firmware" == "efi" else None,
    "network_config": "systemd-networkd, [Match] Type=ether, DHCP", "console": "ttyS0 (serial getty)",
    "crossvisor_parts": [], "disk_virtual_bytes": $disk_mib * 1024 * 1024, "build_seconds": $((SECONDS - t0)),
}, open(sys.argv[1], "w"), indent=2)
PY
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/done"
find "$dir" -maxdepth 1 -type d -name "$name-*" ! -name "$name-$key" -exec rm -rf {} +
log "built $out in $((SECONDS - t0)) s"
emit
