"""qemu-img conversions across every format, proven by `qemu-img compare` and marker bytes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from drivers.base import InfraFault, InteropFailure
from toolbox import diskconv
from toolbox.diskconv import ConversionError, CorruptImage, SizeMismatch

MiB = 2**20
# Not a multiple of any VHD CHS geometry: plain qemu-img rounds it (see test_vpc_size_trap).
SIZE = 10 * MiB + 3 * 512
MARKERS = {
    0: b"BOOT-SECTOR-MARK",
    5 * MiB + 13: os.urandom(300),
    SIZE - 16: b"END-OF-DISK-MARK",
}

TARGETS = [
    ("qcow2", ""),
    ("vmdk", "streamOptimized"),
    ("vmdk", "monolithicSparse"),
    ("vpc", ""),
    ("vpc", "fixed"),
    ("vhdx", ""),
    ("raw", ""),
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src") / "src.qcow2"
    diskconv.create(src, "qcow2", SIZE)
    for off, data in MARKERS.items():
        diskconv.write_marker(src, "qcow2", off, data)
    return src


def check_markers(path: Path, fmt: str) -> None:
    for off, data in MARKERS.items():
        assert diskconv.read_marker(path, fmt, off, len(data)) == data, (path, fmt, off)


@pytest.mark.parametrize(("fmt", "sub"), TARGETS, ids=[f"{f}-{s or 'default'}" for f, s in TARGETS])
def test_round_trip(tmp_path: Path, source: Path, fmt: str, sub: str) -> None:
    mid = tmp_path / f"mid.{fmt}"
    seen: list[float] = []
    res = diskconv.convert(source, "qcow2", mid, fmt, subformat=sub, progress=seen.append)
    assert (res.src_format, res.dst_format, res.bytes) == ("qcow2", fmt, SIZE)
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)
    inf = diskconv.info(mid, fmt)
    assert inf.format == fmt and inf.virtual_size == SIZE
    if fmt == "vmdk":
        assert inf.subformat == sub
    assert diskconv.compare(source, "qcow2", mid, fmt)
    check_markers(mid, fmt)
    # ... and back out to raw, the lingua franca of importers.
    back = tmp_path / "back.raw"
    diskconv.convert(mid, fmt, back, "raw")
    assert back.stat().st_size == SIZE
    assert diskconv.compare(back, "raw", source, "qcow2")
    check_markers(back, "raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["back.raw", mid.name])


def test_compare_detects_difference(tmp_path: Path, source: Path) -> None:
    a = tmp_path / "a.vhdx"
    diskconv.convert(source, "qcow2", a, "vhdx")
    diskconv.write_marker(a, "vhdx", 7 * MiB, b"\x01")
    assert not diskconv.compare(a, "vhdx", source, "qcow2")
    # A bigger disk with a zero tail is "identical" to qemu-img compare, not to us.
    big = tmp_path / "big.raw"
    diskconv.convert(source, "qcow2", big, "raw")
    with open(big, "ab") as fh:
        fh.truncate(SIZE + MiB)
    assert not diskconv.compare(big, "raw", source, "qcow2")


def test_marker_on_stream_optimized(tmp_path: Path) -> None:
    p = tmp_path / "s.vmdk"
    diskconv.create(p, "vmdk", 4 * MiB, subformat="streamOptimized")
    diskconv.write_marker(p, "vmdk", 12345, b"written-through-qcow2")
    assert diskconv.read_marker(p, "vmdk", 12345, 21) == b"written-through-qcow2"
    assert diskconv.info(p, "vmdk").subformat == "streamOptimized"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.vmdk"]


def test_vpc_size_trap(tmp_path: Path) -> None:
    """The trap is real on this qemu (plain create rounds), and our create/convert avoid it."""
    plain = tmp_path / "plain.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", str(plain), str(SIZE)], check=True)
    assert diskconv.info(plain, "vpc").virtual_size != SIZE
    ours = tmp_path / "ours.vhd"
    diskconv.create(ours, "vpc", SIZE)
    assert diskconv.info(ours, "vpc").virtual_size == SIZE


def test_size_change_is_precise_error(tmp_path: Path, source: Path) -> None:
    """A size-changing conversion is refused with both sizes named, and leaves nothing behind."""
    fake = tmp_path / "fake-qemu-img"
    # Real qemu-img, but with force_size stripped: reproduces the CHS rounding bug.
    fake.write_text('#!/bin/sh\nexec qemu-img $(echo "$@" | sed "s/force_size=on/force_size=off/")\n')
    fake.chmod(0o755)
    old = diskconv.QEMU_IMG
    diskconv.QEMU_IMG = str(fake)
    try:
        with pytest.raises(SizeMismatch, match=rf"from {SIZE} to \d+ \(VHD CHS"):
            diskconv.convert(source, "qcow2", tmp_path / "out.vhd", "vpc")
    finally:
        diskconv.QEMU_IMG = old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-qemu-img"]


def test_explicit_format_trap(tmp_path: Path) -> None:
    """A raw disk whose first bytes are a qcow2 header: probing lies, explicit -f does not."""
    q = tmp_path / "inner.qcow2"
    diskconv.create(q, "qcow2", 64 * MiB)
    raw = tmp_path / "guest.raw"
    raw.write_bytes(q.read_bytes().ljust(MiB, b"\0"))  # a guest wrote a qcow2 image to its disk
    probed = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(raw)],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert probed["format"] == "qcow2" and probed["virtual-size"] == 64 * MiB  # the trap
    assert diskconv.info(raw, "raw").virtual_size == MiB
    out = tmp_path / "out.qcow2"
    diskconv.convert(raw, "raw", out, "qcow2")
    assert diskconv.info(out, "qcow2").virtual_size == MiB
    assert diskconv.read_marker(out, "qcow2", 0, 4) == b"QFI\xfb"  # header kept as guest data
    # A fixed VHD probes as raw too.
    vhd = tmp_path / "fixed.vhd"
    diskconv.create(vhd, "vpc", SIZE, subformat="fixed")
    probe = subprocess.run(["qemu-img", "info", "--output=json", str(vhd)], capture_output=True, check=True)
    assert json.loads(probe.stdout)["format"] == "raw"
    assert diskconv.info(vhd, "vpc").virtual_size == SIZE


def test_failures(tmp_path: Path) -> None:
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"not a qcow2 image at all" * 100)
    dst = tmp_path / "dst.raw"
    # a source qemu-img cannot open is the image's fault: a verdict with evidence, not a retry
    with pytest.raises(CorruptImage, match="(?i)qcow2") as err:
        diskconv.convert(junk, "qcow2", dst, "raw")
    assert isinstance(err.value, InteropFailure) and not isinstance(err.value, InfraFault)
    assert "Could not open" in err.value.evidence["qemu_img"]
    assert not dst.exists() and not list(tmp_path.glob(".*part"))
    # a missing source is not an image fault: it stays an infrastructure error
    with pytest.raises(ConversionError):
        diskconv.convert(tmp_path / "missing.qcow2", "qcow2", dst, "raw")
    with pytest.raises(ValueError, match="'vhd' unknown"):
        diskconv.create(tmp_path / "x", "vhd", MiB)
    with pytest.raises(ValueError, match="subformat 'fixed' invalid for vmdk"):
        diskconv.convert(junk, "raw", dst, "vmdk", subformat="fixed")
    with pytest.raises(ConversionError, match="read of .* returned|Input/output error"):
        diskconv.read_marker(junk, "raw", 10 * MiB, 4)


def test_corrupt_stream_optimized_grain_is_corrupt_image(tmp_path: Path, source: Path) -> None:
    """Header fine, compressed grains damaged: qemu-img info passes, the conversion reads garbage.
    That is the package's disk at fault (CorruptImage), never an InfraFault retried forever."""
    vmdk = tmp_path / "s.vmdk"
    diskconv.convert(source, "qcow2", vmdk, "vmdk", subformat="streamOptimized")
    data = bytearray(vmdk.read_bytes())
    for i in range(65536 + 600, 65536 + 5000):  # inside the first compressed grains
        data[i] ^= 0x5A
    vmdk.write_bytes(data)
    assert diskconv.probe(vmdk, "vmdk").virtual_size == SIZE  # the header still reads
    with pytest.raises(CorruptImage, match="cannot read this vmdk image: error while reading") as err:
        diskconv.convert(vmdk, "vmdk", tmp_path / "out.qcow2", "qcow2")
    assert err.value.evidence["path"] == str(vmdk)
    assert not (tmp_path / "out.qcow2").exists()


def test_probe_untrusted_images(tmp_path: Path, source: Path) -> None:
    info = diskconv.probe(source, "qcow2")
    assert (info.virtual_size, info.backing_file, info.data_file) == (SIZE, "", "")
    child = tmp_path / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(source), "-F", "qcow2", str(child)], check=True
    )
    assert diskconv.probe(child, "qcow2").backing_file == str(source)
    vmdk = tmp_path / "s.vmdk"
    diskconv.convert(source, "qcow2", vmdk, "vmdk", subformat="streamOptimized")
    assert diskconv.probe(vmdk, "vmdk").extents == [str(vmdk)]
    trunc = tmp_path / "t.vmdk"
    trunc.write_bytes(vmdk.read_bytes()[:30000])
    with pytest.raises(CorruptImage, match="not a readable vmdk image") as err:
        diskconv.probe(trunc, "vmdk")
    assert "truncated" in err.value.evidence["qemu_img"].lower()
