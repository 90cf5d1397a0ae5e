"""OVA (tar) and unpacked-OVF packages: write them with a manifest; read them with ONE reader.

``open_package`` is the only package reader: it parses the descriptor (for one configuration),
verifies the manifest, and (when asked to extract) copies every file References names out,
reassembling chunked files and inflating gzip ones, making placeholder disks blank and probing
every disk with qemu-img. It treats the package as hostile:

* members are copied one by one (never ``extractall``); names are checked for traversal; only
  regular, non-sparse members are accepted; member count, descriptor and manifest size are bounded;
* a disk file may not be (or inflate to) more than its declared capacity plus format overhead
  (``MAX_DISK_FILE_RATIO``, ``DISK_FILE_SLACK_BYTES``), another file not more than
  ``MAX_INFLATE_RATIO`` times its stored size: a few KiB claiming gigabytes is refused before it
  fills the disk, and zero runs are written as holes;
* free space is checked before extraction and while writing (``FREE_SPACE_RESERVE_BYTES``);
* a gzip file whose inflated name is another member's name is refused;
* anything made by a failed call is removed again.

Errors: a bad package is ``CorruptPackage`` (an ``InteropFailure``: a verdict with evidence, never
retried); not enough disk space is ``InsufficientSpace`` (an ``InfraFault``: retried); an exception
nobody anticipated while reading malformed input becomes ``BadInput`` (non-retryable), never a
retry loop.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from crossvisor.core.errors import BadInput, InfraFault, InteropFailure
from domain.ovf import QEMU_FORMAT, OvfDescriptor, OvfDisk, OvfError, OvfFile, parse_ovf
from toolbox import diskconv

CHUNK = 1 << 20
MiB = 1 << 20
DIGESTS = {"sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}
# "SHA256(name)= hex" as ovftool writes it, "SHA256 (name) = hex" as VirtualBox's RTManifest does.
_MF_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$")

# --- bounds (why these numbers) ---
# A disk file may exceed its virtual capacity only by its format's metadata: qcow2 L1/L2 and
# refcount tables, VMDK grain directories/tables, VHD BAT and block bitmaps are all well under 1%
# of the capacity; 10% leaves room for odd cluster sizes and is still far from a bomb's 1000:1.
MAX_DISK_FILE_RATIO = 1.1
# Fixed per-image metadata that does not scale with capacity (VHDX header + log + metadata regions
# are ~4 MiB, qcow2/VMDK headers a few clusters): what a tiny disk may carry on top of the ratio.
DISK_FILE_SLACK_BYTES = 16 * MiB
# A non-disk file (ISO, config, OVF environment) has no capacity to bound it. Real ISOs and text
# files compress at most ~10:1; gzip's ceiling (~1032:1) is only reached by crafted runs of one byte.
MAX_INFLATE_RATIO = 64
INFLATE_SLACK_BYTES = 1 * MiB
# The artifact store is shared with other cells' conversions and the result store: a package may
# not leave less than this free (ENOSPC half-way through someone else's write corrupts their work).
FREE_SPACE_RESERVE_BYTES = 512 * MiB
FREE_SPACE_CHECK_EVERY = 64 * MiB  # re-check while writing: estimates for gzip files are lower bounds
# Real packages have a handful of members (descriptor, manifest, cert, disks, ISOs, chunks of a
# few big disks); tens of thousands of headers are only there to exhaust memory.
MAX_MEMBERS = 4096
MAX_DESCRIPTOR_BYTES = 8 * MiB  # see domain.ovf.MAX_DESCRIPTOR_CHARS
MAX_MANIFEST_BYTES = 4 * MiB  # one line per file, ~100 bytes each
_ZEROS = bytes(CHUNK)


class CorruptPackage(InteropFailure):
    """The package is malformed; ``reason`` names the file and what is wrong with it."""

    def __init__(self, reason: str, evidence: dict[str, str] | None = None):
        super().__init__(reason, evidence)


class InsufficientSpace(InfraFault):
    """Not enough free space to extract the package (retried: space may be freed meanwhile)."""


@dataclass
class PackageDisk:
    """One disk of the chosen configuration, ready for conversion."""

    disk: OvfDisk
    path: Path | None  # extracted (inflated) file, or the blank file made for a placeholder; None = not extracted
    qemu_format: str  # qemu-img format of ``path`` ("raw" for a placeholder)
    blank: bool = False  # a placeholder disk (capacity, no file): made empty
    virtual_size: int = 0  # as qemu-img reads it (0 when not probed)


@dataclass
class Package:
    path: Path  # the .ova or .ovf given
    kind: str  # "ova" | "ovf"
    descriptor: OvfDescriptor  # parsed for ``configuration`` (descriptor.configuration records it)
    descriptor_name: str  # the .ovf member / file name
    descriptor_text: str
    manifest: dict[str, tuple[str, str]] | None  # name -> (hashlib algorithm, hex); verified
    manifest_name: str
    certificate: str  # .cert member / file name ("" = none); its signature is not checked
    files: dict[str, Path] = field(default_factory=dict)  # href -> extracted (inflated) path
    disks: list[PackageDisk] = field(default_factory=list)  # aligned with descriptor.disks
    files_verified: bool = False  # every file's size and digest checked (only when extracted)
    warnings: list[str] = field(default_factory=list)

    @property
    def configuration(self) -> str:
        return self.descriptor.configuration


# ------------------------------------------------------------------------------------- hashing


def file_digest(path: str | os.PathLike[str], algo: str = "sha256") -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algo).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Streaming SHA-256 of a file (content-hash key for artifact reuse)."""
    return file_digest(path, "sha256")


def _manifest(entries: list[tuple[str, Path]], digest: str) -> str:
    if digest not in DIGESTS:
        raise ValueError(f"digest {digest!r} unsupported (one of {sorted(DIGESTS)})")
    return "".join(f"{DIGESTS[digest]}({name})= {file_digest(p, digest)}\n" for name, p in entries)


def _parse_manifest(text: str, mf_name: str) -> dict[str, tuple[str, str]]:
    """name -> (hashlib algorithm, lowercase hex)."""
    out: dict[str, tuple[str, str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _MF_LINE.match(line)
        if not m:
            raise CorruptPackage(f"{mf_name} line {lineno}: not 'ALGO(name)= hex': {line[:120]!r}")
        algo, name, hexd = m.group(1).lower(), m.group(2), m.group(3).lower()
        if len(hexd) != hashlib.new(algo).digest_size * 2:
            raise CorruptPackage(f"{mf_name} line {lineno}: {algo} digest of {name} has wrong length")
        if name in out:
            raise CorruptPackage(f"{mf_name} line {lineno}: {name} is listed twice")
        out[name] = (algo, hexd)
    return out


# ------------------------------------------------------------------------------------- writing


def _ordered_files(descriptor_xml: str, files: list[Path]) -> tuple[OvfDescriptor, list[Path]]:
    """Files in References order; every href must be supplied and nothing else."""
    d = parse_ovf(descriptor_xml)
    by_name = {Path(f).name: Path(f) for f in files}
    hrefs = [f.href for f in d.files()]
    missing = [h for h in hrefs if h not in by_name]
    if missing:
        raise ValueError(f"descriptor references {missing} but no such file was given")
    extra = sorted(set(by_name) - set(hrefs))
    if extra:
        raise ValueError(f"files {extra} are not referenced by the descriptor")
    return d, [by_name[h] for h in hrefs]


def _atomic_target(out: Path) -> Path:
    # A retried activity must never see a half-written package: write beside it, then rename.
    return out.with_name(f".{out.name}.part")


def write_ova(descriptor_xml: str, files: list[Path], out: Path, digest: str = "sha256") -> Path:
    """Write ``out`` as USTAR: descriptor first, then manifest, then files in References order."""
    out = Path(out)
    _, ordered = _ordered_files(descriptor_xml, files)
    stem = out.stem
    ovf_bytes = descriptor_xml.encode()
    h = hashlib.new(digest)
    h.update(ovf_bytes)
    mf = f"{DIGESTS[digest]}({stem}.ovf)= {h.hexdigest()}\n" + _manifest([(p.name, p) for p in ordered], digest)
    tmp = _atomic_target(out)
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in ((f"{stem}.ovf", ovf_bytes), (f"{stem}.mf", mf.encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, _BytesReader(data))
            for p in ordered:
                info = tar.gettarinfo(str(p), arcname=p.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(p, "rb") as fh:
                    tar.addfile(info, fh)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk


def write_ovf_dir(
    descriptor_xml: str,
    files: list[Path],
    out_dir: Path,
    digest: str = "sha256",
    name: str | None = None,
) -> Path:
    """Unpacked variant: ``out_dir/<name>.ovf`` + ``.mf`` + the files (copied unless already there)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d, ordered = _ordered_files(descriptor_xml, files)
    stem = name or d.name
    placed: list[tuple[str, Path]] = []
    for p in ordered:
        target = out_dir / p.name
        if p.resolve() != target.resolve():
            tmp = _atomic_target(target)
            shutil.copyfile(p, tmp)
            os.replace(tmp, target)
        placed.append((p.name, target))
    ovf_path = out_dir / f"{stem}.ovf"
    mf_path = out_dir / f"{stem}.mf"
    for path, text in ((ovf_path, descriptor_xml), (mf_path, None)):
        tmp = _atomic_target(path)
        if text is None:  # manifest last: it covers the descriptor as written
            text = _manifest([(ovf_path.name, ovf_path), *placed], digest)
        tmp.write_text(text)
        os.replace(tmp, path)
    return ovf_path


# ------------------------------------------------------------------------------------- reading


def open_package(
    path: str | os.PathLike[str],
    *,
    extract_to: str | os.PathLike[str] | None = None,
    configuration: str | None = None,
) -> Package:
    """Read and verify an OVA, an unpacked OVF (``X.ovf``) or a directory holding one ``.ovf``.

    Without ``extract_to`` only the structure is checked: descriptor, manifest (the descriptor's
    digest, and that it lists exactly the package's files), members present with the sizes
    References declares; ``files`` maps what can be used in place (an unpacked OVF's plain files).
    With ``extract_to`` every file is copied out (an unpacked OVF's plain files are used where
    they are), hashed against the manifest, chunks joined, gzip inflated, placeholder disks made
    blank (sparse raw) and every disk probed with qemu-img (``Package.files_verified``).
    ``configuration`` selects a DeploymentOptionSection configuration (default: the package's)."""
    path = Path(path)
    dest = Path(extract_to) if extract_to is not None else None
    made: list[Path] = []
    try:
        if path.is_dir():
            ovfs = sorted(path.glob("*.ovf"))
            if len(ovfs) != 1:
                raise CorruptPackage(
                    f"{path.name}: expected exactly one .ovf descriptor in the directory, found {ovfs}"
                )
            path = ovfs[0]
        if path.suffix.lower() == ".ovf":
            return _open_ovf_dir(path, dest, configuration, made)
        return _open_ova(path, dest, configuration, made)
    except (CorruptPackage, InfraFault, BadInput):
        _remove(made)
        raise
    except OvfError as exc:
        _remove(made)
        raise CorruptPackage(f"{path.name}: invalid descriptor: {exc}", {"package": str(path)}) from None
    except (tarfile.TarError, EOFError) as exc:
        _remove(made)
        raise CorruptPackage(f"{path.name}: truncated or corrupt tar: {exc}", {"package": str(path)}) from None
    except OSError as exc:
        _remove(made)
        if exc.errno == errno.ENOSPC:
            raise InsufficientSpace(f"{path.name}: no space left while extracting to {dest}: {exc}") from None
        raise  # host trouble (EIO, permissions): an infrastructure fault, retried
    except (LookupError, ValueError, TypeError, AttributeError, ArithmeticError, RecursionError, zlib.error) as exc:
        # Malformed input that reached a code path nobody anticipated: no retry can fix it.
        _remove(made)
        raise BadInput(f"{path.name}: malformed package ({type(exc).__name__} while reading it: {exc})") from exc


def _remove(made: list[Path]) -> None:
    """Undo a failed open: files first, then the directories it created (deepest first)."""
    for p in sorted(made, key=lambda x: len(x.parts), reverse=True):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        except OSError:
            pass


def _mkdirs(d: Path, made: list[Path]) -> None:
    missing = []
    p = d
    while not p.exists():
        missing.append(p)
        p = p.parent
    d.mkdir(parents=True, exist_ok=True)
    made.extend(missing)


def _safe_name(name: str, where: str) -> str:
    p = PurePosixPath(name)
    if (
        not name
        or p.is_absolute()
        or ".." in p.parts
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", name)
    ):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", name):
            raise CorruptPackage(f"{where}: {name!r} is an external reference (only self-contained packages)")
        raise CorruptPackage(f"{where}: member name {name!r} escapes the package (path traversal)")
    return str(p)


def _decode_descriptor(data: bytes, name: str) -> str:
    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise CorruptPackage(f"{name}: descriptor is {len(data)} bytes (limit {MAX_DESCRIPTOR_BYTES})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorruptPackage(f"{name}: descriptor is not UTF-8: {exc}") from None


def _parse_descriptor(text: str, name: str, configuration: str | None) -> OvfDescriptor:
    try:
        return parse_ovf(text, configuration)
    except OvfError as exc:
        raise CorruptPackage(f"{name}: invalid descriptor: {exc}") from None


def read_descriptor_file(path: str | os.PathLike[str], configuration: str | None = None) -> OvfDescriptor:
    """Parse a lone ``.ovf`` file (no package around it: nothing else is checked)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_DESCRIPTOR_BYTES + 1)
    except FileNotFoundError:
        raise CorruptPackage(f"{p.name}: descriptor file does not exist") from None
    return _parse_descriptor(_decode_descriptor(data, p.name), p.name, configuration)


@dataclass
class _Plan:
    """How one References file is stored: its member names (chunks in order) and sizes."""

    file: OvfFile
    members: list[str]
    stored: int  # bytes as stored (sum of chunks)
    limit: int  # most bytes it may produce once inflated
    disk: OvfDisk | None
    target_name: str = ""


def _bound(f: OvfFile, disk: OvfDisk | None, stored: int) -> int:
    if disk is not None and disk.capacity_bytes:
        return int(disk.capacity_bytes * MAX_DISK_FILE_RATIO) + DISK_FILE_SLACK_BYTES
    if f.compression:
        return stored * MAX_INFLATE_RATIO + INFLATE_SLACK_BYTES
    return stored


def _chunk_names(href: str, n: int) -> list[str]:
    # DSP0243 / vSphere: href.000000000, href.000000001, ... (nine decimal digits)
    return [f"{href}.{i:09d}" for i in range(n)]


def _plan_files(d: OvfDescriptor, sizes: dict[str, int], pkg: str, where_missing: str) -> tuple[list[_Plan], list[str]]:
    """Plans for every References file; raises for a missing file or one over its bounds."""
    disk_of = {x.file_href: x for x in d.disks if x.file_href}
    plans: list[_Plan] = []
    for f in d.files():
        href = _safe_name(f.href, f"{pkg} ovf:href")
        if f.chunk_size:
            members = []
            while (name := f"{href}.{len(members):09d}") in sizes:
                members.append(name)
                if len(members) > MAX_MEMBERS:
                    break
            if not members:
                raise CorruptPackage(
                    f"{pkg}: descriptor references {f.href} (chunked) but {where_missing} {href}.000000000"
                )
            for m in members[:-1]:
                if sizes[m] != f.chunk_size:
                    raise CorruptPackage(f"{pkg}: chunk {m} is {sizes[m]} bytes, ovf:chunkSize says {f.chunk_size}")
            if sizes[members[-1]] > f.chunk_size:
                raise CorruptPackage(f"{pkg}: last chunk {members[-1]} is larger than ovf:chunkSize {f.chunk_size}")
        else:
            if href not in sizes:
                raise CorruptPackage(f"{pkg}: descriptor references {f.href} but {where_missing}")
            members = [href]
        stored = sum(sizes[m] for m in members)
        if f.size and stored != f.size:
            raise CorruptPackage(f"{pkg}: {f.href} is {stored} bytes, References/File ovf:size says {f.size}")
        disk = disk_of.get(f.href)
        limit = _bound(f, disk, stored)
        if stored > limit:
            raise CorruptPackage(
                f"{pkg}: {f.href} stores {stored} bytes, more than a disk of capacity "
                f"{disk.capacity_bytes if disk else '?'} can need ({limit}): refused before extraction",
                {"file": f.href, "stored_bytes": str(stored), "limit_bytes": str(limit)},
            )
        plans.append(_Plan(f, members, stored, limit, disk))
    chunked = [m for p in plans if p.file.chunk_size for m in p.members]
    return plans, chunked


def _assign_targets(plans: list[_Plan], taken: set[str], pkg: str) -> None:
    """Names the files get once extracted; an inflated name may not be another member's."""
    used: dict[str, str] = {}
    for p in plans:
        href = p.file.href
        name = href[:-3] if p.file.compression and href.endswith(".gz") else href
        if p.file.compression and name != href and name in taken:
            raise CorruptPackage(
                f"{pkg}: {href} inflates to {name}, which is also a member of the package: refused",
                {"file": href, "collides_with": name},
            )
        if name in used:
            raise CorruptPackage(f"{pkg}: {href} and {used[name]} would both be extracted as {name}")
        used[name] = href
        p.target_name = name


def _check_manifest(
    manifest: dict[str, tuple[str, str]] | None,
    mf_name: str,
    ovf_name: str,
    ovf_bytes: bytes,
    members: list[str],
    pkg: str,
) -> None:
    """The manifest lists exactly the descriptor and the package's files; the descriptor matches."""
    if manifest is None:
        return
    for name in manifest:
        if name != ovf_name and name not in members:
            raise CorruptPackage(f"{mf_name}: lists {name!r} which is not in the package")
    for name in [ovf_name, *members]:
        if name not in manifest:
            raise CorruptPackage(f"{mf_name}: {name} is in the package but not in the manifest")
    algo, want = manifest[ovf_name]
    got = hashlib.new(algo, ovf_bytes).hexdigest()
    if got != want:
        raise CorruptPackage(f"{pkg}: checksum of {ovf_name} does not match {mf_name} ({algo} {got} != {want})")


def _check_free_space(dest: Path, plans: list[_Plan], pkg: str) -> None:
    need = 0
    for p in plans:
        if p.file.compression:
            # lower bound: zero runs become holes, and the writer re-checks as it goes
            need += max(p.stored, p.disk.populated_bytes if p.disk else 0)
        else:
            need += p.stored
    free = shutil.disk_usage(dest).free
    if need + FREE_SPACE_RESERVE_BYTES > free:
        raise InsufficientSpace(
            f"{pkg}: extracting needs {need} bytes and {FREE_SPACE_RESERVE_BYTES} must stay free, "
            f"but {dest} has {free} bytes free"
        )


class _Sink:
    """Writes a file sparsely (all-zero chunks become holes), refusing more than ``limit`` bytes."""

    def __init__(self, target: Path, limit: int, what: str, pkg: str, made: list[Path]):
        self.tmp = _atomic_target(target)
        self.target = target
        self.limit, self.what, self.pkg = limit, what, pkg
        made.extend([self.tmp, target])
        self.fh = open(self.tmp, "wb")
        self.n = 0
        self._since_check = 0

    def write(self, data: bytes) -> None:
        self.n += len(data)
        if self.n > self.limit:
            raise CorruptPackage(
                f"{self.pkg}: {self.what} produces more than {self.limit} bytes: refused "
                "(beyond what its declared capacity allows: a decompression or sparse bomb)",
                {"file": self.what, "limit_bytes": str(self.limit)},
            )
        if data == _ZEROS[: len(data)]:
            self.fh.seek(len(data), os.SEEK_CUR)
            return
        self.fh.write(data)
        self._since_check += len(data)
        if self._since_check >= FREE_SPACE_CHECK_EVERY:
            self._since_check = 0
            free = shutil.disk_usage(self.tmp.parent).free
            if free < FREE_SPACE_RESERVE_BYTES:
                raise InsufficientSpace(
                    f"{self.pkg}: extracting {self.what} left {free} bytes free (keeps {FREE_SPACE_RESERVE_BYTES})"
                )

    def close(self) -> int:
        self.fh.truncate(self.n)  # trailing holes: give the file its full length
        self.fh.close()
        os.replace(self.tmp, self.target)
        return self.n

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def _inflate(chunks: Iterator[bytes], what: str, pkg: str) -> Iterator[bytes]:
    """Stream-inflate gzip (several members allowed, zero padding after the last tolerated),
    yielding at most CHUNK bytes at a time so a bomb never sits in memory."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    try:
        for data in chunks:
            data = pending + data
            pending = b""
            while data:
                if d.eof:
                    rest = data.lstrip(b"\0")
                    if not rest:
                        data = b""
                        break
                    if len(rest) < 2:
                        pending = rest
                        data = b""
                        break
                    if rest[:2] != b"\x1f\x8b":
                        raise CorruptPackage(f"{pkg}: {what}: data after the gzip stream is not gzip")
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest
                out = d.decompress(data, CHUNK)
                if out:
                    yield out
                if d.eof:
                    data = d.unused_data
                else:
                    data = d.unconsumed_tail
                while not d.eof and not data:
                    out = d.decompress(b"", CHUNK)  # drain what the last input still holds
                    if not out:
                        break
                    yield out
        if not d.eof:
            raise CorruptPackage(f"{pkg}: {what}: gzip data is corrupt: stream truncated")
    except zlib.error as exc:
        raise CorruptPackage(f"{pkg}: {what}: gzip data is corrupt: {exc}") from None


def _extract_plan(
    plan: _Plan,
    read_member: dict[str, callable],
    dest: Path,
    algos: set[str],
    manifest: dict[str, tuple[str, str]] | None,
    mf_name: str,
    pkg: str,
    made: list[Path],
) -> Path:
    """Copy one References file out: hash each stored member, join chunks, inflate, write sparse."""
    digests: dict[str, dict[str, str]] = {}

    def stored_bytes() -> Iterator[bytes]:
        for m in plan.members:
            hashes = {a: hashlib.new(a) for a in algos}
            n = 0
            for chunk in read_member[m]():
                for h in hashes.values():
                    h.update(chunk)
                n += len(chunk)
                yield chunk
            want = plan.stored if len(plan.members) == 1 else None
            if want is not None and n != want:
                raise CorruptPackage(f"{pkg}: member {m} truncated ({n} of {want} bytes)")
            digests[m] = {a: h.hexdigest() for a, h in hashes.items()}

    target = dest / plan.target_name
    _mkdirs(target.parent, made)
    sink = _Sink(target, plan.limit, plan.file.href, pkg, made)
    try:
        source = stored_bytes()
        for chunk in _inflate(source, plan.file.href, pkg) if plan.file.compression else source:
            sink.write(chunk)
        for _ in source:  # bytes after the gzip stream still count for the digest
            pass
    except BaseException:
        sink.abort()
        raise
    sink.close()
    if manifest is not None:
        for m in plan.members:
            algo, want = manifest[m]
            got = digests[m][algo]
            if got != want:
                raise CorruptPackage(
                    f"{pkg}: checksum of {m} does not match {mf_name} ({algo} {got} != {want})",
                    {"file": m, "algorithm": algo, "manifest": want, "actual": got},
                )
    return target


def _tar_reader(tar: tarfile.TarFile, m: tarfile.TarInfo, pkg: str):
    def read() -> Iterator[bytes]:
        src = tar.extractfile(m)
        if src is None:
            raise CorruptPackage(f"{pkg}: member {m.name} cannot be read")
        n = 0
        while chunk := src.read(CHUNK):
            n += len(chunk)
            yield chunk
        if n != m.size:
            raise CorruptPackage(f"{pkg}: member {m.name} truncated ({n} of {m.size} bytes)")

    return read


def _file_reader(p: Path):
    def read() -> Iterator[bytes]:
        with open(p, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    return read


def _open_tar(path: Path, pkg: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")  # plain tar only: an OVA is never compressed as a whole
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptPackage(f"{pkg}: not a readable tar archive: {exc}") from None
    except FileNotFoundError:
        raise CorruptPackage(f"{pkg}: package file does not exist") from None
    except IsADirectoryError:
        raise CorruptPackage(f"{pkg}: is a directory, not an OVA") from None


def _tar_members(tar: tarfile.TarFile, pkg: str, archive_size: int) -> dict[str, tarfile.TarInfo]:
    by_name: dict[str, tarfile.TarInfo] = {}
    count = 0
    while True:
        try:
            m = tar.next()
        except (tarfile.TarError, EOFError) as exc:
            last = tar.members[-1].name if tar.members else "(first header)"
            raise CorruptPackage(f"{pkg}: truncated or corrupt tar at member {last!r}: {exc}") from None
        if m is None:
            break
        count += 1
        if count > MAX_MEMBERS:
            raise CorruptPackage(f"{pkg}: more than {MAX_MEMBERS} members: not an OVF package")
        name = _safe_name(m.name, pkg)
        if m.isdir():
            continue
        if m.sparse is not None or m.type == tarfile.GNUTYPE_SPARSE:
            raise CorruptPackage(
                f"{pkg}: member {m.name!r} is a sparse tar entry (it expands beyond its stored bytes); "
                "an OVA is plain USTAR",
                {"member": m.name, "declared_bytes": str(m.size)},
            )
        if not m.isfile():
            raise CorruptPackage(f"{pkg}: member {m.name!r} is not a regular file")
        if m.offset_data + m.size > archive_size:
            raise CorruptPackage(f"{pkg}: truncated tar: member {m.name!r} ends past the end of the archive")
        if name in by_name:
            raise CorruptPackage(f"{pkg}: member {name!r} appears twice")
        by_name[name] = m
    return by_name


def _read_small(read, limit: int, name: str, pkg: str) -> bytes:
    out = bytearray()
    for chunk in read():
        out += chunk
        if len(out) > limit:
            raise CorruptPackage(f"{pkg}: {name} is larger than {limit} bytes: refused")
    return bytes(out)


def _open_ova(path: Path, dest: Path | None, configuration: str | None, made: list[Path]) -> Package:
    pkg = path.name
    with _open_tar(path, pkg) as tar:
        members = _tar_members(tar, pkg, path.stat().st_size)
        ovfs = [n for n in members if n.endswith(".ovf")]
        if len(ovfs) != 1:
            raise CorruptPackage(f"{pkg}: expected exactly one .ovf descriptor, found {ovfs}")
        ovf_name = ovfs[0]
        ovf_bytes = _read_small(_tar_reader(tar, members[ovf_name], pkg), MAX_DESCRIPTOR_BYTES, ovf_name, pkg)
        text = _decode_descriptor(ovf_bytes, ovf_name)
        d = _parse_descriptor(text, ovf_name, configuration)
        stem = ovf_name[:-4]
        mf_name, cert_name = stem + ".mf", stem + ".cert"
        manifest = None
        if mf_name in members:
            raw = _read_small(_tar_reader(tar, members[mf_name], pkg), MAX_MANIFEST_BYTES, mf_name, pkg)
            manifest = _parse_manifest(raw.decode("utf-8", "replace"), mf_name)
        sizes = {n: m.size for n, m in members.items()}
        plans, _ = _plan_files(d, sizes, pkg, "the package has no such member")
        file_members = [m for p in plans for m in p.members]
        known = {ovf_name, mf_name, cert_name, *file_members}
        stray = [n for n in members if n not in known]
        if stray:
            raise CorruptPackage(f"{pkg}: members {stray} are not referenced by {ovf_name}")
        _check_manifest(manifest, mf_name, ovf_name, ovf_bytes, file_members, pkg)
        out = Package(
            path=path,
            kind="ova",
            descriptor=d,
            descriptor_name=ovf_name,
            descriptor_text=text,
            manifest=manifest,
            manifest_name=mf_name if manifest is not None else "",
            certificate=cert_name if cert_name in members else "",
            warnings=list(d.warnings),
        )
        _assign_targets(plans, set(members), pkg)
        if dest is None:
            out.disks = [
                PackageDisk(x, None, "raw" if not x.file_href else QEMU_FORMAT[x.format], not x.file_href)
                for x in d.disks
            ]
            return out
        _mkdirs(dest, made)
        _check_free_space(dest, plans, pkg)
        algos = {a for a, _ in (manifest or {}).values()}
        readers = {n: _tar_reader(tar, m, pkg) for n, m in members.items()}
        for p in plans:
            out.files[p.file.href] = _extract_plan(p, readers, dest, algos, manifest, mf_name, pkg, made)
    out.files_verified = True
    _finish_disks(out, dest, made)
    return out


def _open_ovf_dir(ovf_path: Path, dest: Path | None, configuration: str | None, made: list[Path]) -> Package:
    pkg = ovf_path.name
    base = ovf_path.parent
    try:
        with open(ovf_path, "rb") as fh:
            ovf_bytes = fh.read(MAX_DESCRIPTOR_BYTES + 1)
    except FileNotFoundError:
        raise CorruptPackage(f"{pkg}: descriptor file does not exist") from None
    text = _decode_descriptor(ovf_bytes, pkg)
    d = _parse_descriptor(text, pkg, configuration)
    mf_path, cert_path = ovf_path.with_suffix(".mf"), ovf_path.with_suffix(".cert")
    manifest = None
    if mf_path.exists():
        raw = _read_small(_file_reader(mf_path), MAX_MANIFEST_BYTES, mf_path.name, pkg)
        manifest = _parse_manifest(raw.decode("utf-8", "replace"), mf_path.name)
    sizes: dict[str, int] = {}
    for f in d.files():
        href = _safe_name(f.href, f"{pkg} ovf:href")
        names = _chunk_names(href, MAX_MEMBERS) if f.chunk_size else [href]
        for n in names:
            p = base / n
            if not p.is_file():
                break
            sizes[n] = p.stat().st_size
    if manifest is not None:  # a manifest may name files beside the descriptor we did not plan for
        for n in manifest:
            if n != pkg and (base / _safe_name(n, mf_path.name)).is_file():
                sizes.setdefault(n, (base / n).stat().st_size)
    plans, _ = _plan_files(d, sizes, pkg, f"{base} has no such file")
    file_members = [m for p in plans for m in p.members]
    _check_manifest(manifest, mf_path.name, pkg, ovf_bytes, file_members, pkg)
    out = Package(
        path=ovf_path,
        kind="ovf",
        descriptor=d,
        descriptor_name=pkg,
        descriptor_text=text,
        manifest=manifest,
        manifest_name=mf_path.name if manifest is not None else "",
        certificate=cert_path.name if cert_path.exists() else "",
        warnings=list(d.warnings),
    )
    in_place = dest is None or dest.resolve() == base.resolve()
    _assign_targets(plans, set(sizes), pkg)
    algos = {a for a, _ in (manifest or {}).values()}
    readers = {n: _file_reader(base / n) for n in sizes}
    to_make = []
    for p in plans:
        if not p.file.compression and not p.file.chunk_size:
            # a plain file is used where it is: hash it in place (no copy)
            out.files[p.file.href] = base / p.members[0]
            if dest is not None:
                _verify_in_place(p, readers, algos, manifest, mf_path.name, pkg)
            continue
        if in_place and p.target_name == p.file.href:
            p.target_name = f"{p.file.href}.inflated"  # never overwrite the package's own file
            if (base / p.target_name).name in sizes:
                raise CorruptPackage(f"{pkg}: {p.file.href} would be inflated over {p.target_name}")
        to_make.append(p)
    if dest is None:
        out.disks = [
            PackageDisk(
                x, out.files.get(x.file_href), "raw" if not x.file_href else QEMU_FORMAT[x.format], not x.file_href
            )
            for x in d.disks
        ]
        return out
    target_dir = base if in_place else dest
    _mkdirs(target_dir, made)
    _check_free_space(target_dir, to_make, pkg)
    for p in to_make:
        out.files[p.file.href] = _extract_plan(p, readers, target_dir, algos, manifest, mf_path.name, pkg, made)
    out.files_verified = True
    _finish_disks(out, target_dir, made)
    return out


def _verify_in_place(plan: _Plan, readers, algos: set[str], manifest, mf_name: str, pkg: str) -> None:
    m = plan.members[0]
    hashes = {a: hashlib.new(a) for a in algos}
    n = 0
    for chunk in readers[m]():
        for h in hashes.values():
            h.update(chunk)
        n += len(chunk)
    if n != plan.stored:
        raise CorruptPackage(f"{pkg}: {m} changed size while being read ({n} of {plan.stored} bytes)")
    if manifest is not None:
        algo, want = manifest[m]
        got = hashes[algo].hexdigest()
        if got != want:
            raise CorruptPackage(
                f"{pkg}: checksum of {m} does not match {mf_name} ({algo} {got} != {want})",
                {"file": m, "algorithm": algo, "manifest": want, "actual": got},
            )


def _finish_disks(out: Package, dest: Path, made: list[Path]) -> None:
    """Placeholder disks become blank sparse raw files; every disk is probed against its capacity."""
    pkg = out.path.name
    taken = {p.name for p in out.files.values()}
    for i, disk in enumerate(out.descriptor.disks):
        if not disk.file_href:
            if disk.capacity_bytes % 512:
                raise CorruptPackage(f"{pkg}: placeholder disk {i} capacity {disk.capacity_bytes} is not whole sectors")
            name = f"blank-disk{i}.raw"
            while name in taken:
                name = f"_{name}"
            target = dest / name
            made.append(target)
            with open(target, "wb") as fh:
                fh.truncate(disk.capacity_bytes)  # sparse: a blank disk costs no space
            taken.add(name)
            out.disks.append(PackageDisk(disk, target, "raw", blank=True, virtual_size=disk.capacity_bytes))
            continue
        path = out.files[disk.file_href]
        fmt = QEMU_FORMAT[disk.format]
        try:
            info = diskconv.probe(path, fmt)
        except diskconv.CorruptImage as exc:
            raise CorruptPackage(
                f"{pkg}: disk {disk.file_href} is corrupt or not {disk.format}: {exc.reason}",
                {**exc.evidence, "file": disk.file_href, "declared_format": disk.format},
            ) from None
        _check_probe(out, disk, path, info, pkg)
        out.disks.append(PackageDisk(disk, path, fmt, virtual_size=info.virtual_size))


def _check_probe(out: Package, disk: OvfDisk, path: Path, info: diskconv.ImageInfo, pkg: str) -> None:
    evidence = {"file": disk.file_href, "format": disk.format, "virtual_size": str(info.virtual_size)}
    if info.backing_file or info.data_file:
        raise CorruptPackage(
            f"{pkg}: disk {disk.file_href} refers to another image ({info.backing_file or info.data_file!r}): "
            "a package disk must be self-contained",
            evidence,
        )
    if info.extents is not None and any(Path(e).resolve() != path.resolve() for e in info.extents):
        raise CorruptPackage(
            f"{pkg}: disk {disk.file_href} is a VMDK descriptor naming other extents {info.extents}: "
            "a package disk must be one self-contained file",
            evidence,
        )
    if not disk.capacity_bytes:
        disk.capacity_bytes = info.virtual_size  # given as ovf:/file/<id>: the image says how big
    elif info.virtual_size > disk.capacity_bytes:
        raise CorruptPackage(
            f"{pkg}: disk {disk.file_href} is {info.virtual_size} bytes, beyond its declared capacity "
            f"{disk.capacity_bytes}: refused",
            {**evidence, "declared_capacity": str(disk.capacity_bytes)},
        )
    elif info.virtual_size < disk.capacity_bytes:
        out.warnings.append(
            f"disk {disk.file_href} holds {info.virtual_size} bytes, less than its declared capacity "
            f"{disk.capacity_bytes} (VHD geometry rounding, or a sloppy exporter)"
        )
