"""OVA (tar) and unpacked-OVF packages: write with a manifest, read with verification.

Reading treats the package as hostile: members are copied out one by one (never
``extractall``), names are checked for traversal, only regular files are accepted, and every
file is hashed while it is copied so verification costs no second pass over the disks.
Anything wrong with a package is an ``InteropFailure`` (``CorruptPackage``): retrying the same
bytes cannot fix it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from domain.ovf import OvfDescriptor, OvfError, parse_ovf
from drivers.base import InteropFailure

CHUNK = 1 << 20
DIGESTS = {"sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}
_MF_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$")


class CorruptPackage(InteropFailure):
    """The package is malformed; ``reason`` names the file and what is wrong with it."""

    def __init__(self, reason: str, evidence: dict[str, str] | None = None):
        super().__init__(reason, evidence)


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
        out[name] = (algo, hexd)
    return out


# ------------------------------------------------------------------------------------- writing


def _ordered_files(descriptor_xml: str, files: list[Path]) -> tuple[OvfDescriptor, list[Path]]:
    """Files in References order; every href must be supplied and nothing else."""
    d = parse_ovf(descriptor_xml)
    by_name = {Path(f).name: Path(f) for f in files}
    hrefs = [x.file_href for x in d.disks if x.file_href]
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


def _safe_name(name: str, where: str) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or "\x00" in name:
        raise CorruptPackage(f"{where}: member name {name!r} escapes the package (path traversal)")
    return str(p)


def _parse_descriptor(text: bytes, name: str) -> OvfDescriptor:
    try:
        return parse_ovf(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CorruptPackage(f"{name}: descriptor is not UTF-8: {exc}") from None
    except OvfError as exc:
        raise CorruptPackage(f"{name}: invalid descriptor: {exc}") from None


def _verify(
    pkg: str,
    d: OvfDescriptor,
    ovf_name: str,
    ovf_bytes: bytes,
    manifest: dict[str, tuple[str, str]] | None,
    mf_name: str,
    digests: dict[str, dict[str, str]],
    sizes: dict[str, int],
) -> None:
    """Check file sizes against References and digests against the manifest (if present)."""
    for disk in d.disks:
        if disk.file_href and disk.file_size and sizes[disk.file_href] != disk.file_size:
            raise CorruptPackage(
                f"{pkg}: {disk.file_href} is {sizes[disk.file_href]} bytes, "
                f"References/File ovf:size says {disk.file_size}"
            )
    if manifest is None:
        return
    for name, (algo, want) in manifest.items():
        if name == ovf_name:
            got = hashlib.new(algo, ovf_bytes).hexdigest()
        elif name in digests:
            got = digests[name][algo]
        else:
            raise CorruptPackage(f"{mf_name}: lists {name!r} which is not in the package")
        if got != want:
            raise CorruptPackage(f"{pkg}: checksum of {name} does not match {mf_name} ({algo} {got} != {want})")
    for name in [ovf_name, *digests]:
        if name not in manifest:
            raise CorruptPackage(f"{mf_name}: {name} is in the package but not in the manifest")


def _decompress(path: Path, disk_compression: str, pkg: str, keep_source: bool) -> Path:
    """Inflate a gzip-compressed disk next to itself; returns the usable (inflated) path."""
    if not disk_compression:
        return path
    if disk_compression.lower() != "gzip":
        raise CorruptPackage(f"{pkg}: {path.name}: ovf:compression {disk_compression!r} unsupported")
    name = path.name[:-3] if path.name.endswith(".gz") else f"{path.name}.inflated"
    target = path.with_name(name)
    tmp = _atomic_target(target)
    try:
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        os.replace(tmp, target)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise CorruptPackage(f"{pkg}: {path.name}: gzip data is corrupt: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    if not keep_source:
        path.unlink()
    return target


def _open_tar(path: Path, pkg: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")  # plain tar only: an OVA is never compressed as a whole
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptPackage(f"{pkg}: not a readable tar archive: {exc}") from None
    except FileNotFoundError:
        raise CorruptPackage(f"{pkg}: package file does not exist") from None


def read_ova(path: Path, dest_dir: Path) -> tuple[OvfDescriptor, dict[str, Path]]:
    """Extract and verify an OVA; returns the descriptor and href -> extracted (inflated) path."""
    path, dest_dir = Path(path), Path(dest_dir)
    pkg = path.name
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _open_tar(path, pkg) as tar:
            try:
                members = tar.getmembers()
            except (tarfile.TarError, EOFError) as exc:
                # Members parsed so far: the last one is where the archive breaks.
                last = tar.members[-1].name if tar.members else "(first header)"
                raise CorruptPackage(f"{pkg}: truncated or corrupt tar at member {last!r}: {exc}") from None
            by_name: dict[str, tarfile.TarInfo] = {}
            for m in members:
                name = _safe_name(m.name, pkg)
                if m.isdir():
                    continue
                if not m.isfile():
                    raise CorruptPackage(f"{pkg}: member {m.name!r} is not a regular file")
                if name in by_name:
                    raise CorruptPackage(f"{pkg}: member {name!r} appears twice")
                by_name[name] = m
            ovfs = [n for n in by_name if n.endswith(".ovf")]
            if len(ovfs) != 1:
                raise CorruptPackage(f"{pkg}: expected exactly one .ovf descriptor, found {ovfs}")
            ovf_name = ovfs[0]
            ovf_bytes = _read_member(tar, by_name[ovf_name], pkg)
            d = _parse_descriptor(ovf_bytes, ovf_name)
            mf_name = ovf_name[:-4] + ".mf"
            manifest = None
            if mf_name in by_name:
                mf_text = _read_member(tar, by_name[mf_name], pkg).decode("utf-8", "replace")
                manifest = _parse_manifest(mf_text, mf_name)
            algos = {a for a, _ in (manifest or {}).values()}  # no manifest: nothing to hash

            digests: dict[str, dict[str, str]] = {}
            sizes: dict[str, int] = {}
            extracted: dict[str, Path] = {}
            for disk in d.disks:
                href = disk.file_href
                if not href:
                    continue
                href_name = _safe_name(href, f"{ovf_name} ovf:href")
                if href_name not in by_name:
                    raise CorruptPackage(f"{pkg}: descriptor references {href} but the package has no such member")
                target = dest_dir / href_name
                target.parent.mkdir(parents=True, exist_ok=True)
                digests[href], sizes[href] = _extract_hashing(tar, by_name[href_name], target, algos, pkg)
                extracted[href] = target
            # Certificates are optional and not verified; anything else unknown is suspicious.
            known = {ovf_name, mf_name, *(_safe_name(h, pkg) for h in extracted)}
            stray = [n for n in by_name if n not in known and not n.endswith(".cert")]
            if stray:
                raise CorruptPackage(f"{pkg}: members {stray} are not referenced by {ovf_name}")
            _verify(pkg, d, ovf_name, ovf_bytes, manifest, mf_name, digests, sizes)
    except CorruptPackage:
        raise
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptPackage(f"{pkg}: truncated or corrupt tar: {exc}") from None
    for disk in d.disks:
        if disk.file_href:
            extracted[disk.file_href] = _decompress(extracted[disk.file_href], disk.compression, pkg, keep_source=False)
    return d, extracted


def _read_member(tar: tarfile.TarFile, m: tarfile.TarInfo, pkg: str) -> bytes:
    fh = tar.extractfile(m)
    assert fh is not None  # regular file checked by the caller
    data = fh.read()
    if len(data) != m.size:
        raise CorruptPackage(f"{pkg}: member {m.name} truncated ({len(data)} of {m.size} bytes)")
    return data


def _extract_hashing(
    tar: tarfile.TarFile, m: tarfile.TarInfo, target: Path, algos: set[str], pkg: str
) -> tuple[dict[str, str], int]:
    src = tar.extractfile(m)
    assert src is not None
    hashes = {a: hashlib.new(a) for a in algos}
    n = 0
    tmp = _atomic_target(target)
    try:
        with open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                for h in hashes.values():
                    h.update(chunk)
                dst.write(chunk)
                n += len(chunk)
        if n != m.size:
            raise CorruptPackage(f"{pkg}: member {m.name} truncated ({n} of {m.size} bytes)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {a: h.hexdigest() for a, h in hashes.items()}, n


def read_ovf_dir(ovf_path: Path) -> tuple[OvfDescriptor, dict[str, Path]]:
    """Verify an unpacked OVF (``X.ovf`` + optional ``X.mf`` + files beside it)."""
    ovf_path = Path(ovf_path)
    pkg = ovf_path.name
    try:
        ovf_bytes = ovf_path.read_bytes()
    except FileNotFoundError:
        raise CorruptPackage(f"{pkg}: descriptor file does not exist") from None
    d = _parse_descriptor(ovf_bytes, pkg)
    mf_path = ovf_path.with_suffix(".mf")
    manifest = _parse_manifest(mf_path.read_text(errors="replace"), mf_path.name) if mf_path.exists() else None
    algos = {a for a, _ in (manifest or {}).values()}  # no manifest: nothing to hash
    base = ovf_path.parent
    digests: dict[str, dict[str, str]] = {}
    sizes: dict[str, int] = {}
    files: dict[str, Path] = {}
    for disk in d.disks:
        if not disk.file_href:
            continue
        p = base / _safe_name(disk.file_href, f"{pkg} ovf:href")
        if not p.is_file():
            raise CorruptPackage(f"{pkg}: references {disk.file_href} but {p} does not exist")
        hashes = {a: hashlib.new(a) for a in algos}
        with open(p, "rb") as fh:
            while chunk := fh.read(CHUNK):
                for h in hashes.values():
                    h.update(chunk)
        digests[disk.file_href] = {a: h.hexdigest() for a, h in hashes.items()}
        sizes[disk.file_href] = p.stat().st_size
        files[disk.file_href] = p
    _verify(pkg, d, pkg, ovf_bytes, manifest, mf_path.name, digests, sizes)
    for disk in d.disks:
        if disk.file_href:
            files[disk.file_href] = _decompress(files[disk.file_href], disk.compression, pkg, keep_source=True)
    return d, files
