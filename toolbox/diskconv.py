"""Disk image conversion with qemu-img / qemu-io.

Formats are ALWAYS passed explicitly (``-f``/``-O``/``-F``): qemu's format probing is both a
security hole (a guest-written raw disk can look like qcow2 with a backing file) and wrong in
practice (a fixed VHD probes as raw). vpc is always written with ``force_size=on``: without
it qemu rounds the size to the VHD CHS geometry and the guest sees a different disk.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crossvisor.core import steps
from crossvisor.core.errors import InfraFault, InteropFailure
from crossvisor.core.safe_read import InputFileError, check_package_disk

FORMATS = ("qcow2", "vmdk", "vpc", "vhdx", "raw")
SUBFORMATS = {
    "vmdk": ("monolithicSparse", "streamOptimized", "monolithicFlat"),
    "vpc": ("dynamic", "fixed"),
    "vhdx": ("dynamic", "fixed"),
}
QEMU_IMG = os.environ.get("CROSSVISOR_QEMU_IMG", "qemu-img")
# A conversion runs below the guests' priority: where the worker and the guests share cores (this
# machine's QEMU under TCG), a booting guest holds one of the few boot slots for as long as its
# boot takes, and a conversion beside it stretched that boot (the warm demo's boots held their
# slots 611 s for 210 s of guest CPU). Conversions fill the gaps instead; with the cores to
# itself a niced conversion runs as fast.
BELOW_GUESTS = ["nice", "-n", "10"]
QEMU_IO = os.environ.get("CROSSVISOR_QEMU_IO", "qemu-io")
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

PathLike = str | os.PathLike[str]


class ConversionError(InfraFault):
    """qemu-img/qemu-io failed unexpectedly; the message carries the command and its stderr."""


class SizeMismatch(InteropFailure):
    """The converted disk's virtual size differs from the source (e.g. VHD CHS rounding)."""


class CorruptImage(InteropFailure):
    """qemu-img cannot open or read the source image (corrupt, truncated, not that format):
    retrying the same bytes cannot help, so this is a verdict with evidence, not an InfraFault."""


# Limits for qemu-img reading an image nobody here produced (a package from elsewhere): a crafted
# header can make it allocate huge tables or spin; the qemu-img documentation advises running such
# probes under address-space and CPU limits. 1 GiB / 30 s is far above what a real image needs.
PROBE_MAX_ADDRESS_SPACE = 1 << 30
PROBE_MAX_CPU_SECONDS = 30
# qemu-img messages that blame the source image itself (its header or its data), as opposed to the
# host (EIO, ENOSPC, a missing binary). "Invalid argument" is what a corrupt compressed grain gives.
_SOURCE_FAULT = re.compile(
    r"Could not open '(?P<open>[^']*)'|error while reading (?:sector|at byte) \d+: (?P<read>[^\n]+)"
)


@dataclass
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int  # bytes allocated on the host filesystem
    subformat: str = ""  # vmdk create-type (streamOptimized, monolithicSparse, ...)
    backing_file: str = ""  # qcow2/vmdk backing (parent) image, "" = none
    data_file: str = ""  # qcow2 external data file, "" = none
    extents: list[str] | None = None  # vmdk extent files (a descriptor may name other files)


@dataclass
class ConvertResult:
    src: str
    dst: str
    src_format: str
    dst_format: str
    bytes: int  # virtual size converted
    seconds: float


def _check_fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"disk format {fmt!r} unknown (one of {FORMATS}; VHD is 'vpc')")
    return fmt


def _run(args: list[str], timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    try:
        proc = steps.run(args, timeout=timeout)  # its CPU counts to the open step (the demo's floor)
    except FileNotFoundError:
        raise ConversionError(f"{args[0]} not installed (apt-get install qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{' '.join(args)}: timed out after {timeout}s") from None
    # qemu-io may exit 0 although a command failed, so also look for its "failed" lines.
    if proc.returncode != 0 or (args[0] == QEMU_IO and " failed: " in proc.stdout):
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise ConversionError(f"{' '.join(args)}: exit {proc.returncode}: {detail}")
    return proc


def _create_opts(fmt: str, subformat: str) -> list[str]:
    opts: list[str] = []
    if subformat:
        if subformat not in SUBFORMATS.get(fmt, ()):
            raise ValueError(f"subformat {subformat!r} invalid for {fmt} ({SUBFORMATS.get(fmt, ())})")
        opts.append(f"subformat={subformat}")
    if fmt == "vpc":
        opts.append("force_size=on")
    return ["-o", ",".join(opts)] if opts else []


def create(path: PathLike, fmt: str, size_bytes: int, *, subformat: str = "") -> None:
    """Create an empty image of exactly ``size_bytes`` (must be a multiple of 512)."""
    _check_fmt(fmt)
    if size_bytes <= 0 or size_bytes % 512:
        raise ValueError(f"size {size_bytes} must be a positive multiple of 512")
    _run(
        [
            QEMU_IMG,
            "create",
            "-q",
            "-f",
            fmt,
            *_create_opts(fmt, subformat),
            str(path),
            str(size_bytes),
        ]
    )
    got = info(path, fmt).virtual_size
    if got != size_bytes:
        raise SizeMismatch(
            f"{path}: created {fmt} has virtual size {got}, asked for {size_bytes}",
            {"path": str(path), "format": fmt},
        )


def info(path: PathLike, fmt: str) -> ImageInfo:
    _check_fmt(fmt)
    out = _run([QEMU_IMG, "info", "-f", fmt, "--output=json", str(path)]).stdout
    return _image_info(json.loads(out))


def _image_info(data: dict) -> ImageInfo:
    specific = (data.get("format-specific") or {}).get("data") or {}
    extents = specific.get("extents")
    return ImageInfo(
        format=data["format"],
        virtual_size=int(data["virtual-size"]),
        actual_size=int(data.get("actual-size", 0)),
        subformat=str(specific.get("create-type", "")),
        backing_file=str(data.get("backing-filename", "")),
        data_file=str(specific.get("data-file", "")),
        extents=[str(e.get("filename", "")) for e in extents] if isinstance(extents, list) else None,
    )


def probe(path: PathLike, fmt: str, *, self_contained: bool = True) -> ImageInfo:
    """``info`` for an image from elsewhere: checked first, resource-limited, and its failure is
    the image's fault.

    Before qemu-img runs, ``safe_read.check_package_disk`` checks the file on its own descriptor:
    a regular file, no link, content of format ``fmt``, nothing in it that would make qemu-img
    open another file (a backing or data file, a VMDK extent or parent): a VMDK naming a FIFO
    would otherwise block qemu-img until its timeout, and one naming an outside file would be
    read. Raises ``CorruptImage`` for those and (with qemu-img's own words as evidence) when
    qemu-img cannot open the image as ``fmt`` or is killed by the limits; ``ConversionError``
    only for host trouble."""
    _check_fmt(fmt)
    try:
        check_package_disk(path, fmt, self_contained=self_contained)
    except InputFileError as exc:
        raise CorruptImage(
            f"{Path(path).name}: refused before qemu-img read it: {exc.reason}",
            {"path": str(path), "format": fmt, "check": exc.reason},
        ) from None
    args = [
        "prlimit",
        f"--as={PROBE_MAX_ADDRESS_SPACE}",
        f"--cpu={PROBE_MAX_CPU_SECONDS}",
        "--",
        QEMU_IMG,
        "info",
        "-f",
        fmt,
        "--output=json",
        str(path),
    ]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=PROBE_MAX_CPU_SECONDS * 4, check=False)
    except FileNotFoundError:
        raise ConversionError("prlimit or qemu-img not installed (util-linux, qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise CorruptImage(
            f"{Path(path).name}: qemu-img info did not finish within {PROBE_MAX_CPU_SECONDS * 4}s",
            {"path": str(path), "format": fmt},
        ) from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        if proc.returncode < 0 or proc.returncode > 128:
            detail = f"killed by signal (resource limits): {detail}"
        raise CorruptImage(
            f"{Path(path).name}: not a readable {fmt} image: {detail}",
            {"path": str(path), "format": fmt, "qemu_img": detail},
        )
    return _image_info(json.loads(proc.stdout))


def _virtual_size(path: Path, fmt: str) -> int:
    # A raw regular file's size is its virtual size: skip a qemu-img process (~10 ms each).
    if fmt == "raw" and path.is_file():
        return path.stat().st_size
    return info(path, fmt).virtual_size


def _partial(dst: Path) -> Path:
    # Deterministic name: a retried attempt overwrites its predecessor's leftovers.
    return dst.with_name(f".{dst.name}.part")


def convert(
    src: PathLike,
    src_fmt: str,
    dst: PathLike,
    dst_fmt: str,
    *,
    subformat: str = "",
    progress: Callable[[float], None] | None = None,
    durable: bool = True,
) -> ConvertResult:
    """Convert ``src`` to ``dst``; ``dst`` appears (atomically) only when complete and size-checked.

    ``progress`` receives percentages (0-100) parsed from ``qemu-img convert -p``; it is called
    only when the whole percent changes, so it can drive Temporal heartbeats directly.
    ``durable=True`` flushes the output (``-t writeback``: one fdatasync at close) before the
    rename, so a host crash cannot leave a renamed-but-unwritten artifact; ``durable=False``
    (``-t unsafe``, qemu-img's own default) is for scratch copies that are deleted anyway.
    """
    _check_fmt(src_fmt)
    _check_fmt(dst_fmt)
    src, dst = Path(src), Path(dst)
    try:
        src_size = _virtual_size(src, src_fmt)
    except ConversionError as exc:
        raise _blame_source(exc, src, src_fmt) from None
    tmp = _partial(dst)
    tmp.unlink(missing_ok=True)
    args = [
        *BELOW_GUESTS,
        QEMU_IMG,
        "convert",
        # qemu-img convert never fsyncs by default (checked with strace on 7.2): ask for it.
        "-t",
        "writeback" if durable else "unsafe",
        "-f",
        src_fmt,
        "-O",
        dst_fmt,
        *_create_opts(dst_fmt, subformat),
    ]
    started = time.monotonic()
    try:
        try:
            with steps.step("convert", nbytes=src_size):
                if progress is None:
                    _run([*args, str(src), str(tmp)])
                else:
                    _run_with_progress([*args, "-p", str(src), str(tmp)], progress)
        except ConversionError as exc:
            raise _blame_source(exc, src, src_fmt) from None
        got = _virtual_size(tmp, dst_fmt)
        if got != src_size:
            hint = " (VHD CHS geometry rounding: force_size=on not honoured)" if dst_fmt == "vpc" else ""
            raise SizeMismatch(
                f"{src} -> {dst_fmt}: virtual size changed from {src_size} to {got}{hint}",
                {"src": str(src), "src_format": src_fmt, "dst_format": dst_fmt},
            )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return ConvertResult(
        src=str(src),
        dst=str(dst),
        src_format=src_fmt,
        dst_format=dst_fmt,
        bytes=src_size,
        seconds=time.monotonic() - started,
    )


def _blame_source(exc: ConversionError, src: Path, src_fmt: str) -> Exception:
    """A conversion that failed on the source image's content is a corrupt image (a verdict), not
    an infrastructure fault; host read errors (EIO) and everything on the output side stay faults."""
    text = str(exc)
    m = _SOURCE_FAULT.search(text)
    if m is None:
        return exc
    if m.group("open") is not None:
        if Path(m.group("open")).name != src.name or "No such file" in text or "Permission denied" in text:
            return exc
    elif "Input/output error" in m.group("read"):
        return exc
    return CorruptImage(
        f"{src.name}: qemu-img cannot read this {src_fmt} image: {m.group(0)}",
        {"path": str(src), "format": src_fmt, "qemu_img": text[-2000:]},
    )


def _run_with_progress(args: list[str], progress: Callable[[float], None]) -> None:
    try:
        proc = steps.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise ConversionError(f"{args[0]} not installed (apt-get install qemu-utils)") from None
    assert proc.stdout is not None and proc.stderr is not None
    last = -1
    buf = b""
    try:
        # qemu-img rewrites "(NN.NN/100%)\r" in place; stderr is tiny, so reading it after EOF
        # on stdout cannot deadlock.
        while chunk := proc.stdout.read1(4096):
            buf = (buf + chunk)[-256:]
            matches = _PROGRESS.findall(buf)
            if matches:
                pct = float(matches[-1])
                if int(pct) != last:
                    last = int(pct)
                    progress(pct)
                buf = buf[buf.rfind(b")") + 1 :]
        stderr = proc.stderr.read().decode(errors="replace")
        rc = proc.wait()
        steps.charge(proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if rc != 0:
        raise ConversionError(f"{' '.join(args)}: exit {rc}: {stderr.strip()[-2000:]}")


def compare(a: PathLike, a_fmt: str, b: PathLike, b_fmt: str) -> bool:
    """Same guest-visible content AND same virtual size (qemu-img compare alone treats a
    larger image with a zero tail as identical)."""
    _check_fmt(a_fmt)
    _check_fmt(b_fmt)
    if info(a, a_fmt).virtual_size != info(b, b_fmt).virtual_size:
        return False
    args = [QEMU_IMG, "compare", "-q", "-f", a_fmt, "-F", b_fmt, str(a), str(b)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise ConversionError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")


def write_marker(path: PathLike, fmt: str, offset: int, data: bytes) -> None:
    """Write ``data`` at guest offset ``offset`` (proves disk content survives conversions)."""
    _check_fmt(fmt)
    if not data:
        raise ValueError("marker data is empty")
    path = Path(path)
    if fmt == "vmdk" and info(path, fmt).subformat == "streamOptimized":
        # streamOptimized is append-only for qemu: round-trip through qcow2.
        with tempfile.TemporaryDirectory(dir=path.parent) as tmpdir:
            scratch = Path(tmpdir) / "scratch.qcow2"
            convert(path, fmt, scratch, "qcow2", durable=False)
            write_marker(scratch, "qcow2", offset, data)
            convert(scratch, "qcow2", path, fmt, subformat="streamOptimized")
        return
    # System temp dir: qemu-io splits its -c command on whitespace, so no odd paths.
    with tempfile.NamedTemporaryFile(prefix="cv-marker-") as fh:
        fh.write(data)
        fh.flush()
        _run(
            [
                QEMU_IO,
                "-f",
                fmt,
                "-c",
                f"write -q -s {fh.name} {offset} {len(data)}",
                str(path),
            ]
        )


_HEXLINE = re.compile(r"^[0-9a-f]{8}:\s+((?:[0-9a-f]{2}\s)+)", re.MULTILINE)


def read_marker(path: PathLike, fmt: str, offset: int, n: int) -> bytes:
    """Read ``n`` guest bytes at ``offset`` (read-only open; works for every format)."""
    _check_fmt(fmt)
    out = _run([QEMU_IO, "-r", "-U", "-f", fmt, "-c", f"read -v {offset} {n}", str(path)]).stdout
    data = bytes.fromhex("".join(m.group(1) for m in _HEXLINE.finditer(out)))
    if len(data) != n:
        raise ConversionError(f"qemu-io read of {path} returned {len(data)} of {n} bytes: {out[-500:]}")
    return data


def create_overlay(path: PathLike, backing: PathLike, backing_fmt: str) -> None:
    """A qcow2 overlay on ``backing``: the VM writes to the overlay, ``backing`` stays untouched
    (a cached image or a conversion shared by many cells)."""
    _check_fmt(backing_fmt)
    _run(
        [
            QEMU_IMG,
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(Path(backing).resolve()),
            "-F",
            backing_fmt,
            str(path),
        ]
    )
