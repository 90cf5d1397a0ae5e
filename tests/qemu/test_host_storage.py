"""Disk uploads to a libvirt host's pool through the real libvirtd (no VM is started)."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from drivers.libvirt.storage import HostStorage

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


def _qcow2(path, mib: int, fill: bytes) -> None:
    import subprocess

    raw = path.with_suffix(".raw")
    raw.write_bytes(fill * (mib * MIB // len(fill)))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()


def test_prune_keeps_every_layer_a_defined_vm_stands_on_and_deletes_the_oldest_others(libvirt_conn, storage, tmp_path):
    import time

    from domain.vm import DiskSpec

    # three image layers on the host; a VM is defined on an overlay of the second (as provision does)
    a, b, c = (tmp_path / f"{n}.qcow2" for n in "abc")
    for i, p in enumerate((a, b, c)):
        _qcow2(p, 2 + i, bytes([i + 1]) * 4096)
    va = storage.content_volume(a, "qcow2", None, "")
    time.sleep(1.1)  # mtimes in whole seconds on some filesystems: a is the oldest
    overlay = storage.place("cvg-test-prune", 0, DiskSpec(str(b), "qcow2"))
    time.sleep(1.1)
    vc = storage.content_volume(c, "qcow2", None, "")
    pool = storage.pool_name
    dom = libvirt_conn.defineXML(
        "<domain type='qemu'><name>cvg-test-prune</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='volume' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source pool='{pool}' volume='{overlay}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    try:
        layers = lambda: sorted(  # noqa: E731
            v.name() for v in storage.pool().listAllVolumes(0) if "-base-" in v.name() and not v.name().endswith(".ok")
        )
        before = layers()
        assert va.name() in before and vc.name() in before and len(before) == 3

        # a young layer is never pruned: a cell may be about to define its VM on it
        assert storage.prune_content(0) == []

        # keep room for one more layer: only the oldest unused one (a) goes
        keep = sum(v.info()[2] for v in storage.pool().listAllVolumes(0) if v.name() in before) - 1
        assert storage.prune_content(keep, min_age_s=0) == [va.name()]
        # nothing kept: c goes too, but b stays, the VM stands on it through its overlay
        assert storage.prune_content(0, min_age_s=0) == [vc.name()]
        (vb,) = layers()
        assert storage.vol(f"{vb}.ok") is not None
    finally:
        dom.undefine()
    # the VM gone: its layer goes (the overlay is the VM's own disk, not a shared layer)
    assert storage.prune_content(0, min_age_s=0) == [vb]
    assert storage.vol(overlay) is not None
