"""Export/import plumbing every driver shares: OVF descriptor + streamOptimized VMDK + OVA.

Drivers whose API cannot export natively (libvirt; govmomi's simulator lacks ExportVm) describe
the VM as ``Hardware`` and let this module write the package, so every export looks the same to
the target side.
"""

from __future__ import annotations

from pathlib import Path

from domain import ovf
from domain.vm import DiskSpec, ExportedVm, Hardware
from toolbox import diskconv, ova


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
    """The descriptor an importer works from (through ``ova.open_package``, the one reader): of an
    .ova (structure verified, nothing extracted) or of the lone .ovf the convert stage keeps, for
    the default configuration. Media and other non-disk files are detached: importers attach only
    the converted disks, so a descriptor still naming an ISO would ask for a file they lack."""
    p = Path(package)
    if p.suffix == ".ova":
        desc = ova.open_package(p).descriptor
    else:
        desc = ova.read_descriptor_file(p)
    if desc.extra_files or any(c.file_href for c in desc.cdroms):
        desc.warnings.append(f"media/files {[f.href for f in desc.extra_files]} not carried to the target")
    desc.extra_files = []
    desc.cdroms = [ovf.OvfCdrom(c.bus) for c in desc.cdroms]
    return desc
