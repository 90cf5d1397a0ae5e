"""OVA / OVF-directory packaging against real files and real tar archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from domain.ovf import OvfDescriptor, OvfDisk, OvfNic, build_ovf
from drivers import diskconv
from drivers.base import InteropFailure
from drivers.ova import (
    CorruptPackage,
    read_ova,
    read_ovf_dir,
    sha256_file,
    write_ova,
    write_ovf_dir,
)

MiB = 2**20


def descriptor(hrefs: list[str], compression: str = "") -> str:
    return build_ovf(
        OvfDescriptor(
            name="pkg",
            cpus=1,
            memory_mib=128,
            disks=[
                OvfDisk(
                    h,
                    4 * MiB,
                    "vmdk-streamOptimized",
                    "scsi",
                    "lsilogic",
                    compression=compression,
                )
                for h in hrefs
            ],
            nics=[OvfNic("VmxNet3")],
            metadata={"cell": "c1"},
        )
    )


@pytest.fixture
def disks(tmp_path: Path) -> list[Path]:
    """Two real streamOptimized vmdk disks carrying a marker each (what vSphere exports)."""
    src = tmp_path / "src"
    src.mkdir()
    out = []
    for i in (1, 2):
        q = src / f"d{i}.qcow2"
        diskconv.create(q, "qcow2", 4 * MiB)
        diskconv.write_marker(q, "qcow2", 4096 * i, f"disk-{i}".encode() + os.urandom(64))
        v = src / f"pkg-disk{i}.vmdk"
        diskconv.convert(q, "qcow2", v, "vmdk", subformat="streamOptimized")
        q.unlink()
        out.append(v)
    return out


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
def test_ova_round_trip(tmp_path: Path, disks: list[Path], digest: str) -> None:
    xml = descriptor([d.name for d in disks])
    # Files given in the "wrong" order: the tar must follow References order.
    ova = write_ova(xml, list(reversed(disks)), tmp_path / "pkg.ova", digest=digest)
    with tarfile.open(ova) as tar:
        assert tar.getnames() == [
            "pkg.ovf",
            "pkg.mf",
            "pkg-disk1.vmdk",
            "pkg-disk2.vmdk",
        ]
        assert all(m.type == tarfile.REGTYPE for m in tar.getmembers())
        mf = tar.extractfile("pkg.mf").read().decode()  # type: ignore[union-attr]
    algo = digest.upper()
    assert f"{algo}(pkg-disk1.vmdk)= {hashlib.new(digest, disks[0].read_bytes()).hexdigest()}" in mf
    assert f"{algo}(pkg.ovf)= {hashlib.new(digest, xml.encode()).hexdigest()}" in mf
    # GNU tar agrees it is a valid archive (USTAR, as the OVF spec requires).
    listing = subprocess.run(["tar", "tvf", str(ova)], capture_output=True, text=True, check=True)
    assert "pkg-disk2.vmdk" in listing.stdout

    d, files = read_ova(ova, tmp_path / "out")
    assert d.name == "pkg" and d.metadata == {"cell": "c1"}
    assert set(files) == {"pkg-disk1.vmdk", "pkg-disk2.vmdk"}
    for src in disks:
        got = files[src.name]
        assert got.parent == tmp_path / "out"
        assert got.read_bytes() == src.read_bytes()
        assert diskconv.compare(got, "vmdk", src, "vmdk")
    assert not list((tmp_path / "out").glob(".*part"))  # no temp leftovers


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(3 * MiB + 7))
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_write_ova_checks_files(tmp_path: Path, disks: list[Path]) -> None:
    with pytest.raises(ValueError, match="no such file"):
        write_ova(descriptor([d.name for d in disks]), disks[:1], tmp_path / "x.ova")
    with pytest.raises(ValueError, match="not referenced"):
        write_ova(descriptor([disks[0].name]), disks, tmp_path / "x.ova")
    assert not list(tmp_path.glob("*x.ova*"))


# ------------------------------------------------------------------------------ broken packages


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def manifest(entries: list[tuple[str, bytes]], algo: str = "sha256") -> bytes:
    return "".join(f"{algo.upper()}({n})= {hashlib.new(algo, b).hexdigest()}\n" for n, b in entries).encode()


DISK = b"VMDK-ish payload " * 1000


def good_members(xml: str | None = None) -> list[tuple[str, bytes]]:
    ovf = (xml or descriptor(["a.vmdk"])).encode()
    return [
        ("p.ovf", ovf),
        ("p.mf", manifest([("p.ovf", ovf), ("a.vmdk", DISK)])),
        ("a.vmdk", DISK),
    ]


def expect_corrupt(ova: Path, tmp_path: Path, fragment: str) -> CorruptPackage:
    with pytest.raises(CorruptPackage) as err:
        read_ova(ova, tmp_path / "out")
    assert isinstance(err.value, InteropFailure)  # a verdict, not a retryable fault
    assert fragment in err.value.reason, err.value.reason
    return err.value


def test_hand_made_package_reads(tmp_path: Path) -> None:
    _, files = read_ova(make_tar(tmp_path / "p.ova", good_members()), tmp_path / "out")
    assert files["a.vmdk"].read_bytes() == DISK


def test_tampered_disk_byte(tmp_path: Path, disks: list[Path]) -> None:
    ova = write_ova(descriptor([d.name for d in disks]), disks, tmp_path / "pkg.ova")
    with tarfile.open(ova) as tar:
        offset = tar.getmember("pkg-disk2.vmdk").offset_data
    with open(ova, "r+b") as fh:  # flip one byte inside the second disk's data
        fh.seek(offset + 700)
        b = fh.read(1)
        fh.seek(offset + 700)
        fh.write(bytes([b[0] ^ 0xFF]))
    expect_corrupt(ova, tmp_path, "checksum of pkg-disk2.vmdk does not match pkg.mf")


def test_wrong_manifest_digest(tmp_path: Path) -> None:
    m = good_members()
    m[1] = ("p.mf", manifest([("p.ovf", m[0][1]), ("a.vmdk", DISK + b"x")]))
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "checksum of a.vmdk does not match")


def test_sha1_manifest_tamper_detected(tmp_path: Path) -> None:
    m = good_members()
    m[1] = ("p.mf", manifest([("p.ovf", m[0][1]), ("a.vmdk", b"other")], "sha1"))
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "(sha1 ")


def test_malformed_manifest_line(tmp_path: Path) -> None:
    m = good_members()
    m[1] = ("p.mf", m[1][1] + b"MD5(a.vmdk)= abc\n")
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "p.mf line 3")


def test_manifest_misses_file(tmp_path: Path) -> None:
    m = good_members()
    m[1] = ("p.mf", manifest([("p.ovf", m[0][1])]))
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "a.vmdk is in the package but not in")


def test_missing_file(tmp_path: Path) -> None:
    expect_corrupt(
        make_tar(tmp_path / "p.ova", good_members()[:2]),
        tmp_path,
        "references a.vmdk but the package has no such member",
    )


def test_missing_ovf(tmp_path: Path) -> None:
    expect_corrupt(make_tar(tmp_path / "p.ova", good_members()[1:]), tmp_path, "exactly one .ovf")


def test_bad_xml(tmp_path: Path) -> None:
    m = good_members("<Envelope><unclosed></Envelope>")
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "p.ovf: invalid descriptor")


def test_file_size_mismatch(tmp_path: Path) -> None:
    xml = descriptor(["a.vmdk"]).replace('ovf:id="file1"', 'ovf:id="file1" ovf:size="5"')
    expect_corrupt(make_tar(tmp_path / "p.ova", good_members(xml)), tmp_path, "ovf:size says 5")


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_tar(tmp_path: Path, cut: float) -> None:
    ova = make_tar(tmp_path / "p.ova", good_members())
    data = ova.read_bytes()
    # Cut inside the disk member's data (the end-of-archive padding would be harmless).
    with tarfile.open(ova) as tar:
        m = tar.getmember("a.vmdk")
    ova.write_bytes(data[: m.offset_data + int(m.size * cut)])
    expect_corrupt(ova, tmp_path, "a.vmdk")


def test_not_a_tar(tmp_path: Path) -> None:
    ova = tmp_path / "p.ova"
    ova.write_bytes(b"\x00garbage" * 10)
    expect_corrupt(ova, tmp_path, "p.ova")


def test_path_traversal_member(tmp_path: Path) -> None:
    m = [*good_members(), ("../evil.sh", b"#!/bin/sh\nrm -rf /\n")]
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "'../evil.sh' escapes the package")
    assert not (tmp_path / "evil.sh").exists()


def test_traversal_href(tmp_path: Path) -> None:
    xml = descriptor(["../../etc/passwd"])
    m = [("p.ovf", xml.encode())]
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "path traversal")


def test_symlink_member(tmp_path: Path) -> None:
    ova = make_tar(tmp_path / "p.ova", good_members())
    with tarfile.open(ova, "a", format=tarfile.USTAR_FORMAT) as tar:
        link = tarfile.TarInfo("b.vmdk")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    expect_corrupt(ova, tmp_path, "'b.vmdk' is not a regular file")


def test_gzip_compressed_disk(tmp_path: Path) -> None:
    gz = gzip.compress(DISK)
    xml = descriptor(["a.vmdk.gz"], compression="gzip")
    m = [
        ("p.ovf", xml.encode()),
        ("p.mf", manifest([("p.ovf", xml.encode()), ("a.vmdk.gz", gz)])),
    ]
    m.append(("a.vmdk.gz", gz))
    d, files = read_ova(make_tar(tmp_path / "p.ova", m), tmp_path / "out")
    assert d.disks[0].compression == "gzip"
    assert files["a.vmdk.gz"] == tmp_path / "out" / "a.vmdk"
    assert files["a.vmdk.gz"].read_bytes() == DISK
    assert not (tmp_path / "out" / "a.vmdk.gz").exists()
    # Corrupt gzip stream (manifest still matches the stored bytes) is caught too.
    bad = gz[:20] + bytes([gz[20] ^ 0xFF]) + gz[21:]
    m = [
        ("p.ovf", xml.encode()),
        ("p.mf", manifest([("p.ovf", xml.encode()), ("a.vmdk.gz", bad)])),
    ]
    m.append(("a.vmdk.gz", bad))
    expect_corrupt(make_tar(tmp_path / "q.ova", m), tmp_path, "gzip data is corrupt")


# ------------------------------------------------------------------------------ OVF directory


def test_ovf_dir_round_trip_and_tamper(tmp_path: Path, disks: list[Path]) -> None:
    xml = descriptor([d.name for d in disks])
    ovf = write_ovf_dir(xml, disks, tmp_path / "exp", digest="sha1")
    assert ovf == tmp_path / "exp" / "pkg.ovf"
    assert (tmp_path / "exp" / "pkg.mf").read_text().startswith("SHA1(pkg.ovf)= ")
    d, files = read_ovf_dir(ovf)
    assert [files[x.file_href] for x in d.disks] == [tmp_path / "exp" / x.name for x in disks]
    with open(files["pkg-disk1.vmdk"], "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xde\xad")
    with pytest.raises(CorruptPackage, match="checksum of pkg-disk1.vmdk"):
        read_ovf_dir(ovf)
    files["pkg-disk2.vmdk"].unlink()
    with pytest.raises(CorruptPackage, match="references pkg-disk2.vmdk but"):
        read_ovf_dir(ovf)


def test_package_without_manifest_reads(tmp_path: Path) -> None:
    """A manifest is optional in OVF; without one only structure and sizes are checked."""
    m = [good_members()[0], good_members()[2]]
    _, files = read_ova(make_tar(tmp_path / "p.ova", m), tmp_path / "out")
    assert files["a.vmdk"].read_bytes() == DISK
