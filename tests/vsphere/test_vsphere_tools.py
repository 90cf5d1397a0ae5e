"""VMware Tools guest info through pyvmomi (drivers/vsphere/driver.guest_tools), on govmomi's vCenter
simulator: the test sets the guest properties the way govc's vcsim tests do (ReconfigVM with
extraConfig SET.guest.*), the driver reads them back through the API, and the evidence says the
answer is simulated (no guest runs in vcsim)."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from activities.stages import guest
from domain import grading, tools_channel
from domain.model import Grade
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


# -- VMware Tools decide grades: a source VM and its "migrated" copy on the simulator, each with the
# guest info a test sets (no guest runs in vcsim), observed the way the baseline and boot stages do
# (activities.stages.guest.boot_and_observe) and graded by domain.grading against each other.

CHECKS = ["boots", "disks", "cpu_memory", "nics", "app", "metadata"]


def _set_guest(driver, name: str, **props: str) -> None:
    vm = driver._vm(name)
    opts = [vim.option.OptionValue(key=f"SET.guest.{k}", value=v) for k, v in props.items()]
    driver._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=opts)), "set guest info")


def _vm_with_guest(driver, name: str, **props: str) -> None:
    driver.provision(VmSpec(name, 2, 512, [DiskSpec("", "vmdk", "scsi", 8 << 20)], [NicSpec("vmxnet3")]))
    if props:
        _set_guest(driver, name, **props)


def _observe(driver, name: str):
    seen, app, state = guest.boot_and_observe(driver, name, None, None, lambda _msg: None)
    return seen, app, state, driver.inspect(name)


def _grade(driver, source: str, target: str) -> dict:
    s_seen, s_app, _s_state, s_hw = _observe(driver, source)
    t_seen, t_app, t_state, t_hw = _observe(driver, target)
    o = grading.Observed(s_hw, s_seen, s_app, "", t_hw, t_seen, t_app, t_state)
    return {r.check: r for r in grading.grade_observed(CHECKS, o)}


UP = {"toolsRunningStatus": "guestToolsRunning", "guestState": "running", "hostName": "web01"}


def test_tools_running_on_both_sides_decide_boots_and_nics(driver, vm_name):
    src, tgt = f"{vm_name}-src", f"{vm_name}-tgt"
    _vm_with_guest(driver, src, **UP, ipAddress="10.0.0.5")
    _vm_with_guest(driver, tgt, **UP, ipAddress="10.0.0.6")
    got = _grade(driver, src, tgt)
    boots, nics = got["boots"], got["nics"]
    assert (boots.grade, boots.evidence["channel"]) == (Grade.PASS, "vmware-tools")
    assert boots.evidence["simulated"].startswith("yes") and boots.evidence["vmware_tools"].endswith("(simulated)")
    assert boots.evidence["hostname"] == "web01"
    assert (nics.grade, nics.evidence["channel"]) == (Grade.PASS, "vmware-tools"), nics.reason
    assert "10.0.0.6" in nics.evidence["target"] and "10.0.0.5" in nics.evidence["source"]
    # the MACs vCenter gave the two VMs differ: recorded, not failed
    assert nics.reason.startswith("changed: MAC ")
    # what the tools cannot see: no verdict, and the reason says why
    assert got["cpu_memory"].grade == Grade.UNOBSERVABLE and "VMware Tools report neither" in got["cpu_memory"].reason
    assert got["disks"].grade == Grade.UNOBSERVABLE and "no filesystem" in got["disks"].reason
    assert got["app"].grade == Grade.UNOBSERVABLE


def test_a_nic_that_lost_its_address_fails_nics_with_the_interface(driver, vm_name):
    src, tgt = f"{vm_name}-src", f"{vm_name}-tgt"
    _vm_with_guest(driver, src, **UP, ipAddress="10.0.0.5")
    _vm_with_guest(driver, tgt, **UP)  # the tools run, the guest's NIC has no address
    got = _grade(driver, src, tgt)
    assert got["boots"].grade == Grade.PASS
    nics = got["nics"]
    mac = driver.guest_tools(tgt)["nics"][0]["mac"]
    assert (nics.grade, nics.evidence["channel"]) == (Grade.FAIL, "vmware-tools")
    assert nics.reason == f"interface {mac} got no IPv4 address"


def test_tools_that_ran_on_the_source_and_not_on_the_target_fail_boots_with_the_cause(driver, vm_name):
    src, tgt = f"{vm_name}-src", f"{vm_name}-tgt"
    _vm_with_guest(driver, src, **UP, ipAddress="10.0.0.5")
    _vm_with_guest(driver, tgt)  # vcsim's default: tools not running
    got = _grade(driver, src, tgt)
    boots = got["boots"]
    assert (boots.grade, boots.evidence["channel"]) == (Grade.FAIL, "vmware-tools")
    assert boots.reason.startswith("VMware Tools answered on the source, not on the target: vCenter reports ")
    assert "guestToolsNotRunning" in boots.reason
    for check in ("disks", "nics", "cpu_memory", "app"):
        assert got[check].grade == Grade.UNOBSERVABLE and "guestToolsNotRunning" in got[check].reason, check
    assert got["metadata"].evidence["channel"] == "target-api"


def test_without_tools_on_either_side_nothing_guest_side_is_graded(driver, vm_name):
    src, tgt = f"{vm_name}-src", f"{vm_name}-tgt"
    _vm_with_guest(driver, src)
    _vm_with_guest(driver, tgt)
    got = _grade(driver, src, tgt)
    for check in ("boots", "disks", "nics", "cpu_memory", "app"):
        assert got[check].grade == Grade.SKIPPED and "no guest observed" in got[check].reason, check
        assert got[check].evidence["vmware_tools"].startswith("tools guestToolsNotRunning"), check
