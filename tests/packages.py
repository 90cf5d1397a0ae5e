"""The (descriptor, href -> path) view of a package that the older readers returned, for tests
that assert on it; the product reads packages through ``toolbox.ova.open_package`` only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from domain.ovf import OvfDescriptor
from toolbox.ova import Package, open_package


def _pairs(pkg: Package) -> tuple[OvfDescriptor, dict[str, Path]]:
    """A placeholder disk appears as a blank raw file under a synthetic href, so that
    ``files[disk.file_href]`` works for every disk."""
    d = replace(pkg.descriptor, disks=[replace(x) for x in pkg.descriptor.disks])
    files = dict(pkg.files)
    for disk, pd in zip(d.disks, pkg.disks, strict=True):
        if pd.blank and pd.path is not None:
            disk.file_href, disk.format = pd.path.name, "raw"
            files[pd.path.name] = pd.path
    return d, files


def read_ova(path: Path, dest_dir: Path) -> tuple[OvfDescriptor, dict[str, Path]]:
    return _pairs(open_package(path, extract_to=dest_dir))


def read_ovf_dir(ovf_path: Path) -> tuple[OvfDescriptor, dict[str, Path]]:
    return _pairs(open_package(ovf_path, extract_to=Path(ovf_path).parent))
