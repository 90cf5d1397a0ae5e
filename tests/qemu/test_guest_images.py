"""The self-booting guest images boot from their own disks on QEMU hardware profiles (TCG, libvirtd).

Each boot is real: firmware -> the image's GRUB -> its kernel and initramfs-tools initramfs ->
systemd -> udev, fstab, networkd -> the app; the assertions are on what the guest printed about
itself (domain.guest_evidence) and on the app answering through the loopback port forward.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from domain.guest_evidence import boot_failure, parse
from domain.profiles import PROFILES
from tests.qemu.guest_boot import boot, overlay_with_marker, product_driver
from toolbox.guest_images import IMAGES, BuiltImage, build_image

pytestmark = pytest.mark.qemu

PREFIX = "cvg-test-"


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    # The three builds share one debootstrapped base; in parallel they take ~2-3 min from nothing.
    with ThreadPoolExecutor(max_workers=3) as pool:
        built = dict(zip(IMAGES, pool.map(build_image, IMAGES), strict=True))
    for name, img in built.items():
        assert img.manifest["image"] == name
        assert img.manifest["marker_offset"] == 1048576
        assert img.manifest["first_partition_start_bytes"] == 2 * 1024 * 1024
    return built


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("guests")


@pytest.fixture(scope="module")
def drv(libvirt_conn, work):
    yield from product_driver(work, PREFIX)


def _boot(drv, work: Path, base: Path, profile_key: str, firmware: str, **kw):
    name = PREFIX + uuid.uuid4().hex[:8]
    disk = work / f"{name}.qcow2"
    marker_hex = overlay_with_marker(base, disk, f"crossvisor-marker {name}")
    obs = boot(drv, name, PROFILES[profile_key], firmware, disk, **kw)
    return obs, marker_hex, disk


def test_manifests_describe_the_images(images):
    legacy, uefi, portable = images["legacy-bios"], images["uefi"], images["portable-bios"]
    assert (legacy.firmware, legacy.manifest["partition_table"]) == ("bios", "mbr")
    assert legacy.manifest["kernel_package"] == "linux-image-amd64" and legacy.manifest["needs_birth"]
    assert (uefi.firmware, uefi.manifest["partition_table"]) == ("efi", "gpt")
    assert uefi.manifest["kernel_package"] == "linux-image-cloud-amd64"
    assert (portable.firmware, portable.manifest["partition_table"]) == ("bios", "mbr")
    assert not portable.manifest["needs_birth"]


def test_portable_bios_on_esxi_hardware(drv, images, work):
    """PVSCSI + VMXNET3 on i440fx: the cloud kernel drives both, DHCP on whatever name the NIC has."""
    obs, marker_hex, _ = _boot(drv, work, images["portable-bios"].disk, "esxi", "bios")
    ev = parse(obs.console)
    assert ev.complete and ev.ready, obs.console[-3000:]
    assert ev.image == "portable-bios" and ev.firmware == "bios" and ev.fact("init") == "systemd"
    assert ev.root and ev.root.driver == "vmw_pvscsi" and ev.root.disk == "sda" and ev.root.mode == "rw"
    assert ev.root.source.startswith("UUID=")
    assert [(d.name, d.driver, d.marker) for d in ev.disks] == [("sda", "vmw_pvscsi", marker_hex)]
    assert ev.netcfg and ev.netcfg.any_name
    [nic] = ev.nics
    assert nic.driver == "vmxnet3" and nic.ipv4 == "10.0.2.15/24" and nic.link == "up"
    assert ev.app and ev.app.listening and ev.app.port == 8080
    # the app answers from the host through the loopback forward, from this very boot
    assert obs.app_body == f"cv-app image=portable-bios boot_id={ev.boot_id} marker={marker_hex}"
    assert all(m.ok for m in ev.mounts)
    assert obs.shutdown_s is not None, "the ACPI power button did not power the guest off"
    assert boot_failure(obs.console) is None


def test_uefi_on_kvm_hardware(drv, images, work):
    """OVMF -> EFI/BOOT/BOOTX64.EFI -> GRUB -> root by UUID on virtio-blk, ESP mounted from fstab."""
    obs, marker_hex, _ = _boot(drv, work, images["uefi"].disk, "kvm", "efi")
    ev = parse(obs.console)
    assert ev.complete and ev.ready, obs.console[-3000:]
    assert ev.firmware == "efi" and ev.image == "uefi"
    assert ev.root and ev.root.driver == "virtio_blk" and ev.root.dev == "/dev/vda2"
    assert {m.point: m.ok for m in ev.mounts} == {"/": True, "/boot/efi": True}
    assert [n.driver for n in ev.nics] == ["virtio_net"] and ev.nics[0].ipv4
    assert obs.app_body and marker_hex in obs.app_body and ev.boot_id in obs.app_body


def test_uefi_disk_on_bios_only_hardware_finds_nothing_to_boot(drv, images, work):
    obs, _, _ = _boot(drv, work, images["uefi"].disk, "hyperv-gen1", "bios", timeout_s=60)
    assert not parse(obs.console).booted
    fail = boot_failure(obs.console)
    assert fail and fail.kind == "no-bootable-device", obs.console[-2000:]


@pytest.fixture(scope="module")
def born_on_kvm(drv, images, work) -> Path:
    """legacy-bios's birth boot on the kvm profile: it pins itself to virtio (vda1, dep initramfs)."""
    obs, _, disk = _boot(
        drv, work, images["legacy-bios"].disk, "kvm", "bios", timeout_s=600, until_off=True, shutdown=False
    )
    ev = parse(obs.console)
    assert ev.birth.get("ok") == "1", obs.console[-3000:]
    assert ev.birth["root"] == "/dev/vda1" and ev.birth["grub_root"] == "/dev/vda1"
    assert ev.birth["driver"] == "virtio_blk" and ev.birth["initramfs"].startswith("dep")
    assert obs.ended == "domain-off"
    return disk


def test_born_legacy_boots_where_it_was_born(drv, born_on_kvm, work):
    obs, marker_hex, _ = _boot(drv, work, born_on_kvm, "kvm", "bios")
    ev = parse(obs.console)
    assert ev.complete, obs.console[-3000:]
    assert ev.root and ev.root.source == "/dev/vda1" and ev.root.driver == "virtio_blk"
    assert ev.netcfg and ev.netcfg.names == (ev.nics[0].name,)
    assert ev.nics[0].ipv4 and obs.app_body and marker_hex in obs.app_body
    # the generic kernel's dep initramfs: no AHCI driver for q35's built-in SATA controller any more
    assert any(p.id == "8086:2922" and p.driver is None for p in ev.initramfs_pci)


def test_born_legacy_cannot_find_its_root_on_pvscsi(drv, born_on_kvm, work):
    """Born on virtio, moved to ESXi hardware: its initramfs has no PVSCSI driver and gives up."""
    obs, _, _ = _boot(drv, work, born_on_kvm, "esxi", "bios", timeout_s=120)
    assert obs.ended == "domain-off", "the guest should end its own boot (panic=-1, on_reboot=destroy)"
    fail = boot_failure(obs.console)
    assert fail and fail.kind == "root-device-not-found", obs.console[-3000:]
    assert fail.root_spec == "/dev/vda1"
    assert "15ad:07c0" in [p.id for p in fail.undriven_storage]
