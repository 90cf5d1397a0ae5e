# Shared shell functions of the crossvisor guest images (POSIX sh: runs under the initramfs's
# busybox and under the root fs's dash). Sourced by cv-evidence, cv-birth and the initramfs
# scripts; the line formats are parsed by domain/guest_evidence.py: change both together.

# Where crossvisor writes its 64-byte content marker on the whole disk.
CV_MARKER_OFFSET=1048576

# Kernel driver bound to a sysfs device directory, or "none".
cv_driver_of() {
  if [ -e "$1/driver" ]; then
    basename "$(readlink "$1/driver")"
  else
    echo none
  fi
}

# Driver of the controller behind block device $1 (e.g. vda, sda): the first ancestor of its
# device with a bound driver other than the generic SCSI disk/cdrom drivers (virtio_blk for vda,
# vmw_pvscsi / mptsas / ata_piix / virtio_scsi for sda, nvme for nvme0n1).
cv_disk_driver() {
  d="$(readlink -f "/sys/block/$1/device" 2>/dev/null)"
  while [ -n "$d" ] && [ "$d" != / ] && [ "$d" != /sys ] && [ "$d" != /sys/devices ]; do
    if [ -e "$d/driver" ]; then
      drv="$(basename "$(readlink "$d/driver")")"
      case "$drv" in sd | sr) ;; *)
        echo "$drv"
        return
        ;;
      esac
    fi
    d="${d%/*}"
  done
  echo none
}

# Whole-disk name of a block device node or name (/dev/vda1 -> vda, sda -> sda).
cv_whole_disk() {
  n="${1##*/}"
  if [ -e "/sys/class/block/$n/partition" ]; then
    p="$(readlink -f "/sys/class/block/$n/..")"
    echo "${p##*/}"
  else
    echo "$n"
  fi
}

# Hex of the 64 bytes at the marker offset of /dev/$1 (empty if unreadable).
cv_marker_hex() {
  dd if="/dev/$1" bs=64 skip=$((CV_MARKER_OFFSET / 64)) count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n'
}

# One CV-PCI line per PCI function of class 01xx (storage) or 02xx (network).
cv_pci_lines() {
  for p in /sys/bus/pci/devices/*; do
    [ -e "$p/class" ] || continue
    cls="$(cat "$p/class")"
    case "$cls" in 0x01* | 0x02*) ;; *) continue ;; esac
    v="$(cat "$p/vendor")"
    dev="$(cat "$p/device")"
    # A virtio function is bound to the virtio-pci transport whether or not the driver of the
    # virtio device behind it (virtio_blk, virtio_scsi, virtio_net) is there: report that one too.
    vd=""
    if [ "$v" = 0x1af4 ]; then
      vd=" virtio_driver=none"
      for x in "$p"/virtio*; do
        [ -e "$x/driver" ] && vd=" virtio_driver=$(cv_driver_of "$x")"
      done
    fi
    echo "CV-PCI slot=${p##*/} class=$cls id=${v#0x}:${dev#0x} driver=$(cv_driver_of "$p")$vd"
  done
}

# Value of a key=value kernel command line argument ($1 = key), empty if absent.
cv_cmdline_arg() {
  for a in $(cat /proc/cmdline); do
    case "$a" in "$1="*)
      echo "${a#"$1"=}"
      return
      ;;
    esac
  done
}

# Integer seconds since boot.
cv_uptime_s() {
  u="$(cut -d' ' -f1 /proc/uptime)"
  echo "${u%%.*}"
}
