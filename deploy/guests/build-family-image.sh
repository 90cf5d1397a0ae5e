#!/usr/bin/env bash
# Builds a guest FAMILY image with no crossvisor part in it: a Debian 12 guest that carries the
# behaviour that breaks real moves in labs, named for that behaviour (not as another distribution).
# Usage: build-family-image.sh NAME, NAME one of
#   dracut-lvm-nm      a long-lived RHEL-family VM: a dracut HOST-ONLY initramfs made on its source
#                      hardware (virtio-blk, in the build boot), root on LVM with lvm2's devices file
#                      (use_devicesfile=1, /etc/lvm/devices/system.devices naming the source's PV),
#                      NetworkManager with a keyfile bound to the source NIC's MAC address (static
#                      10.0.2.15/24, as an installer leaves it) and no-auto-default=* (RHEL's
#                      NetworkManager-config-server), openssh-server, qemu-guest-agent.
#   netplan-cloudinit  an Ubuntu-style cloud image: initramfs-tools, netplan (networkd backend) and
#                      cloud-init with a NoCloud seed on the disk; cloud-init writes on the FIRST boot
#                      (the source's) a netplan file with `match: macaddress` + `set-name`, bound to
#                      the NIC it saw; openssh-server.
# Pattern of build-plain-image.sh (content-hash cache, a key made for this build, one build boot,
# [1 MiB, 2 MiB) left zero). Prints DISK=, MANIFEST=, SSH_KEY=.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:-}"
# the MAC of the NIC the image was installed with: the source VM must present it (the manifest says so)
SOURCE_MAC=52:54:00:4e:4d:01
case "$name" in
  dracut-lvm-nm) extra="dracut lvm2 network-manager openssh-server qemu-guest-agent" ;;
  netplan-cloudinit) extra="initramfs-tools netplan.io cloud-init openssh-server" ;;
  *)
    echo "build-family-image: unknown image '${name}' (expected dracut-lvm-nm or netplan-cloudinit)" >&2
    exit 2
    ;;
esac
kpkg=linux-image-amd64 grubpkg=grub-pc disk_mib=2048
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
dir="$cache_root/guests"
mkdir -p "$dir/debs"
log() { echo "build-family-image[$name]: $*" >&2; }

base="$(bash "$here/build-guest-base.sh" | sed -n 's/^BASE=//p')"
[[ -f "$base/done" ]] || { log "no base tree"; exit 1; }
vers="$(apt-cache policy $kpkg $grubpkg $extra 2>/dev/null | awk '/^[a-z]/ {p=$1} /Candidate:/ {print p, $2}')"
key="$( { cat "${BASH_SOURCE[0]}"; echo "$name $(basename "$base") $vers"; } | sha256sum | cut -c1-16)"
out="$dir/$name-$key"
emit() {
  # the key also at a stable path: a spec that names the image refers to it before the worker
  # builds it (toolbox/guest_images.py family_ssh_key)
  if ! cmp -s "$out/ssh/id_ed25519" "$dir/$name.ssh/id_ed25519"; then
    rm -rf "$dir/$name.ssh.tmp" && cp -r "$out/ssh" "$dir/$name.ssh.tmp" && rm -rf "$dir/$name.ssh" &&
      mv "$dir/$name.ssh.tmp" "$dir/$name.ssh"
  fi
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
cmdline="console=tty0 console=ttyS0,115200"
case "$name" in
  dracut-lvm-nm)
    # root by its LVM name, as anaconda writes it; the initramfs starts generic (the build boot
    # must find root) and is made host-only inside the build boot, on the hardware it runs on
    printf '/dev/mapper/vg0-root / ext4 defaults 0 1\n' >"$root/etc/fstab"
    mkdir -p "$root/etc/dracut.conf.d"
    printf 'hostonly="no"\nadd_dracutmodules+=" lvm "\n' >"$root/etc/dracut.conf.d/50-build.conf"
    printf 'compress="zstd"\n' >"$root/etc/dracut.conf.d/40-compress.conf" # as RHEL 9's dracut
    # RHEL 9's dracut puts lvm2's devices file into the initramfs (upstream 059 does not): so does this one
    printf 'install_optional_items+=" /etc/lvm/devices/system.devices "\n' >"$root/etc/dracut.conf.d/45-lvm-devices.conf"
    # dracut's rd.retry is 180 s: 30 s lets a failed move show its emergency shell within a boot timeout
    cmdline="$cmdline rd.lvm.lv=vg0/root rd.retry=30"
    ;;
  netplan-cloudinit)
    printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$root_uuid" >"$root/etc/fstab"
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

cat >"$root/etc/default/grub" <<G
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="$cmdline"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
G
network_config=""
case "$name" in
  dracut-lvm-nm)
    # the installer's connection profile, bound to the MAC of the NIC it was installed with, with
    # the static address it was given; server installs create no automatic DHCP profile for a NIC
    # without one (NetworkManager-config-server: no-auto-default=*)
    nmdir="$root/etc/NetworkManager/system-connections"
    mkdir -p "$nmdir" "$root/etc/NetworkManager/conf.d"
    cat >"$nmdir/System-eth0.nmconnection" <<K
[connection]
id=System eth0
uuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
type=ethernet
autoconnect=true

[ethernet]
mac-address=${SOURCE_MAC^^}

[ipv4]
method=manual
address1=10.0.2.15/24,10.0.2.2
dns=10.0.2.3;

[ipv6]
method=ignore
K
    chmod 600 "$nmdir/System-eth0.nmconnection"
    printf '[main]\nno-auto-default=*\n' >"$root/etc/NetworkManager/conf.d/00-server.conf"
    chroot "$root" systemctl enable -q NetworkManager.service
    network_config="NetworkManager keyfile System-eth0.nmconnection: mac-address=${SOURCE_MAC^^}, static 10.0.2.15/24 gw 10.0.2.2; no-auto-default=*"
    ;;
  netplan-cloudinit)
    # the NoCloud seed of the instance the image was made for; cloud-init renders its network
    # configuration on that instance's first boot (fallback: DHCP on the NIC it sees, matched by MAC)
    seed="$root/var/lib/cloud/seed/nocloud"
    mkdir -p "$seed" "$root/etc/cloud/cloud.cfg.d"
    printf 'instance-id: iid-%s\nlocal-hostname: %s\n' "$key" "$name" >"$seed/meta-data"
    printf '#cloud-config\n{}\n' >"$seed/user-data"
    cat >"$root/etc/cloud/cloud.cfg.d/90-image.cfg" <<'C'
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [netplan]
# the image's root key and host keys are the build's (an operator's template carries its own)
disable_root: false
ssh_deletekeys: false
C
    # networkd-wait-online waits 120 s for a NIC that never gets configured: 30 s keeps a failed
    # move's boot bounded under TCG (cloud-init's network stage waits for it)
    mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
    printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --timeout=30\n' \
      >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/10-timeout.conf"
    rm -f "$root"/etc/netplan/*.yaml
    chroot "$root" systemctl enable -q systemd-networkd.service
    network_config="netplan written by cloud-init on the first boot (fallback: DHCP, match: macaddress + set-name), NoCloud seed instance-id iid-$key"
    ;;
esac
mkdir -p "$work/ssh" "$root/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C "$name-operator" -f "$work/ssh/id_ed25519"
install -m 600 "$work/ssh/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 700 "$root/root/.ssh"
rm -f "$root"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$root/etc/ssh/ssh_host_ed25519_key"
cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$work/ssh/host_ed25519_key.pub"

# The one build boot: GRUB by the image's own grub-install and, for dracut-lvm-nm, what an
# installer does on the machine it installs: the LVM devices file from the PV it sees, the
# host-only initramfs for the hardware it runs on.
cat >"$root/usr/local/sbin/build-finish" <<'F'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ -z "${FROM_RUN:-}" ]; then cp "$0" /run/build-finish; rm -f "$0"; FROM_RUN=1 exec /bin/sh /run/build-finish; fi
mount -o remount,rw /
ok=1
if [ -x /usr/bin/dracut ]; then
  /lib/systemd/systemd-udevd --daemon >/dev/console 2>&1
  udevadm trigger; udevadm settle
  sed -i 's/^devices {/devices {\n\tuse_devicesfile = 1/' /etc/lvm/lvm.conf
  lvm vgimportdevices vg0 >/dev/console 2>&1 || ok=0
  echo "system.devices:" >/dev/console; grep -v '^#' /etc/lvm/devices/system.devices >/dev/console 2>&1 || ok=0
  printf 'hostonly="yes"\n' >/etc/dracut.conf.d/50-build.conf
  dracut -f --regenerate-all >/tmp/dracut.log 2>&1 || { ok=0; tail -n 20 /tmp/dracut.log >/dev/console; }
  lsinitrd 2>/dev/null | grep -E 'virtio_blk|vmw_pvscsi|ata_piix|sd_mod|virtio_scsi|mptsas|system.devices|lvm.conf' >/dev/console
fi
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
rs=4096
case "$name" in
  dracut-lvm-nm)
    # no loop device: libguestfs's appliance makes the PV, the VG and the LV, and copies the root
    # file system made here into it
    lv_mib=1536
    mke2fs -q -t ext4 -L root -U "$root_uuid" -d "$root" "$work/root.ext4" "${lv_mib}M"
    rm -rf "$root"
    set -a
    eval "$(bash "$here/libguestfs-env.sh")"
    set +a
    guestfish --format=raw -a "$raw" -a "$work/root.ext4" >"$work/guestfish.log" 2>&1 <<EOF || { tail -20 "$work/guestfish.log" >&2; exit 1; }
run
part-init /dev/sda mbr
part-add /dev/sda p $rs -1
part-set-bootable /dev/sda 1 true
part-set-mbr-id /dev/sda 1 0x8e
pvcreate /dev/sda1
vgcreate vg0 /dev/sda1
lvcreate root vg0 $lv_mib
copy-device-to-device /dev/sdb /dev/vg0/root sparse:true
EOF
    rm -f "$work/root.ext4"
    rootarg="root=/dev/mapper/vg0-root rd.lvm.lv=vg0/root"
    ;;
  *)
    printf 'label: dos\nlabel-id: 0x%s\nstart=%s, type=83, bootable\n' "${hex:40:8}" "$rs" | sfdisk -q "$raw"
    rz=$(( disk_mib * 2048 - rs ))
    mke2fs -q -t ext4 -L root -U "$root_uuid" -d "$root" -E offset=$((rs * 512)) "$raw" $((rz / 2))k
    rm -rf "$root"
    rootarg="root=UUID=$root_uuid"
    ;;
esac
log "build boot at $((SECONDS - t0)) s"
timeout 900 qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -nodefaults -no-user-config -display none \
  -kernel "$work/vmlinuz" -initrd "$work/initrd" \
  -append "$rootarg rw init=/usr/local/sbin/build-finish console=ttyS0 panic=-1" \
  -drive "file=$raw,format=raw,if=virtio,cache=unsafe" -serial "file:$work/build-console.log" -no-reboot \
  >"$work/qemu.log" 2>&1 || true
grep -q 'BUILD-FINISH ok=1' "$work/build-console.log" || { log "build boot failed:"; tail -60 "$work/build-console.log" >&2; exit 1; }
if [[ "$(dd if="$raw" bs=65536 skip=16 count=16 2>/dev/null | tr -d '\0' | wc -c)" != 0 ]]; then
  log "bytes [1 MiB, 2 MiB) are not zero"; exit 1
fi
mkdir -p "$out.tmp"
qemu-img convert -f raw -O qcow2 "$raw" "$out.tmp/disk.qcow2"
cp -r "$work/ssh" "$out.tmp/ssh"
cp "$work/build-console.log" "$out.tmp/build-console.log"
chmod 600 "$out.tmp/ssh/id_ed25519"
python3 - "$out.tmp/manifest.json" <<PY
import json, sys
json.dump({
    "image": "$name", "key": "$key", "firmware": "bios", "kernel_package": "$kpkg", "kernel_release": "$krel",
    "bootloader": "$grubpkg", "packages": "$extra".split(), "root_uuid": "$root_uuid",
    "network_config": "$network_config", "console": "ttyS0 (serial getty)",
    "source_mac": "$SOURCE_MAC" if "$name" == "dracut-lvm-nm" else "",
    "kernel_cmdline": "$cmdline",
    "crossvisor_parts": [], "disk_virtual_bytes": $disk_mib * 1024 * 1024, "build_seconds": $((SECONDS - t0)),
}, open(sys.argv[1], "w"), indent=2)
PY
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/done"
find "$dir" -maxdepth 1 -type d -name "$name-*" ! -name "$name-$key" -exec rm -rf {} +
log "built $out in $((SECONDS - t0)) s"
emit
