"""The console channel of any Linux guest (domain/console_channel.py) and the grades it decides.

Real consoles: tests/fixtures/consoles-plain (see its README: each is a whole ttyS0 capture of a
real boot on this machine's QEMU, SeaBIOS, OVMF, GRUB and Debian kernel/initramfs-tools/systemd,
with no crossvisor part in the guest), and tests/fixtures/consoles (crossvisor's own images: read
through their CV-* lines as before, the console channel only beside them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain import console_channel as cc
from domain import grading, observation
from domain.model import Grade, overall_grade
from domain.stage_io import AppProbe
from domain.vm import DiskSpec, Hardware, NicSpec

PLAIN = Path(__file__).parent / "fixtures" / "consoles-plain"
OWN = Path(__file__).parent / "fixtures" / "consoles"


def plain(name: str) -> str:
    return (PLAIN / name).read_text(errors="replace")


# fixture -> (up, failure kind, milestones that must be there, dead end: stop watching)
EXPECTED = {
    "plain-agent--pc-ide-e1000--login.log": (
        True,
        "",
        ["firmware:seabios", "loader:grub", "kernel", "initramfs:initramfs-tools", "init:systemd", "login"],
        False,
    ),
    "initramfs-tools--root-uuid-missing.log": (False, "root-device-not-found", ["kernel"], True),
    "kernel-without-initramfs--vfs-panic.log": (False, "kernel-panic-vfs", ["kernel"], True),
    "seabios--blank-disk.log": (False, "no-bootable-device", ["firmware:seabios"], True),
    "ovmf--blank-disk-shell.log": (False, "no-bootable-device", ["firmware:ovmf"], True),
    "grub--root-fs-zeroed-rescue.log": (False, "grub-error", ["firmware:seabios", "loader:grub"], True),
    "dracut--root-uuid-missing.log": (False, "root-device-not-found", ["kernel", "initramfs:dracut"], True),
    "systemd--emergency-target.log": (False, "emergency-mode", ["kernel", "init:systemd"], True),
    # lvm2's devices file names /dev/vda1; on IDE lvm finds the PV on /dev/sda1 and renames the entry
    "dracut-lvm-nm--ide-devices-file-renamed.log": (True, "", ["initramfs:dracut", "login"], False),
    # the host-only initramfs made on virtio, on PVSCSI: no driver, dracut's initqueue gives up
    "dracut-lvm-nm--pvscsi-host-only.log": (False, "root-device-not-found", ["initramfs:dracut"], True),
    # a login prompt with cloud-init's next line written after it on the same line
    "netplan-cloudinit--first-boot.log": (True, "", ["cloud-init", "login"], False),
    "netplan-cloudinit--new-mac.log": (True, "", ["cloud-init", "login"], False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_console_milestones_and_failure(name: str) -> None:
    if not (PLAIN / name).exists():
        pytest.fail(f"fixture {name} missing")
    up, kind, milestones, dead = EXPECTED[name]
    text = plain(name)
    r = cc.read(text)
    assert r.up is up
    assert r.failure_kind == kind
    assert [m for m in milestones if not r.reached(m)] == []
    assert cc.dead_end(text) is dead
    # the watcher stops at the login prompt or at a dead end, never waits for CV-READY
    assert observation.ready(text)
    o = observation.from_console(text)
    assert o.channels == ["console"] and o.reached_init is up
    assert o.failure_kind == kind


def test_a_plain_debian_at_its_login_prompt_is_up_and_says_what_it_is() -> None:
    text = plain("plain-agent--pc-ide-e1000--login.log")
    r = cc.read(text)
    assert (r.kernel, r.init, r.hostname, r.os_name) == (
        "6.1.0-50-amd64",
        "systemd",
        "plain-agent",
        "Debian GNU/Linux 12 (bookworm)",
    )
    assert (r.cpus, r.mem_kib) == (1, 523768)
    assert r.loader == "grub" and r.firmware == "seabios" and r.last_milestone == "login"
    # the kernel named the NIC and its driver, and saw its link; no channel here shows an address
    assert [(n.name, n.driver, n.link, n.ipv4) for n in r.nics] == [("ens2", "e1000", "up", "")]
    o = observation.from_console(text)
    assert o.reached_init and o.hostname == "plain-agent" and o.cpus == 1 and not o.failure
    assert "[console] login: plain-agent login:" in o.console_excerpt


def test_failure_details_name_what_the_console_showed() -> None:
    assert (
        "UUID=0bad0bad-0000-4000-8000-000000000001" in cc.read(plain("initramfs-tools--root-uuid-missing.log")).failure
    )
    assert "unknown-block(0,0)" in cc.read(plain("kernel-without-initramfs--vfs-panic.log")).failure
    assert cc.read(plain("grub--root-fs-zeroed-rescue.log")).failure == "GRUB: error: unknown filesystem"
    # the wording of the causes crossvisor always knew stays the same, whatever the image
    assert observation.from_console(plain("grub--root-fs-zeroed-rescue.log")).failure == (
        "GRUB: error: unknown filesystem (grub rescue>)"
    )


def test_a_reboot_is_read_as_its_last_boot() -> None:
    first = plain("kernel-without-initramfs--vfs-panic.log")
    second = plain("plain-agent--pc-ide-e1000--login.log")
    assert cc.read(first + second).up
    assert not cc.read(second + first).up


def test_an_empty_console_is_no_output() -> None:
    r = cc.read("\x00\r\n")
    assert (r.failure_kind, r.silent) == ("no-output", True)
    assert observation.from_console("").channels == []


# Line formats of the loaders and tools this machine cannot boot for real (syslinux, systemd-boot,
# cloud-init's table): written from their sources' format strings, one line each.
@pytest.mark.parametrize(
    "lines,kind",
    [
        (
            [
                "SYSLINUX 6.04 EDD 20191223 Copyright (C) 1994-2015 H. Peter Anvin et al",
                "Could not find kernel image: linux",
            ],
            "loader-error",
        ),
        (
            [
                "BdsDxe: starting Boot0001",
                "Failed to execute Linux Boot Manager (\\EFI\\systemd\\systemd-bootx64.efi): Not Found",
            ],
            "loader-error",
        ),
        (
            [
                "Linux version 6.1.0 (x)",
                "Run /init as init process",
                "You are in emergency mode. After logging in, type",
            ],
            "emergency-mode",
        ),
    ],
)
def test_loader_and_init_failures_from_their_formats(lines: list[str], kind: str) -> None:
    r = cc.read("\n".join(lines) + "\n")
    assert r.failure_kind == kind and not r.up


def test_cloud_init_table_gives_the_addresses() -> None:
    text = "\n".join(
        [
            "Linux version 6.1.0-50-cloud-amd64 (x)",
            "Cloud-init v. 22.4.2 running 'init' at Sun, 06 Dec 2026 23:00:00 +0000. Up 9.1 seconds.",
            "ci-info: ++++++++++++++++++++++++++++++++++++++Net device info+++++++++++++++++++++++++++++++++++++++",
            "ci-info: | Device |  Up  |           Address           |      Mask     | Scope  |     Hw-Address    |",
            "ci-info: |  ens3  | True |          10.0.2.15          | 255.255.255.0 | global | 52:54:00:12:34:56 |",
            "ci-info: |  ens3  | True | fe80::5054:ff:fe12:3456/64  |       .       |  link  | 52:54:00:12:34:56 |",
            "ci-info: |   lo   | True |          127.0.0.1          |   255.0.0.0   |  host  |         .         |",
            "[  OK  ] Reached target multi-user.target - Multi-User System.",
        ]
    )
    r = cc.read(text)
    assert r.up and r.reached("cloud-init")
    assert [(n.name, n.ipv4, n.mac, n.link) for n in r.nics] == [("ens3", "10.0.2.15/24", "52:54:00:12:34:56", "up")]


def test_crossvisor_images_are_still_read_through_their_evidence_lines() -> None:
    for name in ("portable-bios--kvm.log", "uefi--esxi.log", "legacy-bios-born-kvm--esxi.log"):
        text = (OWN / name).read_text(errors="replace")
        o = observation.from_console(text)
        assert o.channels == (["cv-evidence"] if o.reached_init else []) or o.failure_kind, name
    booted = observation.from_console((OWN / "portable-bios--kvm.log").read_text(errors="replace"))
    assert booted.channels == ["cv-evidence"] and booted.complete


# -- grades decided by whichever channel the guest has --------------------------------------------


def _hw(cpus: int = 1, bus: str = "virtio") -> Hardware:
    return Hardware(
        cpus, 512, [DiskSpec("/d", "qcow2", bus, 2 << 30)], [NicSpec("virtio")], "bios", metadata={"k": "v"}
    )


def _grade(source: str, target: str, app: AppProbe | None = None) -> dict:
    o = grading.Observed(
        source_hw=_hw(),
        source_guest=observation.from_console(source),
        source_app=AppProbe(detail="the guest never got ready"),
        marker="ab" * 32,
        target_hw=_hw(bus="scsi:pvscsi"),
        target_guest=observation.from_console(target),
        target_app=app or AppProbe(detail="the guest never got ready"),
    )
    checks = ["boots", "disks", "cpu_memory", "nics", "app", "metadata"]
    return {c.check: c for c in grading.grade_observed(checks, o)}


def test_a_plain_image_is_graded_where_its_console_sees_and_unobservable_elsewhere() -> None:
    up = plain("plain-agent--pc-ide-e1000--login.log")
    g = _grade(up, up)
    assert {c: (r.grade, r.evidence["channel"]) for c, r in g.items()} == {
        "boots": (Grade.PASS, "console"),
        "disks": (Grade.UNOBSERVABLE, "none"),
        "cpu_memory": (Grade.PASS, "console"),
        "nics": (Grade.UNOBSERVABLE, "none"),
        "app": (Grade.UNOBSERVABLE, "none"),
        "metadata": (Grade.PASS, "target-api"),
    }
    assert g["boots"].evidence["hostname"] == "plain-agent"
    assert "no channel of this guest reports its disks" in g["disks"].reason
    assert "declare one: app: {tcp: PORT}" in g["app"].reason
    # unobservable is never a pass, and never a failure: the cell is graded on what was seen
    assert overall_grade([r.grade for r in g.values()]) == Grade.PASS
    assert overall_grade([Grade.UNOBSERVABLE, Grade.SKIPPED]) == Grade.SKIPPED


def test_a_plain_image_that_dies_on_the_target_fails_boots_with_the_console_cause() -> None:
    g = _grade(plain("plain-agent--pc-ide-e1000--login.log"), plain("initramfs-tools--root-uuid-missing.log"))
    assert g["boots"].grade == Grade.FAIL and g["boots"].evidence["channel"] == "console"
    assert "root device" in g["boots"].reason
    assert {g[c].grade for c in ("disks", "cpu_memory", "nics", "app")} == {Grade.SKIPPED}


def test_the_kernel_counting_other_cpus_on_the_target_fails_cpu_memory() -> None:
    up = plain("plain-agent--pc-ide-e1000--login.log")
    two = up.replace("smp: Brought up 1 node, 1 CPU", "smp: Brought up 1 node, 2 CPUs")
    g = _grade(up, two)
    assert g["cpu_memory"].grade == Grade.FAIL and "2 vCPUs, 1 on the source" in g["cpu_memory"].reason


def test_a_channel_silent_on_the_target_is_named() -> None:
    cv = (OWN / "portable-bios--kvm.log").read_text(errors="replace")
    g = _grade(cv, plain("plain-agent--pc-ide-e1000--login.log"))
    assert g["disks"].grade == Grade.UNOBSERVABLE
    assert "cv-evidence channel answered on the source, not on the target" in g["disks"].reason


# -- the guest agent channel (domain/agent_channel.py) ---------------------------------------------
# guestInfo() keys as libvirt 9.0 returns them (virDomainGetGuestInfo), interfaces as
# interfaceAddresses(SRC_AGENT) -> the driver's report (drivers/libvirt/driver.guest_agent)
AGENT_REPORT = {
    "info": {
        "hostname": "plain-agent",
        "os.kernel-release": "6.1.0-50-amd64",
        "fs.count": "1",
        "fs.0.name": "vda1",
        "fs.0.mountpoint": "/",
        "fs.0.fstype": "ext4",
        "disk.count": "2",
        "disk.0.name": "/dev/vda1",
        "disk.0.partition": "True",
        "disk.1.name": "/dev/vda",
        "disk.1.partition": "False",
    },
    "interfaces": {
        "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": ["127.0.0.1/8"]},
        "enp1s0": {"hwaddr": "52:54:00:aa:bb:cc", "addrs": ["10.0.2.15/24"]},
    },
    "vcpus_online": 1,
}


def test_agent_report_fills_the_observation_and_names_its_channel() -> None:
    from domain import agent_channel

    o = agent_channel.apply(AGENT_REPORT, observation.from_console(plain("plain-agent--pc-ide-e1000--login.log")))
    assert o.channels == ["console", "guest-agent"]
    assert (o.root_dev, [d.name for d in o.disks], o.cpus) == ("/dev/vda1", ["vda"], 1)
    assert [(n.name, n.ipv4) for n in o.nics] == [("enp1s0", "10.0.2.15/24")]
    silent = agent_channel.apply(
        {"error": "the agent channel is present, no agent answered within 45 s"}, observation.from_console("")
    )
    assert silent.channels == [] and "no agent answered" in silent.agent_note


def test_cloud_init_table_on_the_target_shows_the_nic_the_old_mac_left_unconfigured() -> None:
    """netplan-cloudinit (real boots): cloud-init wrote its netplan for the first boot's MAC; the same
    instance on a NIC with another MAC renders nothing again, and its table shows the NIC down."""
    src, tgt = plain("netplan-cloudinit--first-boot.log"), plain("netplan-cloudinit--new-mac.log")
    assert [(n.name, n.ipv4, n.mac) for n in cc.read(tgt).nics] == [("enp0s3", "", "52:54:00:bb:00:02")]
    g = _grade(src, tgt)
    assert (g["boots"].grade, g["nics"].grade, g["nics"].evidence["channel"]) == (Grade.PASS, Grade.FAIL, "console")
    assert g["nics"].reason == (
        "interface enp0s3 got no IPv4 address: its MAC changed (52:54:00:aa:00:01 -> 52:54:00:bb:00:02) and the "
        "source's address 10.0.2.15/24 was on 52:54:00:aa:00:01; a network configuration bound to the old MAC "
        "does not apply to it"
    )


ALPINE = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
Booting from Hard Disk...
[    0.000000] Linux version 6.6.14-0-virt (buildozer@build-3-19-x86_64) (gcc (Alpine 13.2.1_git20231014) 13.2.1) #1-Alpine SMP
[    0.912345] Run /init as init process
Alpine Init 3.9.0-r1
 * Loading boot drive modules ...
 * Mounting root: ok.

   OpenRC 0.52.1 is starting up Linux 6.6.14-0-virt (x86_64)

 * /proc is already mounted
 * Starting networking ... [ ok ]
 * Starting sshd ... [ ok ]

Welcome to Alpine Linux 3.19
Kernel 6.6.14-0-virt on an x86_64 (/dev/ttyS0)

alpine-golden login: """

DEVUAN = """\
[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)
[    1.2] Run /init as init process
INIT: version 3.06 booting
Starting hotplug events dispatcher: udevd.
INIT: Entering runlevel: 2
Starting OpenBSD Secure Shell server: sshd.

Devuan GNU/Linux 5 devuan-golden ttyS0

devuan-golden login: """


@pytest.mark.parametrize(
    ("text", "init", "host"), [(ALPINE, "openrc", "alpine-golden"), (DEVUAN, "sysvinit", "devuan-golden")]
)
def test_guests_with_other_inits_are_up_at_their_login_prompt(text: str, init: str, host: str) -> None:
    r = cc.read(text)
    assert r.up and r.init == init and r.hostname == host and r.failure_kind == ""
    assert observation.ready(text)


def test_an_openrc_boot_that_hangs_is_not_called_init_never_ran() -> None:
    hung = ALPINE.split("Welcome to")[0]
    r = cc.read(hung)
    assert not r.up and r.failure_kind == "init-not-reached"
    assert "never ran an init" not in r.failure and "(last: init:openrc)" in r.failure


def test_boot_family_consoles_say_their_cause_in_one_line() -> None:
    """The boot families moved (tests/qemu/test_boot_families.py): a root named by a device name the
    target does not give, and OVMF with a fresh variable store finding no boot option."""
    r = cc.read(plain("vmware-born--kvm--root-by-device-name.log"))
    assert (r.failure_kind, r.root_spec) == ("root-device-not-found", "/dev/sda1")
    assert r.failure == (
        "initramfs-tools gave up waiting for root /dev/sda1 and dropped to its shell; the kernel named the disk "
        "vda: the root is named /dev/sda1, a kernel device name this hardware does not give"
    )
    r = cc.read(plain("uefi-nvram--kvm--fresh-nvram-shell.log"))
    assert (r.failure_kind, r.failure) == ("no-bootable-device", "OVMF (UEFI) could not load any boot option")
    assert cc.dead_end(plain("uefi-nvram--kvm--fresh-nvram-shell.log"))
    # a disk named as the root names it adds nothing: the cause lies elsewhere
    assert "the kernel named" not in cc.read(plain("initramfs-tools--root-uuid-missing.log")).failure
