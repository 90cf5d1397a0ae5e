"""vSphere export: through the API (ExportVm + HttpNfcLease) where the server has it, else the
datastore /folder download. What govmomi's vCenter simulator supports decides which path runs
here: it answers ExportVm with MethodNotFound, so the export must detect that, fall back, say so,
and still deliver the disk's real bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyVmomi import vmodl

from drivers.vsphere.driver import open_vsphere
from tests.packages import read_ova
from tests.vsphere.test_vsphere_ovf import MARKER, OFFSET, make_ova
from toolbox import diskconv

pytestmark = pytest.mark.vsphere


def test_the_simulator_has_no_export_vm(driver, vm_name, tmp_path):
    (tmp_path / "in").mkdir()
    pkg, _ = make_ova(tmp_path / "in", vm_name)
    driver.import_vm(pkg, vm_name)
    with pytest.raises(vmodl.fault.MethodNotFound):
        driver._vm(vm_name).ExportVm()


def test_export_falls_back_to_the_datastore_and_says_why(vcsim, vm_name, tmp_path):
    # a driver of its own: whether the server has ExportVm is learned once per connection
    drv = open_vsphere(vcsim.url, vcsim.password_ref, username=vcsim.username)
    try:
        (tmp_path / "in").mkdir()
        pkg, _ = make_ova(tmp_path / "in", vm_name)
        drv.import_vm(pkg, vm_name)
        out = drv.export(vm_name, tmp_path / "out")
        how = drv.last_export_evidence["export_path"]
        # the server's own words: "vmodl.fault.MethodNotFound: VirtualMachine:vm-57 does not implement: ExportVm"
        assert how.startswith("datastore /folder download (no ExportVm on this server: "), how
        assert "MethodNotFound" in how and "does not implement: ExportVm" in how
        _, files = read_ova(Path(out.package), tmp_path / "check")
        (disk,) = files.values()
        assert diskconv.read_marker(disk, "vmdk", OFFSET, len(MARKER)) == MARKER
        # the second export does not ask again
        drv.export(vm_name, tmp_path / "out2")
        assert drv.last_export_evidence["export_path"] == how
    finally:
        for n in drv.list_vms(vm_name):
            drv.destroy(n)
        drv.close()
