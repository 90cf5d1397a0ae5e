"""The remediation ladder: what a person does when a moved VM does not work, and how its outcome
becomes ODCA's middle tier. Pure.

A rung runs only after the unmodified move failed, on the disk the target got (or the previous
rung's result: rungs are cumulative, as manual fixes are), and then the target imports, boots and
verifies that disk again. A check that failed unmodified and passes after rung N is ``warn``,
naming the rungs applied and the failure they cured; one still failing after the last rung stays
``fail``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from domain import profiles
from domain.model import CheckResult, Grade

# checks whose failure means "the VM does not work on the target": what a remediation may cure
WORKS = ("boots", "disks", "cpu_memory", "nics", "app")


@dataclass(frozen=True)
class Remedy:
    name: str
    does: str  # what it changes, in the words of the person who would do it by hand
    kvm_only: bool = False  # virt-v2v converts for KVM-like targets only
    # The failing checks this rung addresses, and causes it cannot touch (a phrase of the failing
    # check's reason). An operator does not rewrite the network configuration of a guest whose disk
    # was not found, nor of one that has no driver for its NIC: the rung is skipped with that said,
    # and costs no appliance run, import or boot.
    cures: tuple[str, ...] = WORKS
    not_for: tuple[str, ...] = ()
    # it boots the guest once on an emulated controller, then moves it to the target's paravirtual
    # one: only for targets that have one (domain.profiles.emulated_first)
    emulated_boot: bool = False


# -- rungs for the boot families (vmware-born, uefi-nvram) ----------------------------------------
# Causes that come before or beside the root file system's name: firmware that found nothing, an
# initramfs without a driver for the controller, dracut's own root discovery.
_FIRMWARE_FOUND_NOTHING = ("OVMF (UEFI)", "SeaBIOS (BIOS)")
BOOT_FAMILY_REMEDIES = (
    Remedy(
        "fstab-uuid",
        "name the root file system by its UUID instead of a kernel device name, in /etc/fstab and in "
        "GRUB's root= (update-grub)",
        cures=("boots", "disks"),
        not_for=(*_FIRMWARE_FOUND_NOTHING, "no driver for the disk controller", "dracut"),
    ),
    Remedy(
        "guest-agent",
        "install the QEMU guest agent and remove VMware Tools (open-vm-tools)",
        # Its effect is a channel, not a check: the guest-agent channel answers on a KVM target, so
        # checks no other channel of the guest could see become observable. It cures no failing
        # check, so a ladder (which climbs only after a failure) skips it saying so; it is applied
        # where the failure is the missing agent itself (the remediate stage run for that move).
        cures=(),
    ),
    Remedy(
        "uefi-fallback",
        "install the distribution's boot loader at the removable-media fallback path "
        "\\EFI\\BOOT\\BOOTX64.EFI, which firmware with no boot entry for the disk tries",
        cures=("boots",),
        # a guest installed for BIOS has no EFI boot loader to copy; the later boot stages are not firmware's
        not_for=(
            "SeaBIOS (BIOS)",
            "installed for BIOS",
            "initramfs",
            "dracut",
            "root device",
            "kernel panic",
            "emergency mode",
            "GRUB",
        ),
    ),
)

REMEDIES: dict[str, Remedy] = {
    r.name: r
    for r in (
        Remedy(
            "virt-v2v",
            "virt-v2v: installs virtio drivers, regenerates the initramfs, fixes fstab and the bootloader for KVM",
            kvm_only=True,
        ),
        Remedy(
            "generic-initramfs",
            "rebuild the initramfs with every storage driver (MODULES=most) and point fstab and the "
            "bootloader at the root file system's UUID instead of a device name",
            cures=("boots", "disks"),
        ),
        Remedy(
            "nic-config",
            "make the network configuration neutral to the NIC's name and MAC address: DHCP on any "
            "interface name for systemd-networkd, netplan and ifupdown; NetworkManager profiles "
            "unbound from their MAC address or interface name (they keep their own addressing, a "
            "static address moves to the new NIC); systemd .link files that rename by MAC removed; "
            "cloud-init kept from rendering a MAC-bound configuration again",
            cures=("nics",),  # a failing app that follows from the NIC (see nics) is cured with it
            not_for=("has no driver for the NIC",),  # configuration cannot add a driver
        ),
        *BOOT_FAMILY_REMEDIES,
    )
}

# -- the network families' rung (dracut-lvm-nm, netplan-cloudinit) -------------------------------
# A dracut host-only initramfs and lvm2's devices file, both made on the old hardware.
REMEDIES["dracut-generic"] = Remedy(
    "dracut-generic",
    "regenerate the dracut initramfs without host-only (every storage driver: "
    "dracut --no-hostonly --regenerate-all -f, hostonly=no kept in dracut.conf.d) and reset "
    "lvm2's devices file (/etc/lvm/devices/system.devices removed: LVM scans every disk)",
    cures=("boots", "disks"),
    # before the kernel (firmware, boot loader) an initramfs changes nothing
    not_for=("OVMF (UEFI)", "SeaBIOS (BIOS)", "GRUB"),
)


# -- first boot on the emulated bus: the one no tool automates -------------------------------------
REMEDIES["emulated-first"] = Remedy(
    "emulated-first",
    "boot the VM once on the target with its disk on an emulated controller (the IDE or SATA it "
    "was installed on, else the one the target's machine has: old initramfs images know it), add the target's paravirtual disk driver to the "
    "initramfs from inside the running guest (dracut add_drivers, or initramfs-tools' modules "
    "list; an lvm2 devices file naming the disk by the old controller's WWID or serial reset), "
    "shut it down; the next boot is on the paravirtual controller",
    cures=("boots", "disks"),
    # before the kernel an initramfs changes nothing; a missing root file system name is not a driver
    not_for=("OVMF (UEFI)", "SeaBIOS (BIOS)", "GRUB"),
    emulated_boot=True,
)


def applicable(name: str, target_profile: str, failing: Sequence[CheckResult] = ()) -> str:
    """ "" when the rung can run for this target and addresses one of the ``failing`` checks (the
    last verification's: rungs are cumulative, so what is left to cure), else why not. No failing
    checks known: the rung runs."""
    r = REMEDIES[name]
    if r.kvm_only and target_profile != "kvm":
        return f"{name} converts for KVM targets; {target_profile} is not one"
    if r.emulated_boot and target_profile in profiles.PROFILES:
        tgt = profiles.PROFILES[target_profile]
        if not profiles.paravirtual_disk(tgt):
            return f"{name} moves the disk to a paravirtual controller; {tgt.name}'s {tgt.disk_controller} is not one"
    failed = [c for c in failing if c.grade == Grade.FAIL and c.check in WORKS]
    if not failed:
        return ""
    if any(c.check in r.cures and not any(p in c.reason for p in r.not_for) for c in failed):
        return ""
    why = "; ".join(f"{c.check}: {c.reason}" for c in failed)
    aim = f"addresses {'/'.join(r.cures)} failures it can change" if r.cures else "cures no failing check"
    return f"{name} {aim}; this move failed on {why}"


def move_failed(checks: list[CheckResult]) -> bool:
    return any(c.grade == Grade.FAIL and c.check in WORKS for c in checks)


def combine(
    unmodified: list[CheckResult], rounds: list[tuple[list[str], list[CheckResult]]]
) -> tuple[list[CheckResult], str]:
    """Final grades from the unmodified verification and each remediated round (rungs applied so
    far, its checks), and the remedy that made the VM work ("" when none did)."""
    cured_by = ""
    final = {c.check: c for c in unmodified}
    for rungs, checks in rounds:
        by = {c.check: c for c in checks}
        if all(by[c].grade != Grade.FAIL for c in WORKS if c in by):
            cured_by = " + ".join(rungs)
            for name, before in final.items():
                after = by.get(name)
                if before.grade == Grade.FAIL and after is not None and after.grade == Grade.PASS:
                    evidence = {**after.evidence, "failed_unmodified": before.reason, "remedy": cured_by}
                    final[name] = replace(
                        after,
                        grade=Grade.WARN,
                        reason=f"works after {cured_by}; unmodified: {before.reason}",
                        evidence=evidence,
                    )
                elif before.grade == Grade.SKIPPED and after is not None and before.reason.startswith("not reached"):
                    # unmodified the guest never got this far (see boots); what the cured round saw
                    # is the verdict: a pass that needed the remedy is ODCA's middle tier too
                    evidence = {**after.evidence, "not_reached_unmodified": before.reason, "remedy": cured_by}
                    if after.grade == Grade.PASS:
                        final[name] = replace(
                            after,
                            grade=Grade.WARN,
                            reason=f"works after {cured_by}; unmodified: {before.reason}",
                            evidence=evidence,
                        )
                    else:
                        final[name] = replace(after, reason=f"after {cured_by}: {after.reason}", evidence=evidence)
            break
    if not cured_by and rounds:
        last_rungs, last = rounds[-1]
        by = {c.check: c for c in last}
        for name, before in final.items():
            after = by.get(name)
            if before.grade == Grade.FAIL and after is not None and after.grade == Grade.FAIL:
                final[name] = replace(
                    before,
                    reason=f"{before.reason}; still after {' + '.join(last_rungs)}: {after.reason}",
                    evidence={**before.evidence, "after_remedies": after.reason},
                )
    return [final[c.check] for c in unmodified], cured_by
