"""OVA / OVF-directory packaging against real files and real tar archives."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from crossvisor.core.errors import NON_RETRYABLE, BadInput
from domain.ovf import QEMU_FORMAT, OvfDescriptor, OvfDisk, OvfNic, build_ovf, parse_ovf
from drivers.base import InfraFault, InteropFailure
from tests.packages import read_ova, read_ovf_dir
from toolbox import diskconv, ova, packaging
from toolbox.ova import (
    CorruptPackage,
    InsufficientSpace,
    open_package,
    sha256_file,
    write_ova,
    write_ovf_dir,
)

MiB = 2**20
FIXTURES = Path(__file__).parent / "fixtures" / "ovf"


@functools.cache
def real_vmdk(capacity: int = 4 * MiB, marker: bytes = b"payload") -> bytes:
    """Bytes of a real streamOptimized VMDK of ``capacity`` (what a package disk really is)."""
    with tempfile.TemporaryDirectory() as tmp:
        q, v = Path(tmp) / "d.qcow2", Path(tmp) / "d.vmdk"
        diskconv.create(q, "qcow2", capacity)
        diskconv.write_marker(q, "qcow2", 4096, marker)
        diskconv.convert(q, "qcow2", v, "vmdk", subformat="streamOptimized", durable=False)
        return v.read_bytes()


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


DISK = real_vmdk()


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


# ------------------------------------------------------------------------------ the one reader


def test_open_package_without_extraction(tmp_path: Path, disks: list[Path]) -> None:
    xml = descriptor([d.name for d in disks])
    path = write_ova(xml, disks, tmp_path / "pkg.ova")
    pkg = open_package(path)
    assert (pkg.kind, pkg.descriptor_name, pkg.descriptor_text, pkg.manifest_name) == ("ova", "pkg.ovf", xml, "pkg.mf")
    assert set(pkg.manifest or {}) == {"pkg.ovf", "pkg-disk1.vmdk", "pkg-disk2.vmdk"}
    assert pkg.files == {} and not pkg.files_verified  # structure only: nothing written
    assert [d.path for d in pkg.disks] == [None, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg.ova", "src"]
    # the same package, extracted: every file verified, disks probed
    out = open_package(path, extract_to=tmp_path / "x")
    assert out.files_verified and set(out.files) == {"pkg-disk1.vmdk", "pkg-disk2.vmdk"}
    assert [(d.qemu_format, d.virtual_size, d.blank) for d in out.disks] == [("vmdk", 4 * MiB, False)] * 2
    # a directory holding one .ovf reads too
    ovf_dir = write_ovf_dir(xml, disks, tmp_path / "dir").parent
    assert open_package(ovf_dir).kind == "ovf"


@functools.cache
def real_image(fmt: str, capacity: int) -> bytes:
    """Bytes of a real (mostly empty) image of an OVF disk format: what an exporter ships."""
    if fmt == "vmdk-streamOptimized":
        return real_vmdk(capacity)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "d"
        diskconv.create(p, QEMU_FORMAT[fmt], capacity)
        return p.read_bytes()


def build_package(tmp_path: Path, fixture: str) -> Path:
    """An OVA from a corpus descriptor: real images for its disks, bytes for its other files."""
    xml = (FIXTURES / fixture).read_text()
    d = parse_ovf(xml)
    files = []
    src = tmp_path / "files"
    src.mkdir(exist_ok=True)
    for f in d.files():
        p = src / f.href
        disk = next((x for x in d.disks if x.file_href == f.href), None)
        p.write_bytes(real_image(disk.format, disk.capacity_bytes) if disk else os.urandom(4096))
        files.append(p)
    return write_ova(xml, files, tmp_path / (Path(fixture).stem + ".ova"))


def test_convert_and_import_stages_take_a_foreign_package(tmp_path: Path) -> None:
    """The real convert and import stages (libvirt test driver as target) on a DSP0243 2.0 package
    with a placeholder disk, a seed ISO and a README: the placeholder becomes a blank disk, the
    extra files are accepted, and the VM gets the package's hardware."""
    from temporalio.testing import ActivityEnvironment

    from activities.stages import STAGE_ACTIVITIES, StageEnv
    from activities.stages.base import vm_name
    from crossvisor.core.config import Settings
    from domain.messages import CellInput
    from domain.model import Cell, GuestImage, Host, Platform, RetryPolicySpec
    from domain.stage_io import CellContext, ExportOutput, StageCall

    pkg = build_package(tmp_path, "dsp0243-2.0-storage-ethernet.ovf")
    env = StageEnv(Settings(home=tmp_path / "home"))
    host = Host("cvo-kvm", "kvm", "libvirt", "test:///default")
    kvm = Platform("kvm", "kvm", "libvirt", disk_format="qcow2")
    cell = Cell("cvo-cell-ovf", "kvm", "kvm", "img", ["boots"], "fp")
    call = CellInput("cvo-ovf", cell, kvm, kvm, GuestImage("img"), host, host, "file:none", RetryPolicySpec())
    ctx = CellContext(export=ExportOutput(package=str(pkg), package_sha256=sha256_file(pkg)))
    act = ActivityEnvironment()  # the real activity context (info, heartbeats) around the stage
    out = act.run(STAGE_ACTIVITIES["convert"](env).run, StageCall(call, ctx))
    assert [(c.format, c.capacity_bytes) for c in out.disks] == [("qcow2", 8 * 2**30), ("qcow2", 2 * 2**30)]
    assert all(diskconv.info(c.path, "qcow2").virtual_size == c.capacity_bytes for c in out.disks)
    ctx.convert = out
    drv = env.driver(host)
    try:
        hw = act.run(STAGE_ACTIVITIES["import"](env).run, StageCall(call, ctx)).hardware
        assert (hw.cpus, hw.memory_mib, len(hw.disks), len(hw.nics)) == (2, 2048, 2, 2)
    finally:
        drv.destroy(vm_name("cvo-ovf", cell.id, "tgt"))
        drv.close()


def test_appliance_package_with_iso_imports_default_configuration(tmp_path: Path) -> None:
    """A vendor appliance (profiles, bootstrap ISO, alternatives) reads with its default profile."""
    path = build_package(tmp_path, "appliance-vrouter-profiles.ovf")
    pkg = open_package(path, extract_to=tmp_path / "x")
    assert (pkg.configuration, pkg.descriptor.cpus, pkg.descriptor.memory_mib) == ("1CPU-4GB", 1, 4096)
    assert set(pkg.files) == {"vrouter.vmdk", "vrouter-bootstrap.iso"}  # the ISO is not a stray
    assert (
        pkg.files["vrouter-bootstrap.iso"].read_bytes() == (tmp_path / "files" / "vrouter-bootstrap.iso").read_bytes()
    )
    big = open_package(path, extract_to=tmp_path / "y", configuration="4CPU-8GB")
    assert (big.configuration, big.descriptor.cpus, big.descriptor.memory_mib, len(big.descriptor.nics)) == (
        "4CPU-8GB",
        4,
        8192,
        4,
    )
    with pytest.raises(CorruptPackage, match="configuration 'nope' is not in DeploymentOptionSection"):
        open_package(path, configuration="nope")
    # VirtualBox's ISO-in-DiskSection form reads the same way
    vbox = open_package(build_package(tmp_path, "virtualbox-7-ovf2-efi.ovf"), extract_to=tmp_path / "v")
    assert vbox.descriptor.firmware == "efi" and "fedora-efi-disk002.iso" in vbox.files
    assert [d.qemu_format for d in vbox.disks] == ["vmdk"]


def test_missing_non_disk_file_is_refused(tmp_path: Path) -> None:
    xml = (FIXTURES / "appliance-vrouter-profiles.ovf").read_text().encode()
    m = [("p.ovf", xml), ("vrouter.vmdk", real_vmdk(2**30))]  # the ISO References names is missing
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "references vrouter-bootstrap.iso but the package")
    assert not (tmp_path / "out").exists()


def test_placeholder_disk_becomes_blank(tmp_path: Path) -> None:
    """A disk with a capacity and no file is made blank (sparse raw), never a KeyError later."""
    xml = descriptor(["a.vmdk"]).replace("</ovf:DiskSection>", "</ovf:DiskSection>")
    d = ova.parse_ovf(xml)
    d.disks.append(OvfDisk("", 64 * MiB, "vmdk-streamOptimized", "scsi", "lsilogic"))
    xml = build_ovf(d)
    path = make_tar(tmp_path / "p.ova", good_members(xml))
    pkg = open_package(path, extract_to=tmp_path / "out")
    blank = pkg.disks[1]
    assert blank.blank and blank.qemu_format == "raw" and blank.path is not None
    assert blank.path.stat().st_size == 64 * MiB and blank.path.stat().st_blocks == 0  # costs no space
    assert diskconv.info(blank.path, "raw").virtual_size == 64 * MiB
    # the old reader's contract: files[disk.file_href] works for every disk, blank ones included
    legacy, files = read_ova(path, tmp_path / "old")
    assert [files[x.file_href].exists() for x in legacy.disks] == [True, True]
    assert legacy.disks[1].format == "raw"
    diskconv.convert(files[legacy.disks[1].file_href], "raw", tmp_path / "b.qcow2", "qcow2")


def gz_bomb(n_bytes: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as g:
        block = bytes(MiB)
        for _ in range(n_bytes // MiB):
            g.write(block)
    return out.getvalue()


def test_gzip_bomb_refused_before_it_fills_the_disk(tmp_path: Path) -> None:
    bomb = gz_bomb(256 * MiB)  # ~250 KiB stored; a 4 MiB disk may inflate to 4.4 + 16 MiB at most
    assert len(bomb) < 300 * 1024
    xml = descriptor(["a.vmdk.gz"], compression="gzip")
    m = [("p.ovf", xml.encode()), ("a.vmdk.gz", bomb)]
    err = expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "decompression or sparse bomb")
    assert err.evidence["limit_bytes"] == str(int(4 * MiB * ova.MAX_DISK_FILE_RATIO) + ova.DISK_FILE_SLACK_BYTES)
    assert not (tmp_path / "out").exists()  # partial extraction removed (the directory was ours)


def test_sparse_tar_member_refused(tmp_path: Path) -> None:
    """A PAX GNU-sparse member: 4 KiB stored that the tar reader would expand to 10 GiB."""
    ovf_bytes = descriptor(["a.vmdk"]).encode()
    with tarfile.open(tmp_path / "p.ova", "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("p.ovf")
        info.size = len(ovf_bytes)
        tar.addfile(info, io.BytesIO(ovf_bytes))
        info = tarfile.TarInfo("a.vmdk")
        info.size = 4096
        info.pax_headers = {"GNU.sparse.map": "0,4096", "GNU.sparse.size": str(10 * 2**30)}
        tar.addfile(info, io.BytesIO(b"x" * 4096))
    expect_corrupt(tmp_path / "p.ova", tmp_path, "sparse tar entry")
    assert not (tmp_path / "out").exists()


def sparse_ova(path: Path, xml: str, member: str, size: int) -> Path:
    """A valid OVA whose one disk member is ``size`` bytes of holes: a few KiB on this disk."""
    ovf_bytes = xml.encode()
    with open(path, "wb") as fh:
        for name, data_size, data in (("p.ovf", len(ovf_bytes), ovf_bytes), (member, size, None)):
            info = tarfile.TarInfo(name)
            info.size = data_size
            fh.write(info.tobuf(tarfile.GNU_FORMAT))
            if data is not None:
                fh.write(data + bytes(-len(data) % 512))
            else:
                fh.seek(size + (-size % 512), os.SEEK_CUR)
        fh.write(bytes(1024))  # end-of-archive blocks
    return path


def test_member_beyond_capacity_refused_before_extraction(tmp_path: Path) -> None:
    path = sparse_ova(tmp_path / "p.ova", descriptor(["a.vmdk"]), "a.vmdk", 2**30)  # 4 MiB disk, 1 GiB stored
    assert path.stat().st_blocks * 512 < MiB
    err = expect_corrupt(path, tmp_path, "refused before extraction")
    assert err.evidence["stored_bytes"] == str(2**30)
    assert not (tmp_path / "out").exists()


def test_free_space_checked_before_extraction(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    size = (free // MiB + 1024) * MiB  # 1 GiB more than this filesystem has free
    d = ova.parse_ovf(descriptor(["a.raw"]))
    d.disks[0].format, d.disks[0].capacity_bytes = "raw", size
    path = sparse_ova(tmp_path / "p.ova", build_ovf(d), "a.raw", size)
    with pytest.raises(InsufficientSpace, match=rf"needs {size} bytes .* has \d+ bytes free") as err:
        open_package(path, extract_to=tmp_path / "out")
    assert isinstance(err.value, InfraFault)  # retried: space may be freed
    assert not (tmp_path / "out").exists()


def test_inflated_name_collision_refused(tmp_path: Path) -> None:
    gz = gzip.compress(DISK)
    d = ova.parse_ovf(descriptor(["a.vmdk.gz"], compression="gzip"))
    d.extra_files.append(ova.OvfFile("a.vmdk"))  # another file of the package named like the inflated disk
    xml = build_ovf(d)
    m = [("p.ovf", xml.encode()), ("a.vmdk.gz", gz), ("a.vmdk", b"something else")]
    err = expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "inflates to a.vmdk, which is also a member")
    assert err.evidence["collides_with"] == "a.vmdk"


def test_partial_extraction_cleaned_up(tmp_path: Path, disks: list[Path]) -> None:
    """The second disk fails its digest: the first, already extracted, is removed again; what was
    in the destination before stays."""
    xml = descriptor([d.name for d in disks])
    ovf_b = xml.encode()
    m = [("p.ovf", ovf_b), ("p.mf", b""), *((d.name, d.read_bytes()) for d in disks)]
    m[1] = ("p.mf", manifest([("p.ovf", ovf_b), (disks[0].name, disks[0].read_bytes()), (disks[1].name, b"x")]))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("not ours")
    with pytest.raises(CorruptPackage, match="checksum of pkg-disk2.vmdk"):
        open_package(make_tar(tmp_path / "p.ova", m), extract_to=dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_corrupt_disk_is_interop_failure_with_evidence(tmp_path: Path) -> None:
    """A package whose manifest matches but whose disk qemu-img cannot read: a verdict, not a retry."""
    junk = b"KDMV" + bytes(60_000)
    xml = descriptor(["a.vmdk"])
    m = [("p.ovf", xml.encode()), ("p.mf", manifest([("p.ovf", xml.encode()), ("a.vmdk", junk)])), ("a.vmdk", junk)]
    err = expect_corrupt(
        make_tar(tmp_path / "p.ova", m), tmp_path, "disk a.vmdk is corrupt or not vmdk-streamOptimized"
    )
    assert "qemu-img" in err.evidence["qemu_img"] and err.evidence["file"] == "a.vmdk"
    assert not (tmp_path / "out").exists()


def test_disk_larger_than_declared_capacity_refused(tmp_path: Path) -> None:
    big = real_vmdk(8 * MiB)  # virtual 8 MiB; the descriptor declares 4 MiB (file size within bounds)
    m = good_members()
    xml = m[0][1]
    m = [("p.ovf", xml), ("p.mf", manifest([("p.ovf", xml), ("a.vmdk", big)])), ("a.vmdk", big)]
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "beyond its declared capacity 4194304")


def test_backing_file_refused(tmp_path: Path) -> None:
    """A qcow2 naming a backing file would make qemu-img read a host file into the guest disk."""
    q = tmp_path / "evil.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(q), str(4 * MiB)],
        check=True,
    )
    d = ova.parse_ovf(descriptor(["evil.qcow2"]))
    d.disks[0].format = "qcow2"
    xml = build_ovf(d)
    m = [("p.ovf", xml.encode()), ("evil.qcow2", q.read_bytes())]
    expect_corrupt(make_tar(tmp_path / "p.ova", m), tmp_path, "refers to another image ('/etc/hostname')")


def test_chunked_file_reassembled(tmp_path: Path) -> None:
    chunk = 16 * 1024
    parts = [DISK[i : i + chunk] for i in range(0, len(DISK), chunk)]
    d = ova.parse_ovf(descriptor(["a.vmdk"]))
    d.disks[0].chunk_size, d.disks[0].file_size = chunk, len(DISK)
    xml = build_ovf(d)
    names = [f"a.vmdk.{i:09d}" for i in range(len(parts))]
    m = [("p.ovf", xml.encode()), ("p.mf", manifest([("p.ovf", xml.encode()), *zip(names, parts)]))]
    m += list(zip(names, parts))
    pkg = open_package(make_tar(tmp_path / "p.ova", m), extract_to=tmp_path / "out")
    assert pkg.files["a.vmdk"].read_bytes() == DISK and len(parts) > 2
    m.pop(3)  # a chunk missing in the middle: the chunk after it is a stray, the file short
    expect_corrupt(make_tar(tmp_path / "q.ova", m), tmp_path, "a.vmdk")


def test_external_reference_refused(tmp_path: Path) -> None:
    xml = descriptor(["http://example.invalid/a.vmdk"])
    expect_corrupt(make_tar(tmp_path / "p.ova", [("p.ovf", xml.encode())]), tmp_path, "external reference")


def test_unanticipated_exception_becomes_bad_input_fault_injected(tmp_path: Path, monkeypatch) -> None:
    """Fault injection (not a fake of any real part): an exception type no check anticipated,
    raised while reading, must end as BadInput (non-retryable), never as a retried KeyError."""

    def broken(*_a, **_k):
        raise KeyError("DiskSection")

    monkeypatch.setattr(ova, "parse_ovf", broken)
    with pytest.raises(BadInput, match=r"p.ova: malformed package \(KeyError while reading it") as err:
        open_package(make_tar(tmp_path / "p.ova", good_members()), extract_to=tmp_path / "out")
    assert type(err.value).__name__ in NON_RETRYABLE
    assert not (tmp_path / "out").exists()


def test_read_descriptor_wrapper_detaches_media(tmp_path: Path) -> None:
    path = build_package(tmp_path, "appliance-vrouter-profiles.ovf")
    d = packaging.read_descriptor(str(path))
    assert d.extra_files == [] and [c.file_href for c in d.cdroms] == ["", ""]
    assert d.configuration == "1CPU-4GB" and d.cpus == 1
    lone = tmp_path / "lone.ovf"
    lone.write_text((FIXTURES / "virtualbox-7-ovf2-efi.ovf").read_text())
    assert packaging.read_descriptor(str(lone)).firmware == "efi"  # descriptor only: no files needed
    with pytest.raises(CorruptPackage, match="does not exist"):
        packaging.read_descriptor(str(tmp_path / "nope.ovf"))


def test_ovf_dir_with_gzip_and_chunks_in_place(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    d = ova.parse_ovf(descriptor(["a.vmdk.gz"], compression="gzip"))
    xml = build_ovf(d)
    (exp / "p.ovf").write_text(xml)
    (exp / "a.vmdk.gz").write_bytes(gzip.compress(DISK))
    (exp / "p.mf").write_text(
        manifest([("p.ovf", xml.encode()), ("a.vmdk.gz", (exp / "a.vmdk.gz").read_bytes())]).decode()
    )
    pkg = open_package(exp / "p.ovf", extract_to=tmp_path / "x")
    assert pkg.files["a.vmdk.gz"] == tmp_path / "x" / "a.vmdk" and pkg.files["a.vmdk.gz"].read_bytes() == DISK
    assert (exp / "a.vmdk.gz").exists()  # the package itself is left alone
    structure_only = open_package(exp / "p.ovf")
    assert structure_only.files == {} and not structure_only.files_verified
    assert re.search(r"a\.vmdk$", str(read_ovf_dir(exp / "p.ovf")[1]["a.vmdk.gz"]))


def test_gzip_members_and_padding(tmp_path: Path) -> None:
    """gzip files may hold several members and zero padding (RFC 1952, as gzip(1) accepts them);
    a stream cut short is corrupt."""
    half = len(DISK) // 2
    gz = gzip.compress(DISK[:half]) + gzip.compress(DISK[half:]) + bytes(1000)
    xml = descriptor(["a.vmdk.gz"], compression="gzip")
    pkg = open_package(
        make_tar(tmp_path / "p.ova", [("p.ovf", xml.encode()), ("a.vmdk.gz", gz)]), extract_to=tmp_path / "o"
    )
    assert pkg.files["a.vmdk.gz"].read_bytes() == DISK
    cut = gzip.compress(DISK)[:-100]
    expect_corrupt(
        make_tar(tmp_path / "q.ova", [("p.ovf", xml.encode()), ("a.vmdk.gz", cut)]), tmp_path, "gzip data is corrupt"
    )
    assert not (tmp_path / "out").exists()


def test_virtualbox_manifest_spelling(tmp_path: Path) -> None:
    """VirtualBox's RTManifestWriteStandard writes "SHA256 (name) = hex" (spaces), ovftool
    "SHA256(name)= hex": both are manifests, and a wrong digest is caught in either."""
    m = good_members()
    vbox = "".join(f"SHA256 ({n}) = {hashlib.sha256(b).hexdigest()}\r\n" for n, b in (m[0], m[2]))
    m[1] = ("p.mf", vbox.encode())
    pkg = open_package(make_tar(tmp_path / "p.ova", m), extract_to=tmp_path / "o")
    assert pkg.files_verified and set(pkg.manifest or {}) == {"p.ovf", "a.vmdk"}
    m[1] = ("p.mf", vbox.replace(hashlib.sha256(DISK).hexdigest(), hashlib.sha256(b"x").hexdigest()).encode())
    expect_corrupt(make_tar(tmp_path / "q.ova", m), tmp_path, "checksum of a.vmdk does not match p.mf")
