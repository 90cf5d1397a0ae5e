"""``template:`` images on vSphere (drivers/vsphere/driver.clone_template), on govmomi's vCenter
simulator: a VM the simulator holds (made a template with MarkAsTemplate) is cloned with
CloneVM_Task for a cell and stays as it was; a template it does not hold is refused with its name."""

from __future__ import annotations

import pytest

from domain.vm import DiskSpec, NicSpec, VmSpec
from drivers.base import TemplateMissing

pytestmark = pytest.mark.vsphere


def _config_of(driver, name: str) -> dict:
    """What a clone must not change on the original: sizes, devices, options, template flag."""
    c = driver._vm(name).config
    return {
        "cpus": c.hardware.numCPU,
        "memory": c.hardware.memoryMB,
        "template": c.template,
        "devices": sorted((type(d).__name__, d.key) for d in c.hardware.device),
        "extra": sorted((o.key, str(o.value)) for o in c.extraConfig or []),
        "files": c.files.vmPathName,
    }


def _clone_spec(name: str, cpus: int = 0, memory_mib: int = 0) -> VmSpec:
    return VmSpec(name, cpus, memory_mib, [], [NicSpec("vmxnet3")], owner="campaign-x/cell-y", metadata={"k": "v"})


def test_a_template_is_cloned_per_cell_and_never_changed(driver, vm_name):
    tpl = f"{vm_name}-tpl"
    driver.provision(VmSpec(tpl, 2, 768, [DiskSpec("", "vmdk", "scsi", 8 << 20)], [NicSpec("vmxnet3")]))
    driver._vm(tpl).MarkAsTemplate()
    before = _config_of(driver, tpl)
    assert before["template"] is True

    # cpus/memory not given: the template's
    hw = driver.clone_template(tpl, _clone_spec(f"{vm_name}-a"))
    assert (hw.cpus, hw.memory_mib, len(hw.disks), len(hw.nics)) == (2, 768, 1, 1)
    assert hw.metadata.get("k") == "v"
    a = driver._vm(f"{vm_name}-a").config
    assert a.template is False and a.files.vmPathName != before["files"]
    # given: the clone's, not the template's
    hw = driver.clone_template(tpl, _clone_spec(f"{vm_name}-b", cpus=1, memory_mib=512))
    assert (hw.cpus, hw.memory_mib) == (1, 512)
    # a retry finds its clone (owner checked) instead of cloning again
    assert driver.clone_template(tpl, _clone_spec(f"{vm_name}-b", cpus=1, memory_mib=512)).cpus == 1
    assert _config_of(driver, tpl) == before


def test_a_template_the_host_does_not_have_is_refused_with_its_name(driver, vm_name):
    with pytest.raises(TemplateMissing) as e:
        driver.clone_template(f"{vm_name}-nowhere", _clone_spec(f"{vm_name}-c"))
    assert str(e.value).startswith(f"template '{vm_name}-nowhere' does not exist on vCenter http")
    assert str(e.value).endswith("(datacenter DC0)")
    assert e.value.template == f"{vm_name}-nowhere"
    assert driver._find_vm(f"{vm_name}-c") is None
