"""``template:`` images on libvirt (drivers/libvirt/driver.clone_template): a new domain whose disks
are qcow2 overlays on the template domain's disks; the template domain is never started and its
XML and disk never change. On libvirt's in-process test driver (test:///default) and, define-only
(nothing is started), on the machine's libvirtd (qemu:///system) with a pool of the test's own."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from domain.vm import MARKER_OFFSET, DiskSpec, NicSpec, VmSpec
from drivers.base import TemplateMissing
from toolbox import diskconv


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _template_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "golden.qcow2"
    diskconv.create(disk, "qcow2", 16 << 20)
    diskconv.write_marker(disk, "qcow2", MARKER_OFFSET, b"golden image bytes")
    return disk


def _clone_spec(name: str, cpus: int = 0, memory_mib: int = 0) -> VmSpec:
    return VmSpec(name, cpus, memory_mib, [], [NicSpec("e1000")], owner="campaign-x/cell-y", metadata={"k": "v"})


def test_a_template_domain_is_cloned_as_overlays_and_never_changed(tmp_path: Path):
    from drivers.libvirt.driver import LibvirtTestDriver

    drv = LibvirtTestDriver("test:///default", state_dir=tmp_path / "state")
    tpl, clone = f"cvtpl-{uuid.uuid4().hex[:6]}", f"cvtpl-{uuid.uuid4().hex[:6]}-clone"
    disk = _template_disk(tmp_path)
    try:
        drv.provision(VmSpec(tpl, 2, 384, [DiskSpec(str(disk), "qcow2", "sata", 16 << 20)], [NicSpec("virtio")]))
        xml_before, sha_before = drv._need(tpl).XMLDesc(0), _sha(disk)

        hw = drv.clone_template(tpl, _clone_spec(clone))
        # the template's vCPUs, memory and disk bus; the platform's NIC; the cell's metadata
        assert (hw.cpus, hw.memory_mib, [d.bus for d in hw.disks], [n.model for n in hw.nics]) == (
            2,
            384,
            ["sata"],
            ["e1000"],
        )
        assert hw.metadata.get("k") == "v" and hw.disks[0].capacity_bytes == 16 << 20
        overlay = Path(hw.disks[0].path)
        assert overlay != disk
        info = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", "-U", str(overlay)]))
        assert (info["format"], info["backing-filename"]) == ("qcow2", str(disk.resolve()))
        # the clone's guest writes go to its overlay: the template's bytes stay
        drv.power_on(clone)
        diskconv.write_marker(overlay, "qcow2", MARKER_OFFSET, b"written by the clone")
        drv.power_off(clone)
        assert diskconv.read_marker(overlay, "qcow2", MARKER_OFFSET, 20) == b"written by the clone"
        assert diskconv.read_marker(disk, "qcow2", MARKER_OFFSET, 18) == b"golden image bytes"
        assert drv._need(tpl).XMLDesc(0) == xml_before and _sha(disk) == sha_before
        assert not drv._need(tpl).isActive()
        # given sizes are the clone's
        hw2 = drv.clone_template(tpl, _clone_spec(clone + "2", cpus=1, memory_mib=256))
        assert (hw2.cpus, hw2.memory_mib) == (1, 256)

        with pytest.raises(TemplateMissing) as e:
            drv.clone_template("cvtpl-nowhere", _clone_spec(clone + "3"))
        assert str(e.value) == "template 'cvtpl-nowhere' does not exist on libvirt host localhost (test:///default)"
        assert drv._dom(clone + "3") is None
    finally:
        for n in (clone, clone + "2", tpl):
            drv.destroy(n)
        drv.close()


@pytest.mark.qemu
def test_define_only_on_the_machines_libvirtd_the_template_volume_backs_the_clone(tmp_path: Path):
    """Nothing is started: the clone is defined with an overlay volume in the test's own pool whose
    backing store is the template's volume; the template's XML and volume stay as they were."""
    import libvirt

    from drivers.libvirt.driver import LibvirtDriver
    from drivers.libvirt.storage import HostStorage

    pool, pool_path = f"cvtpl-{uuid.uuid4().hex[:6]}", tmp_path / "pool"
    drv = LibvirtDriver("qemu:///system", state_dir=tmp_path / "state", pool=pool, pool_path=str(pool_path))
    tpl, clone = f"{pool}-tpl", f"{pool}-clone"
    disk = _template_disk(tmp_path)
    try:
        drv.provision(VmSpec(tpl, 1, 256, [DiskSpec(str(disk), "qcow2", "virtio", 16 << 20)], [NicSpec("virtio")]))
        tpl_vol = drv._disk_volume(tpl, 0)
        xml_before, vol_sha = drv._need(tpl).XMLDesc(0), _sha(Path(tpl_vol.path()))

        hw = drv.clone_template(tpl, _clone_spec(clone))
        assert (hw.cpus, hw.memory_mib, len(hw.disks)) == (1, 256, 1)
        src = ET.fromstring(drv._need(clone).XMLDesc(0)).find("./devices/disk/source")
        assert (src.get("pool"), src.get("volume")) == (pool, f"{clone}-disk0.qcow2")
        vol = ET.fromstring(drv._disk_volume(clone, 0).XMLDesc(0))
        assert vol.findtext("./backingStore/path") == tpl_vol.path()
        assert not drv._need(clone).isActive() and not drv._need(tpl).isActive()
        assert drv._need(tpl).XMLDesc(0) == xml_before and _sha(Path(tpl_vol.path())) == vol_sha

        with pytest.raises(TemplateMissing, match=rf"template '{pool}-nowhere' does not exist on libvirt host"):
            drv.clone_template(f"{pool}-nowhere", _clone_spec(clone + "x"))
    finally:
        for n in (clone, tpl):
            try:
                drv.destroy(n)
            except Exception:  # noqa: BLE001 - cleanup goes on: the pool is removed below
                pass
        conn = libvirt.open("qemu:///system")
        try:
            HostStorage(conn, "localhost", pool, str(pool_path), tmp_path / "pool-state").remove_pool()
        finally:
            conn.close()
        drv.close()
