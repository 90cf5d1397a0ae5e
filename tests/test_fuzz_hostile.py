"""A seeded, time-bounded fuzzer of the project's own over everything that reads hostile input:
the package reader, the OVF parser, the disk checker and the spec loader (issue 27, item 4).

Why our own and not hypothesis/atheris: no new dependency, and the inputs worth trying are
structured (a tar whose headers check out, a descriptor whose hrefs are hostile, a VMDK naming
a FIFO); a purely random byte string is refused at the first header. Each target has a
*generator* (hostile choices drawn from a seeded ``random.Random``: names like ``..``, ``.``,
``.gz``, absolute paths, links, FIFOs, long names, backing files) and *mutations* applied to its
output (byte flips, truncation, splices of hostile tokens, re-checksummed tar headers).

For every input the oracle is the issue's: a crossvisor error (bad input, never retried) or a
result; never another exception; nothing created or changed outside the destination; an outside
file's bytes (``SECRET``) never in an output file, an error message or a result.

Bounds: ``CROSSVISOR_FUZZ_SECONDS`` per target (default 3 s, CI), ``CROSSVISOR_FUZZ_SEED``
(default fixed: the same inputs every run; a failure prints the seed and the iteration, and
saves the input beside the test's tmp_path, to replay).
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import os
import random
import re
import shutil
import struct
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from crossvisor.core.errors import NON_RETRYABLE, BadInput
from crossvisor.core.safe_read import InputFileError, check_disk_image, check_package_disk
from crossvisor.spec import SpecError, load_spec
from domain.ovf import OvfDescriptor, OvfDisk, OvfError, OvfNic, build_ovf, parse_ovf
from tests.test_ova import DISK
from toolbox import diskconv
from toolbox.ova import CorruptPackage, InsufficientSpace, open_package

SECONDS = float(os.environ.get("CROSSVISOR_FUZZ_SECONDS", "3"))
SEED = int(os.environ.get("CROSSVISOR_FUZZ_SEED", "20261206"))
MAX_ITERATIONS = int(os.environ.get("CROSSVISOR_FUZZ_MAX", "100000"))
MiB = 2**20
SECRET = b"fuzz-outside-secret-8d1f2a"


class World:
    """A scratch area per input: ``outside/`` (a secret file, a FIFO, a directory: what no input
    may reach) and ``work/`` (the input and its destination)."""

    def __init__(self, root: Path):
        self.root = root
        self.outside = root / "outside"
        self.outside.mkdir(parents=True)
        self.secret = self.outside / "secret.txt"
        self.secret.write_bytes(SECRET * 64)
        self.fifo = self.outside / "fifo"
        os.mkfifo(self.fifo)
        self.work = root / "work"
        self.before = self._outside_state()
        self.outcomes: collections.Counter[str] = collections.Counter()

    def _outside_state(self) -> dict[str, tuple[int, int, int]]:
        return {
            str(p): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(self.root.rglob("*"))
            if not str(p).startswith(str(self.work))
        }

    def fresh(self) -> Path:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir()
        self.links: set[Path] = set()
        return self.work

    def link(self, p: Path, target: Path) -> None:
        """A link the input holds (the reader must never make one of its own)."""
        p.symlink_to(target)
        self.links.add(p)

    def check(self, texts: list[str]) -> None:
        """Nothing outside ``work`` changed; no link but the input's; no file in ``work`` holds
        the secret's bytes; no text (error, warning, result) holds them."""
        assert self._outside_state() == self.before, "a file outside the destination changed"
        for p in self.work.rglob("*"):
            if p.is_symlink():
                assert p in self.links, f"a link was made: {p}"
                continue
            if p.is_file():
                with open(p, "rb") as fh:
                    assert SECRET not in fh.read(16 * MiB), f"outside content copied into {p}"
        for t in texts:
            assert SECRET.decode() not in t, "outside content in an output"


def run_fuzz(
    tmp_path: Path, name: str, one: Callable[[random.Random, World, int], None], seconds: float = SECONDS
) -> int:
    rng = random.Random(f"{SEED}:{name}")
    world = World(tmp_path / name)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and n < MAX_ITERATIONS:
        world.fresh()
        try:
            one(rng, world, n)
        except BaseException as exc:
            keep = tmp_path / f"{name}-failing-input"
            shutil.copytree(world.work, keep, symlinks=True, dirs_exist_ok=True)
            raise AssertionError(
                f"fuzz {name}: iteration {n} (CROSSVISOR_FUZZ_SEED={SEED}) failed: {type(exc).__name__}: {exc}; "
                f"input kept in {keep}"
            ) from exc
        n += 1
    run_fuzz.outcomes = world.outcomes  # type: ignore[attr-defined]
    return n


def outcome(exc: BaseException | None) -> str:
    """An outcome class for the statistics: "ok", or the error's reason with names and numbers
    blanked (so "member 'x' ..." and "member 'y' ..." count as one kind of refusal)."""
    if exc is None:
        return "ok"
    text = str(exc).split(": ", 1)[-1]
    return re.sub(r"'[^']*'|\d+|/\S+", "_", text)[:60]


# --------------------------------------------------------------------------------- mutations

HOSTILE_NAMES = [
    ".",
    "./",
    "..",
    "../x.vmdk",
    ".gz",
    "sub/.gz",
    "/etc/passwd",
    "a/../../x",
    "d" * 300,
    "x" * 100 + "/" + "y" * 200,
    "file:///etc/shadow",
    "http://h/x.vmdk",
    "a\\b",
    "sub/",
    "a.vmdk.000000000",
    "p.ovf",
    "p.mf",
    ".a.vmdk.part",
    "blank-disk0.raw",
    "ü.vmdk",
]
# (never the secret's bytes: an input holding them would make every output "leak" them)
TOKENS = [b"../", b"/", b".", b".gz", b"\x00", b"\xff" * 8, b"0" * 20, b"<", b"&", b"\t", b"'", b'"', b"../outside/"]


def mutate_bytes(rng: random.Random, data: bytes, rounds: int = 3) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        if not b:
            b += rng.choice(TOKENS)
            continue
        op = rng.randrange(6)
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice((0, 0xFF, 0x7F, 0x80, ord("0"), ord("7")))
        elif op == 2:
            b[i:i] = rng.choice(TOKENS)
        elif op == 3:
            del b[i : i + rng.randint(1, 64)]
        elif op == 4:
            b = b[: rng.randrange(len(b) + 1)]
        else:
            j = rng.randrange(len(b))
            b[i : i + 8] = b[j : j + 8]
    return bytes(b)


def _retar_checksum(h: bytearray) -> None:
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()


def mutate_tar(rng: random.Random, data: bytes) -> bytes:
    """Change one header field and fix its checksum, so the mutation reaches past the header check."""
    b = bytearray(data)
    offsets, pos = [], 0
    while pos + 512 <= len(b) and any(b[pos : pos + 512]):
        offsets.append(pos)
        size = int(bytes(b[pos + 124 : pos + 135]).strip(b"\0 ") or b"0", 8) if b[pos + 124] < 0x80 else 0
        pos += 512 + -(-size // 512) * 512
    if not offsets:
        return mutate_bytes(rng, data)
    at = rng.choice(offsets)
    h = bytearray(b[at : at + 512])
    field = rng.randrange(4)
    if field == 0:
        name = rng.choice(HOSTILE_NAMES).encode()[:100]
        h[0:100] = name.ljust(100, b"\0")
    elif field == 1:
        h[156:157] = rng.choice([b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"L", b"K", b"x", b"g", b"S", b"V"])
        h[157:257] = str(rng.choice(["../outside/secret.txt", "/etc/passwd", "p.ovf"])).encode().ljust(100, b"\0")[:100]
    elif field == 2:
        new = rng.choice([0, 1, 511, 512, 10**9, 8**11 - 1, len(data)])
        h[124:136] = f"{new:011o}\0".encode() if new < 8**11 else b"\x80" + new.to_bytes(11, "big")
    else:
        h[345:500] = rng.choice([b"", b"..", b"/", b"sub"]).ljust(155, b"\0")
    _retar_checksum(h)
    b[at : at + 512] = h
    return bytes(b)


# ---------------------------------------------------------------------------------- packages


def _tar(members: list[tuple[str, bytes, bytes, str]]) -> bytes:
    """(name, data, type, linkname) members, GNU format so long names fit."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            t.addfile(info, io.BytesIO(data) if info.size else None)
    return out.getvalue()


def _disk_content(rng: random.Random, world: World) -> tuple[str, bytes]:
    """(ovf format, file bytes) of a disk: real, or built to reach outside."""
    choice = rng.randrange(7)
    if choice == 0:
        ext = str(world.secret) if rng.random() < 0.5 else str(world.fifo)
        desc = (
            '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
            f'RW 8192 FLAT "{rng.choice([ext, "a-flat.vmdk", "../outside/secret.txt", "fifo"])}" 0\n'
        )
        return "vmdk-streamOptimized", desc.encode()
    if choice == 1:  # a sparse vmdk wrapper (capacity 0) whose embedded descriptor names the secret
        desc = (
            '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
            f'RW 8192 FLAT "{world.secret}" 0\n'
        ).encode()
        hdr = b"KDMV" + struct.pack("<IIQQQQ", 1, 3, 0, 128, 1, 2) + bytes(512 - 44)
        return "vmdk-streamOptimized", hdr + desc.ljust(1024, b"\0")
    if choice == 2:
        return "qcow2", _QCOW2_BACKED(world)
    if choice == 3:
        return "raw", rng.choice([bytes(4096), os.urandom(2048), b""])
    if choice == 4:
        return rng.choice(["vhd", "vhdx", "qcow2"]), mutate_bytes(rng, DISK[:8192], 8)
    return "vmdk-streamOptimized", DISK if rng.random() < 0.8 else mutate_bytes(rng, DISK)


_qcow2_cache: dict[str, bytes] = {}


def _QCOW2_BACKED(world: World) -> bytes:  # noqa: N802
    key = str(world.secret)
    if key not in _qcow2_cache:
        q = world.root / "backed.qcow2"
        diskconv.create(q, "qcow2", MiB)
        data = bytearray(q.read_bytes())
        # point its backing file at the secret (qemu-img create -b would read it at once)
        name = key.encode()
        data[8:16] = struct.pack(">Q", 1024)
        data[16:20] = struct.pack(">I", len(name))
        data[1024 : 1024 + len(name)] = name
        _qcow2_cache[key] = bytes(data)
        q.unlink()
    return _qcow2_cache[key]


def _package(rng: random.Random, world: World) -> tuple[Path, bool]:
    """A package in ``work/input`` built from hostile choices; (path, extract?)."""
    d = world.work / "input"
    d.mkdir()
    n_disks = rng.choice([0, 1, 1, 2])
    disks, files = [], []
    for i in range(n_disks):
        fmt, data = _disk_content(rng, world)
        href = rng.choice(HOSTILE_NAMES) if rng.random() < 0.3 else f"disk{i}.{'vmdk' if 'vmdk' in fmt else 'img'}"
        compression = "gzip" if rng.random() < 0.2 else ""
        chunk = rng.choice([0, 0, 0, 4096, 65536])
        stored = gzip.compress(data) if compression else data
        if compression and rng.random() < 0.5:
            href = rng.choice([".gz", "sub/.gz", href + ".gz", "p.ovf.gz"])
        capacity = rng.choice([4 * MiB, MiB, 8192, 2**62, 0 if rng.random() < 0.5 else 4 * MiB])
        disks.append(
            OvfDisk(href, capacity or 4 * MiB, fmt, "scsi", "lsilogic", compression=compression, chunk_size=chunk)
        )
        if chunk:
            for j in range(0, max(len(stored), 1), chunk):
                files.append((f"{href}.{j // chunk:09d}", stored[j : j + chunk]))
            if files and rng.random() < 0.3:
                files.pop()  # the last chunk missing
        else:
            files.append((href, stored))
    if rng.random() < 0.3:
        disks.append(OvfDisk("", rng.choice([MiB, 2**45, 2**62]), "raw", "scsi", "lsilogic"))
    try:
        xml = build_ovf(OvfDescriptor(name="fz", cpus=1, memory_mib=64, disks=disks, nics=[OvfNic("E1000")]))
    except (OvfError, ValueError):
        xml = build_ovf(OvfDescriptor(name="fz", cpus=1, memory_mib=64, disks=[], nics=[]))
        files = []
    if rng.random() < 0.2:
        xml = xml.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    ovf_bytes = xml.encode("utf-16") if rng.random() < 0.1 else xml.encode()
    if rng.random() < 0.3:
        ovf_bytes = mutate_bytes(rng, ovf_bytes)
    mf = "".join(f"SHA256({n})= {hashlib.sha256(b).hexdigest()}\n" for n, b in [("p.ovf", ovf_bytes), *files])
    mf_bytes = mf.encode() if rng.random() < 0.8 else mutate_bytes(rng, mf.encode())
    if rng.random() < 0.5:  # an OVA
        members = [("p.ovf", ovf_bytes, tarfile.REGTYPE, ""), ("p.mf", mf_bytes, tarfile.REGTYPE, "")]
        members += [(n, b, tarfile.REGTYPE, "") for n, b in files]
        if rng.random() < 0.2:
            kind = rng.choice([tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE])
            members.insert(rng.randrange(len(members) + 1), (rng.choice(HOSTILE_NAMES), b"", kind, str(world.secret)))
        try:
            data = _tar(members)
        except (ValueError, tarfile.TarError, UnicodeError):
            data = _tar(members[:2])
        r = rng.random()
        if r < 0.3:
            data = mutate_tar(rng, data)
        elif r < 0.45:
            data = mutate_bytes(rng, data)
        path = d / "p.ova"
        path.write_bytes(data)
    else:  # an unpacked OVF directory, maybe with links and special files where files should be
        (d / "p.ovf").write_bytes(ovf_bytes)
        (d / "p.mf").write_bytes(mf_bytes)
        for n, b in files:
            try:
                p = d / n
                if not p.resolve().is_relative_to(d.resolve()):
                    continue  # the fuzzer itself never writes outside
                p.parent.mkdir(parents=True, exist_ok=True)
                r = rng.random()
                if r < 0.15:
                    world.link(p, rng.choice([world.secret, world.fifo, world.outside]))
                elif r < 0.2:
                    os.mkfifo(p)
                else:
                    p.write_bytes(b)
            except OSError:
                continue
        if rng.random() < 0.15:
            (d / "p.mf").unlink()
            world.link(d / "p.mf", world.secret)
        path = d / "p.ovf" if rng.random() < 0.7 else d
    return path, rng.random() < 0.85


PACKAGE_ERRORS = (CorruptPackage, BadInput, InsufficientSpace)


def test_fuzz_package_reader(tmp_path: Path) -> None:
    def one(rng: random.Random, world: World, _n: int) -> None:
        path, extract = _package(rng, world)
        dest = world.work / "dest" if rng.random() < 0.9 else path.parent  # in place, sometimes
        texts = []
        started = time.monotonic()
        try:
            pkg = open_package(path, extract_to=dest if extract else None)
            world.outcomes[outcome(None)] += 1
        except PACKAGE_ERRORS as exc:
            world.outcomes[outcome(exc)] += 1
            assert type(exc).__name__ in NON_RETRYABLE or isinstance(exc, InsufficientSpace)
            texts.append(str(exc))
            texts += [str(v) for v in getattr(exc, "evidence", {}).values()]
            assert str(exc).startswith(f"{path}: "), str(exc)
        else:
            texts += [pkg.descriptor_text, *pkg.warnings]
            for f in pkg.files.values():  # every file handed out is inside the package or the destination
                assert f.resolve().is_relative_to(dest.resolve()) or f.resolve().is_relative_to(
                    (world.work / "input").resolve()
                ), f
        assert time.monotonic() - started < 30  # nothing waited on a FIFO
        world.check(texts)

    n = run_fuzz(tmp_path, "package", one)
    seen = run_fuzz.outcomes  # type: ignore[attr-defined]
    # the budget ran real inputs, some packages were whole and many kinds of refusal were met
    assert n >= 10 and seen["ok"] >= 1 and len(seen) >= 8, (n, seen)


# -------------------------------------------------------------------------------- OVF parser


def _descriptor_seeds() -> list[str]:
    base = OvfDescriptor(
        name="fz",
        cpus=2,
        memory_mib=512,
        disks=[
            OvfDisk("a.vmdk", 4 * MiB, "vmdk-streamOptimized", "scsi", "lsilogic"),
            OvfDisk("", MiB, "raw", "ide", ""),
        ],
        nics=[OvfNic("VmxNet3")],
        metadata={"k": "v"},
    )
    fixtures = Path(__file__).parent / "fixtures" / "ovf"
    seeds = [build_ovf(base)]
    if fixtures.is_dir():
        seeds += [p.read_text(errors="replace") for p in sorted(fixtures.glob("*.ovf"))[:20]]
    return seeds


_XML_TOKENS = [
    'ovf:capacity="-1"',
    'ovf:capacity="99999999999999999999999"',
    'ovf:capacityAllocationUnits="byte * 2^70"',
    'ovf:href="../../etc/passwd"',
    'ovf:href="."',
    'ovf:href=".gz"',
    'ovf:chunkSize="0"',
    'ovf:size="-5"',
    "<rasd:VirtualQuantity>-1</rasd:VirtualQuantity>",
    "<rasd:ResourceType>17</rasd:ResourceType>",
    "<rasd:Parent>999</rasd:Parent>",
    "<!DOCTYPE x [<!ENTITY a 'b'>]>",
    "&#0;",
    "</Envelope>",
    "<Envelope>",
    'ovf:required="maybe"',
    "\x00",
]


def test_fuzz_ovf_parser(tmp_path: Path) -> None:
    seeds = _descriptor_seeds()

    def one(rng: random.Random, world: World, _n: int) -> None:
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text) + 1)
            op = rng.randrange(4)
            if op == 0:
                text = text[:i] + rng.choice(_XML_TOKENS) + text[i:]
            elif op == 1:
                text = text[:i] + text[i + rng.randint(1, 80) :]
            elif op == 2:  # a quoted value replaced
                j = text.find('"', i)
                k = text.find('"', j + 1)
                if 0 <= j < k:
                    text = text[: j + 1] + rng.choice(["", "-1", "1e400", "x" * 300, "../x", "0x10", " 1 "]) + text[k:]
            else:  # an element's text replaced
                j = text.find(">", i)
                k = text.find("<", j + 1)
                if 0 <= j < k:
                    text = text[: j + 1] + rng.choice(["", "-7", "NaN", "99999999999999999999", "a b"]) + text[k:]
        try:
            d = parse_ovf(text, rng.choice([None, None, "", "bogus"]))
        except OvfError as exc:
            world.check([str(exc)])
            return
        for disk in d.disks:  # a result is one the reader can rely on
            assert disk.capacity_bytes >= 0 and disk.chunk_size >= 0
        assert d.cpus >= 1 and d.memory_mib >= 1

    n = run_fuzz(tmp_path, "ovf", one)
    assert n >= 50, n


# ------------------------------------------------------------------------------- disk checker


def test_fuzz_disk_checker(tmp_path: Path) -> None:
    def one(rng: random.Random, world: World, _n: int) -> None:
        fmt_ovf, data = _disk_content(rng, world)
        if rng.random() < 0.5:
            data = mutate_bytes(rng, data, 6)
        p = world.work / rng.choice(["d.vmdk", "d.qcow2", "d.img", "d.ova", "d.ovf"])
        p.write_bytes(data)
        beside = world.work / "a-flat.vmdk"
        r = rng.random()
        if r < 0.2:
            world.link(beside, world.secret)
        elif r < 0.3:
            os.mkfifo(beside)
        elif r < 0.5:
            beside.write_bytes(bytes(8192))
        if rng.random() < 0.1:
            link = world.work / "link.vmdk"
            world.link(link, world.secret)
            p = link
        qemu = {"vmdk-streamOptimized": "vmdk", "vhd": "vpc"}.get(fmt_ovf, fmt_ovf)
        texts = []
        started = time.monotonic()
        for check in (
            lambda: check_package_disk(p, qemu),
            lambda: check_package_disk(p, qemu, self_contained=False),
            lambda: check_disk_image(p),
        ):
            try:
                texts.append(str(check()))
            except InputFileError as exc:
                texts.append(str(exc))
        assert time.monotonic() - started < 5  # a FIFO is refused, never waited on
        world.check(texts)

    n = run_fuzz(tmp_path, "disk", one)
    assert n >= 50, n


def test_fuzz_disk_checker_gates_qemu_img(tmp_path: Path) -> None:
    """What the checker passes, qemu-img may probe: a probe then ends in a result or CorruptImage
    within its limits, and never reports a backing file, data file or outside extent."""

    def one(rng: random.Random, world: World, _n: int) -> None:
        fmt_ovf, data = _disk_content(rng, world)
        if rng.random() < 0.5:
            data = mutate_bytes(rng, data, 4)
        p = world.work / "d.img"
        p.write_bytes(data)
        qemu = {"vmdk-streamOptimized": "vmdk", "vhd": "vpc"}.get(fmt_ovf, fmt_ovf)
        try:
            info = diskconv.probe(p, qemu)
        except diskconv.CorruptImage as exc:
            world.check([str(exc), *map(str, exc.evidence.values())])
            return
        assert not info.backing_file and not info.data_file
        assert info.extents is None or all(Path(e).resolve() == p.resolve() for e in info.extents), info.extents
        world.check([])

    run_fuzz(tmp_path, "probe", one, seconds=min(SECONDS, 3))


# -------------------------------------------------------------------------------- spec loader

SPEC = {
    "name": "fz",
    "inventory": "file:lab.yaml",
    "platforms": [{"name": "kvm", "kind": "kvm"}, {"name": "esx", "kind": "vsphere"}],
    "images": [{"name": "img", "source": "disk.qcow2"}],
    "concurrency": {"global": 2},
}
LAB = "hosts:\n  - {name: h1, kind: kvm, driver: libvirt, endpoint: 'test:///default'}\n"


def test_fuzz_spec_loader(tmp_path: Path) -> None:
    base = yaml.safe_dump(SPEC, sort_keys=False)

    def one(rng: random.Random, world: World, _n: int) -> None:
        w = world.work
        (w / "lab.yaml").write_text(LAB)
        diskconv_ok = w / "disk.qcow2"
        diskconv_ok.write_bytes(_QCOW2_BACKED(world) if rng.random() < 0.2 else b"QFI\xfb" + bytes(4092))
        text = base
        r = rng.random()
        if r < 0.3:  # a source or an inventory that reaches outside
            target = rng.choice(
                [str(world.secret), str(world.fifo), "../outside/secret.txt", str(world.outside), "/dev/zero"]
            )
            text = text.replace("disk.qcow2" if rng.random() < 0.5 else "lab.yaml", target)
        elif r < 0.5:
            world.link(w / "link.yaml", world.secret)
            text = text.replace("lab.yaml", "link.yaml")
        if rng.random() < 0.7:
            text = mutate_bytes(rng, text.encode(), 4).decode("utf-8", "replace")
        p = w / "spec.yaml"
        p.write_text(text)
        try:
            plan = load_spec(p)
        except SpecError as exc:
            world.check([str(exc)])
            return
        world.check([repr(plan)])

    n = run_fuzz(tmp_path, "spec", one)
    assert n >= 20, n


@pytest.mark.parametrize("target", ["package", "ovf", "disk", "spec"])
def test_fuzz_oracle_catches_a_leak(tmp_path: Path, target: str) -> None:
    """The oracle is not vacuous: an input whose handling copies the secret, quotes it or raises
    a foreign exception fails the harness."""
    with pytest.raises(AssertionError, match="outside content"):

        def leak(_rng: random.Random, world: World, _n: int) -> None:
            (world.work / "out").write_bytes(world.secret.read_bytes())
            world.check([])

        run_fuzz(tmp_path / "a", target, leak, seconds=1)
    with pytest.raises(AssertionError, match="KeyError"):

        def foreign(_rng: random.Random, _world: World, _n: int) -> None:
            raise KeyError("x")

        run_fuzz(tmp_path / "b", target, foreign, seconds=1)
