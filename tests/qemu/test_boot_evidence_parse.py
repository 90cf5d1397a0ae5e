"""parse_boot_evidence on recorded serial text (pure: no QEMU, so not marked qemu)."""

from __future__ import annotations

from drivers.guest_images import marker_bytes, parse_boot_evidence

SAMPLE = """\
[    0.000000] Linux version 6.1.0-56-cloud-amd64 ...\r
CROSSVISOR-BOOT-OK\r
CV-FACT kernel=6.1.0-56-cloud-amd64\r
CV-FACT cpus=2\r
CV-FACT mem_kib=223376\r
CV-FACT marker_offset=1048576\r
CV-DISK name=vda bytes=67108864 marker={m}\r
CV-DISK name=vdb bytes=1048576 marker=\r
[    2.1] random: crng init doneCV-NIC name=eth0 driver=virtio_net mac=52:54:00:12:34:56\r
CV-PCI slot=0000:00:03.0 class=0x020000 id=1af4:1000 driver=virtio-pci\r
CV-PCI slot=0000:00:04.0 class=0x020000 id=8086:100e driver=none\r
CV-FACT uptime_s=3.21\r
CROSSVISOR-BOOT-END\r
[    3.349555] reboot: Power down\r
""".format(m=marker_bytes("hello").hex())


def test_parses_all_facts():
    ev = parse_boot_evidence(SAMPLE)
    assert ev["booted"] and ev["complete"]
    assert ev["cpus"] == 2
    assert ev["mem_kib"] == 223376
    assert ev["kernel"] == "6.1.0-56-cloud-amd64"
    assert ev["disks"] == {"vda": 67108864, "vdb": 1048576}
    assert ev["disk_marker_hex"] == marker_bytes("hello").hex()
    assert ev["disk_markers"]["vdb"] == ""
    assert ev["nic_drivers"] == ["virtio_net"]  # found behind a kernel message on the same line
    assert [p["id"] for p in ev["pci"]] == ["1af4:1000", "8086:100e"]
    assert ev["uptime_s"] == 3.21


def test_truncated_console_is_booted_but_incomplete():
    ev = parse_boot_evidence(SAMPLE.split("CV-DISK name=vdb")[0])
    assert ev["booted"] and not ev["complete"]
    assert ev["disks"] == {"vda": 67108864}


def test_no_boot():
    ev = parse_boot_evidence("[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    assert not ev["booted"] and not ev["complete"]
    assert ev["cpus"] is None and ev["disks"] == {} and ev["disk_marker_hex"] is None
