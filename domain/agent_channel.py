"""The QEMU guest agent channel: what the agent in the guest reports through libvirt (``guestInfo``,
the agent's interface addresses, ``guest-get-vcpus``), read into an observation. Pure.

The agent reports the OS, hostname, filesystems with their disks, block devices, interfaces with
addresses and online vCPUs. It cannot read a disk's bytes (no content marker) nor the memory size.
"""

from __future__ import annotations

from domain.stage_io import GuestDisk, GuestNic, GuestObservation

CHANNEL = "guest-agent"


def _indexed(info: dict[str, str], prefix: str) -> list[dict[str, str]]:
    """``disk.0.name``, ``disk.0.partition`` ... -> [{"name": ..., "partition": ...}, ...]"""
    try:
        n = int(info.get(f"{prefix}.count", "0"))
    except ValueError:
        return []
    out = []
    for i in range(n):
        head = f"{prefix}.{i}."
        out.append({k[len(head) :]: v for k, v in info.items() if k.startswith(head)})
    return out


def apply(report: dict | None, o: GuestObservation) -> GuestObservation:
    """Fill ``o`` with the agent's report; a report with an error leaves only ``o.agent_note``."""
    if report is None:
        o.agent_note = "the VM has no guest agent channel (its platform's hardware presents none)"
        return o
    if "error" in report:
        o.agent_note = str(report["error"])
        return o
    info = {str(k): str(v) for k, v in (report.get("info") or {}).items()}
    o.hostname = info.get("hostname", "") or o.hostname
    o.kernel = info.get("os.kernel-release", "") or o.kernel
    if report.get("vcpus_online"):
        o.cpus = int(report["vcpus_online"])
    disks = [d for d in _indexed(info, "disk") if d.get("partition", "") in ("0", "False", "false", "no")]
    o.disks = [GuestDisk(d.get("name", "").rsplit("/", 1)[-1], 0, "", "") for d in disks]
    for fs in _indexed(info, "fs"):
        if fs.get("mountpoint") == "/":
            o.root_dev = "/dev/" + fs.get("name", "").rsplit("/", 1)[-1]
            o.root_source = fs.get("fstype", "")
    nics = []
    for name, v in sorted((report.get("interfaces") or {}).items()):
        if name == "lo":
            continue
        addrs = list(v.get("addrs") or [])
        nics.append(GuestNic(name, v.get("hwaddr", ""), "", "up" if addrs else "unknown", addrs[0] if addrs else ""))
    o.nics = nics
    o.agent_note = ""
    if CHANNEL not in o.channels:
        o.channels = [*o.channels, CHANNEL]
    return o
