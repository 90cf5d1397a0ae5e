"""Content-addressed artifact cache shared by cells, campaigns and worker restarts.

An export of image X from platform P is the same bytes whichever target it goes to; a conversion
of package bytes H to format F is the same whatever cell asks. Keys are content hashes, entries
are written atomically and guarded by a file lock, so a retried or concurrent activity finds the
finished artifact instead of redoing it, and never a half-written one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from toolbox import filehash


def key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def sha256_file(path: Path) -> str:
    """The file's SHA-256, read once per version of the file (``toolbox.filehash``): a commit's
    hash serves the stages after it and the lookups of later cells."""
    return filehash.sha256(path)


class ArtifactCache:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def dir(self, k: str) -> Path:
        d = self.root / k[:2] / k
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextmanager
    def locked(self, k: str) -> Iterator[Path]:
        d = self.dir(k)
        with open(d / ".lock", "a") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            yield d

    def lookup(self, k: str) -> dict | None:
        """The entry's manifest if every file it lists still has its recorded hash."""
        m = self.dir(k) / "manifest.json"
        if not m.exists():
            return None
        entry = json.loads(m.read_text())
        for rel, digest in entry.get("files", {}).items():
            p = self.dir(k) / rel
            if not p.exists() or sha256_file(p) != digest:
                return None
        return entry

    def commit(self, k: str, files: list[Path], meta: dict[str, str]) -> dict:
        """Publish an entry: its files are on stable storage before the manifest names them, and
        the manifest appears at once (rename), so a reader at any site sees all of it or nothing."""
        d = self.dir(k)
        entry = {
            "files": {str(f.relative_to(d)): sha256_file(f) for f in files},
            "meta": meta,
        }
        for f in files:
            _fsync(f)
        tmp = d / "manifest.json.tmp"
        tmp.write_text(json.dumps(entry, indent=1))
        _fsync(tmp)
        tmp.replace(d / "manifest.json")
        _fsync(d)
        return entry


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
