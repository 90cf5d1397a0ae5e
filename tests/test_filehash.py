"""A file's hash is read once per version of the file (toolbox.filehash), and the artifact cache
built on it still refuses an entry whose file was changed after its commit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from activities.artifacts import ArtifactCache
from drivers.libvirt import storage
from toolbox import filehash


def _reads(monkeypatch) -> list[str]:
    """The files filehash opens (its only way to learn a hash it does not remember)."""
    opened: list[str] = []
    real = open

    def spy(path, *a, **kw):
        opened.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr("builtins.open", spy)
    return opened


def _next_tick(f: Path) -> None:
    """Wait until the file system's clock has moved past ``f``'s last change."""
    probe = f.with_name(".tick")
    while True:
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns > f.stat().st_ctime_ns:
            probe.unlink()
            return


def test_a_version_is_read_once_and_a_rewrite_is_read_again(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "disk.qcow2"
    f.write_bytes(b"a" * 3_000_000)
    opened = _reads(monkeypatch)
    assert filehash.sha256(f) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert filehash.sha256(f) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert opened == [str(f)]  # the second answer came from the memo

    # the same size, new bytes, a new modification time: a new version (the file system's clock
    # ticks every few ms: the test waits for the next tick, as any real rewrite of a disk does)
    _next_tick(f)
    f.write_bytes(b"b" * 3_000_000)
    assert filehash.sha256(f) == hashlib.sha256(b"b" * 3_000_000).hexdigest()
    assert opened == [str(f), str(f)]

    # a copy put in its place (another inode), even with the old time stamp restored: read again
    g = tmp_path / "other"
    g.write_bytes(b"c" * 3_000_000)
    st = f.stat()
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    g.replace(f)
    assert filehash.sha256(f) == hashlib.sha256(b"c" * 3_000_000).hexdigest()
    assert len(opened) == 3


def test_a_file_that_changed_while_it_was_read_is_not_remembered(tmp_path: Path) -> None:
    f = tmp_path / "growing"
    f.write_bytes(b"x" * 10)
    before = f.stat()
    with open(f, "ab") as fh:
        fh.write(b"more")
    filehash.remember(f, "0" * 64, before)  # read from the older version
    assert filehash.known(f) == ""
    assert filehash.sha256(f) == hashlib.sha256(b"x" * 10 + b"more").hexdigest()


def test_the_cache_refuses_an_entry_whose_file_changed_after_its_commit(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    d = cache.dir("k1")
    disk = d / "disk0.vmdk"
    disk.write_bytes(b"exported" * 1000)
    entry = cache.commit("k1", [disk], {"package": "disk0.vmdk"})
    assert entry["files"]["disk0.vmdk"] == hashlib.sha256(b"exported" * 1000).hexdigest()
    assert cache.lookup("k1") == entry
    _next_tick(disk)
    disk.write_bytes(b"damaged!" * 1000)  # same size, rewritten in place
    assert cache.lookup("k1") is None


def test_an_upload_is_timed_against_a_local_copy_only_when_it_is_the_largest_yet() -> None:
    host = "yardstick-test-host"
    assert storage._new_largest(host, 300 << 20)
    assert not storage._new_largest(host, 300 << 20)  # the same layer again, or another as large
    assert not storage._new_largest(host, 100 << 20)
    assert storage._new_largest(host, 500 << 20)
    assert storage._new_largest("another-host", 100 << 20)
