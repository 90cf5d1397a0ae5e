#!/usr/bin/env bash
# Builds a REFERENCE image with no crossvisor part in it: what an operator's own Debian 12 template
# looks like, to prove that crossvisor grades a guest from the channels any VM already has. Usage:
# build-plain-image.sh NAME, NAME one of
#   plain-agent  Debian's generic kernel, GRUB (BIOS, MBR), systemd-networkd DHCP on any Ethernet NIC,
#                a login prompt on ttyS0 (Debian's serial getty), openssh-server and qemu-guest-agent
#   plain-sshd   the same without qemu-guest-agent
# Nothing of crossvisor's instrumentation is installed: no cv-evidence, no cv-app, no initramfs hook,
# no CV-* line on the console, no /etc/cv-image. What the console shows is Debian's own (GRUB,
# the kernel, systemd's status lines, the getty's prompt). The one build-time boot installs GRUB with
# the image's own grub-install (its init script deletes itself before the image ships).
# Root logs in by SSH with a key made for this build (ssh/id_ed25519 beside the disk); no password.
# Prints DISK=<qcow2>, MANIFEST=<manifest.json>, SSH_KEY=<private key>. Cached under
# ${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/guests/<name>-<key>, from the shared debootstrapped base
# (build-guest-base.sh). The disk range [1 MiB, 2 MiB) stays free (first partition at 2 MiB), as
# Debian's installer leaves the MBR gap.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:-}"
case "$name" in
  plain-agent) extra="openssh-server qemu-guest-agent" ;;
  plain-sshd) extra="openssh-server" ;;
  *)
    echo "build-plain-image: unknown image '${name}' (expected plain-agent or plain-sshd)" >&2
    exit 2
    ;;
esac
kpkg=linux-image-amd64 grubpkg=grub-pc disk_mib=2048
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
dir="$cache_root/guests"
mkdir -p "$dir/debs"
log() { echo "build-plain-image[$name]: $*" >&2; }

base="$(bash "$here/build-guest-base.sh" | sed -n 's/^BASE=//p')"
[[ -f "$base/done" ]] || { log "no base tree"; exit 1; }
vers="$(apt-cache policy $kpkg $grubpkg $extra 2>/dev/null | awk '/^[a-z]/ {p=$1} /Candidate:/ {print p, $2}')"
key="$( { cat "${BASH_SOURCE[0]}"; echo "$name $(basename "$base") $vers"; } | sha256sum | cut -c1-16)"
out="$dir/$name-$key"
emit() {
  echo "DISK=$out/disk.qcow2"
  echo "MANIFEST=$out/manifest.json"
  echo "SSH_KEY=$out/ssh/id_ed25519"
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

cp -a "$base/root" "$root"
# Fewer bytes to export and convert at every move: no docs, man pages or translations (as Debian's
# own minimized images), and no module trees a virtual machine never loads (sound, wireless, GPUs).
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
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$root_uuid" >"$root/etc/fstab"

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
# Any Ethernet NIC by DHCP, whatever its name (a generalized template).
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/10-dhcp.network"
chroot "$root" systemctl enable -q systemd-networkd.service
# Root by key only; the key is made for this build.
mkdir -p "$work/ssh" "$root/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C "$name-operator" -f "$work/ssh/id_ed25519"
install -m 600 "$work/ssh/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 700 "$root/root/.ssh"
# Host keys made now (Debian makes them at install): the same image answers with the same key.
rm -f "$root"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$root/etc/ssh/ssh_host_ed25519_key"
cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$work/ssh/host_ed25519_key.pub"
# The image's own grub-install in its one build boot; the script deletes itself first.
cat >"$root/usr/local/sbin/build-finish" <<'F'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ -z "${FROM_RUN:-}" ]; then cp "$0" /run/build-finish; rm -f "$0"; FROM_RUN=1 exec /bin/sh /run/build-finish; fi
mount -o remount,rw /
ok=1
grub-install --target=i386-pc /dev/vda >/dev/console 2>&1 || ok=0
update-grub >/dev/console 2>&1 || ok=0
sync
mount -o remount,ro / || ok=0
echo "BUILD-FINISH ok=$ok" >/dev/console
echo o >/proc/sysrq-trigger
sleep 30
F
chmod 755 "$root/usr/local/sbin/build-finish"
cp "$root/boot/vmlinuz-$krel" "$work/vmlinuz"
cp "$root/boot/initrd.img-$krel" "$work/initrd"

raw="$work/disk.raw"
truncate -s "${disk_mib}M" "$raw"
printf 'label: dos\nlabel-id: 0x%s\nstart=4096, type=83, bootable\n' "${hex:40:8}" | sfdisk -q "$raw"
rs=4096
rz=$(( disk_mib * 2048 - rs ))
mke2fs -q -t ext4 -L root -U "$root_uuid" -d "$root" -E offset=$((rs * 512)) "$raw" $((rz / 2))k
rm -rf "$root"
log "grub-install in the build boot at $((SECONDS - t0)) s"
timeout 600 qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -nodefaults -no-user-config -display none \
  -kernel "$work/vmlinuz" -initrd "$work/initrd" \
  -append "root=UUID=$root_uuid rw init=/usr/local/sbin/build-finish console=ttyS0 panic=-1" \
  -drive "file=$raw,format=raw,if=virtio,cache=unsafe" -serial "file:$work/build-console.log" -no-reboot \
  >"$work/qemu.log" 2>&1 || true
grep -q 'BUILD-FINISH ok=1' "$work/build-console.log" || { log "build boot failed:"; tail -40 "$work/build-console.log" >&2; exit 1; }
# crossvisor's content marker goes at 1 MiB: that range must stay free (GRUB's core.img is below it)
if [[ "$(dd if="$raw" bs=65536 skip=16 count=1 2>/dev/null | tr -d '\0' | wc -c)" != 0 ]]; then
  log "bytes [1 MiB, 1 MiB + 64 KiB) are not zero after grub-install"; exit 1
fi
mkdir -p "$out.tmp"
qemu-img convert -f raw -O qcow2 "$raw" "$out.tmp/disk.qcow2"
cp -r "$work/ssh" "$out.tmp/ssh"
chmod 600 "$out.tmp/ssh/id_ed25519"
python3 - "$out.tmp/manifest.json" <<PY
import json, sys
json.dump({
    "image": "$name", "key": "$key", "firmware": "bios", "kernel_package": "$kpkg", "kernel_release": "$krel",
    "bootloader": "$grubpkg", "packages": "$extra".split(), "root_uuid": "$root_uuid",
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
