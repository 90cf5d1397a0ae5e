"""The SSH channel: what read-only commands in the guest report, parsed into an observation. Pure.

crossvisor logs in with the key the operator gave by reference and runs :data:`SCRIPT` (POSIX sh,
reads only: /proc, /sys, lsblk, findmnt, ip, dd from the disk at crossvisor's marker offset,
``systemctl is-system-running``). Each line it prints is ``SSH-<KIND> key=value ...``.
"""

from __future__ import annotations

import re

from domain.stage_io import GuestDisk, GuestNic, GuestObservation
from domain.vm import MARKER_OFFSET

CHANNEL = "ssh"
MARKER_BYTES = 64

SCRIPT = f"""
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "SSH-CPU n=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
echo "SSH-MEM kib=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)"
set -- $(findmnt -no SOURCE,OPTIONS / 2>/dev/null)
case ",$2," in *,ro,*) m=ro ;; *) m=rw ;; esac
echo "SSH-ROOT dev=$1 mode=$m"
lsblk -bdno NAME,SIZE,TYPE 2>/dev/null | while read -r n s t; do
  [ "$t" = disk ] || continue
  case "$n" in zram* | ram* | loop*) continue ;; esac  # memory-backed, not the VM's disks
  d=$(basename "$(readlink -f /sys/block/$n/device/driver 2>/dev/null)" 2>/dev/null)
  k=$(dd if=/dev/$n bs={MARKER_BYTES} skip={MARKER_OFFSET // MARKER_BYTES} count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \\n')
  echo "SSH-DISK name=$n bytes=$s driver=${{d:-none}} marker=$k"
done
for p in /sys/class/net/*; do
  n=${{p##*/}}; [ "$n" = lo ] && continue
  [ -e "$p/device" ] || continue
  d=$(basename "$(readlink -f $p/device/driver)")
  a=$(ip -o -4 addr show dev "$n" 2>/dev/null | awk '{{print $4; exit}}')
  echo "SSH-NIC name=$n mac=$(cat $p/address) driver=${{d:-none}} link=$(cat $p/operstate) ipv4=${{a:-none}}"
done
s=$(systemctl is-system-running 2>/dev/null | head -n 1)
echo "SSH-STATE state=${{s:-unknown}}"
echo "SSH-HOST name=$(hostname)"
"""

_LINE = re.compile(r"^SSH-([A-Z]+) (.*)$")
_TOKEN = re.compile(r"([a-z0-9_]+)=(\S*)")


def _none(v: str) -> str:
    return "" if v in ("", "none", "-") else v


def apply(output: str, o: GuestObservation) -> GuestObservation:
    """Fill ``o`` with what the guest reported over SSH (SSH's view wins over the console's)."""
    disks: list[GuestDisk] = []
    nics: list[GuestNic] = []
    seen = False
    for raw in output.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        seen = True
        kind, f = m.group(1), dict(_TOKEN.findall(m.group(2)))
        if kind == "CPU" and f.get("n", "").isdigit():
            o.cpus = int(f["n"])
        elif kind == "MEM" and f.get("kib", "").isdigit():
            o.mem_kib = int(f["kib"])
        elif kind == "ROOT":
            o.root_dev, o.root_mode = f.get("dev", ""), f.get("mode", "")
        elif kind == "DISK":
            size = f.get("bytes", "0")
            disks.append(
                GuestDisk(
                    f.get("name", ""),
                    int(size) if size.isdigit() else 0,
                    f.get("driver") or "none",
                    f.get("marker", ""),
                )
            )
        elif kind == "NIC":
            nics.append(
                GuestNic(
                    f.get("name", ""),
                    f.get("mac", ""),
                    f.get("driver") or "none",
                    f.get("link", "unknown"),
                    _none(f.get("ipv4", "")),
                )
            )
        elif kind == "STATE":
            o.system_state = f.get("state", "")
        elif kind == "HOST":
            o.hostname = o.hostname or f.get("name", "")
    if seen:
        o.disks, o.nics = disks, nics
        if CHANNEL not in o.channels:
            o.channels = [*o.channels, CHANNEL]
    return o
