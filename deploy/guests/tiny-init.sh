#!/bin/sh
# /init of the tiny test guest (busybox). Prints boot evidence on the console, then powers off.
# Line format is parsed by drivers/guest_images.py:parse_boot_evidence; change both together.
PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Keep kernel chatter (module loads, probes) from interleaving with the evidence lines.
dmesg -n 1

krel="$(cat /proc/sys/kernel/osrelease)"
while read -r ko; do
  insmod "/lib/modules/$krel/$ko" 2>/dev/null
done <"/lib/modules/$krel/load-order"

# Byte offset of the content marker crossvisor writes on the first disk (cv.marker_offset= overrides).
off=1048576
for arg in $(cat /proc/cmdline); do
  case "$arg" in cv.marker_offset=*) off="${arg#cv.marker_offset=}" ;; esac
done

disks() {
  for d in /sys/block/*; do
    n="${d##*/}"
    case "$n" in ram* | loop* | sr* | fd* | zram*) continue ;; esac
    echo "$n"
  done
}

# Disk probes (SCSI scan in particular) finish asynchronously: wait until the set is stable.
prev=-1
stable=0
i=0
while [ $i -lt 40 ]; do
  cur="$(disks | wc -l)"
  if [ "$cur" = "$prev" ] && [ "$cur" -gt 0 ]; then
    stable=$((stable + 1))
    [ $stable -ge 3 ] && break
  else
    stable=0
  fi
  prev="$cur"
  i=$((i + 1))
  sleep 0.1
done

echo "CROSSVISOR-BOOT-OK"
echo "CV-FACT kernel=$krel"
echo "CV-FACT cpus=$(grep -c '^processor' /proc/cpuinfo)"
echo "CV-FACT mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "CV-FACT marker_offset=$off"
for n in $(disks); do
  bytes=$(($(cat "/sys/block/$n/size") * 512))
  marker="$(dd if="/dev/$n" bs=64 skip=$((off / 64)) count=1 2>/dev/null | xxd -p -c 64)"
  echo "CV-DISK name=$n bytes=$bytes marker=$marker"
done
for d in /sys/class/net/*; do
  n="${d##*/}"
  [ "$n" = lo ] && continue
  drv=none
  [ -e "$d/device/driver" ] && drv="$(basename "$(readlink "$d/device/driver")")"
  echo "CV-NIC name=$n driver=$drv mac=$(cat "$d/address")"
done
# PCI storage (class 01) and network (02) functions, with or without a bound driver: shows a NIC
# the guest can see but has no driver for (e.g. e1000 under the cloud kernel).
for p in /sys/bus/pci/devices/*; do
  cls="$(cat "$p/class")"
  case "$cls" in 0x01* | 0x02*) ;; *) continue ;; esac
  drv=none
  [ -e "$p/driver" ] && drv="$(basename "$(readlink "$p/driver")")"
  v="$(cat "$p/vendor")"
  dev="$(cat "$p/device")"
  echo "CV-PCI slot=${p##*/} class=$cls id=${v#0x}:${dev#0x} driver=$drv"
done
# Guest-side time to here: tells a slow host (contended TCG) from a slow guest.
echo "CV-FACT uptime_s=$(cut -d' ' -f1 /proc/uptime)"
echo "CROSSVISOR-BOOT-END"
sync
poweroff -f
# Reached only if ACPI power-off failed: sleep rather than exit (exiting /init panics the kernel).
while :; do sleep 3600; done
