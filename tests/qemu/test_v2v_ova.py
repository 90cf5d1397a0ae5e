"""virt-v2v converts a real Debian OVA to local qcow2, and the result boots on QEMU (minutes).

Run with ``pytest -m v2v tests/qemu``; needs deploy/install-system.sh with CROSSVISOR_FULL=1.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from drivers.guest_images import parse_boot_evidence

REPO = Path(__file__).resolve().parents[2]
DOMAIN_PREFIX = "cvtest-tiny-"  # conftest purges this prefix before and after the session
# A cold cache adds the guest build (~2 min) to virt-v2v (~3.5 min) on 2 shared cores.
pytestmark = [pytest.mark.qemu, pytest.mark.v2v, pytest.mark.timeout(1800)]


def _kv_lines(cmd: list[str], timeout: float) -> dict[str, str]:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def v2v_ova() -> Path:
    kv = _kv_lines(["bash", str(REPO / "deploy/guests/build-v2v-guest.sh")], timeout=1800)
    return Path(kv["OVA"])


def bootable_here(xml: str, name: str, serial_log: Path) -> str:
    """virt-v2v's local XML, adapted to this host: TCG, no libvirt network, serial to a file."""
    root = ET.fromstring(xml)
    root.set("type", "qemu")  # v2v writes kvm; guests hang under KVM here
    root.find("name").text = name
    for tag in ("uuid", "cpu"):
        el = root.find(tag)
        if el is not None:
            root.remove(el)
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        el = root.find(tag)
        if el is None:
            el = ET.SubElement(root, tag)
        el.text = "destroy"
    sec = ET.SubElement(root, "seclabel", type="static", model="dac", relabel="no")
    ET.SubElement(sec, "label").text = "+0:+0"
    devices = root.find("devices")
    for el in list(devices):
        # vsock needs /dev/vhost-vsock, absent here.
        if el.tag in ("serial", "console", "vsock"):
            devices.remove(el)
        elif el.tag == "interface":
            # No libvirt network here: keep v2v's NIC model, switch to user-mode networking.
            el.set("type", "user")
            for child in list(el):
                if child.tag != "model" and child.tag != "mac":
                    el.remove(child)
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(serial_log))
    ET.SubElement(serial, "target", port="0")
    return ET.tostring(root, encoding="unicode")


def test_v2v_ova_to_qcow2_boots(libvirt_conn, v2v_ova, tmp_path):
    env = dict(os.environ)
    env.update(_kv_lines(["bash", str(REPO / "deploy/guests/libguestfs-env.sh")], timeout=600))
    name = DOMAIN_PREFIX + "v2v-" + uuid.uuid4().hex[:8]
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.monotonic()
    proc = subprocess.run(
        ["virt-v2v", "-i", "ova", str(v2v_ova), "-o", "local", "-os", str(out), "-of", "qcow2", "-on", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    convert_s = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    xml_path = out / f"{name}.xml"
    disk = out / f"{name}-sda"
    assert xml_path.is_file() and disk.is_file(), sorted(p.name for p in out.iterdir())
    fmt = subprocess.run(["qemu-img", "info", str(disk)], capture_output=True, text=True, check=True).stdout
    assert "file format: qcow2" in fmt

    log = tmp_path / "serial.log"
    dom = libvirt_conn.defineXML(bootable_here(xml_path.read_text(), name, log))
    try:
        t1 = time.monotonic()
        dom.create()
        while dom.isActive():
            if time.monotonic() - t1 > 240:
                pytest.fail(f"converted guest still running after 240 s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        boot_s = time.monotonic() - t1
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    ev = parse_boot_evidence(log.read_text(errors="replace"))
    assert ev["booted"] and ev["complete"], log.read_text(errors="replace")[-3000:]
    # v2v moved the disk from the OVF's LSI SCSI controller to virtio-blk and kept it bootable.
    assert list(ev["disks"]) == ["vda"]
    assert ev["nic_drivers"], ev["nics"]
    print(f"virt-v2v {convert_s:.0f} s, boot {boot_s:.0f} s, nics {ev['nic_drivers']}")
