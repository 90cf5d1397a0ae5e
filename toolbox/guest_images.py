"""The guest images that boot themselves (``deploy/guests/build-guest-image.sh``): built from
Debian's packages, cached by content hash; their console evidence is parsed by
``domain.guest_evidence``, the hardware they boot on is ``domain.profiles``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from crossvisor.core import steps
from crossvisor.core.resources import deploy_file


def cache_dir() -> Path:
    return Path(os.environ.get("CROSSVISOR_CACHE", Path.home() / ".cache" / "crossvisor"))


IMAGES = ("legacy-bios", "uefi", "portable-bios")
FIRMWARE = {"legacy-bios": "bios", "uefi": "efi", "portable-bios": "bios"}


def firmware_of(name: str) -> str:
    """What an image was built to boot with (known before it is built)."""
    return FIRMWARE[name] if name in FIRMWARE else FAMILY_FIRMWARE[name]


def instrumented(name: str) -> bool:
    """Whether built image ``name`` carries crossvisor's own evidence parts (cv-evidence, cv-app):
    the boot families do not, and are observed as an operator's image is."""
    return name in IMAGES


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
    with steps.step("image build"):  # a cached image answers in well under a second
        proc = steps.run(["bash", str(deploy_file("guests", "build-guest-image.sh")), name], timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise RuntimeError(f"build-guest-image.sh {name} failed ({proc.returncode}):\n{tail}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    disk, manifest_path = Path(paths.get("DISK", "")), Path(paths.get("MANIFEST", ""))
    if not disk.is_file() or not manifest_path.is_file():
        raise RuntimeError(f"build-guest-image.sh {name} reported missing files: {proc.stdout.strip()!r}")
    manifest = json.loads(manifest_path.read_text())
    return BuiltImage(name=name, disk=disk, firmware=manifest["firmware"], manifest=manifest)


# Reference images with no crossvisor part in them (deploy/guests/build-plain-image.sh): what an
# operator's own Debian template looks like, to prove grading from the channels any VM has.
PLAIN_IMAGES = ("plain-agent", "plain-sshd")


@dataclass(frozen=True)
class PlainImage:
    name: str
    disk: Path  # qcow2, read-only base
    ssh_key: Path  # the private key root logs in with (made for this build)
    ssh_host_key: str  # "ssh-ed25519 AAAA..." the image's sshd answers with
    manifest: dict
    nvram: Path | None = None  # EFI images: the VM's own UEFI variable store (its boot entries)

    @property
    def firmware(self) -> str:
        return self.manifest.get("firmware", "bios")


# Guest families with no crossvisor part, named for the boot behaviour that breaks their moves
# (deploy/guests/build-boot-family.sh, issue 23): root named by a VMware-era device name with
# VMware Tools and no QEMU guest agent; UEFI booting only through its own NVRAM entry.
BOOT_FAMILIES = ("vmware-born", "uefi-nvram")
# Guest families of deploy/guests/build-family-image.sh (issue 23): a dracut host-only initramfs with
# root on LVM and a NetworkManager keyfile bound to its MAC; netplan written by cloud-init for the
# first boot's MAC.
FAMILY_IMAGES = ("dracut-lvm-nm", "netplan-cloudinit")
FAMILIES = BOOT_FAMILIES + FAMILY_IMAGES  # every family: observed as an operator's image is
FAMILY_FIRMWARE = {"vmware-born": "bios", "uefi-nvram": "efi", "dracut-lvm-nm": "bios", "netplan-cloudinit": "bios"}


def build_plain_image(name: str, timeout_s: float = 1200.0) -> PlainImage:
    if name not in PLAIN_IMAGES and name not in FAMILIES:
        known = ", ".join((*PLAIN_IMAGES, *FAMILIES))
        raise ValueError(f"unknown reference image {name!r} (expected one of {known})")
    script = "build-plain-image.sh"
    if name in BOOT_FAMILIES:
        script = "build-boot-family.sh"
    elif name in FAMILY_IMAGES:
        script = "build-family-image.sh"
    with steps.step("image build"):
        proc = steps.run(["bash", str(deploy_file("guests", script)), name], timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise RuntimeError(f"{script} {name} failed ({proc.returncode}):\n{tail}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    disk, manifest, key = Path(paths["DISK"]), Path(paths["MANIFEST"]), Path(paths["SSH_KEY"])
    host_key = (key.parent / "host_ed25519_key.pub").read_text().split()
    nvram = Path(paths["NVRAM"]) if paths.get("NVRAM") else None
    return PlainImage(name, disk, key, " ".join(host_key[:2]), json.loads(manifest.read_text()), nvram)
