"""domain.guest_evidence on real captured consoles (tests/fixtures/consoles) and on edge cases.

The fixtures are whole serial consoles of the self-booting guest images on QEMU hardware profiles,
captured with bench/guest_boot_matrix.py (see tests/fixtures/consoles/README.md). The expectations
below are what those boots showed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.guest_evidence import KINDS, PCI_NAMES, boot_failure, parse, pci_name

FIXTURES = Path(__file__).parent / "fixtures" / "consoles"


def console(name: str) -> str:
    return (FIXTURES / f"{name}.log").read_text(errors="replace")


def results() -> dict[str, dict]:
    """What the capture run (bench/guest_boot_matrix.py) concluded for each console."""
    return {r["label"]: r for r in json.loads((FIXTURES / "results.json").read_text())}


# --- synthetic edge cases ---------------------------------------------------------------------

GOOD = """\
CV-INITRAMFS stage=local-top root=UUID=abc uptime_s=5
CV-PCI slot=0000:00:03.0 class=0x010000 id=1af4:1001 driver=virtio-pci
CROSSVISOR-BOOT-OK
CV-FACT image=portable-bios build=k1 init=systemd kernel=6.1.0-50-cloud-amd64 firmware=bios cpus=1 mem_kib=481284 boot_id=b-1
CV-ROOT dev=/dev/vda1 source=UUID=abc fstype=ext4 disk=vda driver=virtio_blk mode=rw
CV-MOUNT point=/ spec=UUID=abc ok=1 error=-
CV-MOUNT point=/data spec=/dev/vdb1 ok=0 error=not-mounted-timeout
CV-DISK name=vda bytes=1610612736 driver=virtio_blk marker=6162
CV-PCI slot=0000:00:03.0 class=0x010000 id=1af4:1001 driver=virtio-pci
CV-PCI slot=0000:00:04.0 class=0x020000 id=1011:0019 driver=none
CV-NETCFG names=ens3,ens4 source=/etc/systemd/network/10-cv.network
CV-NIC name=ens4 mac=52:54:00:12:34:56 driver=virtio_net link=up ipv4=10.0.2.15/24
CV-APP name=http port=8080 listening=1
CV-FACT uptime_s=12.5
CROSSVISOR-BOOT-END
CV-READY
"""


def test_parses_every_line_kind():
    ev = parse(GOOD)
    assert ev.booted and ev.complete and ev.ready and ev.boots == 1
    assert ev.image == "portable-bios" and ev.boot_id == "b-1" and ev.firmware == "bios" and ev.uptime_s == 12.5
    assert ev.fact("cpus") == "1" and ev.fact("init") == "systemd"
    assert ev.root and (ev.root.dev, ev.root.source, ev.root.driver, ev.root.mode) == (
        "/dev/vda1",
        "UUID=abc",
        "virtio_blk",
        "rw",
    )
    assert [(m.point, m.ok, m.error) for m in ev.mounts] == [("/", True, None), ("/data", False, "not-mounted-timeout")]
    assert [(d.name, d.bytes, d.marker) for d in ev.disks] == [("vda", 1610612736, "6162")]
    assert [(p.slot, p.driver) for p in ev.pci] == [("0000:00:03.0", "virtio-pci"), ("0000:00:04.0", None)]
    assert [p.name for p in ev.undriven_network] == ["DEC 21140 (tulip)"]
    assert ev.initramfs_stages == ("local-top",) and ev.initramfs_root == "UUID=abc"
    assert ev.netcfg and ev.netcfg.names == ("ens3", "ens4") and not ev.netcfg.any_name
    assert [(n.name, n.ipv4) for n in ev.nics] == [("ens4", "10.0.2.15/24")]
    assert ev.app and ev.app.listening and ev.app.port == 8080
    assert boot_failure(GOOD) is None


def test_tolerates_crlf_nuls_and_kernel_messages_on_the_same_line():
    noisy = GOOD.replace("\n", "\r\n").replace("CV-NIC", "\x00\x00[   12.345678] e1000: eth0 up CV-NIC")
    noisy = noisy.replace("listening=1", "listening=1[   12.5] random: crng init done")
    ev = parse(noisy)
    assert ev.complete and ev.ready
    assert [(n.name, n.driver, n.ipv4) for n in ev.nics] == [("ens4", "virtio_net", "10.0.2.15/24")]
    assert ev.app and ev.app.listening


def test_last_boot_wins_and_a_truncated_report_is_incomplete():
    second = GOOD.replace("boot_id=b-1", "boot_id=b-2").split("CV-APP")[0]
    ev = parse(GOOD + second)
    assert ev.boots == 2 and ev.boot_id == "b-2" and ev.booted and not ev.complete and not ev.ready
    fail = boot_failure(GOOD + second)
    assert fail and fail.kind == "evidence-incomplete"


def test_empty_console_is_no_output():
    for text in ("", "\x00\x00\r\n", "\x1bc\x1b[?7l\x1b[2J"):
        fail = boot_failure(text)
        assert fail and fail.kind == "no-output"


def test_kernel_panic_without_initramfs():
    text = (
        "[    0.000000] Linux version 6.1.0-50-amd64\n[    0.000000] Command line: BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro\n"
        '[    2.1] VFS: Cannot open root device "sda1" or unknown-block(0,0): error -6\n'
        "[    2.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
    )
    fail = boot_failure(text)
    assert fail and fail.kind == "kernel-panic-vfs" and fail.root_spec == "/dev/sda1"
    assert "unknown-block(0,0)" in fail.detail


def test_grub_errors_before_the_kernel():
    fail = boot_failure(
        "SeaBIOS (version 1.16.2)\r\nBooting from Hard Disk...\r\nerror: no such device: 1234-5678.\r\n"
        "Entering rescue mode...\r\ngrub rescue> "
    )
    assert fail and fail.kind == "grub-error" and "no such device" in fail.detail and "grub rescue>" in fail.detail
    fail = boot_failure("Booting from Hard Disk...\nerror: unknown filesystem.\ngrub rescue> ")
    assert fail and fail.kind == "grub-error" and "unknown filesystem" in fail.detail


def test_initramfs_give_up_from_stock_initramfs_tools_messages():
    text = (
        "[    0.0] Linux version 6.1\nBegin: Running /scripts/local-top ... done.\n"
        "Gave up waiting for root file system device.  Common problems:\n"
        "ALERT!  UUID=abc does not exist.  Dropping to a shell!\n"
    )
    fail = boot_failure(text)
    assert fail and fail.kind == "root-device-not-found" and fail.root_spec == "UUID=abc"


def test_pci_names_cover_the_profiles_hardware():
    for vid in (
        "15ad:07c0",
        "1000:0054",
        "8086:7010",
        "15ad:07b0",
        "1011:0019",
        "10ec:8139",
        "8086:100e",
        "8086:10d3",
        "1af4:1000",
        "1af4:1001",
        "1af4:1004",
        "1af4:1041",
        "1af4:1042",
        "1af4:1048",
        "8086:2922",
        "1b36:0010",
    ):
        assert vid in PCI_NAMES
    assert pci_name("15AD:07C0") == "VMware PVSCSI" and pci_name("dead:beef") == "PCI dead:beef"


# --- the captured consoles ---------------------------------------------------------------------


def test_every_fixture_parses_and_classifies_consistently():
    recorded_all = results()
    logs = sorted(FIXTURES.glob("*.log"))
    assert len(logs) >= 20
    for log in logs:
        text = log.read_text(errors="replace")
        ev = parse(text)
        fail = boot_failure(text)
        if ev.complete:
            assert fail is None, log.name
            assert ev.root is not None and ev.app is not None, log.name
        elif ev.birth:
            assert ev.birth["ok"] == "1", log.name
        else:
            assert fail is not None and fail.kind in KINDS, log.name
        recorded = recorded_all.get(log.stem)
        if recorded:  # what the capture run concluded from the same console
            expected = "born" if ev.birth else ("booted" if ev.complete else fail.kind)
            assert recorded["outcome"] == expected, log.name


# label -> (outcome, root disk driver, NIC drivers the guest bound, undriven PCI ids it showed)
OBSERVED = {
    "portable-bios--kvm": ("booted", "virtio_blk", ["virtio_net"], {"8086:2922"}),
    "portable-bios--kvm--virtio-scsi": ("booted", "virtio_scsi", ["virtio_net"], {"8086:2922"}),
    "portable-bios--esxi": ("booted", "vmw_pvscsi", ["vmxnet3"], set()),
    # the cloud kernel has no mptsas: the portable image cannot find its root on LSI Logic SAS
    "portable-bios--esxi--lsisas": ("root-device-not-found", None, [], {"1000:0054"}),
    # ... and no tulip / 8139 / e1000 driver: the guest boots with no network at all
    "portable-bios--hyperv-gen1": ("booted", "ata_piix", [], {"1011:0019"}),
    "portable-bios--xen-hvm": ("booted", "ata_piix", [], {"10ec:8139"}),
    "portable-bios--xen-hvm--e1000": ("booted", "ata_piix", [], {"8086:100e"}),
    "portable-bios--kvm--efi-firmware": ("no-bootable-device", None, [], set()),
    "uefi--kvm": ("booted", "virtio_blk", ["virtio_net"], {"8086:2922"}),
    "uefi--kvm--virtio-scsi": ("booted", "virtio_scsi", ["virtio_net"], {"8086:2922"}),
    # OVMF (the EFI stand-in) has no PVSCSI / LSI SAS boot driver: it tries PXE and gives up
    "uefi--esxi": ("no-bootable-device", None, [], set()),
    "uefi--esxi--lsisas": ("no-bootable-device", None, [], set()),
    # SeaBIOS jumps into the GPT disk's protective MBR (no boot code): silence
    "uefi--hyperv-gen1": ("no-bootable-device", None, [], set()),
    "uefi--xen-hvm": ("no-bootable-device", None, [], set()),
    "legacy-bios--birth--kvm": ("born", None, [], set()),
    "legacy-bios--birth--esxi": ("born", None, [], set()),
    "legacy-bios--birth--hyperv-gen1": ("born", None, [], set()),
    "legacy-bios--birth--xen-hvm": ("born", None, [], set()),
    "legacy-bios-born-kvm--kvm": ("booted", "virtio_blk", ["virtio_net"], set()),
    "legacy-bios-born-kvm--esxi": ("root-device-not-found", None, [], {"8086:7010", "15ad:07c0"}),
    "legacy-bios-born-kvm--hyperv-gen1": ("root-device-not-found", None, [], {"8086:7010"}),
    "legacy-bios-born-kvm--xen-hvm": ("root-device-not-found", None, [], {"8086:7010"}),
    # virtio-pci binds the controller, but virtio_scsi is not in the virtio_blk-born initramfs
    "legacy-bios-born-kvm--kvm--virtio-scsi": ("root-device-not-found", None, [], {"8086:2922", "1af4:1048"}),
    "legacy-bios-born-kvm--esxi--lsisas": ("root-device-not-found", None, [], {"8086:7010", "1000:0054"}),
    "legacy-bios-born-esxi--kvm": ("root-device-not-found", None, [], {"8086:2922", "1af4:1042"}),
    "legacy-bios-born-esxi--esxi": ("booted", "vmw_pvscsi", ["vmxnet3"], set()),
    "legacy-bios-born-esxi--hyperv-gen1": ("root-device-not-found", None, [], {"8086:7010"}),
    "legacy-bios-born-esxi--esxi--lsisas": ("root-device-not-found", None, [], {"8086:7010", "1000:0054"}),
    "legacy-bios-born-hyperv-gen1--esxi": ("root-device-not-found", None, [], {"15ad:07c0"}),
    "legacy-bios-born-hyperv-gen1--hyperv-gen1": ("booted", "ata_piix", ["tulip"], set()),
    # same IDE root, NIC moved from slot 0x0a (ens10) to 0x04 (ens4): the config names ens10
    "legacy-bios-born-hyperv-gen1--xen-hvm": ("booted", "ata_piix", ["8139cp"], set()),
    "legacy-bios-born-hyperv-gen1--xen-hvm--e1000": ("booted", "ata_piix", ["e1000"], set()),
    "legacy-bios-born-xen-hvm--hyperv-gen1": ("booted", "ata_piix", ["tulip"], set()),
    "legacy-bios-born-xen-hvm--xen-hvm": ("booted", "ata_piix", ["8139cp"], set()),
}
# booted, but the network config names the NIC's old name: (config names, NIC name now)
RENAMED = {
    "legacy-bios-born-hyperv-gen1--xen-hvm": (("ens10",), "ens4"),
    "legacy-bios-born-hyperv-gen1--xen-hvm--e1000": (("ens10",), "ens4"),
    "legacy-bios-born-xen-hvm--hyperv-gen1": (("ens4",), "ens10"),
}


def _outcome(text: str) -> str:
    ev = parse(text)
    if ev.birth:
        return "born"
    if ev.complete:
        return "booted"
    fail = boot_failure(text)
    return fail.kind if fail else "unknown"


@pytest.mark.parametrize("label", sorted(OBSERVED))
def test_fixture_shows_what_the_boot_showed(label):
    outcome, root_driver, nic_drivers, undriven = OBSERVED[label]
    text = console(label)
    ev = parse(text)
    assert _outcome(text) == outcome
    assert (ev.root.driver if ev.root else None) == root_driver
    assert [n.driver for n in ev.nics if n.driver] == nic_drivers
    shown = {p.id for p in (ev.undriven_storage + ev.undriven_network)}
    assert shown == undriven
    if outcome == "booted":
        assert ev.ready and ev.app and ev.app.listening
        if label in RENAMED:
            names, now = RENAMED[label]
            assert ev.netcfg and ev.netcfg.names == names
            assert [(n.name, n.ipv4) for n in ev.nics] == [(now, None)]
        else:
            assert [n.ipv4 for n in ev.nics] == (["10.0.2.15/24"] if nic_drivers else [])
        assert ev.disks and ev.disks[0].marker.startswith("63726f73737669736f722d6d61726b6572")  # "crossvisor-marker"
    if outcome == "born":
        assert ev.birth["ok"] == "1" and ev.birth["initramfs"].startswith("dep-prebuilt:")
        assert ev.birth["root"] == ev.birth["grub_root"] and ev.birth["root"].startswith("/dev/")
    if outcome == "root-device-not-found":
        fail = boot_failure(text)
        assert fail and {p.id for p in fail.undriven_storage} == undriven and ev.rootwait and ev.rootwait.gave_up


def test_a_virtio_controller_without_its_device_driver_counts_as_undriven():
    """virtio-pci binds every virtio function; without virtio_scsi the disk behind it stays invisible."""
    text = (
        "CV-INITRAMFS stage=local-top root=/dev/vda1 uptime_s=9\n"
        "CV-PCI slot=0000:04:00.0 class=0x010000 id=1af4:1048 driver=virtio-pci virtio_driver=none\n"
        "CV-PCI slot=0000:01:00.0 class=0x020000 id=1af4:1041 driver=virtio-pci virtio_driver=virtio_net\n"
        "CV-ROOTWAIT gave_up=1 root=/dev/vda1 after_s=10\n"
    )
    fail = boot_failure(text)
    assert fail and fail.kind == "root-device-not-found"
    [p] = fail.undriven_storage
    assert (p.id, p.driver, p.virtio_driver, p.effective_driver) == ("1af4:1048", "virtio-pci", None, None)
    assert "virtio-scsi" in fail.detail
