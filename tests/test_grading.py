"""Grades from observations (pure): console text in the images' evidence format -> grades.

The captured consoles of real boots (tests/fixtures/consoles) are graded in test_guest_evidence.py;
these cases pin each rule of the grader on minimal consoles."""

from __future__ import annotations

from domain import grading, observation, tools_channel
from domain.model import Grade
from domain.stage_io import AppProbe, GuestObservation
from domain.vm import DiskSpec, Hardware, NicSpec

MARKER = "ab" * 32


def console(*lines: str) -> str:
    return "\n".join(["[    1.0] random kernel noise", *lines]) + "\n"


SOURCE = console(
    "CROSSVISOR-BOOT-OK",
    "CV-FACT image=legacy-bios init=/sbin/init kernel=6.1.0-28-amd64 firmware=bios cpus=2 mem_kib=495000 boot_id=a",
    "CV-ROOT dev=/dev/vda1 source=/dev/vda1 fstype=ext4 disk=vda driver=virtio_blk mode=rw",
    f"CV-DISK name=vda bytes=1610612736 driver=virtio_blk marker={MARKER}",
    "CV-PCI slot=0000:01:00.0 class=0x010000 id=1af4:1042 driver=virtio-pci",
    "CV-NETCFG names=enp2s0 source=/etc/network/interfaces",
    "CV-NIC name=enp2s0 mac=52:54:00:00:00:01 driver=virtio_net link=up ipv4=10.0.2.15/24",
    "CV-APP name=http port=8080 listening=1",
    "CROSSVISOR-BOOT-END",
    "CV-READY",
)


def hw(firmware: str = "bios", bus: str = "virtio") -> Hardware:
    return Hardware(2, 512, [DiskSpec("/d", "qcow2", bus, 1 << 30)], [NicSpec("virtio")], firmware, metadata={"k": "v"})


def grade(target_console: str, app: AppProbe | None = None, target_hw: Hardware | None = None) -> dict:
    o = grading.Observed(
        source_hw=hw(),
        source_guest=observation.from_console(SOURCE),
        source_app=AppProbe(True, True),
        marker=MARKER,
        target_hw=target_hw or hw(),
        target_guest=observation.from_console(target_console),
        target_app=app or AppProbe(True, True, "HTTP 200", "cv-app"),
    )
    return {c.check: c for c in grading.grade_observed(["boots", "disks", "cpu_memory", "nics", "app", "metadata"], o)}


def test_the_same_guest_on_the_same_hardware_passes() -> None:
    g = grade(SOURCE)
    assert {c: r.grade for c, r in g.items()} == dict.fromkeys(g, Grade.PASS)
    assert g["disks"].evidence["marker_in_guest"] == MARKER


def test_root_not_found_names_the_controller_without_a_driver() -> None:
    g = grade(
        console(
            "CV-INITRAMFS stage=local-top root=/dev/vda1",
            "CV-PCI slot=0000:00:01.1 class=0x010180 id=8086:7010 driver=none",
            "CV-PCI slot=0000:00:10.0 class=0x010000 id=15ad:07c0 driver=none",
            "CV-ROOTWAIT gave_up=1 root=/dev/vda1 after_s=10",
        ),
        target_hw=hw(bus="scsi:pvscsi"),
    )
    assert g["boots"].grade == Grade.FAIL
    assert g["boots"].reason == (
        "root device /dev/vda1 not found: the guest's initramfs has no driver for the disk controller 15ad:07c0 (VMware PVSCSI)"
    )
    assert "CV-ROOTWAIT" in g["boots"].evidence["console"]
    # the rest was never reached: skipped with the pointer, not failed a second time
    assert {g[c].grade for c in ("disks", "nics", "app", "cpu_memory")} == {Grade.SKIPPED}
    assert g["metadata"].grade == Grade.PASS  # what the target API keeps, guest or not


def test_root_named_by_an_old_device_name_on_a_driven_controller() -> None:
    # seen after virt-v2v on the legacy image: virtio_blk is in the initramfs now, but GRUB still
    # says root=/dev/sda1 and the disk is vda; q35's idle AHCI has no driver and is not the cause
    g = grade(
        console(
            "CV-INITRAMFS stage=local-top root=/dev/sda1",
            "CV-PCI slot=0000:00:1f.2 class=0x010601 id=8086:2922 driver=none",
            "CV-PCI slot=0000:03:00.0 class=0x010000 id=1af4:1042 driver=virtio-pci virtio_driver=virtio_blk",
            "CV-ROOTWAIT gave_up=1 root=/dev/sda1 after_s=11",
        ),
        target_hw=hw(bus="virtio"),
    )
    assert g["boots"].grade == Grade.FAIL
    assert g["boots"].reason == (
        "root device /dev/sda1 not found: the disk controller 1af4:1042 (virtio-blk) is driven (virtio_blk) but "
        "the guest names its root /dev/sda1, a device name this hardware does not give it"
    )


def test_firmware_that_finds_nothing_to_boot() -> None:
    g = grade(
        console("SeaBIOS (version 1.16.2-debian-1.16.2-1)", "Boot failed: not a bootable disk"), target_hw=hw("bios")
    )
    assert g["boots"].grade == Grade.FAIL
    assert g["boots"].reason == "SeaBIOS (BIOS) found nothing to boot: Boot failed: not a bootable disk"


def test_nic_configured_under_its_old_name() -> None:
    moved = SOURCE.replace(
        "name=enp2s0 mac=52:54:00:00:00:01 driver=virtio_net link=up ipv4=10.0.2.15/24",
        "name=ens3 mac=52:54:00:00:00:09 driver=vmxnet3 link=up ipv4=none",
    )
    g = grade(
        moved, app=AppProbe(True, False, "no answer from guest port 8080 via 127.0.0.1:40000 (ConnectionResetError)")
    )
    assert g["nics"].grade == Grade.FAIL
    assert (
        g["nics"].reason
        == "interface ens3 (vmxnet3) is not configured: the guest's network config names enp2s0, not ens3"
    )
    assert g["app"].grade == Grade.FAIL and "no network address (see nics)" in g["app"].reason
    assert "127.0.0.1:40000" in g["app"].evidence["detail"]  # where it was asked: evidence, not the reason
    assert g["boots"].grade == Grade.PASS


def test_nic_without_a_driver() -> None:
    g = grade(
        SOURCE.replace(
            "CV-NIC name=enp2s0 mac=52:54:00:00:00:01 driver=virtio_net link=up ipv4=10.0.2.15/24\n", ""
        ).replace("CV-NETCFG", "CV-PCI slot=0000:00:03.0 class=0x020000 id=1011:0019 driver=none\nCV-NETCFG")
    )
    assert g["nics"].reason == "the guest has no driver for the NIC 1011:0019 (DEC 21140 (tulip)): no interface"


def test_changed_mac_and_name_are_recorded_not_failed() -> None:
    moved = SOURCE.replace("CV-NETCFG names=enp2s0", "CV-NETCFG names=*").replace(
        "name=enp2s0 mac=52:54:00:00:00:01 driver=virtio_net", "name=ens3 mac=52:54:00:00:00:09 driver=vmxnet3"
    )
    g = grade(moved)
    assert g["nics"].grade == Grade.PASS
    assert (
        g["nics"].evidence["changes"]
        == "MAC 52:54:00:00:00:01 -> 52:54:00:00:00:09; name enp2s0 -> ens3; driver virtio_net -> vmxnet3"
    )


def test_disk_size_and_content_as_the_guest_sees_them() -> None:
    assert "+512 bytes" in grade(SOURCE.replace("bytes=1610612736", "bytes=1610613248"))["disks"].reason
    assert "different content" in grade(SOURCE.replace(f"marker={MARKER}", "marker=" + "00" * 64))["disks"].reason
    assert (
        "fstab entries failed"
        in grade(
            SOURCE.replace("CV-NETCFG", "CV-MOUNT point=/data spec=/dev/sdb1 ok=0 error=no-such-device\nCV-NETCFG")
        )["disks"].reason
    )


def test_memory_within_tolerance_vcpus_exact() -> None:
    assert grade(SOURCE.replace("mem_kib=495000", "mem_kib=490000"))["cpu_memory"].grade == Grade.PASS
    assert "1 vCPUs" in grade(SOURCE.replace("cpus=2", "cpus=1"))["cpu_memory"].reason


def test_a_target_without_a_guest_grades_nothing_guest_side() -> None:
    o = grading.Observed(
        source_hw=hw(),
        source_guest=observation.from_console(SOURCE),
        source_app=AppProbe(True, True),
        marker=MARKER,
        target_hw=hw(),
        target_guest=observation.GuestObservation(observed=False, note="the vCenter simulator runs no guest"),
        target_app=AppProbe(),
        marker_on_target=MARKER + "00" * 32,
    )
    g = {c.check: c for c in grading.grade_observed(["boots", "disks", "nics", "metadata"], o)}
    assert g["boots"].grade == g["nics"].grade == g["disks"].grade == Grade.SKIPPED
    assert g["disks"].evidence["marker_on_target"].startswith(MARKER)
    o.marker_on_target = "00" * 64
    assert grading.grade_observed(["disks"], o)[0].grade == Grade.FAIL


# -- VMware Tools (domain.tools_channel): the reports drivers/vsphere/driver.guest_tools returns ----


def tools_report(state: str = "running", fs=(("/", 10 << 30), ("/data", 5 << 30)), ip: str = "10.0.0.5") -> dict:
    return {
        "simulated": False,
        "tools_running": "guestToolsRunning",
        "tools_status": "toolsOk",
        "guest_state": state,
        "hostname": "web01",
        "ip": ip,
        "nics": [{"mac": "00:50:56:00:00:01", "ips": ["fe80::1", ip] if ip else [], "connected": True}],
        "disks": [{"path": p, "capacity": c} for p, c in fs],
    }


def tools_grade(source: dict, target: dict, source_guest=None) -> dict:
    off = "the vSphere host runs no guest crossvisor can observe"
    o = grading.Observed(
        source_hw=hw(),
        source_guest=source_guest or tools_channel.apply(source, GuestObservation(observed=False, note=off)),
        source_app=AppProbe(),
        marker=MARKER,
        target_hw=hw(),
        target_guest=tools_channel.apply(target, GuestObservation(observed=False, note=off)),
        target_app=AppProbe(),
    )
    return {c.check: c for c in grading.grade_observed(["boots", "disks", "cpu_memory", "nics", "app"], o)}


def test_vmware_tools_filesystems_are_compared_with_the_sources() -> None:
    g = tools_grade(tools_report(), tools_report())
    assert {c: (r.grade, r.evidence["channel"]) for c, r in g.items() if c in ("boots", "disks", "nics")} == {
        "boots": (Grade.PASS, "vmware-tools"),
        "disks": (Grade.PASS, "vmware-tools"),
        "nics": (Grade.PASS, "vmware-tools"),
    }
    assert g["disks"].evidence["marker"].startswith("not compared")
    assert "simulated" not in g["boots"].evidence  # a real vCenter's answer is not labelled
    lost = tools_grade(tools_report(), tools_report(fs=(("/", 10 << 30),)))["disks"]
    assert (lost.grade, lost.reason) == (
        Grade.FAIL,
        "filesystem /data, mounted on the source, is not mounted on the target",
    )
    small = tools_grade(tools_report(), tools_report(fs=(("/", 9 << 30), ("/data", 5 << 30))))["disks"]
    assert (
        small.grade == Grade.FAIL
        and small.reason == f"filesystem / is {-(1 << 30):+d} bytes off its size on the source"
    )
    assert tools_grade(tools_report(), tools_report())["cpu_memory"].grade == Grade.UNOBSERVABLE


def test_vmware_tools_guest_not_running_fails_boots_and_skips_the_rest() -> None:
    g = tools_grade(tools_report(), tools_report(state="notRunning"))
    assert (g["boots"].grade, g["boots"].reason) == (Grade.FAIL, "VMware Tools run but report the guest notRunning")
    assert g["nics"].grade == g["disks"].grade == Grade.SKIPPED


def test_vmware_tools_nics_against_a_source_seen_on_its_console() -> None:
    # kvm -> vSphere: the source's NICs from crossvisor's evidence lines, the target's from the tools
    g = tools_grade({}, tools_report(), source_guest=observation.from_console(SOURCE))
    assert (g["nics"].grade, g["nics"].evidence["channel"]) == (Grade.PASS, "vmware-tools")
    assert g["nics"].reason == "changed: MAC 52:54:00:00:00:01 -> 00:50:56:00:00:01"
    assert g["boots"].evidence["channel"] == "vmware-tools"
    # the source's filesystems were never listed by the tools: nothing to compare disks with
    assert g["disks"].grade == Grade.UNOBSERVABLE and "cv-evidence" in g["disks"].reason
    two = tools_report()
    two["nics"].append({"mac": "00:50:56:00:00:02", "ips": [], "connected": False})
    bad = tools_grade(tools_report(), two)["nics"]
    assert (bad.grade, bad.reason) == (Grade.FAIL, "interface 00:50:56:00:00:02 is disconnected")


def test_a_nic_without_address_whose_mac_changed_says_so() -> None:
    """A configuration bound to the source NIC's MAC (a NetworkManager keyfile, netplan's match:
    macaddress) leaves the new NIC unconfigured: the MAC change is the cause the channels show."""
    moved = SOURCE.replace("CV-NETCFG names=enp2s0", "CV-NETCFG names=*").replace(
        "mac=52:54:00:00:00:01 driver=virtio_net link=up ipv4=10.0.2.15/24",
        "mac=52:54:00:00:00:09 driver=virtio_net link=up ipv4=none",
    )
    g = grade(moved)
    assert g["nics"].reason == (
        "interface enp2s0 (virtio_net) got no address: its MAC changed (52:54:00:00:00:01 -> 52:54:00:00:00:09) "
        "and the source's address 10.0.2.15/24 was on 52:54:00:00:00:01; a network configuration bound to the "
        "old MAC does not apply to it"
    )
    same_mac = SOURCE.replace("CV-NETCFG names=enp2s0", "CV-NETCFG names=*").replace("ipv4=10.0.2.15/24", "ipv4=none")
    assert grade(same_mac)["nics"].reason == "interface enp2s0 (virtio_net) got no address"
