"""OVA (tar) and unpacked-OVF packages: write them with a manifest; read them with ONE reader.

``open_package`` is the only package reader: it parses the descriptor (for one configuration),
verifies the manifest, and (when asked to extract) copies every file References names out,
reassembling chunked files and inflating gzip ones, making placeholder disks blank and probing
every disk with qemu-img. It treats the package as hostile:

* an OVA's headers are read by ``crossvisor.core.bounded_tar`` (never ``tarfile``: unbounded
  long names, CVE-2024-6232); an unpacked OVF's files only through its directory's descriptor,
  component by component with ``O_NOFOLLOW``, ``O_NONBLOCK`` and ``fstat`` before reading (no
  link followed, no FIFO or device opened);
* members are copied one by one (never ``extractall``); names are checked for traversal and for
  naming the destination itself (``.``, a gzip href that is only ``.gz``); only regular,
  non-sparse members are accepted; member count, descriptor and manifest size are bounded;
* every disk passes the one disk checker (``safe_read.check_package_disk``, inside
  ``diskconv.probe``) before qemu-img reads it: nothing in it may name another file;
* a disk file may not be (or inflate to) more than its declared capacity plus format overhead
  (``MAX_DISK_FILE_RATIO``, ``DISK_FILE_SLACK_BYTES``), another file not more than
  ``MAX_INFLATE_RATIO`` times its stored size: a few KiB claiming gigabytes is refused before it
  fills the disk, and zero runs are written as holes;
* free space is checked before extraction and while writing (``FREE_SPACE_RESERVE_BYTES``);
* a gzip file whose inflated name is another member's name is refused;
* anything made by a failed call is removed again.

Errors: a bad package is ``CorruptPackage`` (an ``InteropFailure``: a verdict with evidence, never
retried), its message starting with the package exactly as the operator gave it, then the member;
an OS refusal the package's content causes (a name too long, a file too big for the file system)
is one too; not enough disk space is ``InsufficientSpace`` (an ``InfraFault``: retried); an
exception nobody anticipated while reading malformed input becomes ``BadInput`` (non-retryable),
never a retry loop.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from crossvisor.core import bounded_tar
from crossvisor.core.errors import BadInput, InfraFault, InteropFailure
from crossvisor.core.safe_read import InputFileError, open_regular
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
# The largest disk any target format holds (VHDX and VMDK stop at 64 TiB, vSphere at 62 TiB): a
# declared capacity beyond it is no disk, and a sparse file that big is beyond most file systems.
MAX_DISK_CAPACITY = 64 * 1024**4
# A VHD's size is cylinders x heads x sectors: rounding down to that geometry loses at most one
# cylinder (16 heads x 255 sectors x 512 bytes ~ 2 MiB); more missing is data missing.
VHD_ROUNDING_BYTES = 16 * 255 * 512
MAX_NAME_COMPONENT_BYTES = 255  # NAME_MAX of every Linux file system
MAX_NAME_BYTES = 1024  # a member name; with the destination's own path it stays inside PATH_MAX
# OS errors that writing or sizing a package's file can meet because of what the package says (a
# name too long, a file bigger than the file system allows, a name that is a directory): bad input.
_CONTENT_ERRNOS = {
    errno.ENAMETOOLONG: "a name too long for the file system",
    errno.EFBIG: "a file larger than the file system allows",
    errno.EISDIR: "a name that is a directory",
    errno.ENOTDIR: "a name whose parent is a file",
    errno.ELOOP: "a symbolic link",
    errno.EINVAL: "a size or name the file system refuses",
    errno.EOVERFLOW: "a size beyond what the system can represent",
}
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
            # the line is not quoted: what a manifest holds is not echoed into logs and history
            raise CorruptPackage(f"{mf_name} line {lineno}: not 'ALGO(name)= hex'")
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
    given = os.fspath(path)  # the operator's words: every refusal starts with them
    path = Path(path)
    dest = Path(extract_to) if extract_to is not None else None
    made: list[Path] = []
    try:
        try:
            if path.is_dir():
                ovfs = sorted(q for q in path.glob("*.ovf") if not q.is_symlink())
                if len(ovfs) != 1:
                    raise CorruptPackage(
                        f"expected exactly one .ovf descriptor in the directory, found {[q.name for q in ovfs]}"
                    )
                path = ovfs[0]
            if path.suffix.lower() == ".ovf":
                return _open_ovf_dir(path, dest, configuration, made)
            return _open_ova(path, dest, configuration, made)
        except OvfError as exc:
            raise CorruptPackage(f"invalid descriptor: {exc}") from None
        except bounded_tar.TarFormatError as exc:
            raise CorruptPackage(f"not a plain tar archive an OVA may be: {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise InsufficientSpace(f"no space left while extracting to {dest}: {exc.strerror}") from None
            if exc.errno in _CONTENT_ERRNOS:
                # the package asked for it (a name, a size); the file system said no: no retry helps
                member = Path(exc.filename).name if exc.filename else "a file"
                raise CorruptPackage(
                    f"{member}: {_CONTENT_ERRNOS[exc.errno]} ({exc.strerror})", {"member": member}
                ) from None
            raise  # host trouble (EIO, permissions): an infrastructure fault, retried
        except (LookupError, ValueError, TypeError, AttributeError, ArithmeticError, RecursionError, zlib.error) as exc:
            # Malformed input that reached a code path nobody anticipated: no retry can fix it.
            raise BadInput(f"malformed package ({type(exc).__name__} while reading it: {exc})") from exc
    except (CorruptPackage, InfraFault, BadInput) as exc:
        _remove(made)
        raise _naming(exc, given) from None
    except BaseException:
        _remove(made)
        raise


def _naming(exc: Exception, given: str) -> Exception:
    """The same refusal, its message starting with the package as the operator gave it (the member
    it concerns stays in the message): "/srv/x.ova: member disk1.vmdk ..." ."""
    reason = exc.reason if isinstance(exc, CorruptPackage) else str(exc)
    name = Path(given).name
    for lead in (f"{given}: ", f"{name}: "):
        if reason.startswith(lead):
            reason = reason[len(lead) :]
            break
    text = f"{given}: {reason}"
    if isinstance(exc, CorruptPackage):
        out = CorruptPackage(text, {"package": given, **exc.evidence})
    elif isinstance(exc, InputFileError):  # (path, reason) signature: keep it a BadInput
        out = BadInput(text)
    else:
        try:
            out = type(exc)(text)
        except TypeError:
            out = BadInput(text) if isinstance(exc, BadInput) else InfraFault(text)
    return out


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


def _safe_name(name: str, where: str, *, file: bool = True) -> str:
    """``name`` normalised, or a refusal: nothing absolute, no ``..``, no scheme, no backslash or
    NUL, and (for a file) nothing that is the destination itself (``.``, ``a/``) or too long."""
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
    if file and (str(p) == "." or name.endswith("/")):
        raise CorruptPackage(f"{where}: member name {name!r} names the package's directory, not a file")
    if len(name.encode()) > MAX_NAME_BYTES or any(len(c.encode()) > MAX_NAME_COMPONENT_BYTES for c in p.parts):
        raise CorruptPackage(
            f"{where}: member name {name[:80]!r}... is too long for a file system "
            f"(a name part over {MAX_NAME_COMPONENT_BYTES} bytes, or over {MAX_NAME_BYTES} in all)"
        )
    return str(p)


def _decode_descriptor(data: bytes, name: str) -> str:
    """XML's own rules: UTF-8 (BOM optional) or, with its byte order mark, UTF-16 / UTF-32."""
    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise CorruptPackage(f"{name}: descriptor is {len(data)} bytes (limit {MAX_DESCRIPTOR_BYTES})")
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                raise CorruptPackage(f"{name}: descriptor is not valid {codec.upper()}: {exc.reason}") from None
            if "\0" in text:
                raise CorruptPackage(f"{name}: descriptor contains a NUL character")
            return text
    # XML 1.0 appendix F: without a mark, "<?" in UTF-16 is recognised by its zero bytes
    codec = "utf-16-le" if data.startswith(b"<\0?\0") else "utf-16-be" if data.startswith(b"\0<\0?") else "utf-8-sig"
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise CorruptPackage(
            f"{name}: descriptor is not valid {codec[:6].upper()} (byte {exc.start}: {exc.reason})"
        ) from None
    if "\0" in text:  # expat stops at a NUL: what follows would be silently ignored
        raise CorruptPackage(f"{name}: descriptor contains a NUL character (binary data, or an unmarked UTF-16/32)")
    return text


def _parse_descriptor(text: str, name: str, configuration: str | None) -> OvfDescriptor:
    try:
        d = parse_ovf(text, configuration)
    except OvfError as exc:
        raise CorruptPackage(f"{name}: invalid descriptor: {exc}") from None
    for disk in d.disks:
        if disk.capacity_bytes > MAX_DISK_CAPACITY:
            raise CorruptPackage(
                f"{name}: disk {disk.file_href or '(placeholder)'} declares a capacity of {disk.capacity_bytes} "
                f"bytes; no disk format holds more than {MAX_DISK_CAPACITY} (64 TiB): refused",
                {"file": disk.file_href, "declared_capacity": str(disk.capacity_bytes)},
            )
    return d


def read_descriptor_file(path: str | os.PathLike[str], configuration: str | None = None) -> OvfDescriptor:
    """Parse a lone ``.ovf`` file (no package around it: nothing else is checked)."""
    p = Path(path)
    try:
        fd, _ = open_regular(p, "descriptor")
    except InputFileError as exc:
        raise CorruptPackage(f"{p}: {exc.reason}") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_DESCRIPTOR_BYTES + 1)
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
        if name != href:  # ".gz" or "dir/.gz" inflates to no name at all: the destination itself
            try:
                name = _safe_name(name, f"{pkg}: {href} inflated")
            except CorruptPackage:
                raise CorruptPackage(
                    f"{pkg}: {href} would inflate to {name!r}, which is not a file name: refused", {"file": href}
                ) from None
        parents = {str(q) for q in PurePosixPath(name).parents}
        clash = next((u for u in used if u in parents or name in {str(q) for q in PurePosixPath(u).parents}), None)
        if clash is not None:
            raise CorruptPackage(f"{pkg}: {href} and {used[clash]} would be extracted as a file and a directory")
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
        # never through a link a package (or an earlier run) left where the file goes
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self.fh = os.fdopen(fd, "wb")
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


@contextlib.contextmanager
def _member_errors(member: str, pkg: str) -> Iterator[None]:
    """An OS refusal caused by what the package asks for (its name, its size) while writing
    ``member``: bad input naming the package and the member, never a host fault retried."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _CONTENT_ERRNOS:
            raise
        raise CorruptPackage(
            f"{pkg}: {member}: {_CONTENT_ERRNOS[exc.errno]} ({exc.strerror})", {"member": member}
        ) from None


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
    for q in reversed(PurePosixPath(plan.target_name).parents):
        if str(q) != "." and (dest / q).is_symlink():  # a link the package left in its own directory
            raise CorruptPackage(f"{pkg}: {plan.file.href} would be written under the symbolic link {q}: refused")
    with _member_errors(plan.file.href, pkg):
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


def _fd_reader(fd: int, offset: int, size: int, name: str, pkg: str):
    """Reads ``size`` bytes at ``offset`` of an open descriptor (pread: no shared file position)."""

    def read() -> Iterator[bytes]:
        n = 0
        while n < size:
            chunk = os.pread(fd, min(CHUNK, size - n), offset + n)
            if not chunk:
                raise CorruptPackage(f"{pkg}: member {name} truncated ({n} of {size} bytes)")
            n += len(chunk)
            yield chunk

    return read


def _open_package_file(path: Path) -> tuple[int, int]:
    """The operator's package file, opened without blocking and checked on the descriptor: a FIFO,
    a device or a directory is refused before a byte is read."""
    try:
        fd, st = open_regular(path, "package")
    except InputFileError as exc:
        raise CorruptPackage(exc.reason) from None
    return fd, st.st_size


def _tar_members(fd: int, pkg: str, archive_size: int) -> dict[str, bounded_tar.TarMember]:
    """The package's members, read by the bounded header reader (never ``tarfile``: see
    ``crossvisor.core.bounded_tar``); names checked, duplicates refused."""
    by_name: dict[str, bounded_tar.TarMember] = {}
    for m in bounded_tar.read_members(fd, archive_size, max_headers=MAX_MEMBERS):
        if m.is_dir:
            _safe_name(m.name, pkg, file=False)
            continue
        name = _safe_name(m.name, pkg)
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


def _member_reader(fd: int, members: dict[str, bounded_tar.TarMember], name: str, pkg: str):
    m = members[name]
    return _fd_reader(fd, m.offset, m.size, name, pkg)


def _open_ova(path: Path, dest: Path | None, configuration: str | None, made: list[Path]) -> Package:
    fd, archive_size = _open_package_file(path)
    try:
        return _read_ova(fd, archive_size, path, dest, configuration, made)
    finally:
        os.close(fd)


def _read_ova(
    fd: int, archive_size: int, path: Path, dest: Path | None, configuration: str | None, made: list[Path]
) -> Package:
    pkg = path.name
    members = _tar_members(fd, pkg, archive_size)
    ovfs = [n for n in members if n.endswith(".ovf")]
    if len(ovfs) != 1:
        raise CorruptPackage(f"{pkg}: expected exactly one .ovf descriptor, found {ovfs}")
    ovf_name = ovfs[0]
    ovf_bytes = _read_small(_member_reader(fd, members, ovf_name, pkg), MAX_DESCRIPTOR_BYTES, ovf_name, pkg)
    text = _decode_descriptor(ovf_bytes, ovf_name)
    d = _parse_descriptor(text, ovf_name, configuration)
    stem = ovf_name[:-4]
    mf_name, cert_name = stem + ".mf", stem + ".cert"
    manifest = None
    if mf_name in members:
        raw = _read_small(_member_reader(fd, members, mf_name, pkg), MAX_MANIFEST_BYTES, mf_name, pkg)
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
            PackageDisk(x, None, "raw" if not x.file_href else QEMU_FORMAT[x.format], not x.file_href) for x in d.disks
        ]
        return out
    _mkdirs(dest, made)
    _check_free_space(dest, plans, pkg)
    algos = {a for a, _ in (manifest or {}).values()}
    readers = {n: _member_reader(fd, members, n, pkg) for n in members}
    for p in plans:
        out.files[p.file.href] = _extract_plan(p, readers, dest, algos, manifest, mf_name, pkg, made)
    out.files_verified = True
    _finish_disks(out, dest, made)
    return out


class _DirFiles:
    """The files of an unpacked OVF, opened only through the package's directory: every name is
    walked component by component with ``O_NOFOLLOW`` relative to the directory's descriptor (no
    link followed, nothing outside reached), opened with ``O_NONBLOCK`` and checked with ``fstat``
    before a byte is read (a FIFO or device is refused, not waited on). A file is opened again to
    be read (a package may have thousands of chunks: never that many descriptors at once), and
    must then be the same file (device, inode, size) it was when it was sized."""

    def __init__(self, base: Path, pkg: str):
        self.base, self.pkg = base, pkg
        self.dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.seen: dict[str, tuple[int, int, int]] = {}  # name -> (st_dev, st_ino, st_size)

    def _open(self, name: str) -> tuple[int, os.stat_result] | None:
        parts = PurePosixPath(name).parts
        fd = self.dir_fd
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                flags |= os.O_NONBLOCK | os.O_NOCTTY if last else os.O_DIRECTORY
                try:
                    nfd = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise CorruptPackage(
                            f"{self.pkg}: {name} is (or lies under) a symbolic link: a package's files must be "
                            "inside its directory",
                            {"member": name},
                        ) from None
                    raise
                if fd != self.dir_fd:
                    os.close(fd)
                fd = nfd
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CorruptPackage(
                    f"{self.pkg}: {name} is not a regular file (a FIFO, a device or a directory): refused",
                    {"member": name},
                )
            os.set_blocking(fd, True)
        except BaseException:
            if fd != self.dir_fd:
                os.close(fd)
            raise
        return fd, st

    def open(self, name: str) -> tuple[int, int] | None:
        """(0, size) of the regular file ``name``; None when it does not exist."""
        if name not in self.seen:
            got = self._open(name)
            if got is None:
                return None
            fd, st = got
            os.close(fd)
            self.seen[name] = (st.st_dev, st.st_ino, st.st_size)
        return 0, self.seen[name][2]

    def reader(self, name: str):
        def read() -> Iterator[bytes]:
            got = self._open(name)
            if got is None or (got[1].st_dev, got[1].st_ino, got[1].st_size) != self.seen[name]:
                if got is not None:
                    os.close(got[0])
                raise CorruptPackage(f"{self.pkg}: {name} changed while the package was read", {"member": name})
            fd, st = got
            try:
                yield from _fd_reader(fd, 0, st.st_size, name, self.pkg)()
            finally:
                os.close(fd)

        return read

    def close(self) -> None:
        os.close(self.dir_fd)


def _open_ovf_dir(ovf_path: Path, dest: Path | None, configuration: str | None, made: list[Path]) -> Package:
    pkg = ovf_path.name
    base = ovf_path.parent
    try:
        files = _DirFiles(base, pkg)
    except FileNotFoundError:
        raise CorruptPackage(f"{pkg}: the package's directory does not exist") from None
    except NotADirectoryError:
        raise CorruptPackage(f"{pkg}: {base} is not a directory") from None
    try:
        return _read_ovf_dir(files, ovf_path, dest, configuration, made)
    finally:
        files.close()


def _read_ovf_dir(
    files: _DirFiles, ovf_path: Path, dest: Path | None, configuration: str | None, made: list[Path]
) -> Package:
    pkg = ovf_path.name
    base = ovf_path.parent
    opened = files.open(pkg)
    if opened is None:
        raise CorruptPackage(f"{pkg}: descriptor file does not exist")
    ovf_bytes = _read_small(files.reader(pkg), MAX_DESCRIPTOR_BYTES, pkg, pkg)
    text = _decode_descriptor(ovf_bytes, pkg)
    d = _parse_descriptor(text, pkg, configuration)
    mf_name, cert_name = ovf_path.with_suffix(".mf").name, ovf_path.with_suffix(".cert").name
    manifest = None
    if files.open(mf_name) is not None:
        raw = _read_small(files.reader(mf_name), MAX_MANIFEST_BYTES, mf_name, pkg)
        manifest = _parse_manifest(raw.decode("utf-8", "replace"), mf_name)
    sizes: dict[str, int] = {}
    for f in d.files():
        href = _safe_name(f.href, f"{pkg} ovf:href")
        names = _chunk_names(href, MAX_MEMBERS) if f.chunk_size else [href]
        for n in names:
            got = files.open(n)
            if got is None:
                break
            sizes[n] = got[1]
    if manifest is not None:  # a manifest may name files beside the descriptor we did not plan for
        for n in manifest:
            if n != pkg and n not in sizes:
                got = files.open(_safe_name(n, mf_name))
                if got is not None:
                    sizes[n] = got[1]
    plans, _ = _plan_files(d, sizes, pkg, f"{base} has no such file")
    file_members = [m for p in plans for m in p.members]
    _check_manifest(manifest, mf_name, pkg, ovf_bytes, file_members, pkg)
    out = Package(
        path=ovf_path,
        kind="ovf",
        descriptor=d,
        descriptor_name=pkg,
        descriptor_text=text,
        manifest=manifest,
        manifest_name=mf_name if manifest is not None else "",
        certificate=cert_name if (base / cert_name).is_file() and not (base / cert_name).is_symlink() else "",
        warnings=list(d.warnings),
    )
    in_place = dest is None or dest.resolve() == base.resolve()
    _assign_targets(plans, set(sizes), pkg)
    algos = {a for a, _ in (manifest or {}).values()}
    readers = {n: files.reader(n) for n in sizes}
    to_make = []
    for p in plans:
        if not p.file.compression and not p.file.chunk_size:
            # a plain file is used where it is: hash it in place (no copy); the disk checker
            # checks it again (no link) before qemu-img reads it
            out.files[p.file.href] = base / p.members[0]
            if dest is not None:
                _verify_in_place(p, readers, algos, manifest, mf_name, pkg)
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
        out.files[p.file.href] = _extract_plan(p, readers, target_dir, algos, manifest, mf_name, pkg, made)
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
            while name in taken or os.path.lexists(dest / name):
                name = f"_{name}"
            target = dest / name
            made.append(target)
            # O_EXCL|O_NOFOLLOW: a blank disk is a new file, never one a package placed there
            with _member_errors(f"placeholder disk {i} ({name})", pkg):
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "wb") as fh:
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
    elif info.virtual_size < disk.capacity_bytes and (
        disk.format != "vhd" or disk.capacity_bytes - info.virtual_size > VHD_ROUNDING_BYTES
    ):
        # only a VHD's CHS geometry explains a smaller disk; any other shortfall is data missing
        # (a chunked disk without its last chunk, a truncated raw file): the guest would see a
        # disk cut short, so it is refused, not warned about
        raise CorruptPackage(
            f"{pkg}: disk {disk.file_href} holds {info.virtual_size} bytes, less than its declared capacity "
            f"{disk.capacity_bytes} (a missing chunk, or a truncated file): refused",
            {**evidence, "declared_capacity": str(disk.capacity_bytes)},
        )
    elif info.virtual_size < disk.capacity_bytes:
        out.warnings.append(
            f"disk {disk.file_href} holds {info.virtual_size} bytes, less than its declared capacity "
            f"{disk.capacity_bytes} (VHD geometry rounding, or a sloppy exporter)"
        )
