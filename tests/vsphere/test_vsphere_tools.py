"""VMware Tools guest info through pyvmomi (drivers/vsphere/driver.guest_tools), on govmomi's vCenter
simulator: the test sets the guest properties the way govc's vcsim tests do (ReconfigVM with
extraConfig SET.guest.*), the driver reads them back through the API, and the evidence says the
answer is simulated (no guest runs in vcsim)."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from domain import tools_channel
from domain.vm import DiskSpec, NicSpec, VmSpec

pytestmark = pytest.mark.vsphere


def test_tools_guest_info_is_read_through_the_api_and_labelled_simulated(driver, vm_name):
    driver.provision(VmSpec(vm_name, 1, 256, [DiskSpec("", "vmdk", "scsi", 8 << 20)], [NicSpec("vmxnet3")]))
    driver.power_on(vm_name)
    vm = driver._vm(vm_name)
    opts = {
        "SET.guest.hostName": "web01",
        "SET.guest.ipAddress": "10.0.0.5",
        "SET.guest.toolsRunningStatus": "guestToolsRunning",
        "SET.guest.guestState": "running",
    }
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in opts.items()])
    driver._wait(vm.ReconfigVM_Task(spec), "set guest info")
    report = driver.guest_tools(vm_name)
    assert report["simulated"] is True
    assert (report["hostname"], report["ip"], report["tools_running"]) == ("web01", "10.0.0.5", "guestToolsRunning")
    assert tools_channel.running(report)
    line = tools_channel.summary(report)
    assert line.startswith("tools guestToolsRunning, guest running, host web01, 10.0.0.5") and line.endswith(
        "(simulated)"
    )
