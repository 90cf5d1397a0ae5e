#!/usr/bin/env bash
# Builds a minimal debootstrapped Debian guest that virt-v2v can inspect (OS, fstab, grub2, kernel),
# packed as an OVA (OVF + streamOptimized VMDK + SHA256 manifest). Prints "OVA=<path>".
#
# On boot a oneshot unit prints the same CV-* evidence as the tiny guest on ttyS0 and powers off.
# Cached under ${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/v2v-guest/<key> (key: this script +
# suite); a first build takes minutes (debootstrap + one libguestfs appliance run for grub-install).
set -euo pipefail

suite="${CROSSVISOR_V2V_SUITE:-bookworm}"
mirror="${CROSSVISOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
disk_mib=1536
cache_root="${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}"
mkdir -p "$cache_root/v2v-guest"
key="$( { cat "${BASH_SOURCE[0]}"; echo "$suite $mirror $disk_mib"; } | sha256sum | cut -c1-16)"
out="$cache_root/v2v-guest/$key"
log() { echo "build-v2v-guest: $*" >&2; }

if [[ -f "$out/done" ]]; then
  echo "OVA=$out/cv-v2v-guest.ova"
  exit 0
fi
exec 9>"$cache_root/v2v-guest/.lock"
flock 9
if [[ -f "$out/done" ]]; then
  echo "OVA=$out/cv-v2v-guest.ova"
  exit 0
fi

t0=$SECONDS
work="$(mktemp -d "$cache_root/v2v-guest/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"

log "debootstrap $suite"
# grub-pc + a kernel + initramfs-tools: what virt-v2v's Linux conversion needs to find and rebuild.
debootstrap --variant=minbase \
  --include=systemd-sysv,udev,linux-image-cloud-amd64,initramfs-tools,grub-pc,e2fsprogs,kmod \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; exit 1; }
log "debootstrap done at $((SECONDS - t0)) s"

echo cv-v2v-guest >"$root/etc/hostname"
echo "LABEL=cvroot / ext4 defaults 0 1" >"$root/etc/fstab"
cat >"$root/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0 panic=-1"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF
cat >"$root/usr/local/sbin/cv-evidence" <<'EOF'
#!/bin/sh
# Same line format as deploy/guests/tiny-init.sh (parsed by drivers/guest_images.py).
off=1048576
{
  echo "CROSSVISOR-BOOT-OK"
  echo "CV-FACT kernel=$(uname -r)"
  echo "CV-FACT cpus=$(grep -c '^processor' /proc/cpuinfo)"
  echo "CV-FACT mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
  for d in /sys/block/*; do
    n="${d##*/}"
    case "$n" in ram* | loop* | sr* | fd* | zram*) continue ;; esac
    echo "CV-DISK name=$n bytes=$(($(cat "$d/size") * 512)) marker=$(dd if=/dev/$n bs=64 skip=$((off / 64)) count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
  done
  for d in /sys/class/net/*; do
    n="${d##*/}"
    [ "$n" = lo ] && continue
    drv=none
    [ -e "$d/device/driver" ] && drv="$(basename "$(readlink "$d/device/driver")")"
    echo "CV-NIC name=$n driver=$drv mac=$(cat "$d/address")"
  done
  echo "CV-FACT uptime_s=$(cut -d' ' -f1 /proc/uptime)"
  echo "CROSSVISOR-BOOT-END"
} >/dev/ttyS0
systemctl --no-block poweroff
EOF
chmod 755 "$root/usr/local/sbin/cv-evidence"
cat >"$root/etc/systemd/system/cv-evidence.service" <<'EOF'
[Unit]
Description=crossvisor boot evidence on ttyS0, then power off
After=local-fs.target systemd-udev-settle.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cv-evidence
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/cv-evidence.service "$root/etc/systemd/system/multi-user.target.wants/cv-evidence.service"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

# Partitioned raw disk without loop devices: mke2fs -d fills the ext4 partition from the tree.
raw="$work/disk.raw"
truncate -s "${disk_mib}M" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw"
part_kib=$(((disk_mib - 1) * 1024))
mke2fs -q -t ext4 -L cvroot -d "$root" -E offset=1048576 "$raw" "${part_kib}k"
rm -rf "$root"

log "grub-install in a libguestfs appliance (TCG) at $((SECONDS - t0)) s"
# shellcheck disable=SC2046  # KEY=VALUE lines without spaces
export $(bash "$(dirname "${BASH_SOURCE[0]}")/libguestfs-env.sh")
guestfish --rw -a "$raw" <<'EOF'
run
mount /dev/sda1 /
command "grub-install --target=i386-pc /dev/sda"
command "update-grub"
EOF

log "packing OVA at $((SECONDS - t0)) s"
pkg="$work/ova"
mkdir -p "$pkg"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$raw" "$pkg/cv-v2v-guest-disk1.vmdk"
rm -f "$raw"
vmdk_size=$(stat -c %s "$pkg/cv-v2v-guest-disk1.vmdk")
cap=$((disk_mib * 1024 * 1024))
cat >"$pkg/cv-v2v-guest.ovf" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="cv-v2v-guest-disk1.vmdk" ovf:id="file1" ovf:size="$vmdk_size"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="$cap" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks</Info>
    <Network ovf:name="VM Network"><Description>VM Network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="cv-v2v-guest">
    <Info>crossvisor v2v test guest</Info>
    <Name>cv-v2v-guest</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest"><Info>OS</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>1 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>512MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
EOF
(cd "$pkg" && for f in cv-v2v-guest.ovf cv-v2v-guest-disk1.vmdk; do
  echo "SHA256($f)= $(sha256sum "$f" | cut -d' ' -f1)"
done >cv-v2v-guest.mf)
mkdir -p "$out.tmp"
# OVA = tar with the descriptor first.
tar -C "$pkg" -cf "$out.tmp/cv-v2v-guest.ova" cv-v2v-guest.ovf cv-v2v-guest.mf cv-v2v-guest-disk1.vmdk
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/done"
log "built $out in $((SECONDS - t0)) s"
echo "OVA=$out/cv-v2v-guest.ova"
