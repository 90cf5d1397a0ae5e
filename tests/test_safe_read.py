"""Bounded, typed reads (crossvisor.core.safe_read) against real files: images made by qemu-img,
real FIFOs, devices and /proc pseudo-files."""

from __future__ import annotations

import os
import struct
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from crossvisor.core.errors import BadInput
from crossvisor.core.safe_read import InputFileError, check_disk_image, parse_yaml, read_text_bounded


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def create(path: Path, fmt: str, *opts: str, size: str = "2M") -> Path:
    args = ["create", "-q", "-f", fmt]
    if opts:
        args += ["-o", ",".join(opts)]
    qemu_img(*args, str(path), size)
    return path


# -- read_text_bounded ---------------------------------------------------------------------------


def test_reads_utf8_and_drops_a_bom(tmp_path: Path) -> None:
    p = tmp_path / "a.yaml"
    p.write_bytes(b"\xef\xbb\xbfname: caf\xc3\xa9\n")
    assert read_text_bounded(p, what="spec", max_bytes=100) == "name: café\n"


@pytest.mark.parametrize(
    "path",
    ["/dev/zero", "/dev/urandom", "/dev/null", "/proc/self/environ", "/proc/self/cmdline", "/sys/kernel/uevent_seqnum"],
)
def test_pseudo_files_are_refused_without_reading(path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"{path} absent here")
    t = time.monotonic()
    with pytest.raises(InputFileError, match="must be a regular file"):
        read_text_bounded(path, what="spec", max_bytes=1 << 20)
    assert time.monotonic() - t < 1


def test_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").symlink_to("/dev/zero")
    with pytest.raises(InputFileError, match="not a file under /dev"):
        read_text_bounded(tmp_path / "spec.yaml", what="spec", max_bytes=1 << 20)


def test_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f")
    with pytest.raises(InputFileError, match="FIFO"):
        read_text_bounded(tmp_path / "f", what="spec", max_bytes=10)


def test_directory_and_missing(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="this is a directory"):
        read_text_bounded(tmp_path, what="spec", max_bytes=10)
    with pytest.raises(InputFileError, match="spec does not exist"):
        read_text_bounded(tmp_path / "nope", what="spec", max_bytes=10)


def test_size_bound_on_a_sparse_file(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    with open(p, "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, no blocks: read without bound it would exhaust memory
    t = time.monotonic()
    with pytest.raises(InputFileError, match="at most 1 MiB is read"):
        read_text_bounded(p, what="spec", max_bytes=1 << 20)
    assert time.monotonic() - t < 1


@pytest.mark.parametrize(
    ("data", "reason", "line"),
    [
        ("a: 1\n".encode("utf-16"), "is UTF-16 encoded", None),
        ("a: 1\nb: 2\n".encode("utf-16-be"), "looks UTF-16 encoded", None),
        ("a: 1\n".encode("utf-32"), "is UTF-32 encoded", None),
        (b"a: 1\npassword: Sekrit\xe9\n", "not valid UTF-8", 2),
        (b"a: 1\nb: 2\x00Sekrit\n", "NUL byte", 2),
    ],
)
def test_encodings_named_never_content(tmp_path: Path, data: bytes, reason: str, line: int | None) -> None:
    p = tmp_path / "x.yaml"
    p.write_bytes(data)
    with pytest.raises(InputFileError) as e:
        read_text_bounded(p, what="spec", max_bytes=1000)
    assert reason in str(e.value) and e.value.line == line
    assert "Sekrit" not in str(e.value)
    assert isinstance(e.value, BadInput)  # non-retryable input error across layers


# -- parse_yaml ----------------------------------------------------------------------------------


def test_yaml_duplicate_keys_in_merges_are_fine_but_explicit_ones_are_not() -> None:
    doc = parse_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", where="f").data
    assert doc["c"] == {"x": 3, "y": 2}
    with pytest.raises(InputFileError, match=r"^f:4:3: invalid YAML: duplicate key 'x' \(first at line 3\)"):
        parse_yaml("c:\n  <<: {x: 1}\n  x: 3\n  x: 4\n", where="f")


def test_yaml_secret_as_duplicate_key_is_not_echoed() -> None:
    with pytest.raises(InputFileError) as e:
        parse_yaml("'p@ss w0rd!': 1\n'p@ss w0rd!': 2\n", where="f")
    assert "p@ss" not in str(e.value) and "duplicate key (first at line 1)" in str(e.value)


def test_yaml_line_of_points_at_keys_and_items() -> None:
    parsed = parse_yaml("a:\n  b:\n    - x\n    - {c: 1}\n", where="f")
    assert parsed.line_of(("a", "b", 1, "c")) == 4
    assert parsed.line_of(("a", "b", 0)) == 3
    assert parsed.line_of(("a", "missing")) == 1


def test_yaml_node_budget_counts_alias_expansion() -> None:
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    assert len(parse_yaml(text, where="f", max_nodes=200).data["b"]) == 10
    with pytest.raises(InputFileError, match="alias bomb"):
        parse_yaml(text, where="f", max_nodes=100)


# -- check_disk_image ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "opts", "expect"),
    [
        ("qcow2", (), "qcow2"),
        ("qcow2", ("compat=0.10",), "qcow2"),
        ("vmdk", (), "vmdk"),
        ("vmdk", ("subformat=streamOptimized",), "vmdk"),
        ("vmdk", ("subformat=monolithicFlat",), "vmdk"),  # a descriptor with its -flat extent beside it
        ("vmdk", ("subformat=twoGbMaxExtentSparse",), "vmdk"),
        ("vpc", ("subformat=fixed", "force_size=on"), "vpc"),
        ("vpc", ("subformat=dynamic",), "vpc"),
        ("vhdx", (), "vhdx"),
    ],
)
def test_disk_images_made_by_qemu_img(tmp_path: Path, fmt: str, opts: tuple[str, ...], expect: str) -> None:
    assert check_disk_image(create(tmp_path / f"d.{fmt}", fmt, *opts)) == expect


def test_raw_with_mbr_or_gpt(tmp_path: Path) -> None:
    mbr = create(tmp_path / "mbr.img", "raw")
    with open(mbr, "r+b") as f:
        f.seek(510)
        f.write(b"\x55\xaa")
    assert check_disk_image(mbr) == "raw"
    gpt = create(tmp_path / "gpt.img", "raw")
    with open(gpt, "r+b") as f:
        f.seek(512)
        f.write(b"EFI PART")
    assert check_disk_image(gpt) == "raw"
    with pytest.raises(InputFileError, match="not a disk image or a package"):
        check_disk_image(create(tmp_path / "blank.img", "raw"))


def test_packages(tmp_path: Path) -> None:
    ovf = tmp_path / "vm.ovf"
    ovf.write_text('<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>\n')
    assert check_disk_image(ovf) == "ovf"
    disk = create(tmp_path / "vm-disk1.vmdk", "vmdk", "subformat=streamOptimized")
    ova = tmp_path / "vm.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(ovf, "vm.ovf")
        tar.add(disk, "vm-disk1.vmdk")
    assert check_disk_image(ova) == "ova"
    no_ovf = tmp_path / "plain.tar"
    with tarfile.open(no_ovf, "w") as tar:
        tar.add(disk, "vm-disk1.vmdk")
    with pytest.raises(InputFileError, match="not an OVA package"):
        check_disk_image(no_ovf)
    html = tmp_path / "x.ovf"
    html.write_text("<html/>")
    with pytest.raises(InputFileError, match="not an OVF descriptor"):
        check_disk_image(html)


def test_images_that_would_make_the_worker_read_another_file(tmp_path: Path) -> None:
    base = create(tmp_path / "base.qcow2", "qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(tmp_path / "top.qcow2"))
    with pytest.raises(InputFileError, match="backing file"):
        check_disk_image(tmp_path / "top.qcow2")
    qemu_img(
        "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(tmp_path / "ext.qcow2"), "1M"
    )
    with pytest.raises(InputFileError, match="external file"):
        check_disk_image(tmp_path / "ext.qcow2")
    sparse = create(tmp_path / "s.vmdk", "vmdk")
    qemu_img("create", "-q", "-f", "vmdk", "-b", str(sparse), "-F", "vmdk", str(tmp_path / "delta.vmdk"))
    with pytest.raises(InputFileError, match="delta disk"):
        check_disk_image(tmp_path / "delta.vmdk")
    desc = tmp_path / "evil.vmdk"
    desc.write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        'RW 4096 FLAT "/etc/shadow" 0\n'
    )
    with pytest.raises(InputFileError, match="beside the descriptor"):
        check_disk_image(desc)
    desc.write_text(desc.read_text().replace('"/etc/shadow"', '"../x-flat.vmdk"'))
    with pytest.raises(InputFileError, match="beside the descriptor"):
        check_disk_image(desc)
    (tmp_path / "zero-flat.vmdk").symlink_to("/dev/zero")
    desc.write_text(desc.read_text().replace('"../x-flat.vmdk"', '"zero-flat.vmdk"'))
    with pytest.raises(InputFileError, match=r"vmdk extent is a symbolic link: not followed"):
        check_disk_image(desc)  # opened with O_NOFOLLOW: /dev/zero is never opened
    (tmp_path / "zero-flat.vmdk").unlink()
    os.mkfifo(tmp_path / "zero-flat.vmdk")  # a FIFO extent: refused at once, never waited on
    with pytest.raises(InputFileError, match=r"vmdk extent must be a regular file, this is a FIFO"):
        check_disk_image(desc)
    desc.write_text(desc.read_text().replace('FLAT "zero-flat.vmdk" 0', 'VMFSRDM "rdm.vmdk"'))
    with pytest.raises(InputFileError, match="raw device"):
        check_disk_image(desc)
    split = create(tmp_path / "split.vmdk", "vmdk", "subformat=twoGbMaxExtentSparse")
    with pytest.raises(InputFileError, match="split disk"):
        check_disk_image(split.with_name("split-s001.vmdk"))


def test_differencing_vhd(tmp_path: Path) -> None:
    vhd = create(tmp_path / "d.vhd", "vpc", "subformat=dynamic")
    size = vhd.stat().st_size
    with open(vhd, "r+b") as f:  # disk type 4 (differencing) in the header copy and the footer
        for off in (60, size - 512 + 60):
            f.seek(off)
            f.write(struct.pack(">I", 4))
    with pytest.raises(InputFileError, match="differencing"):
        check_disk_image(vhd)


def test_not_images(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("password: Sekrit\n" * 100)
    for path, reason in [
        (notes, "not a disk image or a package"),
        (Path("/etc/passwd"), "not a disk image or a package"),
        (Path("/dev/zero"), "not a file under /dev"),
        (Path("/proc/self/environ"), "not a file under /proc"),
        (tmp_path, "this is a directory"),
        (tmp_path / "missing.qcow2", "does not exist"),
    ]:
        with pytest.raises(InputFileError, match=reason) as e:
            check_disk_image(path)
        assert "Sekrit" not in str(e.value)
    with pytest.raises(InputFileError, match="at most 1 MiB is accepted"):
        check_disk_image(create(tmp_path / "r.img", "raw", size="3M"), max_bytes=1 << 20)
