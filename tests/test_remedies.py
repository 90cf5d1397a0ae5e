"""Which rung of the remediation ladder runs for a failed move: one an operator would try for the
failure in front of them. Pure: the failing checks are what a verification graded."""

from __future__ import annotations

from domain import remedies
from domain.model import CheckResult, Grade, agrees, unmodified

ROOT_NOT_FOUND = CheckResult(
    "boots",
    Grade.FAIL,
    "root device /dev/sda1 not found: the guest's initramfs has no driver for the disk controller 8086:7010",
)
NIC_UNCONFIGURED = CheckResult(
    "nics", Grade.FAIL, "interface ens4 (8139cp) is not configured: the guest's network config names ens10, not ens4"
)
NIC_NO_DRIVER = CheckResult(
    "nics", Grade.FAIL, "the guest has no driver for the NIC 10ec:8139 (Realtek RTL8139): no interface"
)
APP_UNREACHABLE = CheckResult(
    "app", Grade.FAIL, "the guest's service runs but is unreachable: the guest has no network address (see nics)"
)
PASSED = CheckResult("disks", Grade.PASS, "")


def test_nic_config_runs_for_a_nic_configured_under_its_old_name() -> None:
    assert remedies.applicable("nic-config", "xen-hvm", [PASSED, NIC_UNCONFIGURED, APP_UNREACHABLE]) == ""


def test_nic_config_is_skipped_when_the_guest_has_no_driver_for_the_nic() -> None:
    why = remedies.applicable("nic-config", "xen-hvm", [NIC_NO_DRIVER, APP_UNREACHABLE])
    assert why.startswith("nic-config addresses nics failures")
    assert "no driver for the NIC 10ec:8139" in why


def test_nic_config_is_skipped_when_the_disk_was_not_found() -> None:
    why = remedies.applicable("nic-config", "esxi", [ROOT_NOT_FOUND])
    assert "boots: root device /dev/sda1 not found" in why


def test_generic_initramfs_runs_for_a_root_not_found_and_not_for_a_nic() -> None:
    assert remedies.applicable("generic-initramfs", "hyperv-gen1", [ROOT_NOT_FOUND]) == ""
    assert remedies.applicable("generic-initramfs", "xen-hvm", [NIC_UNCONFIGURED]) != ""


def test_without_known_failures_a_rung_runs_and_virt_v2v_only_for_kvm() -> None:
    assert remedies.applicable("nic-config", "esxi") == ""
    assert remedies.applicable("virt-v2v", "kvm", [NIC_NO_DRIVER, ROOT_NOT_FOUND]) == ""
    assert remedies.applicable("virt-v2v", "esxi").startswith("virt-v2v converts for KVM targets")


def test_a_move_that_works_only_after_a_rung_was_a_fail_for_its_prediction() -> None:
    cured = CheckResult("nics", Grade.PASS, "")
    [combined], by = remedies.combine([NIC_UNCONFIGURED], [(["nic-config"], [cured])])
    assert by == "nic-config" and combined.grade == Grade.WARN
    assert unmodified(combined) == Grade.FAIL  # the traits said it would work as moved: they missed
    assert not agrees(Grade.PASS, unmodified(combined))
    assert unmodified(cured) == Grade.PASS


DRACUT_TIMEOUT = CheckResult(
    "boots", Grade.FAIL, "dracut: the root device never appeared (dracut-initqueue timeout, Could not boot)"
)
FIRMWARE_NOTHING = CheckResult("boots", Grade.FAIL, "SeaBIOS (BIOS) found nothing to boot")


def test_dracut_generic_runs_for_dracut_giving_up_and_not_before_the_kernel_or_for_a_nic() -> None:
    assert remedies.applicable("dracut-generic", "esxi", [DRACUT_TIMEOUT]) == ""
    assert remedies.applicable("dracut-generic", "esxi", [FIRMWARE_NOTHING]).startswith("dracut-generic addresses")
    assert "nics: interface ens4" in remedies.applicable("dracut-generic", "xen-hvm", [NIC_UNCONFIGURED])


# -- the boot families' rungs (vmware-born, uefi-nvram): reasons as grading words them -------------
ROOT_NAMED_OTHERWISE = CheckResult(
    "boots",
    Grade.FAIL,
    "root device /dev/sda1 not found: initramfs-tools gave up waiting for root /dev/sda1 and dropped to its "
    "shell; the kernel named the disk vda: the root is named /dev/sda1, a kernel device name this hardware "
    "does not give",
)
OVMF_NOTHING = CheckResult("boots", Grade.FAIL, "OVMF (UEFI) could not load any boot option")


def test_fstab_uuid_runs_for_a_root_named_by_device_name_and_not_for_firmware_or_a_missing_driver() -> None:
    assert remedies.applicable("fstab-uuid", "kvm", [ROOT_NAMED_OTHERWISE]) == ""
    assert remedies.applicable("fstab-uuid", "kvm", [OVMF_NOTHING]).startswith("fstab-uuid addresses boots/disks")
    assert "no driver for the disk controller 8086:7010" in remedies.applicable("fstab-uuid", "esxi", [ROOT_NOT_FOUND])


def test_uefi_fallback_runs_only_for_firmware_that_found_no_boot_option() -> None:
    assert remedies.applicable("uefi-fallback", "kvm", [OVMF_NOTHING]) == ""
    assert remedies.applicable("uefi-fallback", "kvm", [ROOT_NAMED_OTHERWISE]) != ""
    assert remedies.applicable("uefi-fallback", "xen-hvm", [NIC_UNCONFIGURED]) != ""
    bios_guest = CheckResult(
        "boots",
        Grade.FAIL,
        "OVMF (UEFI) could not load any boot option; the guest was installed for BIOS, the target boots it with EFI",
    )
    assert "installed for BIOS" in remedies.applicable("uefi-fallback", "kvm", [bios_guest])


def test_guest_agent_cures_no_failing_check_so_a_ladder_skips_it_saying_why() -> None:
    why = remedies.applicable("guest-agent", "kvm", [ROOT_NAMED_OTHERWISE])
    assert why.startswith("guest-agent cures no failing check; this move failed on boots: root device /dev/sda1")
    assert remedies.applicable("guest-agent", "kvm") == ""  # applied where nothing failed


def test_boot_families_are_observed_as_operators_images_with_their_own_ssh_port() -> None:
    """The families carry no crossvisor part: the stages give them the agent channel, the operator
    image's boot timeout and their sshd's port, and their firmware is what they were built for."""
    from activities.stages import guest
    from domain.model import GuestImage
    from toolbox import guest_images

    assert [guest_images.instrumented(n) for n in ("portable-bios", "vmware-born", "uefi-nvram")] == [
        True,
        False,
        False,
    ]
    assert [guest_images.firmware_of(n) for n in ("vmware-born", "uefi-nvram")] == ["bios", "efi"]
    assert guest.forward_ports(GuestImage("v", builtin="vmware-born")) == [guest.APP_PORT, 22]
    assert guest.forward_ports(GuestImage("p", builtin="portable-bios")) == [guest.APP_PORT]


def test_checks_the_guest_never_reached_unmodified_are_graded_by_the_cured_round() -> None:
    """A boot cured by a rung: the checks that were 'not reached' unmodified take what the cured
    round saw (a pass that needed the remedy is warn), not 'skipped' (famboot's finding)."""
    not_reached = "not reached: the guest did not boot on the target (see boots)"
    unmod = [
        ROOT_NOT_FOUND,
        CheckResult("disks", Grade.SKIPPED, not_reached),
        CheckResult("app", Grade.SKIPPED, not_reached),
    ]
    cured = [
        CheckResult("boots", Grade.PASS, ""),
        CheckResult("disks", Grade.PASS, "", {"channel": "ssh"}),
        CheckResult("app", Grade.UNOBSERVABLE, "no channel of this guest reports a service"),
    ]
    (boots, disks, app), by = remedies.combine(unmod, [(["fstab-uuid"], cured)])
    assert by == "fstab-uuid" and boots.grade == Grade.WARN
    assert disks.grade == Grade.WARN and disks.reason == f"works after fstab-uuid; unmodified: {not_reached}"
    assert disks.evidence["channel"] == "ssh" and unmodified(disks) == Grade.WARN  # no verdict unmodified
    assert app.grade == Grade.UNOBSERVABLE and app.reason.startswith("after fstab-uuid: no channel")


def test_every_rung_on_the_ladder_has_the_code_that_applies_it() -> None:
    from activities.stages import remediate

    scripted = set(remediate.GUESTFISH_SCRIPTS) | set(remediate.FAMILY_SCRIPTS) | {"virt-v2v", "emulated-first"}
    assert scripted == set(remedies.REMEDIES)


def test_the_first_boot_on_the_emulated_bus_is_for_targets_with_a_paravirtual_controller() -> None:
    assert remedies.applicable("emulated-first", "kvm", [ROOT_NOT_FOUND]) == ""
    assert remedies.applicable("emulated-first", "esxi", [ROOT_NOT_FOUND]) == ""
    why = remedies.applicable("emulated-first", "xen-hvm", [ROOT_NOT_FOUND])
    assert why == "emulated-first moves the disk to a paravirtual controller; xen-hvm's ide is not one"
    # a failure before the kernel: an initramfs cannot change it
    assert "emulated-first addresses boots/disks" in remedies.applicable("emulated-first", "kvm", [FIRMWARE_NOTHING])


def test_the_first_boot_on_the_emulated_bus_keeps_the_targets_machine_unless_its_bus_needs_another() -> None:
    from domain.profiles import PROFILES, emulated_first

    # installed on IDE: IDE again, on i440FX (Q35 has none); the target's NIC and channels stay
    on_ide = emulated_first(PROFILES["hyperv-gen1"], PROFILES["kvm"])
    assert (on_ide.machine, on_ide.disk_controller, on_ide.nic_model) == ("pc", "ide", "virtio")
    assert on_ide.guest_agent_channel
    # installed on a paravirtual controller: the emulated one the target's machine has
    assert (
        emulated_first(PROFILES["kvm"], PROFILES["esxi"]).machine,
        emulated_first(PROFILES["kvm"], PROFILES["esxi"]).disk_bus,
    ) == ("pc", "ide")
    assert (
        emulated_first(PROFILES["esxi"], PROFILES["kvm"]).machine,
        emulated_first(PROFILES["esxi"], PROFILES["kvm"]).disk_bus,
    ) == ("q35", "sata")
    assert emulated_first(PROFILES["kvm"], PROFILES["xen-hvm"]) is None  # nothing to move the disk to
