"""Import OVAs built with domain/ovf.py + toolbox/ova.py + toolbox/diskconv.py; export them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain import ovf
from domain.vm import ExportedVm
from drivers.base import InteropFailure
from tests.packages import read_ova
from toolbox import diskconv, ova

pytestmark = pytest.mark.vsphere
MIB = 1 << 20
MARKER = b"crossvisor-vsphere-marker-0123456789"
OFFSET = 3 * MIB + 512


def make_ova(tmp: Path, name: str, **desc_kw) -> tuple[ExportedVm, ovf.OvfDescriptor]:
    """A real streamOptimized VMDK with a content marker, packaged as OVA with a manifest."""
    raw = tmp / f"{name}.raw"
    diskconv.create(raw, "raw", 8 * MIB)
    diskconv.write_marker(raw, "raw", OFFSET, MARKER)
    vmdk = tmp / f"{name}-disk1.vmdk"
    diskconv.convert(raw, "raw", vmdk, "vmdk", subformat="streamOptimized")
    raw.unlink()
    kw = {
        "name": name,
        "cpus": 2,
        "memory_mib": 256,
        "disks": [
            ovf.OvfDisk(
                file_href=vmdk.name,
                capacity_bytes=8 * MIB,
                format="vmdk-streamOptimized",
                controller="scsi",
                controller_subtype="lsilogic",
                file_size=vmdk.stat().st_size,
            )
        ],
        "nics": [ovf.OvfNic(model="VmxNet3", network="default")],
        "firmware": "efi",
        "hardware_version": "vmx-11",
        "metadata": {"cell": "c9", "source": "libvirt"},
    }
    kw.update(desc_kw)
    desc = ovf.OvfDescriptor(**kw)
    out = ova.write_ova(ovf.build_ovf(desc), [vmdk], tmp / f"{name}.ova")
    vmdk.unlink()
    return ExportedVm(package=str(out), disks=[]), desc


def test_import_ova_inspect_then_export_keeps_disk_bytes(driver, vm_name, tmp_path):
    pkg, _ = make_ova(tmp_path / "in", vm_name) if (tmp_path / "in").mkdir() is None else None
    hw = driver.import_vm(pkg, vm_name)
    assert (hw.cpus, hw.memory_mib, hw.firmware, hw.hardware_version) == (
        2,
        256,
        "efi",
        "vmx-11",
    )
    assert [(d.bus, d.capacity_bytes) for d in hw.disks] == [("scsi", 8 * MIB)]
    assert hw.controllers == ["scsi:lsilogic"]
    assert [n.model for n in hw.nics] == ["vmxnet3"]
    assert hw.metadata == {"cell": "c9", "source": "libvirt"}
    ev = driver.last_import_evidence
    assert int(ev["nfc_bytes"]) > 0
    assert ev["nfc_persisted"] == "false"  # vcsim drops NFC data: the driver says so
    assert driver.import_vm(pkg, vm_name) == hw  # idempotent by name

    out = driver.export(vm_name, tmp_path / "out")
    assert out.package.endswith(".ova")
    desc, files = read_ova(Path(out.package), tmp_path / "check")
    assert (desc.cpus, desc.memory_mib, desc.firmware, desc.hardware_version) == (
        2,
        256,
        "efi",
        "vmx-11",
    )
    assert desc.metadata == {"cell": "c9", "source": "libvirt"}
    assert [n.model for n in desc.nics] == ["VmxNet3"]
    (disk,) = files.values()
    assert diskconv.read_marker(disk, "vmdk", OFFSET, len(MARKER)) == MARKER


@pytest.mark.parametrize(
    ("desc_kw", "reason"),
    [
        ({"nics": [ovf.OvfNic(model="virtio")]}, r"unsupported device .*virtio"),
        ({"hardware_version": "vmx-99"}, r"unsupported hardware family 'vmx-99'"),
        (
            {"hardware_version": "virtualbox-2.2"},
            r"unsupported hardware family 'virtualbox-2.2'",
        ),
    ],
)
def test_import_unsupported_is_interop_failure(driver, vm_name, tmp_path, desc_kw, reason):
    pkg, _ = make_ova(tmp_path, vm_name, **desc_kw)
    with pytest.raises(InteropFailure, match=reason) as ei:
        driver.import_vm(pkg, vm_name)
    assert ei.value.evidence
    assert driver.list_vms(vm_name) == []


def test_import_virtio_disk_controller_is_interop_failure(driver, vm_name, tmp_path):
    _, desc = make_ova(tmp_path, vm_name)
    desc.disks[0].controller, desc.disks[0].controller_subtype = "virtio", ""
    pkg2, _ = make_ova(
        tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path,
        vm_name,
        disks=desc.disks,
    )
    with pytest.raises(InteropFailure, match="ResourceType 20"):
        driver.import_vm(pkg2, vm_name)
    assert driver.list_vms(vm_name) == []


def test_import_corrupt_package_is_interop_failure(driver, vm_name, tmp_path):
    pkg, _ = make_ova(tmp_path, vm_name)
    data = bytearray(Path(pkg.package).read_bytes())
    data[-20000] ^= 0xFF  # flip a byte inside the disk member
    Path(pkg.package).write_bytes(bytes(data))
    with pytest.raises(InteropFailure):
        driver.import_vm(pkg, vm_name)
    assert driver.list_vms(vm_name) == []
