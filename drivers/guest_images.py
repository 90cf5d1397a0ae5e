"""Test guests: the tiny guest (direct kernel boot) and the images that boot themselves.

The second half of this module builds the self-booting images (``build_image``), describes the
QEMU hardware profiles that stand in for other hypervisors (``PROFILES``,
``profile_domain_xml``), forwards the guest app's port to loopback (``forward_app_port``) and
boots + watches one domain (``boot_and_observe``); their console is parsed by
``domain.guest_evidence``.

The tiny guest:

``deploy/guests/build-tiny-guest.sh`` builds a Debian cloud kernel + busybox initramfs whose /init
prints ``CV-*`` lines on ttyS0 between ``CROSSVISOR-BOOT-OK`` and ``CROSSVISOR-BOOT-END``, then
powers off. The verify stage reads the serial log with :func:`parse_boot_evidence`.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from crossvisor.core.resources import deploy_file

BOOT_OK = "CROSSVISOR-BOOT-OK"
BOOT_END = "CROSSVISOR-BOOT-END"
# Where crossvisor writes its content marker on the first disk (past MBR/GPT, 64 KiB aligned).
MARKER_OFFSET = 1024 * 1024
MARKER_LEN = 64
# ttyS0 for the evidence; panic=-1 reboots at once on a panic so a broken guest ends its domain
# (use on_reboot=destroy) instead of hanging until the timeout.
CMDLINE = "console=ttyS0 panic=-1"


@dataclass(frozen=True)
class TinyGuest:
    kernel: Path
    initrd: Path
    cmdline: str = CMDLINE


def cache_dir() -> Path:
    return Path(os.environ.get("CROSSVISOR_CACHE", Path.home() / ".cache" / "crossvisor"))


def tiny_guest(timeout_s: float = 600.0) -> TinyGuest:
    """Build (or find in the cache) the tiny guest. The script owns the cache key."""
    proc = subprocess.run(
        ["bash", str(deploy_file("guests", "build-tiny-guest.sh"))],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"build-tiny-guest.sh failed ({proc.returncode}): {proc.stderr.strip()}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    guest = TinyGuest(kernel=Path(paths["KERNEL"]), initrd=Path(paths["INITRD"]))
    for p in (guest.kernel, guest.initrd):
        if not p.is_file():
            raise RuntimeError(f"build-tiny-guest.sh reported a missing file: {p}")
    return guest


def marker_bytes(text: str) -> bytes:
    """The 64-byte marker block for ``text`` (zero-padded), as the guest will read it back."""
    raw = text.encode()
    if len(raw) > MARKER_LEN:
        raise ValueError(f"marker longer than {MARKER_LEN} bytes")
    return raw.ljust(MARKER_LEN, b"\0")


def write_marker(path: Path, text: str, offset: int = MARKER_OFFSET) -> None:
    """Write the content marker into a *raw* image file (convert to other formats afterwards)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(marker_bytes(text))


def _fields(rest: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in rest.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def parse_boot_evidence(console_text: str) -> dict:
    """Parse the tiny guest's serial output. Pure; tolerates kernel log lines and CRLF.

    Returns ``booted`` (the OK marker was seen), ``complete`` (the END marker too: every fact was
    printed), ``cpus``, ``mem_kib``, ``kernel``, ``uptime_s`` (guest seconds at the end), ``disks`` {name: bytes}, ``disk_markers``
    {name: hex}, ``disk_marker_hex`` (of the first disk), ``nic_drivers`` (bound netdev drivers,
    in guest order) and ``pci`` (storage/network functions: slot, class, id, driver).
    """
    ev: dict = {
        "booted": False,
        "complete": False,
        "cpus": None,
        "mem_kib": None,
        "kernel": None,
        "uptime_s": None,
        "marker_offset": None,
        "disks": {},
        "disk_markers": {},
        "disk_marker_hex": None,
        "nic_drivers": [],
        "nics": [],
        "pci": [],
    }
    for raw in console_text.splitlines():
        line = raw.strip("\r\n\x00 ")
        # A kernel message may share a line with ours; our lines start at their tag.
        for tag in (BOOT_OK, BOOT_END, "CV-FACT ", "CV-DISK ", "CV-NIC ", "CV-PCI "):
            idx = line.find(tag)
            if idx > 0:
                line = line[idx:]
                break
        if line == BOOT_OK:
            ev["booted"] = True
        elif line == BOOT_END:
            ev["complete"] = ev["booted"]
        elif line.startswith("CV-FACT "):
            for k, v in _fields(line[8:]).items():
                if k in ("cpus", "mem_kib", "marker_offset") and v.isdigit():
                    ev[k] = int(v)
                elif k == "kernel":
                    ev[k] = v
                elif k == "uptime_s":
                    try:
                        ev[k] = float(v)
                    except ValueError:
                        pass
        elif line.startswith("CV-DISK "):
            f = _fields(line[8:])
            if "name" in f and f.get("bytes", "").isdigit():
                ev["disks"][f["name"]] = int(f["bytes"])
                ev["disk_markers"][f["name"]] = f.get("marker", "")
                if ev["disk_marker_hex"] is None:
                    ev["disk_marker_hex"] = f.get("marker", "")
        elif line.startswith("CV-NIC "):
            f = _fields(line[7:])
            ev["nics"].append(f)
            if f.get("driver", "none") != "none":
                ev["nic_drivers"].append(f["driver"])
        elif line.startswith("CV-PCI "):
            ev["pci"].append(_fields(line[7:]))
    return ev


# --- Guest images that boot themselves (deploy/guests/build-guest-image.sh) ----------------------
#
# Unlike the tiny guest, these boot from their own disk through their own firmware path, GRUB,
# kernel, initramfs-tools initramfs, fstab and network config (systemd). Their console evidence
# is parsed by domain.guest_evidence.

IMAGES = ("legacy-bios", "uefi", "portable-bios")
FIRMWARE = {"legacy-bios": "bios", "uefi": "efi", "portable-bios": "bios"}


def firmware_of(name: str) -> str:
    """What an image was built to boot with (known before it is built)."""
    return FIRMWARE[name]


@dataclass(frozen=True)
class BuiltImage:
    name: str
    disk: Path  # qcow2, read-only base: boot an overlay (or a copy), never the file itself
    firmware: str  # "bios" | "efi"
    manifest: dict

    @property
    def key(self) -> str:
        """The build's content key: a change of any input makes a new image (and new births)."""
        return self.manifest["key"]

    @property
    def born_on_first_boot(self) -> bool:
        """legacy-bios specialises itself to the hardware of its first boot (see cv-birth)."""
        return bool(self.manifest.get("needs_birth"))


def build_image(name: str, timeout_s: float = 900.0) -> BuiltImage:
    """Build (or find in the cache) guest image ``name`` (one of :data:`IMAGES`)."""
    if name not in IMAGES:
        raise ValueError(f"unknown guest image {name!r} (expected one of {', '.join(IMAGES)})")
    proc = subprocess.run(
        ["bash", str(deploy_file("guests", "build-guest-image.sh")), name],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise RuntimeError(f"build-guest-image.sh {name} failed ({proc.returncode}):\n{tail}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    disk, manifest_path = Path(paths.get("DISK", "")), Path(paths.get("MANIFEST", ""))
    if not disk.is_file() or not manifest_path.is_file():
        raise RuntimeError(f"build-guest-image.sh {name} reported missing files: {proc.stdout.strip()!r}")
    manifest = json.loads(manifest_path.read_text())
    return BuiltImage(name=name, disk=disk, firmware=manifest["firmware"], manifest=manifest)
