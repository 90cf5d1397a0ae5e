"""A guest's serial console -> what the guest observed on this host (``GuestObservation``). Pure.

``domain.guest_evidence`` parses the images' own evidence lines and classifies how a boot died;
this module keeps what a verdict needs, in the shape the stages hand each other.
"""

from __future__ import annotations

import re

from domain import console_channel
from domain import guest_evidence as ge
from domain.stage_io import GuestDisk, GuestNic, GuestObservation, GuestPci

READY = ge.READY
CV_CHANNEL = "cv-evidence"  # crossvisor's own images: CV-* lines from their initramfs hook and service
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


def has_cv_evidence(text: str) -> bool:
    """The console carries crossvisor's own evidence lines (one of its images)."""
    return "CV-" in text or ge.BOOT_OK in text


def ready(text: str) -> bool:
    """Stop watching a boot: the guest finished reporting, or its boot went where nothing follows.
    A guest without crossvisor's evidence is done at its login prompt (or default target)."""
    if READY in text or ge.dead_end(text):
        return True
    if has_cv_evidence(text):
        return False
    # called on every chunk the console sends: the full read only once a prompt or target shows
    if (" login:" in text or "Multi-User" in text or "multi-user.target" in text or "Graphical" in text) and (
        console_channel.up(text)
    ):
        return True
    return console_channel.dead_end(text)


def silence_means_dead(text: str) -> bool:
    """A console silent for long before the kernel started: the firmware jumped into nothing. Once
    a boot loader said it loads the kernel, silence is its reading (a stock initrd of tens of MB
    through BIOS calls under TCG takes a minute), not a dead end."""
    return not ge.kernel_started(text) and not _LOADER_LOADING.search(text)


_LOADER_LOADING = re.compile(r"Loading Linux |Loading initial ramdisk|Booting `|Probing EDD|Loading kernel|boot: ")


def _pci(p: ge.PciFunction) -> GuestPci:
    return GuestPci(p.slot, p.pci_class, p.id, p.effective_driver or "none")


def from_console(text: str) -> GuestObservation:
    """Everything the console says; fields stay empty when the guest never printed them. A console
    with crossvisor's evidence lines is read through them; any other through the console channel."""
    if not has_cv_evidence(text):
        return from_plain_console(text)
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
        channels=[CV_CHANNEL] if ev.booted else [],
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


def from_plain_console(text: str) -> GuestObservation:
    """A guest without crossvisor's parts: what its firmware, loader, kernel and init printed."""
    r = console_channel.read(text)
    o = GuestObservation(
        reached_init=r.up,
        complete=r.up,
        kernel=r.kernel,
        init=r.init,
        cpus=r.cpus,
        mem_kib=r.mem_kib,
        root_source=r.root_spec,
        nics=[GuestNic(n.name, n.mac, n.driver or "none", n.link, n.ipv4) for n in r.nics],
        console_excerpt=console_channel.excerpt(text),
        channels=[console_channel.CHANNEL] if not r.silent else [],
        hostname=r.hostname,
        milestones=[m.name for m in r.milestones],
    )
    if not r.up:
        o.failure_kind, o.failure = _plain_failure(text, r)
    return o


# What the evidence reader says when it found none of its own lines: no cause, only an absence.
_NO_CAUSE = ("init-not-reached", "evidence-incomplete")


def _plain_failure(text: str, r: console_channel.ConsoleReport) -> tuple[str, str]:
    """How a boot without crossvisor's evidence died. The firmware, GRUB, panic and initramfs-tools
    causes read as they always have (one wording whatever the image); what only the console channel
    knows (dracut, syslinux, systemd-boot, a system up to its prompt) comes from it."""
    if r.failure_kind in ("root-device-not-found", "loader-error"):
        return r.failure_kind, r.failure
    old = ge.boot_failure(text)
    if old is not None and old.kind not in _NO_CAUSE:
        return old.kind, old.detail
    return r.failure_kind, r.failure


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
