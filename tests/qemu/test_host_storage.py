"""Disk uploads to a libvirt host's pool through the real libvirtd (no VM is started)."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from drivers.libvirt_storage import HostStorage

pytestmark = pytest.mark.qemu

MIB = 1 << 20


@pytest.fixture
def storage(libvirt_conn, tmp_path):
    s = HostStorage(libvirt_conn, "localhost", f"cvg-test-st-{uuid.uuid4().hex[:6]}", str(tmp_path / "pool"), tmp_path)
    yield s
    s.remove_pool()


def _sparse_raw(path, size: int, data_at: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, b in data_at.items():
            f.seek(off)
            f.write(b)


def test_a_sparse_raw_disk_crosses_as_data_only_and_stays_sparse_on_the_host(storage, tmp_path):
    # a raw disk as a conversion leaves it: 256 MiB, of which 3 MiB are data (one run at the very end)
    src = tmp_path / "disk0.raw"
    data = {0: os.urandom(MIB), 100 * MIB: os.urandom(MIB), 255 * MIB: os.urandom(MIB)}
    _sparse_raw(src, 256 * MIB, data)
    want = hashlib.sha256(src.read_bytes()).hexdigest()

    got = storage.upload("cvg-test-sparse.raw", src, want)

    assert got == want  # the holes were hashed as the zeros they read as
    vol = storage.vol("cvg-test-sparse.raw")
    _type, capacity, allocation = vol.info()
    assert capacity == 256 * MIB
    assert allocation < 16 * MIB, f"the host's copy is not sparse: {allocation} bytes allocated"
    back = tmp_path / "back.raw"
    storage.download(vol, back)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == want


def test_a_sparse_upload_that_reads_other_bytes_is_refused_and_removed(storage, tmp_path):
    src = tmp_path / "disk0.raw"
    _sparse_raw(src, 64 * MIB, {0: b"crossvisor", 63 * MIB: b"end"})
    with pytest.raises(Exception, match="changed while it was uploaded"):
        storage.upload("cvg-test-sparse2.raw", src, hashlib.sha256(b"something else").hexdigest())
    assert storage.vol("cvg-test-sparse2.raw") is None


def test_a_dense_file_still_uploads_byte_for_byte(storage, tmp_path):
    src = tmp_path / "disk0.qcow2"
    src.write_bytes(os.urandom(9 * MIB + 123))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    assert storage.upload("cvg-test-dense.qcow2", src, want) == want
    back = tmp_path / "back"
    storage.download(storage.vol("cvg-test-dense.qcow2"), back)
    assert back.read_bytes() == src.read_bytes()
