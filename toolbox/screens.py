"""A VM's screen as evidence: libvirt hands over PNG where QEMU can write it, else a binary PPM
(P6), which is turned into PNG here so that every report and browser can show it."""

from __future__ import annotations

import struct
import zlib


class NotAScreen(ValueError):
    """The bytes are not a P6 PPM image."""


def ppm_to_png(data: bytes) -> bytes:
    """A binary PPM (P6, maxval 255) as an RGB PNG."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' comments between them
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise NotAScreen("truncated PPM header")
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or fields[3] != b"255" or not (fields[1].isdigit() and fields[2].isdigit()):
        raise NotAScreen(f"not a P6 PPM with maxval 255: {b' '.join(fields)[:40]!r}")
    width, height = int(fields[1]), int(fields[2])
    pixels = data[pos + 1 : pos + 1 + width * height * 3]
    if len(pixels) != width * height * 3:
        raise NotAScreen(f"PPM {width}x{height} has {len(pixels)} bytes of pixels, not {width * height * 3}")
    row = width * 3
    raw = b"".join(b"\0" + pixels[y * row : (y + 1) * row] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
