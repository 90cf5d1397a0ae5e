"""SHA-256 of local files, read once per version of a file.

A disk crosses several stages of one cell: the export commits its package to the artifact cache
(hashed), hands its hash to the next stage (hashed again), the conversion commits its output
(hashed), the import names the host's layer by it (hashed again), and a later cell that reuses
an artifact checks it (hashed again). A demo hashed 8 GB that way. Artifacts, images and
conversions are written once and never changed in place, so a hash is remembered for one version
of a file: the same device, inode, size, modification and change times. Any rewrite
(or a copy put in its place) is a new version and is read again. The bytes sent to a host are
still hashed as they are sent and compared (``HostStorage.upload``): what a host gets is checked
whatever this memo says.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

CHUNK = 1 << 20
MEMO_MAX = 4096  # versions remembered; past it the oldest are forgotten (read again if asked)

_memo: dict[tuple[int, int, int, int, int], str] = {}
_lock = threading.Lock()


def _version(st: os.stat_result) -> tuple[int, int, int, int, int]:
    # ctime too: it moves on every write and every time stamp set (a restored mtime does not hide
    # a change); both come from the file system's clock, which ticks every few milliseconds
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def known(path: str | os.PathLike[str]) -> str:
    """The remembered hash of the file's current version, or "" (nothing is read)."""
    try:
        v = _version(os.stat(path))
    except OSError:
        return ""
    with _lock:
        return _memo.get(v, "")


def remember(path: str | os.PathLike[str], digest: str, st: os.stat_result | None = None) -> None:
    """Record ``digest`` for the version of ``path`` given by ``st`` (taken before its bytes were
    read) or its current one. A file that changed while it was read is not remembered."""
    try:
        now = os.stat(path)
    except OSError:
        return
    if st is not None and _version(st) != _version(now):
        return
    with _lock:
        if len(_memo) >= MEMO_MAX:
            for k in list(_memo)[: MEMO_MAX // 4]:
                del _memo[k]
        _memo[_version(now)] = digest


def sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256 (hex): remembered for this version of it, else read and remembered."""
    got = known(path)
    if got:
        return got
    st = os.stat(path)
    h = hashlib.sha256()
    with open(Path(path), "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    digest = h.hexdigest()
    remember(path, digest, st)
    return digest
