"""A bounded reader of tar headers for packages from elsewhere (OVA files), with no ``tarfile``.

Why not ``tarfile``: it keeps a GNU long-name or pax header whole in memory whatever its declared
size (a 1.5 GiB long-name header held 1.5 GiB), and the pax parser of CPython before 3.11.10 /
3.12.6 is quadratic on crafted headers (CVE-2024-6232). An OVA is plain USTAR (DSP0243: regular
files only), so what is read here is small and fixed:

* 512-byte headers with a verified checksum; sizes in octal or GNU base-256;
* a GNU long name (``L``) of at most ``MAX_NAME_BYTES``; a pax header (``x``/``g``) of at most
  ``MAX_PAX_BYTES``, parsed record by record in linear time (only ``path`` and ``size`` are used);
* regular files and directories only: links, devices, FIFOs, sparse and multi-volume entries are
  refused by name, before any of their data is looked at;
* at most ``max_headers`` headers, and every member's data inside the archive.

Nothing here allocates more than ``MAX_PAX_BYTES`` for a header or takes time beyond a
constant per header; the data of a member is never read (the caller reads it with ``pread``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 512
MAX_NAME_BYTES = 4096  # PATH_MAX: no file system here takes a longer name
MAX_PAX_BYTES = 64 * 1024  # a real pax header holds a path, a size and a few times: < 1 KiB

_KIND = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"S": "a sparse tar entry (it expands beyond its stored bytes)",
    b"K": "a long link name (links are not package files)",
    b"M": "a multi-volume continuation",
    b"V": "a volume label",
}


class TarFormatError(Exception):
    """The archive is not a plain tar a package may be: ``reason`` says where and why."""


@dataclass(frozen=True)
class TarMember:
    name: str  # as stored (pax path / GNU long name / ustar prefix+name), not yet checked
    size: int
    offset: int  # where its data starts in the archive
    is_dir: bool


def _number(field: bytes, what: str, at: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        if field[0] != 0x80:
            raise TarFormatError(f"header at byte {at}: negative or oversized {what}")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise TarFormatError(f"header at byte {at}: {what} is not an octal number")
    return int(text, 8)


def _checksum_ok(hdr: bytes, at: int) -> bool:
    stored = _number(hdr[148:156], "checksum", at)
    unsigned = sum(hdr[:148]) + 8 * 32 + sum(hdr[156:])
    signed = unsigned - sum(b for b in hdr[:148] + hdr[156:] if b > 127) * 2  # old tars summed signed bytes
    return stored in (unsigned, signed)


def _pax_records(data: bytes, at: int) -> dict[str, str]:
    """``"%d %s=%s\\n"`` records, each length read once: linear in the header's size."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\0") == b"":
            break
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise TarFormatError(f"pax header at byte {at}: a record does not start with its length")
        length = int(digits)
        end = pos + length
        if length <= len(digits) + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise TarFormatError(f"pax header at byte {at}: a record's length is wrong")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise TarFormatError(f"pax header at byte {at}: a record has no '='")
        try:
            out[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TarFormatError(f"pax header at byte {at}: a record is not UTF-8") from None
        pos = end
    return out


def _decode_name(raw: bytes, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TarFormatError(f"header at byte {at}: member name is not UTF-8") from None


def _stored_name(hdr: bytes, long_name: str | None, pax: dict[str, str], at: int) -> str:
    if "path" in pax:
        return pax["path"]
    if long_name is not None:
        return long_name
    name = _decode_name(hdr[:100].split(b"\0", 1)[0], at)
    if hdr[257:262] == b"ustar":
        prefix = _decode_name(hdr[345:500].split(b"\0", 1)[0], at)
        if prefix:
            name = f"{prefix}/{name}"
    return name


def read_members(fd: int, archive_size: int, *, max_headers: int) -> list[TarMember]:
    """Every member of the tar open on ``fd`` (a regular file of ``archive_size`` bytes), in order."""
    return list(iter_members(fd, archive_size, max_headers=max_headers))


def iter_members(fd: int, archive_size: int, *, max_headers: int) -> Iterator[TarMember]:
    """``read_members`` one member at a time (a caller may stop early)."""
    seen = False
    pos = headers = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        if pos + BLOCK > archive_size:
            if pos == archive_size and pos > 0 and not long_name and not pax:
                return  # no end-of-archive blocks: tolerated, as tar(1) does
            raise TarFormatError(f"truncated tar: a header at byte {pos} ends past the end of the archive")
        hdr = os.pread(fd, BLOCK, pos)
        if len(hdr) != BLOCK:
            raise TarFormatError(f"truncated tar: short read at byte {pos}")
        if hdr == bytes(BLOCK):
            if long_name is not None or pax:
                raise TarFormatError(f"header at byte {pos}: the archive ends after a long-name or pax header")
            if not seen and pos == 0:
                raise TarFormatError("empty tar archive")
            return
        headers += 1
        if headers > max_headers:
            raise TarFormatError(f"more than {max_headers} tar headers: not an OVF package")
        if not _checksum_ok(hdr, pos):
            raise TarFormatError(f"header at byte {pos}: checksum mismatch (not a tar archive, or corrupt)")
        size = _number(hdr[124:136], "size", pos)
        kind = hdr[156:157]
        data_at = pos + BLOCK
        if data_at + size > archive_size:
            label = (
                _stored_name(hdr, long_name, pax, pos)
                if kind not in (b"L", b"x", b"g")
                else "(a long-name or pax header)"
            )
            raise TarFormatError(f"truncated tar: member {label!r} at byte {pos} ends past the end of the archive")
        next_pos = data_at + -(-size // BLOCK) * BLOCK
        if kind in (b"L", b"x", b"g"):
            bound = MAX_NAME_BYTES if kind == b"L" else MAX_PAX_BYTES
            if size > bound:
                what = "long-name" if kind == b"L" else "pax"
                raise TarFormatError(f"{what} header at byte {pos} is {size} bytes (at most {bound}): refused")
            data = os.pread(fd, size, data_at)
            if kind == b"L":
                long_name = _decode_name(data.split(b"\0", 1)[0], pos)
            elif kind == b"x":
                pax = _pax_records(data, pos)
                if any(k.startswith("GNU.sparse.") for k in pax):
                    raise TarFormatError(
                        f"member {pax.get('path', '?')!r} at byte {pos} is a sparse tar entry (it expands beyond its "
                        "stored bytes)"
                    )
            else:
                _pax_records(data, pos)  # global defaults: validated, not used
            pos = next_pos
            continue
        if kind in _KIND or kind not in (b"0", b"\0", b"7", b"5"):
            label = _KIND.get(kind, f"of unknown type {kind!r}")
            stored = _stored_name(hdr, long_name, pax, pos)
            raise TarFormatError(f"member {stored!r} is {label}: a package holds regular files only")
        name = _stored_name(hdr, long_name, pax, pos)
        if "size" in pax:
            if not pax["size"].isdigit() or len(pax["size"]) > 20:
                raise TarFormatError(f"pax header before byte {pos}: size is not a number")
            size = int(pax["size"])
            if data_at + size > archive_size:
                raise TarFormatError(f"truncated tar: member {name!r} ends past the end of the archive")
            next_pos = data_at + -(-size // BLOCK) * BLOCK
        long_name, pax = None, {}
        seen = True
        yield TarMember(name, size, data_at, kind == b"5")
        pos = next_pos


def looks_like_ova(fd: int, archive_size: int, *, first: int = 16) -> bool:
    """True when one of the first ``first`` members is a ``.ovf`` file (the descriptor comes
    first in an OVA; a few entries before it are tolerated)."""
    try:
        for i, m in enumerate(iter_members(fd, archive_size, max_headers=first * 3)):
            if not m.is_dir and m.name.lower().endswith(".ovf"):
                return True
            if i + 1 >= first:
                return False
    except TarFormatError:
        return False
    return False
