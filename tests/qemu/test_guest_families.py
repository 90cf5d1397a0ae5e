"""Guest families with NO crossvisor part (deploy/guests/build-family-image.sh), each carrying a
behaviour that breaks real moves, moved where they really fail and remediated by the rungs an
operator would apply (domain/remedies.py, activities/stages/remediate.py's guestfish scripts).
Every boot is real (libvirtd, QEMU TCG, the product's driver and domain XML, the stages' own
observation code); every grade comes from a channel the guest has (console, SSH, guest agent, a
declared service) and is pinned with the channel and the cause it states.

Pinned image x profile x rung outcomes (a "new MAC" is a target that assigns its own, as an OVF
import into another hypervisor does):
- dracut-lvm-nm, kvm -> kvm with a new MAC: nics FAIL from the guest agent, the NIC got no address
  because its MAC changed (the NetworkManager keyfile names the old one).
- dracut-lvm-nm, kvm -> esxi: boots FAIL on the console, dracut's own words (its host-only
  initramfs, made on virtio, has no PVSCSI driver); after dracut-generic + nic-config (cumulative, as
  the ladder applies them) it boots on PVSCSI and the old static address is on the new NIC (new MAC).
- netplan-cloudinit, kvm -> kvm with a new MAC: cloud-init keeps the instance (same seed) and does not
  render again; the netplan file cloud-init wrote on the source matches the old MAC: nics FAIL from
  cloud-init's own table on the console, with the MAC change; after nic-config it gets DHCP.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from activities.channels import service, ssh
from activities.stages import guest, remediate
from domain import agent_channel, grading, observation
from domain.model import Grade, GuestImage, ServiceProbe, SshAccess
from domain.profiles import PROFILES
from domain.stage_io import AppProbe, GuestObservation
from domain.vm import DiskSpec, Hardware, NicSpec, VmSpec
from tests.qemu.guest_boot import overlay_with_marker, product_driver
from toolbox import diskconv
from toolbox.guest_images import build_plain_image

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(3600)]

PREFIX = "cvg-fam-"
MARKER = "crossvisor-marker family"
MARKER_HEX = MARKER.encode().ljust(64, b"\0").hex()
CHECKS = ["boots", "disks", "cpu_memory", "nics", "app"]
BOOT_TIMEOUT_S = 600.0
NO_NIC_SSH_S = 30.0  # SSH on a target whose NIC is expected unconfigured (a login would come in seconds)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def drv(libvirt_conn, work):
    yield from product_driver(work, PREFIX)


def _boot(
    drv,
    work: Path,
    base: Path,
    profile: str,
    image: GuestImage,
    mac: str = "",
    keep: Path | None = None,
    ssh_s: float = 120.0,
) -> tuple[GuestObservation, AppProbe, Hardware, str]:
    """One boot through the stages' own code (console watch, guest agent, SSH, service probe).
    ``mac`` "" = the host's own choice (a new one); ``keep``: the disk as the guest left it, after
    its own shutdown, is written there (what an export of the source carries); ``ssh_s``: how long
    SSH is tried (shorter where the guest's NIC is expected unconfigured: the test's patience only)."""
    prof = PROFILES[profile]
    name = PREFIX + uuid.uuid4().hex[:8]
    disk = work / f"{name}.qcow2"
    overlay_with_marker(base, disk, MARKER)
    spec = VmSpec(
        name=name,
        cpus=1,
        memory_mib=512,
        disks=[DiskSpec(str(disk), "qcow2", prof.disk_controller, 0)],
        nics=[NicSpec(prof.nic_model, mac=mac, pci_slot=prof.nic_slot)],
        firmware="bios",
        machine=prof.machine,
        forward_ports=guest.forward_ports(image),
        guest_agent=prof.guest_agent_channel,
    )
    drv.provision(spec)
    try:
        hw = drv.inspect(name)
        t0 = time.monotonic()
        drv.power_on(name)
        watch = drv.watch_console(
            name, observation.ready, BOOT_TIMEOUT_S, idle_s=90.0, idle_counts=observation.silence_means_dead
        )
        seen = observation.from_console(watch.text)
        if seen.reached_init and prof.guest_agent_channel:
            agent_channel.apply(drv.guest_agent(name, guest.AGENT_TIMEOUT_S, lambda _w: None), seen)
        if seen.reached_init and image.ssh is not None:
            ssh.observe(drv, name, image.ssh, seen, lambda _w: None, timeout_s=ssh_s)
        app = service.probe(drv, name, image.app, lambda _w: None) if image.app else AppProbe(detail="-")
        took = time.monotonic() - t0
        (work / f"{image.name}-{profile}-{name}.console.log").write_text(watch.text)
        print(f"{image.name} on {profile}: {took:.0f} s, channels {seen.channels}, failure {seen.failure!r}")
        if keep is not None:
            drv.power_off(name)
            drv.download_disk(name, 0, keep)
        return seen, app, hw, watch.text
    finally:
        drv.destroy(name)


def _grades(src, tgt) -> dict[str, tuple[Grade, str, str]]:
    (sg, sa, shw, _), (tg, ta, thw, _) = src, tgt
    o = grading.Observed(shw, sg, sa, MARKER_HEX, thw, tg, ta)
    return {c.check: (c.grade, c.evidence.get("channel", ""), c.reason) for c in grading.grade_observed(CHECKS, o)}


def _rung(work: Path, base: Path, rung: str) -> tuple[Path, str]:
    """The rung as the remediate stage applies it: its guestfish script on a qcow2 overlay of the
    disk the target got; returns the overlay and the report of what it changed."""
    out = work / f"{rung}-{uuid.uuid4().hex[:6]}.qcow2"
    diskconv.create_overlay(out, base, "qcow2")
    env = remediate._libguestfs_env()
    t0 = time.monotonic()
    report = remediate._run(
        ["guestfish", "--rw", "-i", "--format=qcow2", "-a", str(out)],
        env,
        stdin={"nic-config": remediate.NIC_CONFIG, "dracut-generic": remediate.DRACUT_GENERIC}[rung],
    )
    print(f"rung {rung}: {time.monotonic() - t0:.0f} s\n{report}")
    return out, report


def test_dracut_lvm_nm_fails_on_pvscsi_and_a_new_mac_and_its_rungs_cure_both(drv, work):
    img = build_plain_image("dracut-lvm-nm")
    assert img.manifest["crossvisor_parts"] == []
    old_mac = img.manifest["source_mac"]
    image = GuestImage(
        "dracut-lvm-nm", source=str(img.disk), app=ServiceProbe("tcp", 22), ssh=SshAccess(f"file:{img.ssh_key}")
    )
    src = _boot(drv, work, img.disk, "kvm", image, mac=old_mac)  # the NIC it was installed with
    sg = src[0]
    assert sg.channels == ["console", "guest-agent", "ssh"], (sg.channels, sg.failure, sg.ssh_note, sg.agent_note)
    assert sg.ssh_host_key == img.ssh_host_key and sg.hostname == "dracut-lvm-nm"
    assert sg.root_dev == "/dev/mapper/vg0-root", sg.root_dev
    assert [(n.mac.lower(), n.ipv4) for n in sg.nics] == [(old_mac, "10.0.2.15/24")], sg.nics

    # the same hardware, a new MAC (a target that assigns its own): the keyfile names the old one
    g = _grades(src, _boot(drv, work, img.disk, "kvm", image, ssh_s=NO_NIC_SSH_S))
    assert g["boots"][:2] == (Grade.PASS, "console"), g["boots"]
    grade, channel, reason = g["nics"]
    assert (grade, channel) == (Grade.FAIL, "guest-agent"), g
    assert f"its MAC changed ({old_mac} -> " in reason, reason
    assert "a network configuration bound to the old MAC does not apply to it" in reason

    # PVSCSI: the host-only initramfs made on virtio has no driver for it; dracut says so and gives up
    tgt = _boot(drv, work, img.disk, "esxi", image)
    g = _grades(src, tgt)
    assert g["boots"][:2] == (Grade.FAIL, "console"), g["boots"]
    # the cause in one line, from dracut's own words
    assert g["boots"][2] == (
        "root device /dev/mapper/vg0-root not found: dracut: the root device never appeared "
        "(dracut-initqueue timeout, Could not boot)"
    ), g["boots"]
    assert "dracut-initqueue" in tgt[3] and "Entering emergency mode" in tgt[3]
    assert {c: gr for c, (gr, _ch, _r) in g.items() if c != "boots"} == dict.fromkeys(CHECKS[1:], Grade.SKIPPED)

    # the ladder, cumulative as by hand: dracut-generic, then nic-config; then the same move, new MAC
    generic, report = _rung(work, img.disk, "dracut-generic")
    assert "dracut: hostonly=no in /etc/dracut.conf.d/99-cv-generic.conf" in report
    assert "lvm: devices file listed IDTYPE=devname IDNAME=/dev/vda1" in report
    assert "lvm: devices file reset: /etc/lvm/devices/system.devices removed" in report
    assert "dracut --no-hostonly --regenerate-all -f: rc=0" in report
    neutral, report = _rung(work, generic, "nic-config")
    assert (
        f"NetworkManager: /etc/NetworkManager/system-connections/System-eth0.nmconnection unbound from "
        f"mac-address={old_mac.upper()}" in report
    )
    assert "method=manual address1=10.0.2.15/24,10.0.2.2" in report  # the static address, on any NIC
    after = _grades(src, _boot(drv, work, neutral, "esxi", image))
    assert {c: (gr, ch) for c, (gr, ch, _r) in after.items()} == {
        "boots": (Grade.PASS, "console"),
        "disks": (Grade.PASS, "ssh"),
        "cpu_memory": (Grade.PASS, "ssh"),
        "nics": (Grade.PASS, "ssh"),
        "app": (Grade.PASS, "service-probe"),
    }, after
    assert "MAC " in after["nics"][2] and "driver virtio_net -> vmxnet3" in after["nics"][2], after["nics"]


def test_netplan_written_by_cloud_init_for_the_source_mac_and_nic_config_cures_it(drv, work):
    img = build_plain_image("netplan-cloudinit")
    image = GuestImage(
        "netplan-cloudinit", source=str(img.disk), app=ServiceProbe("tcp", 22), ssh=SshAccess(f"file:{img.ssh_key}")
    )
    born = work / "netplan-cloudinit-after-source.qcow2"
    src = _boot(drv, work, img.disk, "kvm", image, keep=born)
    sg = src[0]
    assert sg.channels == ["console", "ssh"], (sg.channels, sg.failure, sg.ssh_note)
    assert "ci-info" in src[3] and sg.nics[0].ipv4.startswith("10.0.2."), sg.nics

    tgt = _boot(drv, work, born, "kvm", image, ssh_s=NO_NIC_SSH_S)
    g = _grades(src, tgt)
    assert g["boots"][:2] == (Grade.PASS, "console")
    grade, channel, reason = g["nics"]
    assert (grade, channel) == (Grade.FAIL, "console"), g
    assert "its MAC changed" in reason and "bound to the old MAC" in reason, reason

    cured, report = _rung(work, born, "nic-config")
    assert "netplan: replaced /etc/netplan/50-cloud-init.yaml" in report
    assert "netplan:   was macaddress: " in report
    assert "cloud-init: network rendering disabled" in report
    assert "netplan: DHCP on any interface named e* in /etc/netplan/90-cv-any.yaml" in report
    after = _grades(src, _boot(drv, work, cured, "kvm", image))
    assert {c: gr for c, (gr, _ch, _r) in after.items()} == {c: Grade.PASS for c in CHECKS}, after
