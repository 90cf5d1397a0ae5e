"""A guest's serial console -> what the guest observed on this host (``GuestObservation``). Pure.

``domain.guest_evidence`` parses the images' own evidence lines and classifies how a boot died;
this module keeps what a verdict needs, in the shape the stages hand each other.
"""

from __future__ import annotations

from domain import guest_evidence as ge
from domain.stage_io import GuestDisk, GuestNic, GuestObservation, GuestPci

READY = ge.READY
TAGS = ("CROSSVISOR-BOOT-OK", "CROSSVISOR-BOOT-END", READY, "CV-")
PCI_NAMES = ge.PCI_NAMES
# the PCI functions behind a disk bus as the target API reports it (virtio: legacy and modern ids)
_BUS_PCI = {
    "virtio": ("1af4:1001", "1af4:1042"),
    "scsi:virtio-scsi": ("1af4:1004", "1af4:1048"),
    "scsi:pvscsi": ("15ad:07c0",),
    "scsi:lsilogic-sas": ("1000:0054",),
    "scsi:lsilogic": ("1000:0030", "1000:0012"),
    "ide": ("8086:7010",),
    "sata": ("8086:2922",),
}


def pci_name(pci_id: str) -> str:
    return ge.pci_name(pci_id)


def bus_pci_ids(bus: str) -> tuple[str, ...]:
    return _BUS_PCI.get(bus, ())


def ready(text: str) -> bool:
    """Stop watching a boot: the guest finished reporting, or its boot went where nothing follows."""
    return READY in text or ge.dead_end(text)


def silence_means_dead(text: str) -> bool:
    """A console silent for long before the kernel started: the firmware jumped into nothing."""
    return not ge.kernel_started(text)


def _pci(p: ge.PciFunction) -> GuestPci:
    return GuestPci(p.slot, p.pci_class, p.id, p.effective_driver or "none")


def from_console(text: str) -> GuestObservation:
    """Everything the console says; fields stay empty when the guest never printed them."""
    ev = ge.parse(text)
    o = GuestObservation(
        reached_init=ev.booted,
        complete=ev.complete,
        kernel=ev.fact("kernel") or "",
        init=ev.fact("init") or "",
        image=ev.image or "",
        firmware=ev.firmware or "",
        cpus=int(ev.fact("cpus") or 0) if (ev.fact("cpus") or "").isdigit() else 0,
        mem_kib=int(ev.fact("mem_kib") or 0) if (ev.fact("mem_kib") or "").isdigit() else 0,
        boot_id=ev.boot_id or "",
        app_listening=bool(ev.app and ev.app.listening),
        console_excerpt=excerpt(text),
    )
    if ev.root is not None:
        o.root_dev, o.root_source = ev.root.dev, ev.root.source
        o.root_driver, o.root_mode = ev.root.driver or "", ev.root.mode
    o.mounts_failed = [f"{m.point} ({m.spec}: {m.error or '?'})" for m in ev.mounts if not m.ok]
    o.disks = [GuestDisk(d.name, d.bytes, d.driver or "none", d.marker) for d in ev.disks]
    # the booted system's view; when the boot died in the initramfs, the initramfs's last one
    o.pci = [_pci(p) for p in (ev.pci if ev.booted else ev.initramfs_pci)]
    o.nics = [GuestNic(n.name, n.mac, n.driver or "none", n.link, n.ipv4 or "") for n in ev.nics]
    o.netcfg_names = list(ev.netcfg.names) if ev.netcfg else []
    if not ev.complete:
        failure = ge.boot_failure(text)
        if failure is not None:
            o.failure_kind, o.failure = failure.kind, failure.detail
            if failure.root_spec:
                o.root_source = o.root_source or failure.root_spec
    return o


def excerpt(text: str, tail: int = 40) -> str:
    """The evidence lines, the failure line, and the console's last ``tail`` lines."""
    lines = [x.strip("\r ") for x in text.replace("\x00", "").splitlines()]
    cut = []
    for line in lines:
        for tag in TAGS:
            i = line.find(tag)
            if i > 0:
                line = line[i:]
                break
        cut.append(line)
    keep = [x for x in cut if x.startswith(TAGS)]
    failure = ge.boot_failure(text) if ge.READY not in text else None
    if failure is not None:
        keep.append(f"[crossvisor] {failure.kind}: {failure.detail}")
    rest = [x for x in cut[-tail:] if x and x not in keep]
    return "\n".join(keep + (["...", *rest] if rest else []))[-6000:]
