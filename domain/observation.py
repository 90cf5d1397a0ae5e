"""A guest's serial console -> what the guest observed (``GuestObservation``). Pure.

The project's images print ``CV-*`` lines from their own init (format in
``deploy/guests/README.md``); a boot that dies before init leaves the firmware's, the bootloader's,
the initramfs' or the kernel's own last words, which ``boot_failure`` turns into a cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.stage_io import GuestDisk, GuestNic, GuestObservation, GuestPci

__all__ = ["BootFailure", "GuestObservation", "boot_failure", "excerpt", "from_console", "pci_name"]

BOOT_OK = "CROSSVISOR-BOOT-OK"
BOOT_END = "CROSSVISOR-BOOT-END"
READY = "CV-READY"
TAGS = (BOOT_OK, BOOT_END, READY, "CV-")

# vendor:device -> what an operator calls it (storage and network functions the profiles show)
PCI_NAMES = {
    "1af4:1001": "virtio-blk (legacy)",
    "1af4:1042": "virtio-blk",
    "1af4:1004": "virtio-scsi (legacy)",
    "1af4:1048": "virtio-scsi",
    "1af4:1000": "virtio-net (legacy)",
    "1af4:1041": "virtio-net",
    "15ad:07c0": "VMware PVSCSI",
    "15ad:07b0": "VMware VMXNET3",
    "1000:0054": "LSI Logic SAS1068",
    "1000:0012": "LSI 53C895A",
    "8086:7010": "Intel PIIX3 IDE",
    "8086:2922": "Intel ICH9 AHCI",
    "8086:100e": "Intel e1000",
    "8086:10d3": "Intel e1000e",
    "1011:0019": "DEC 21140 (tulip)",
    "10ec:8139": "Realtek RTL8139",
    "1b36:0010": "NVMe",
}


def pci_name(pci_id: str) -> str:
    return PCI_NAMES.get(pci_id.lower(), pci_id)


@dataclass
class BootFailure:
    kind: str  # root-not-found | root-mount-failed | kernel-panic | bootloader | no-bootable-device
    detail: str  # one line, from the console
    root: str = ""  # the root device the boot looked for, when known


# What the firmware, GRUB, the initramfs and the kernel print when a boot dies, most specific first.
_FAILURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("root-not-found", re.compile(r"CV-ROOTWAIT .*gave_up=1.*")),
    ("root-not-found", re.compile(r"ALERT!\s+(\S+) does not exist")),
    ("root-not-found", re.compile(r"Gave up waiting for root (?:file system )?device")),
    ("root-mount-failed", re.compile(r"VFS: Unable to mount root fs[^\r\n]*")),
    ("kernel-panic", re.compile(r"Kernel panic - not syncing:[^\r\n]*")),
    (
        "bootloader",
        re.compile(r"grub rescue>|error: (?:no such device|unknown filesystem|file [^\r\n]* not found)[^\r\n]*"),
    ),
    ("no-bootable-device", re.compile(r"No bootable device[^\r\n]*|Boot failed: not a bootable disk[^\r\n]*")),
    ("no-bootable-device", re.compile(r"BdsDxe: (?:No bootable option or device was found|failed to load[^\r\n]*)")),
)


def _fields(rest: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in rest.split():
        k, sep, v = tok.partition("=")
        if sep:
            out[k] = v
    return out


def _lines(text: str) -> list[str]:
    """Console lines, each starting at its CV tag when a kernel message shares the line."""
    out = []
    for raw in text.replace("\x00", "").splitlines():
        line = raw.strip("\r ")
        for tag in TAGS:
            i = line.find(tag)
            if i > 0:
                line = line[i:]
                break
        out.append(line)
    return out


def boot_failure(text: str) -> BootFailure | None:
    """How a boot died, from the console alone; None while nothing says it died (or it booted)."""
    if BOOT_OK in text:
        return None
    for kind, pat in _FAILURES:
        m = pat.search(text)
        if m is None:
            continue
        root = ""
        if kind == "root-not-found":
            f = _fields(m.group(0))
            root = f.get("root", "") or (m.group(1) if m.groups() and m.group(1) else "")
        return BootFailure(kind, m.group(0).strip(), root)
    return None


def _int(v: str) -> int:
    return int(v) if v.isdigit() else 0


def from_console(text: str) -> GuestObservation:
    """Everything the console says; fields stay empty when the guest never printed them."""
    o = GuestObservation()
    for line in _lines(text):
        tag, _, rest = line.partition(" ")
        f = _fields(rest)
        if line == BOOT_OK:
            o.reached_init = True
        elif line == BOOT_END:
            o.complete = o.reached_init
        elif tag == "CV-FACT":
            o.image = f.get("image", o.image)
            o.init = f.get("init", o.init)
            o.kernel = f.get("kernel", o.kernel)
            o.firmware = f.get("firmware", o.firmware)
            o.boot_id = f.get("boot_id", o.boot_id)
            o.cpus = _int(f.get("cpus", "")) or o.cpus
            o.mem_kib = _int(f.get("mem_kib", "")) or o.mem_kib
        elif tag == "CV-ROOT":
            o.root_dev, o.root_source = f.get("dev", ""), f.get("source", "")
            o.root_driver, o.root_mode = f.get("driver", ""), f.get("mode", "")
        elif tag == "CV-MOUNT" and f.get("ok") == "0":
            o.mounts_failed.append(f"{f.get('point', '?')} ({f.get('spec', '?')}: {f.get('error', '?')})")
        elif tag == "CV-DISK" and "name" in f:
            o.disks.append(GuestDisk(f["name"], _int(f.get("bytes", "")), f.get("driver", ""), f.get("marker", "")))
        elif tag == "CV-PCI" and "slot" in f:
            pci = GuestPci(f["slot"], f.get("class", ""), f.get("id", ""), f.get("driver", ""))
            if all(p.slot != pci.slot for p in o.pci):  # the initramfs and init both print them
                o.pci.append(pci)
            else:
                o.pci = [pci if p.slot == pci.slot else p for p in o.pci]
        elif tag == "CV-NETCFG":
            o.netcfg_names = [n for n in f.get("names", "").split(",") if n]
        elif tag == "CV-NIC" and "name" in f:
            ip = f.get("ipv4", "")
            o.nics.append(
                GuestNic(
                    f["name"], f.get("mac", ""), f.get("driver", ""), f.get("link", ""), "" if ip == "none" else ip
                )
            )
        elif tag == "CV-APP":
            o.app_listening = f.get("listening") == "1"
    failure = boot_failure(text)
    if failure is not None:
        o.failure_kind, o.failure = failure.kind, failure.detail
    o.console_excerpt = excerpt(text)
    return o


def excerpt(text: str, tail: int = 40) -> str:
    """The evidence lines, the failure line, and the console's last ``tail`` lines."""
    lines = _lines(text)
    keep = [x for x in lines if x.startswith(TAGS)]
    failure = boot_failure(text)
    if failure is not None and failure.detail not in keep:
        keep.append(failure.detail)
    rest = [x for x in lines[-tail:] if x and x not in keep]
    out = "\n".join(keep + (["...", *rest] if rest else []))
    return out[-6000:]
