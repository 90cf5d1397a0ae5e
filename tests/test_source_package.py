"""An operator's image given as an OVF/OVA package (exported from vSphere): provision takes its first
disk, after the package's manifest is verified (activities/stages/source_side.disk_from_source)."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.stages.source_side import disk_from_source
from tests.test_ova import MiB, descriptor
from toolbox import diskconv
from toolbox.ova import CorruptPackage, write_ova


def test_an_ova_source_becomes_its_first_disk(tmp_path: Path) -> None:
    q, v = tmp_path / "d.qcow2", tmp_path / "pkg-disk1.vmdk"
    diskconv.create(q, "qcow2", 4 * MiB)
    diskconv.write_marker(q, "qcow2", 1 << 20, b"operator-disk-content")
    diskconv.convert(q, "qcow2", v, "vmdk", subformat="streamOptimized")
    pkg = write_ova(descriptor([v.name]), [v], tmp_path / "golden.ova")
    out = tmp_path / "source-disk0.qcow2"
    disk_from_source(str(pkg), out, tmp_path / "scratch")
    assert diskconv.read_marker(out, "qcow2", 1 << 20, 21) == b"operator-disk-content"
    assert diskconv.info(out, "qcow2").virtual_size == 4 * MiB
    assert not (tmp_path / "scratch").exists()


def test_a_tampered_ova_source_is_refused_naming_the_package(tmp_path: Path) -> None:
    q, v = tmp_path / "d.qcow2", tmp_path / "pkg-disk1.vmdk"
    diskconv.create(q, "qcow2", 4 * MiB)
    diskconv.convert(q, "qcow2", v, "vmdk", subformat="streamOptimized")
    pkg = write_ova(descriptor([v.name]), [v], tmp_path / "golden.ova")
    data = bytearray(pkg.read_bytes())
    data[-20000] ^= 0xFF  # a byte of the disk member: the manifest digest no longer matches
    pkg.write_bytes(bytes(data))
    # a corrupt package is an interop result (no retry), named with its file and the mismatch
    with pytest.raises(CorruptPackage) as e:
        disk_from_source(str(pkg), tmp_path / "out.qcow2", tmp_path / "scratch")
    assert "golden.ova" in str(e.value) and "does not match golden.mf" in str(e.value)
    assert not (tmp_path / "scratch").exists()
