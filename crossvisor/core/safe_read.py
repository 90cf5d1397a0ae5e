"""Bounded, typed reads of operator-supplied files: specs, inventories, credentials, disk images.

Every file the CLI or a worker reads on an operator's word goes through here, because a path
in a spec can name anything: ``/dev/zero`` (read without bound: the worker runs out of memory),
a FIFO (the read blocks forever), ``/proc/self/environ`` (size 0, content the process's secrets),
a directory, a UTF-16 file, ``/etc/shadow``. The rules:

- only regular files, opened without blocking and checked on the open descriptor (no race between
  a check and the read); nothing on procfs, sysfs or under /dev;
- a size bound, enforced on the bytes actually read (a pseudo-file's size is a lie);
- text is strict UTF-8 (a UTF-8 BOM is allowed), with a clear error for UTF-16/32 and for binary data;
- YAML refuses duplicate keys, aliases that expand past a budget ("billion laughs"), recursive
  aliases and nesting past a depth limit;
- an error names the file, the line and the reason, and never quotes the content: a YAML syntax
  error in an inventory would otherwise put the offending line (a password) into workflow history.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from crossvisor.core import bounded_tar
from crossvisor.core.errors import BadInput

__all__ = [
    "DISK_IMAGE_FORMATS",
    "InputFileError",
    "ParsedYaml",
    "check_disk_image",
    "check_package_disk",
    "open_regular",
    "parse_yaml",
    "read_text_bounded",
]

_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
MAX_IMAGE_BYTES = 4 * 1024**4  # 4 TiB: larger than any lab guest; a bound, not a target
MAX_DESCRIPTOR_BYTES = 64 * 1024  # a vmdk text descriptor is ~1 KiB
MAX_OVF_BYTES = 16 * 1024 * 1024
DISK_IMAGE_FORMATS = ("qcow2", "vmdk", "vpc", "vhdx", "raw", "ova", "ovf")


class InputFileError(BadInput):
    """A file that cannot be used: ``path[:line[:column]]: reason``. Never carries file content."""

    def __init__(
        self, path: str | os.PathLike[str], reason: str = "", line: int | None = None, column: int | None = None
    ):
        self.path = str(path)
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        at = f":{self.line}" if self.line else ""
        at += f":{self.column}" if self.line and self.column else ""
        return f"{self.path}{at}: {self.reason}" if self.reason else self.path


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _pseudo_devices() -> set[int]:
    devs = set()
    for root in ("/proc", "/sys"):
        try:
            devs.add(os.stat(root).st_dev)
        except OSError:
            pass
    return devs


def open_regular(
    path: str | os.PathLike[str], what: str, *, follow: bool = True, dir_fd: int | None = None
) -> tuple[int, os.stat_result]:
    """An O_RDONLY descriptor on a regular file that is no pseudo-file, checked on the descriptor.

    ``follow=False``: the last component may not be a symbolic link (``O_NOFOLLOW``), for a file a
    package or a descriptor names, as opposed to one the operator named; with ``dir_fd`` the path
    is taken relative to that directory."""
    return _open_regular(path, what, follow=follow, dir_fd=dir_fd)


def _open_regular(
    path: str | os.PathLike[str], what: str, *, follow: bool = True, dir_fd: int | None = None
) -> tuple[int, os.stat_result]:
    p = os.fspath(path)
    if not p:
        raise InputFileError("(empty path)", f"no {what} file named")
    if dir_fd is None:
        real = os.path.realpath(p)
        for root in _PSEUDO_ROOTS:
            if real == root or real.startswith(root + "/"):
                raise InputFileError(p, f"{what} must be a regular file, not a file under {root}")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fd = os.open(p, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise InputFileError(p, f"{what} does not exist") from None
    except PermissionError:
        raise InputFileError(p, f"{what} is not readable (permission denied)") from None
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise InputFileError(p, f"{what} is a symbolic link: not followed") from None
        raise InputFileError(p, f"cannot open {what}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(p, f"{what} must be a regular file, this is {_kind_of(st.st_mode)}")
        if st.st_dev in _pseudo_devices():  # a bind mount or a symlink swapped after realpath
            raise InputFileError(p, f"{what} must be a regular file, not a /proc or /sys pseudo-file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _human(n: int) -> str:
    """1048576 -> '1 MiB'; a size that is not a whole unit keeps its exact byte count."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            whole = n % (1 << shift) == 0
            return f"{n >> shift} {unit}" if whole else f"{n:,} bytes ({n / (1 << shift):.1f} {unit})"
    return f"{n} bytes"


def _read_bounded(fd: int, p: str, what: str, max_bytes: int, size: int) -> bytes:
    if size > max_bytes:
        raise InputFileError(p, f"{what} is {_human(size)}; at most {_human(max_bytes)} is read")
    chunks, total = [], 0
    while total <= max_bytes:
        chunk = os.read(fd, min(1024 * 1024, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:  # the file grew, or its size was a lie
        raise InputFileError(p, f"{what} is larger than {_human(max_bytes)}; at most that is read")
    return b"".join(chunks)


def _line_col(data: bytes | str, offset: int) -> tuple[int, int]:
    nl = "\n" if isinstance(data, str) else b"\n"
    line = data.count(nl, 0, offset) + 1  # type: ignore[arg-type]
    col = offset - (data.rfind(nl, 0, offset) + 1) + 1  # type: ignore[arg-type]
    return line, col


def decode_text(data: bytes, p: str, what: str) -> str:
    """Strict UTF-8 (a UTF-8 BOM is dropped); UTF-16/32 and binary data are named, not guessed."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if data.startswith(bom):
            raise InputFileError(p, f"{what} is {name} encoded; save it as UTF-8")
    head = data[:64]
    even, odd = head[0::2], head[1::2]
    if len(head) >= 8 and any(
        a.count(0) >= len(a) * 3 // 4 and b.count(0) <= len(b) // 4 for a, b in ((even, odd), (odd, even))
    ):
        raise InputFileError(p, f"{what} looks UTF-16 encoded (no byte order mark); save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        line, col = _line_col(data, e.start)
        raise InputFileError(p, f"{what} is not valid UTF-8; save it as UTF-8", line, col) from None
    nul = text.find("\x00")
    if nul >= 0:
        line, col = _line_col(text, nul)
        raise InputFileError(p, f"{what} contains a NUL byte: binary data, not text", line, col)
    return text


def read_text_bounded(path: str | os.PathLike[str], *, what: str, max_bytes: int) -> str:
    """The text of a regular file of at most ``max_bytes`` bytes, strictly UTF-8.

    ``what`` names the file's role in errors ("campaign spec", "inventory", "credential file").
    Raises ``InputFileError`` (a ``BadInput``) naming the file, the line where it applies and the
    reason; the message never contains the file's content."""
    fd, st = _open_regular(path, what)
    try:
        data = _read_bounded(fd, os.fspath(path), what, max_bytes, st.st_size)
    finally:
        os.close(fd)
    return decode_text(data, os.fspath(path), what)


# -- YAML ----------------------------------------------------------------------------------------

_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_TOKEN = re.compile(r"<[a-z ]{3,30}>")  # PyYAML's names for tokens: '<stream end>', '<block mapping start>'
_ONE_CHAR = re.compile(r".|\\.|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}", re.DOTALL)


def _problem_text(e: yaml.YAMLError) -> str:
    """PyYAML's reason without the file's content: its snippet is dropped, and quoted text (an
    alias name, a tag) is elided; single quoted characters (``':'``) stay, they name the syntax."""
    problem, context = getattr(e, "problem", None), getattr(e, "context", None)
    if problem and context:
        problem = f"{context}{', ' if problem.startswith('but') else ': '}{problem}"
    problem = problem or context or type(e).__name__
    return _QUOTED.sub(
        lambda m: m[0] if _ONE_CHAR.fullmatch(m[0][1:-1]) or _TOKEN.fullmatch(m[0][1:-1]) else "'…'", str(problem)
    )


class _Refused(Exception):
    def __init__(self, mark: Any, reason: str):
        super().__init__(reason)
        self.mark = mark
        self.reason = reason


class _Loader(yaml.SafeLoader):
    """SafeLoader with a nesting limit while composing (deep input otherwise ends in RecursionError)
    and value errors that carry their position."""

    max_depth = 32

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise _Refused(self.peek_event().start_mark, f"nested deeper than {self.max_depth} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:  # type: ignore[override]
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as e:
            if isinstance(e, yaml.YAMLError):
                raise
            raise _Refused(node.start_mark, "invalid value (a number too long, or an impossible date)") from None


def _key_label(node: ScalarNode) -> str:
    # the key is shown only when it reads like a field name; a secret used as a key is not echoed
    v = node.value
    return f" {v!r}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,39}", v) else ""


def _check_tree(root: Node, max_depth: int, max_nodes: int) -> None:
    """Walk the composed graph as construction would expand it: duplicate keys, a node budget
    (aliases included, so an alias bomb stops here), recursive aliases, depth."""
    count = 0
    on_path: set[int] = set()

    def walk(node: Node, depth: int) -> None:
        nonlocal count
        count += 1
        if count > max_nodes:
            raise _Refused(node.start_mark, f"more than {max_nodes} values once aliases are expanded (an alias bomb?)")
        if depth > max_depth:
            raise _Refused(node.start_mark, f"nested deeper than {max_depth} levels (aliases included)")
        if isinstance(node, ScalarNode):
            return
        if id(node) in on_path:
            raise _Refused(node.start_mark, "an alias refers to a node that contains it (a recursive structure)")
        on_path.add(id(node))
        if isinstance(node, MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, ScalarNode):
                    raise _Refused(key.start_mark, "a mapping key must be a plain value, not a list or mapping")
                if key.tag != "tag:yaml.org,2002:merge":
                    ident = (key.tag, key.value)
                    if ident in seen:
                        raise _Refused(key.start_mark, f"duplicate key{_key_label(key)} (first at line {seen[ident]})")
                    seen[ident] = key.start_mark.line + 1
                walk(key, depth + 1)
                walk(value, depth + 1)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                walk(item, depth + 1)
        on_path.discard(id(node))

    walk(root, 0)


@dataclass
class ParsedYaml:
    """A parsed document and its node tree, to point an error about a field at its line."""

    data: Any
    root: Node | None

    def line_of(self, loc: tuple[Any, ...] | list[Any]) -> int | None:
        """1-based line of the deepest node of ``loc`` (a field path: keys and list indexes)
        that exists in the document; the key's line for a mapping entry."""
        node, line = self.root, (self.root.start_mark.line + 1 if self.root is not None else None)
        for part in loc:
            if isinstance(node, MappingNode):
                for key, value in node.value:
                    if isinstance(key, ScalarNode) and key.value == str(part):
                        node, line = value, key.start_mark.line + 1
                        break
                else:
                    return line
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def parse_yaml(text: str, *, where: str, max_depth: int = 32, max_nodes: int = 100_000) -> ParsedYaml:
    """One YAML document, safely: see the module docstring. Raises ``InputFileError`` with the line
    and column of the problem, never the offending text."""
    loader_cls = type("_BoundedLoader", (_Loader,), {"max_depth": max_depth})
    loader = None
    try:
        loader = loader_cls(text)
        root = loader.get_single_node()
        if root is None:
            return ParsedYaml(None, None)
        _check_tree(root, max_depth, max_nodes)
        data = loader.construct_document(root)
    except _Refused as e:
        raise InputFileError(where, f"invalid YAML: {e.reason}", e.mark.line + 1, e.mark.column + 1) from None
    except yaml.reader.ReaderError as e:
        line, col = _line_col(text, e.position)
        raise InputFileError(
            where, f"invalid YAML: control character U+{e.character:04X} is not allowed", line, col
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise InputFileError(where, f"invalid YAML: {_problem_text(e)}", line, col) from None
    except yaml.YAMLError as e:
        raise InputFileError(where, f"invalid YAML: {_problem_text(e)}") from None
    except RecursionError:  # a limit set above Python's recursion depth: still an answer, not a crash
        raise InputFileError(where, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return ParsedYaml(data, root)


# -- disk images and packages --------------------------------------------------------------------

_VMDK_EXTENT = re.compile(
    r'^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(VMFSSPARSE|VMFSRDM|VMFSRAW|VMFS|FLAT|SPARSE|ZERO)\b(?:\s+"([^"]*)")?',
    re.IGNORECASE | re.MULTILINE,
)
_VMDK_CREATE_TYPE = re.compile(r'^\s*createType\s*=\s*"([^"]*)"', re.IGNORECASE | re.MULTILINE)
_VMDK_PARENT = re.compile(r"^\s*parentCID\s*=\s*([0-9a-fA-F]+)", re.MULTILINE)
_VMDK_TYPES = (
    "monolithicSparse",
    "streamOptimized",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "vmfs",
)


def _pread(fd: int, n: int, offset: int) -> bytes:
    # offsets come from the file's own header: one past any file's end reads nothing (a header
    # field of 2**64 sectors is not an OverflowError)
    return os.pread(fd, n, offset) if 0 <= offset < 1 << 62 else b""


def _check_vmdk_descriptor(text: str, p: str, base: Path, *, embedded: bool, self_contained: bool = False) -> None:
    m = _VMDK_CREATE_TYPE.search(text)
    if not m and embedded:
        raise InputFileError(p, "vmdk extent of a split disk: give the descriptor .vmdk that names it")
    if not m:
        raise InputFileError(p, "vmdk descriptor has no createType")
    create_type = m.group(1)
    if create_type not in _VMDK_TYPES:
        raise InputFileError(p, f"vmdk createType is not one of {list(_VMDK_TYPES)}")
    parent = _VMDK_PARENT.search(text)
    if parent and parent.group(1).lower() != "ffffffff":
        raise InputFileError(p, "vmdk is a delta disk (it has a parent): give the full disk, not a snapshot delta")
    extents = _VMDK_EXTENT.findall(text)
    if not extents:
        raise InputFileError(p, "vmdk descriptor lists no extent")
    if embedded:
        return  # a monolithic sparse/stream file is its own single extent
    if self_contained:
        raise InputFileError(
            p, "vmdk is a descriptor naming extent files: a package disk must be one self-contained file"
        )
    try:
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise InputFileError(p, f"cannot open the descriptor's directory: {e.strerror}") from None
    try:
        _check_extents(extents, p, dir_fd)
    finally:
        os.close(dir_fd)


def _check_extents(extents: list[tuple[str, str, str, str]], p: str, dir_fd: int) -> None:
    for _access, _size, kind, name in extents:
        kind = kind.upper()
        if kind in ("VMFSRDM", "VMFSRAW"):
            raise InputFileError(p, "vmdk maps a raw device (RDM): not allowed as an image source")
        if kind == "ZERO":
            continue
        # qemu opens every extent the descriptor names: keep them beside the descriptor, so a
        # crafted descriptor cannot make the worker read /etc/shadow or /dev/zero as "disk data"
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise InputFileError(p, "vmdk extent files must sit beside the descriptor (a plain file name)")
        try:  # relative to the descriptor's directory, no link followed, a FIFO not waited on
            fd, _st = _open_regular(name, "extent", follow=False, dir_fd=dir_fd)
        except InputFileError as e:
            raise InputFileError(p, f"vmdk {e.reason} ({name})") from None
        os.close(fd)


def _check_sparse_vmdk(fd: int, head: bytes, p: str, *, self_contained: bool) -> None:
    (capacity,) = struct.unpack("<Q", head[12:20])
    desc_sector, desc_sectors = struct.unpack("<QQ", head[28:44])
    if not desc_sector or not desc_sectors:
        raise InputFileError(p, "vmdk extent without an embedded descriptor: give the descriptor .vmdk")
    n = min(desc_sectors * 512, MAX_DESCRIPTOR_BYTES)
    text = _pread(fd, n, desc_sector * 512).split(b"\x00", 1)[0].decode("utf-8", "replace")
    # qemu reads a sparse header of capacity 0 as a wrapper: its embedded descriptor is then a
    # full descriptor, and every extent it names is opened
    _check_vmdk_descriptor(text, p, Path(p).parent, embedded=capacity != 0, self_contained=self_contained)


def _tar_has_ovf(fd: int, size: int) -> bool:
    # the bounded header reader, never tarfile (CVE-2024-6232, unbounded long names)
    try:
        return bounded_tar.looks_like_ova(fd, size)
    except OSError:
        return False


def check_disk_image(path: str | os.PathLike[str], *, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """The format of an image ``source`` (see ``_detect_image``), after the one disk checker
    (``check_package_disk``) passed it as that format: the same checks as for a package's disk,
    except that the operator's own path may be a link and a VMDK descriptor may name extents
    beside it."""
    fmt = _detect_image(path, max_bytes=max_bytes)
    if fmt in ("qcow2", "vmdk", "vpc", "vhdx", "raw"):
        check_package_disk(path, fmt, self_contained=False, follow=True)
    return fmt


def _detect_image(path: str | os.PathLike[str], *, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """The format of an image ``source``: one of ``DISK_IMAGE_FORMATS``, detected from the content
    (never from the name). Anything else is refused with the reason (``InputFileError``).

    qcow2 (v2/v3, no backing file, no external data file), vmdk (monolithic sparse and
    streamOptimized by their header, text descriptors with their extents beside them, no delta
    disks, no raw device maps), vpc (fixed or dynamic, not differencing), vhdx, OVA (a tar with
    an .ovf descriptor), OVF (an Envelope in the OVF namespace), raw with an MBR or GPT signature.
    A backing file, a parent or an extent elsewhere would make the worker read another file, so
    those are refused too."""
    p = os.fspath(path)
    fd, st = _open_regular(p, "image source")
    try:
        size = st.st_size
        if size > max_bytes:
            raise InputFileError(p, f"image source is {_human(size)}; at most {_human(max_bytes)} is accepted")
        head = _pread(fd, 4096, 0)
        if head.lstrip().startswith(b"# Disk DescriptorFile"):
            text = decode_text(
                _read_bounded(fd, p, "vmdk descriptor", MAX_DESCRIPTOR_BYTES, size), p, "vmdk descriptor"
            )
            _check_vmdk_descriptor(text, p, Path(p).parent, embedded=False)
            return "vmdk"
        stripped = head.lstrip(codecs.BOM_UTF8).lstrip()
        if stripped.startswith(b"<"):
            if size > MAX_OVF_BYTES:
                raise InputFileError(p, f"OVF descriptor is larger than {_human(MAX_OVF_BYTES)}")
            start = _pread(fd, 64 * 1024, 0)
            if b"Envelope" in start and b"schemas.dmtf.org/ovf/envelope/" in start:
                return "ovf"
            raise InputFileError(p, "XML that is not an OVF descriptor (no Envelope in the OVF namespace)")
        if size < 512:
            raise InputFileError(p, f"image source is {size} bytes: too small to be a disk image or a package")
        if head[:4] == b"QFI\xfb":
            version, backing_offset = struct.unpack(">IQ", head[4:16])
            if version not in (2, 3):
                raise InputFileError(p, f"qcow2 version {version} is not supported (2 or 3)")
            if backing_offset:
                raise InputFileError(p, "qcow2 image has a backing file: give a standalone image (qemu-img convert)")
            if version == 3 and len(head) >= 80:
                (incompatible,) = struct.unpack(">Q", head[72:80])
                if incompatible & 0x4:
                    raise InputFileError(p, "qcow2 image keeps its data in an external file: not allowed")
            return "qcow2"
        if head[:8] == b"vhdxfile":
            return "vhdx"
        if head[:4] == b"KDMV":
            _check_sparse_vmdk(fd, head, p, self_contained=False)
            return "vmdk"
        footer = _pread(fd, 512, size - 512)
        # a dynamic VHD starts with a copy of its footer; a fixed one has it only at the end (a
        # few old tools wrote a 511-byte footer)
        vhd = next((b for b in (head[:512], footer, footer[1:]) if b[:8] == b"conectix"), None)
        if vhd is not None:
            (disk_type,) = struct.unpack(">I", vhd[60:64])
            if disk_type == 4:
                raise InputFileError(p, "VHD is a differencing disk (it has a parent): give the full disk")
            if disk_type not in (2, 3):
                raise InputFileError(p, f"VHD disk type {disk_type} is not fixed (2) or dynamic (3)")
            return "vpc"
        if head[257:262] == b"ustar" or p.lower().endswith(".ova"):
            if _tar_has_ovf(fd, size):
                return "ova"
            raise InputFileError(p, "not an OVA package: no .ovf descriptor among its first entries")
        if head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART" or _pread(fd, 8, 4096) == b"EFI PART":
            return "raw"
        raise InputFileError(
            p,
            "not a disk image or a package: expected qcow2, vmdk, VHD, VHDX, OVA, OVF, "
            "or a raw disk with an MBR or GPT partition table",
        )
    finally:
        os.close(fd)


_MAGIC = {b"QFI\xfb": "qcow2", b"KDMV": "vmdk", b"COWD": "vmdk (VMware 3 / ESX sparse)", b"vhdxfile": "vhdx"}


def check_package_disk(
    path: str | os.PathLike[str], fmt: str, *, self_contained: bool = True, follow: bool = False
) -> None:
    """The one check before qemu-img reads a disk it did not make (a package's disk, an image
    source): ``path`` is a regular file and no link (``O_NOFOLLOW``, ``O_NONBLOCK``, checked on the
    descriptor), its content is the qemu format ``fmt`` it is read as, and nothing in it makes
    qemu open another file: no qcow2 backing or external data file, no VHD parent, no VMDK delta,
    and (``self_contained``, a package's disk) no VMDK descriptor naming extents at all; otherwise
    extents only beside the descriptor, regular, no links. Raw is read as raw by qemu (never
    probed), so any content is a raw disk. Raises ``InputFileError`` naming the file and reason.
    Nothing but ``path`` (and, outside packages, the extents beside it) is opened."""
    p = os.fspath(path)
    fd, st = _open_regular(p, "disk image", follow=follow)
    try:
        if st.st_size > MAX_IMAGE_BYTES:
            raise InputFileError(p, f"disk image is {_human(st.st_size)}; at most {_human(MAX_IMAGE_BYTES)}")
        if fmt == "raw":
            return
        head = _pread(fd, 4096, 0)
        found = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), "")
        if fmt == "vmdk" and head.lstrip().startswith(b"# Disk DescriptorFile"):
            text = decode_text(
                _read_bounded(fd, p, "vmdk descriptor", MAX_DESCRIPTOR_BYTES, st.st_size), p, "vmdk descriptor"
            )
            _check_vmdk_descriptor(text, p, Path(p).parent, embedded=False, self_contained=self_contained)
            return
        if fmt == "vpc":
            footer = _pread(fd, 512, st.st_size - 512) if st.st_size >= 512 else b""
            vhd = next((b for b in (head[:512], footer, footer[1:]) if b[:8] == b"conectix"), None)
            if vhd is None or len(vhd) < 64:
                raise InputFileError(p, f"declared vpc (VHD) but it has no VHD footer{_seen(found)}")
            (disk_type,) = struct.unpack(">I", vhd[60:64])
            if disk_type == 4:
                raise InputFileError(p, "VHD is a differencing disk (it has a parent): give the full disk")
            if disk_type not in (2, 3):
                raise InputFileError(p, f"VHD disk type {disk_type} is not fixed (2) or dynamic (3)")
            return
        want = {"qcow2": "qcow2", "vmdk": "vmdk", "vhdx": "vhdx"}.get(fmt)
        if want is None:
            raise InputFileError(p, f"disk format {fmt!r} unknown")
        if found != want:
            raise InputFileError(p, f"declared {fmt} but the content is not a {fmt} image{_seen(found)}")
        if fmt == "qcow2":
            if len(head) < 72:
                raise InputFileError(p, "qcow2 header is truncated")
            version, backing_offset = struct.unpack(">IQ", head[4:16])
            if version not in (2, 3):
                raise InputFileError(p, f"qcow2 version {version} is not supported (2 or 3)")
            if backing_offset:
                raise InputFileError(p, "qcow2 image has a backing file: a disk must be standalone")
            if version == 3 and len(head) >= 80 and struct.unpack(">Q", head[72:80])[0] & 0x4:
                raise InputFileError(p, "qcow2 image keeps its data in an external file: not allowed")
        elif fmt == "vmdk":
            if len(head) < 44:
                raise InputFileError(p, "vmdk header is truncated")
            _check_sparse_vmdk(fd, head, p, self_contained=self_contained)
    finally:
        os.close(fd)


def _seen(found: str) -> str:
    return f" (it is {found})" if found else ""
