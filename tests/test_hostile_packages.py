"""Packages and disks built to attack the reader (issue 27): every one is made here, in tmp_path,
with a secret file *outside* the package that no outcome may read, copy or quote.

Each test states the kind of hostile input and what the reader must do with it; the package
reader, the bounded tar reader and the disk checker are the real ones, qemu-img is the real one.
"""

from __future__ import annotations

import gzip
import os
import re
import resource
import signal
import struct
import tarfile
import time
import tracemalloc
from pathlib import Path

import pytest

from crossvisor.core import bounded_tar
from crossvisor.core.errors import NON_RETRYABLE
from crossvisor.core.safe_read import InputFileError, check_disk_image, check_package_disk
from domain.ovf import OvfDescriptor, OvfDisk, OvfNic, build_ovf
from tests.test_ova import DISK, descriptor, make_tar, manifest
from toolbox import diskconv, ova
from toolbox.ova import CorruptPackage, open_package

MiB = 2**20
SECRET = b"outside-secret-3f9c1e: never in a package's output\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside every package: its bytes must never show up in an output or an error."""
    d = tmp_path / "outside"
    d.mkdir()
    p = d / "secret.txt"
    p.write_bytes(SECRET * 100)
    return p


def refused(given: Path | str, dest: Path | None, *fragments: str) -> CorruptPackage:
    """The reader refuses ``given`` as bad input (never retried), the error starting with the
    package exactly as given and containing ``fragments`` (the member, the reason)."""
    with pytest.raises(CorruptPackage) as err:
        open_package(given, extract_to=dest)
    reason = err.value.reason
    assert type(err.value).__name__ in NON_RETRYABLE, reason
    assert reason.startswith(f"{given}: "), reason
    for f in fragments:
        assert f in reason, reason
    assert SECRET.decode().strip() not in reason
    return err.value


def no_secret_in(tree: Path) -> None:
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert SECRET not in p.read_bytes(), p


def ovf_dir(tmp_path: Path, files: dict[str, bytes], xml: str, mf: bool = True) -> Path:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "p.ovf").write_text(xml)
    for n, b in files.items():
        (exp / n).write_bytes(b)
    if mf:
        (exp / "p.mf").write_bytes(manifest([("p.ovf", xml.encode()), *files.items()]))
    return exp


# ------------------------------------------------------------------------ links in an OVF directory


def test_disk_file_that_is_a_link_outside_is_refused(tmp_path: Path, secret: Path) -> None:
    """An unpacked OVF whose disk is a symbolic link to a file outside: never followed, never read
    into the converted disk (before: its content ended up in the extracted disk)."""
    xml = descriptor(["a.vmdk"])
    exp = ovf_dir(tmp_path, {}, xml, mf=False)
    (exp / "a.vmdk").symlink_to(secret)
    dest = tmp_path / "x"
    refused(exp / "p.ovf", dest, "a.vmdk", "symbolic link")
    refused(exp, dest, "a.vmdk", "symbolic link")  # the directory given instead of its .ovf
    assert not dest.exists()
    no_secret_in(tmp_path / "exp")


def test_manifest_that_is_a_link_is_refused_without_quoting(tmp_path: Path, secret: Path) -> None:
    """A manifest that is a link to an outside file: refused as a link; no line of it quoted."""
    xml = descriptor(["a.vmdk"])
    exp = ovf_dir(tmp_path, {"a.vmdk": DISK}, xml, mf=False)
    (exp / "p.mf").symlink_to(secret)
    refused(exp / "p.ovf", tmp_path / "x", "p.mf", "symbolic link")


def test_link_in_a_subdirectory_and_fifo_member_are_refused(tmp_path: Path, secret: Path) -> None:
    xml = descriptor(["sub/a.vmdk"])
    exp = ovf_dir(tmp_path, {}, xml, mf=False)
    (exp / "sub").symlink_to(secret.parent)
    (secret.parent / "a.vmdk").write_bytes(SECRET)
    refused(exp / "p.ovf", tmp_path / "x", "sub/a.vmdk", "symbolic link")
    (exp / "sub").unlink()
    (exp / "sub").mkdir()
    os.mkfifo(exp / "sub" / "a.vmdk")
    started = time.monotonic()
    refused(exp / "p.ovf", tmp_path / "x", "sub/a.vmdk", "not a regular file")
    assert time.monotonic() - started < 5  # O_NONBLOCK: the FIFO is refused, not waited on


def test_manifest_parse_error_does_not_quote_the_line(tmp_path: Path) -> None:
    xml = descriptor(["a.vmdk"])
    exp = ovf_dir(tmp_path, {"a.vmdk": DISK}, xml, mf=False)
    (exp / "p.mf").write_bytes(b"password=hunter2-not-a-digest\n")
    err = refused(exp / "p.ovf", tmp_path / "x", "p.mf line 1")
    assert "hunter2" not in err.reason


# ------------------------------------------------------------------- names that are the destination


@pytest.mark.parametrize("name", [".", "./", "./."])
def test_member_named_like_the_destination_is_refused(tmp_path: Path, name: str) -> None:
    """A member or href that resolves to the destination itself: refused by name, nothing written
    beside the destination (before: a bare IsADirectoryError after writing beside it)."""
    xml = descriptor([name])
    m = [("p.ovf", xml.encode()), (name, DISK)]
    dest = tmp_path / "out" / "x"
    refused(make_tar(tmp_path / "p.ova", m), dest, repr(name))
    assert not (tmp_path / "out").exists()


def test_gzip_href_that_is_only_its_suffix_is_refused(tmp_path: Path) -> None:
    xml = descriptor([".gz"], compression="gzip")
    m = [("p.ovf", xml.encode()), (".gz", gzip.compress(DISK))]
    dest = tmp_path / "out"
    refused(make_tar(tmp_path / "p.ova", m), dest, ".gz", "not a file name")
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["p.ova"]


def test_file_and_directory_of_the_same_name_are_refused(tmp_path: Path) -> None:
    d = OvfDescriptor(
        name="pkg",
        cpus=1,
        memory_mib=128,
        disks=[OvfDisk(h, 4 * MiB, "vmdk-streamOptimized", "scsi", "lsilogic") for h in ("a", "a/b.vmdk")],
        nics=[OvfNic("VmxNet3")],
    )
    xml = build_ovf(d)
    m = [("p.ovf", xml.encode()), ("a", DISK), ("a/b.vmdk", DISK)]
    refused(make_tar(tmp_path / "p.ova", m), tmp_path / "out", "extracted as a file and a directory")


# ------------------------------------------------------------ content errors: bad input, never retried


def test_name_too_long_for_the_file_system_is_bad_input(tmp_path: Path) -> None:
    name = "d" * 300 + ".vmdk"
    xml = descriptor([name])
    tar = tmp_path / "p.ova"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as t:  # GNU long name: 300 bytes fit
        for n, b in (("p.ovf", xml.encode()), (name, DISK)):
            info = tarfile.TarInfo(n)
            info.size = len(b)
            t.addfile(info, __import__("io").BytesIO(b))
    refused(tar, tmp_path / "out", "too long for a file system")


def test_capacity_no_disk_has_is_bad_input(tmp_path: Path) -> None:
    d = OvfDescriptor(
        name="pkg",
        cpus=1,
        memory_mib=128,
        disks=[OvfDisk("", 2**62, "raw", "scsi", "lsilogic")],  # a placeholder of 4 EiB
        nics=[OvfNic("VmxNet3")],
    )
    m = [("p.ovf", build_ovf(d).encode())]
    refused(make_tar(tmp_path / "p.ova", m), tmp_path / "out", "ovf:capacity 4611686018427387904 out of range")
    assert not (tmp_path / "out").exists()


def test_file_system_refusals_caused_by_the_package_are_bad_input(tmp_path: Path) -> None:
    """The kernel refuses what the package asks for (here a file bigger than RLIMIT_FSIZE allows:
    EFBIG, as a file system's own maximum gives): bad input naming package and member, never an
    OSError retried as a host fault."""
    d = OvfDescriptor(
        name="pkg", cpus=1, memory_mib=128, disks=[OvfDisk("", 64 * MiB, "raw", "scsi", "lsilogic")], nics=[]
    )
    pkg = make_tar(tmp_path / "p.ova", [("p.ovf", build_ovf(d).encode())])
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 * MiB, old_limit[1]))
    try:
        err = refused(pkg, tmp_path / "out", "blank-disk0.raw", "larger than the file system allows")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert err.evidence["package"] == str(pkg)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- disks and their extents


def vmdk_descriptor(extent: str) -> bytes:
    return (
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        f'RW 8192 FLAT "{extent}" 0\nddb.adapterType = "lsilogic"\n'
    ).encode()


def test_vmdk_extent_naming_a_fifo_is_refused_before_qemu_img(tmp_path: Path, secret: Path) -> None:
    """A VMDK descriptor whose extent is a FIFO blocked ``qemu-img info`` for 120 s; one naming an
    outside file had it opened. The disk checker refuses both before qemu-img runs."""
    fifo = tmp_path / "outside" / "fifo"
    os.mkfifo(fifo)
    for extent in (str(fifo), str(secret), "a-flat.vmdk"):
        desc = vmdk_descriptor(extent)
        xml = descriptor(["a.vmdk"])
        m = [("p.ovf", xml.encode()), ("a.vmdk", desc)]
        started = time.monotonic()
        err = refused(make_tar(tmp_path / "p.ova", m), tmp_path / "out", "a.vmdk", "naming extent files")
        assert time.monotonic() - started < 5
        assert "qemu_img" not in err.evidence  # qemu-img never ran


def test_sparse_vmdk_wrapper_with_outside_extent_is_refused(tmp_path: Path, secret: Path) -> None:
    """A sparse VMDK header of capacity 0 makes qemu read its embedded descriptor as a full one and
    open every extent it names: the checker reads it the same way."""
    desc = vmdk_descriptor(str(secret))
    hdr = b"KDMV" + struct.pack("<IIQQQQ", 1, 3, 0, 128, 1, 2) + bytes(512 - 44)
    img = tmp_path / "w.vmdk"
    img.write_bytes(hdr + desc.ljust(1024, b"\0"))
    with pytest.raises(InputFileError, match="naming extent files"):
        check_package_disk(img, "vmdk")
    with pytest.raises(diskconv.CorruptImage, match="refused before qemu-img"):
        diskconv.probe(img, "vmdk")


def test_disk_checker_refuses_links_and_wrong_formats(tmp_path: Path, secret: Path) -> None:
    link = tmp_path / "l.vmdk"
    link.symlink_to(secret)
    with pytest.raises(InputFileError, match="symbolic link"):
        check_package_disk(link, "raw")
    q = tmp_path / "q.qcow2"
    diskconv.create(q, "qcow2", MiB)
    with pytest.raises(InputFileError, match=r"declared vmdk but the content is not a vmdk image \(it is qcow2\)"):
        check_package_disk(q, "vmdk")
    check_package_disk(q, "qcow2")  # the good case passes
    v = tmp_path / "d.vmdk"
    v.write_bytes(DISK)
    check_package_disk(v, "vmdk")


# ------------------------------------------------------------------------------- chunks and encodings


def test_chunked_raw_disk_missing_its_last_chunk_is_refused(tmp_path: Path) -> None:
    """Before: accepted with a warning (the disk simply ended early). A raw disk shorter than its
    capacity has lost data: refused, naming the package and the file."""
    chunk = 64 * 1024
    raw = os.urandom(4 * chunk)
    d = OvfDescriptor(
        name="pkg",
        cpus=1,
        memory_mib=128,
        disks=[OvfDisk("a.img", len(raw), "raw", "scsi", "lsilogic", chunk_size=chunk)],
        nics=[],
    )
    xml = build_ovf(d)
    names = [f"a.img.{i:09d}" for i in range(4)]
    parts = [raw[i * chunk : (i + 1) * chunk] for i in range(4)]
    whole = [("p.ovf", xml.encode()), *zip(names, parts)]
    pkg = open_package(make_tar(tmp_path / "ok.ova", whole), extract_to=tmp_path / "ok")
    assert pkg.files["a.img"].read_bytes() == raw and not pkg.warnings
    refused(make_tar(tmp_path / "p.ova", whole[:-1]), tmp_path / "out", "a.img", "less than its declared capacity")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-16-le", "unmarked-utf-16-le", "unmarked-utf-16-be"])
def test_utf16_descriptor_is_read(tmp_path: Path, codec: str) -> None:
    """XML allows UTF-16 (with its byte order mark, or recognised from "<?" as XML 1.0 appendix F
    does); before, such a descriptor was refused."""
    xml = descriptor(["a.vmdk"]).replace('encoding="UTF-8"', 'encoding="UTF-16"')
    if codec == "utf-16":
        data = xml.encode("utf-16")
    elif codec.startswith("unmarked"):
        data = xml.encode(codec.removeprefix("unmarked-"))
    else:
        data = (b"\xfe\xff" if codec.endswith("be") else b"\xff\xfe") + xml.encode(codec)
    pkg = open_package(make_tar(tmp_path / "p.ova", [("p.ovf", data), ("a.vmdk", DISK)]), extract_to=tmp_path / "o")
    assert pkg.descriptor.name == "pkg" and pkg.files["a.vmdk"].read_bytes() == DISK


def test_descriptor_with_nul_is_refused(tmp_path: Path) -> None:
    """expat stops reading at a NUL: whatever follows would be ignored unseen."""
    xml = descriptor(["a.vmdk"]).encode()
    data = xml + b"\0<Envelope/>"
    refused(make_tar(tmp_path / "q.ova", [("p.ovf", data), ("a.vmdk", DISK)]), None, "p.ovf", "NUL")


# ------------------------------------------------------------------------------ bounded tar headers


def _header(name: bytes, size: int, kind: bytes) -> bytes:
    h = bytearray(512)
    h[: len(name)] = name
    h[100:108] = b"0000644\0"
    h[124:136] = f"{size:011o}\0".encode()
    h[136:148] = b"00000000000\0"
    h[156:157] = kind
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)


def _pad(b: bytes) -> bytes:
    return b + bytes(-len(b) % 512)


def test_long_name_header_is_bounded(tmp_path: Path) -> None:
    """A GNU long-name header of 8 MiB (before: held whole in memory, 1.5 GiB in the attack) is
    refused from its declared size, with bounded memory."""
    p = tmp_path / "p.ova"
    p.write_bytes(_header(b"././@LongLink", 8 * MiB, b"L") + bytes(8 * MiB) + bytes(1024))
    tracemalloc.start()
    try:
        refused(p, None, "long-name header", "at most 4096")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MiB, peak


def test_crafted_pax_headers_are_parsed_in_linear_time(tmp_path: Path) -> None:
    """CVE-2024-6232 (quadratic pax header parsing in CPython < 3.11.10): the project's Python is
    3.11.7, so no package tar reaches ``tarfile``. A pax header at its size bound, made of what the
    CVE's regex backtracks on, and thousands of headers, are each refused within a second."""
    payload = b"0 " * (bounded_tar.MAX_PAX_BYTES // 2 - 8)
    p = tmp_path / "pax.ova"
    p.write_bytes(_header(b"pax", len(payload), b"x") + _pad(payload) + bytes(1024))
    started = time.monotonic()
    refused(p, None, "pax header")
    assert time.monotonic() - started < 1
    many = tmp_path / "many.ova"
    with open(many, "wb") as fh:
        for i in range(ova.MAX_MEMBERS + 10):
            fh.write(_header(f"f{i}".encode(), 0, b"0"))
        fh.write(bytes(1024))
    started = time.monotonic()
    refused(many, None, f"more than {ova.MAX_MEMBERS} tar headers")
    assert time.monotonic() - started < 2


def test_package_tars_never_reach_tarfile(tmp_path: Path, monkeypatch) -> None:
    """Fault injection: tarfile's reading entry points raise; a real package still opens (the
    bounded reader is the only one) and the disk checker still recognises an OVA."""
    from crossvisor.core.safe_read import check_disk_image

    good = make_tar(tmp_path / "p.ova", [("p.ovf", descriptor(["a.vmdk"]).encode()), ("a.vmdk", DISK)])

    def forbidden(*_a, **_k):
        raise AssertionError("tarfile used to read a package")

    monkeypatch.setattr(tarfile, "open", forbidden)
    monkeypatch.setattr(tarfile.TarFile, "next", forbidden)
    pkg = open_package(good, extract_to=tmp_path / "o")
    assert pkg.files["a.vmdk"].read_bytes() == DISK
    assert check_disk_image(good) == "ova"


@pytest.mark.parametrize(
    "kind,label",
    [(b"1", "a hard link"), (b"2", "a symbolic link"), (b"3", "a character device"), (b"6", "a FIFO")],
)
def test_special_tar_members_are_refused_by_name(tmp_path: Path, kind: bytes, label: str) -> None:
    p = tmp_path / "p.ova"
    ovf = descriptor(["a.vmdk"]).encode()
    p.write_bytes(_header(b"p.ovf", len(ovf), b"0") + _pad(ovf) + _header(b"a.vmdk", 0, kind) + bytes(1024))
    refused(p, tmp_path / "o", "'a.vmdk'", label)


def test_sparse_vmdk_header_offsets_past_any_file_are_refused(tmp_path: Path) -> None:
    """Found by the fuzzer (tests/test_fuzz_hostile.py, seed 7): a descriptor offset of 2**60
    sectors raised OverflowError from os.pread instead of a refusal."""
    img = tmp_path / "o.vmdk"
    img.write_bytes(b"KDMV" + struct.pack("<IIQQQQ", 1, 3, 8192, 128, 2**60, 2) + bytes(1000))
    with pytest.raises(InputFileError, match="vmdk"):
        check_package_disk(img, "vmdk")
    with pytest.raises(InputFileError, match="vmdk"):
        check_disk_image(img)


def test_no_package_tar_reaches_tarfile() -> None:
    """CVE-2024-6232: the venv's Python (3.11.7) parses pax headers in quadratic time. Only the
    bounded reader reads tars from elsewhere; tarfile stays for writing our own OVAs (in the
    module that writes them, whatever folder it lives in)."""
    root = Path(__file__).resolve().parent.parent
    writer = str(Path(ova.__file__).resolve().relative_to(root))
    users = {}
    for p in root.glob("*/**/*.py"):
        rel = str(p.relative_to(root))
        if rel.startswith(("tests/", ".venv/", "bench/", "build/")):
            continue
        text = p.read_text()
        if re.search(r"^\s*(?:import tarfile|from tarfile )", text, re.M):
            users[rel] = text
    assert set(users) == {writer}, sorted(users)
    opens = re.findall(r"tarfile\.open\(([^)]*)\)", users[writer])
    assert opens and all('"w"' in o for o in opens), opens  # write mode only
