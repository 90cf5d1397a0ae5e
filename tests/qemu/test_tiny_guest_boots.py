"""The tiny guest boots on real QEMU (TCG) under libvirt and reports hardware + disk content."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from drivers.guest_images import MARKER_OFFSET, marker_bytes, parse_boot_evidence, write_marker

pytestmark = pytest.mark.qemu

DISK_BYTES = 64 * 1024 * 1024
MARKER = "crossvisor-marker tiny-guest 0001"


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def marked_qcow2(tmp: Path, marker: str = MARKER) -> Path:
    raw = tmp / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK_BYTES)
    write_marker(raw, marker)
    out = tmp / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(out))
    raw.unlink()
    return out


def test_virtio_guest_reports_hardware_and_disk_marker(boot_run, guest, tmp_path):
    disk = marked_qcow2(tmp_path)
    text, secs = boot_run.boot(dict(guest=guest, disk=disk, disk_format="qcow2", nic_model="virtio"))
    ev = parse_boot_evidence(text)
    assert ev["booted"] and ev["complete"], text[-2000:]
    assert ev["cpus"] == 2
    # 256 MiB minus what the kernel reserves before userspace.
    assert 200 * 1024 < ev["mem_kib"] <= 256 * 1024
    assert ev["disks"] == {"vda": DISK_BYTES}
    assert ev["marker_offset"] == MARKER_OFFSET
    assert ev["disk_marker_hex"] == marker_bytes(MARKER).hex()
    assert ev["nic_drivers"] == ["virtio_net"]
    assert ev["uptime_s"] is not None and ev["uptime_s"] < 30
    assert secs < 40, f"TCG boot took {secs:.1f} s"


@pytest.mark.parametrize(
    ("model", "drivers", "pci_id", "pci_driver"),
    [
        ("vmxnet3", ["vmxnet3"], "15ad:07b0", "vmxnet3"),
        # The cloud kernel has no e1000 driver: the guest sees the NIC on PCI but binds nothing,
        # which is exactly what the NIC check must be able to report.
        ("e1000", [], "8086:100e", "none"),
    ],
)
def test_nic_model_is_visible_to_guest(boot_run, guest, tmp_path, model, drivers, pci_id, pci_driver):
    disk = marked_qcow2(tmp_path)
    text, _ = boot_run.boot(dict(guest=guest, disk=disk, disk_format="qcow2", nic_model=model, cpus=1))
    ev = parse_boot_evidence(text)
    assert ev["complete"], text[-2000:]
    assert ev["nic_drivers"] == drivers
    nics = [p for p in ev["pci"] if p["class"].startswith("0x02")]
    assert [(p["id"], p["driver"]) for p in nics] == [(pci_id, pci_driver)]


def test_marker_survives_qcow2_vmdk_qcow2(boot_run, guest, tmp_path):
    src = marked_qcow2(tmp_path)
    vmdk = tmp_path / "disk.vmdk"
    back = tmp_path / "back.qcow2"
    qemu_img("convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", str(src), str(vmdk))
    qemu_img("convert", "-f", "vmdk", "-O", "qcow2", str(vmdk), str(back))
    text, _ = boot_run.boot(dict(guest=guest, disk=back, disk_format="qcow2", nic_model=None, cpus=1))
    ev = parse_boot_evidence(text)
    assert ev["complete"], text[-2000:]
    assert ev["disks"] == {"vda": DISK_BYTES}
    assert ev["disk_marker_hex"] == marker_bytes(MARKER).hex()
    assert ev["nic_drivers"] == []


def test_other_marker_is_detected_as_different(boot_run, guest, tmp_path):
    """The check can fail: a disk carrying another marker must not match ours."""
    disk = marked_qcow2(tmp_path, marker="some other content")
    text, _ = boot_run.boot(dict(guest=guest, disk=disk, disk_format="qcow2", disk_bus="scsi", cpus=1))
    ev = parse_boot_evidence(text)
    assert ev["complete"], text[-2000:]
    assert ev["disks"] == {"sda": DISK_BYTES}  # virtio-scsi + sd_mod path
    assert ev["disk_marker_hex"] != marker_bytes(MARKER).hex()
    assert ev["disk_marker_hex"] == marker_bytes("some other content").hex()
