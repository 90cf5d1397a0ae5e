"""Export/import plumbing every driver shares: OVF descriptor + streamOptimized VMDK + OVA.

Drivers whose API cannot export natively (libvirt; govmomi's simulator lacks ExportVm) describe
the VM as ``Hardware`` and let this module write the package, so every export looks the same to
the target side.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from domain import ovf
from domain.vm import DiskSpec, ExportedVm, Hardware
from drivers import diskconv, ova


def export_package(name: str, hw: Hardware, out_dir: Path, package_format: str = "ova") -> ExportedVm:
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for i, d in enumerate(hw.disks):
        dst = out_dir / f"{name}-disk{i}.vmdk"
        if not dst.exists():  # a retried export reuses a finished conversion (written atomically)
            diskconv.convert(d.path, d.format, dst, "vmdk", subformat="streamOptimized")
        files.append(dst)
    desc = ovf.descriptor_from_hardware(name, hw, [f.name for f in files], "vmdk-streamOptimized")
    xml = ovf.build_ovf(desc)
    if package_format == "ovf":
        path = ova.write_ovf_dir(xml, files, out_dir)
    else:
        path = ova.write_ova(xml, files, out_dir / f"{name}.ova")
        for f in files:  # the OVA holds them now
            f.unlink(missing_ok=True)
    # inside an OVA a disk is named by its href; the convert stage extracts and verifies it
    disks = [
        DiskSpec(
            path=str(f) if package_format == "ovf" else f.name,
            format="vmdk",
            bus=d.bus,
            capacity_bytes=d.capacity_bytes,
        )
        for d, f in zip(hw.disks, files)
    ]
    return ExportedVm(package=str(path), disks=disks)


def read_descriptor(package: str) -> ovf.OvfDescriptor:
    """The OVF descriptor of an .ova (without extracting the disks) or of an .ovf file."""
    p = Path(package)
    if p.suffix == ".ova":
        try:
            with tarfile.open(p) as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith(".ovf")), None)
                if member is None:
                    raise ova.CorruptPackage(f"{p.name}: no .ovf descriptor in the archive")
                f = tar.extractfile(member)
                assert f is not None
                return ovf.parse_ovf(f.read().decode())
        except tarfile.TarError as e:
            raise ova.CorruptPackage(f"{p.name}: not a readable OVA: {e}") from None
        except ovf.OvfError as e:
            raise ova.CorruptPackage(f"{p.name}: bad OVF descriptor: {e}") from None
    try:
        return ovf.parse_ovf(p.read_text())
    except ovf.OvfError as e:
        raise ova.CorruptPackage(f"{p.name}: bad OVF descriptor: {e}") from None


def descriptor_text(package: str | Path) -> str:
    """The OVF descriptor's text of an .ova (without extracting the disks) or of an .ovf file."""
    p = Path(package)
    if p.suffix != ".ova":
        return p.read_text()
    with tarfile.open(p) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(".ovf")), None)
        f = tar.extractfile(member) if member is not None else None
        if f is None:
            raise ova.CorruptPackage(f"{p.name}: no .ovf descriptor in the archive")
        return f.read().decode()
