"""Reference images with NO crossvisor part (deploy/guests/build-plain-image.sh) moved across hardware
profiles, graded only from the channels any VM has: its console, SSH with the operator's key, a
declared service. Each boot is real (libvirtd, QEMU TCG, the product's driver and domain XML, the
stages' own observation code in activities/stages/guest.py); each grade is pinned with the channel
that decided it.

A move here is the image's disk (a qcow2 overlay with crossvisor's marker at 1 MiB, as provision
writes it) booted on the source profile, then on each target profile; export/convert of qcow2 to
qcow2 changes no byte the guest reads, and their own tests cover them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from activities.channels import service, ssh
from activities.stages import guest
from domain import agent_channel, grading, observation
from domain.model import Grade, GuestImage, ServiceProbe, SshAccess
from domain.profiles import PROFILES
from domain.stage_io import AppProbe, GuestObservation
from domain.vm import DiskSpec, Hardware, NicSpec, VmSpec
from tests.qemu.guest_boot import overlay_with_marker, product_driver
from toolbox.guest_images import build_plain_image

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(3600)]  # three boots a test, each minutes under TCG

PREFIX = "cvg-plain-"
MARKER = "crossvisor-marker plain"
CHECKS = ["boots", "disks", "cpu_memory", "nics", "app"]
BOOT_TIMEOUT_S = 600.0  # a stock Debian (no units masked) under TCG, starved by other boots on 2 cores


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plain")


@pytest.fixture(scope="module")
def drv(libvirt_conn, work):
    yield from product_driver(work, PREFIX)


def _boot(drv, work: Path, base: Path, profile: str, image: GuestImage) -> tuple[GuestObservation, AppProbe, Hardware]:
    """One boot through the stages' own code: console watch, SSH and service channels."""
    prof = PROFILES[profile]
    name = PREFIX + uuid.uuid4().hex[:8]
    disk = work / f"{name}.qcow2"
    marker_hex = overlay_with_marker(base, disk, MARKER)
    spec = VmSpec(
        name=name,
        cpus=1,
        memory_mib=512,
        disks=[DiskSpec(str(disk), "qcow2", prof.disk_controller, 0)],
        nics=[NicSpec(prof.nic_model, pci_slot=prof.nic_slot)],
        firmware="bios",
        machine=prof.machine,
        forward_ports=guest.forward_ports(image),
        guest_agent=prof.guest_agent_channel,  # as provision gives an operator's image
    )
    drv.provision(spec)
    try:
        hw = drv.inspect(name)
        drv.power_on(name)
        watch = drv.watch_console(
            name, observation.ready, BOOT_TIMEOUT_S, idle_s=60.0, idle_counts=observation.silence_means_dead
        )
        seen = observation.from_console(watch.text)
        if seen.reached_init:
            agent_channel.apply(drv.guest_agent(name, guest.AGENT_TIMEOUT_S, lambda _w: None), seen)
        if image.ssh is not None:
            ssh.observe(drv, name, image.ssh, seen, lambda _w: None)
        app = service.probe(drv, name, image.app, lambda _w: None) if image.app else AppProbe(detail="-")
        (work / f"{profile}-{image.name}.console.log").write_text(watch.text)
        assert marker_hex.startswith("63726f7373")  # what crossvisor wrote at 1 MiB
        return seen, app, hw
    finally:
        drv.destroy(name)


def _grades(src, tgt, marker_hex: str) -> dict[str, tuple[Grade, str, str]]:
    (sg, sa, shw), (tg, ta, thw) = src, tgt
    o = grading.Observed(shw, sg, sa, marker_hex, thw, tg, ta)
    return {c.check: (c.grade, c.evidence.get("channel", ""), c.reason) for c in grading.grade_observed(CHECKS, o)}


MARKER_HEX = MARKER.encode().ljust(64, b"\0").hex()


def test_sshd_image_moves_from_kvm_to_esxi_and_hyperv_gen1_graded_by_ssh_and_its_service(drv, work):
    img = build_plain_image("plain-sshd")
    assert img.manifest["crossvisor_parts"] == []
    image = GuestImage(
        "plain-sshd", source=str(img.disk), app=ServiceProbe("tcp", 22), ssh=SshAccess(f"file:{img.ssh_key}")
    )
    src = _boot(drv, work, img.disk, "kvm", image)
    sg = src[0]
    assert sg.channels == ["console", "ssh"], (sg.channels, sg.ssh_note, sg.failure)
    assert sg.ssh_host_key == img.ssh_host_key  # the key the image was built with answered
    assert sg.hostname == "plain-sshd" and sg.cpus == 1 and sg.root_mode == "rw"
    assert [(d.name, d.bytes, d.marker[:64]) for d in sg.disks] == [("vda", 2 << 30, MARKER_HEX[:64])]
    assert sg.nics[0].driver == "virtio_net" and sg.nics[0].ipv4.startswith("10.0.2.")
    # sshd's banner, or (a starved guest answering late) a connection the guest kept open
    assert src[1].ok and (src[1].body.startswith("SSH-2.0-OpenSSH") or "stayed open" in src[1].body), src[1]

    # the disk's own driver as /sys/block/<disk>/device/driver shows it: sd on PVSCSI and on IDE (libata)
    for profile, disk_driver, nic_driver in (("esxi", "sd", "vmxnet3"), ("hyperv-gen1", "sd", "tulip")):
        tgt = _boot(drv, work, img.disk, profile, image)
        g = _grades(src, tgt, MARKER_HEX)
        assert {c: (grade, ch) for c, (grade, ch, _r) in g.items()} == {
            "boots": (Grade.PASS, "console"),
            "disks": (Grade.PASS, "ssh"),
            "cpu_memory": (Grade.PASS, "ssh"),
            "nics": (Grade.PASS, "ssh"),
            "app": (Grade.PASS, "service-probe"),
        }, (profile, g)
        tg = tgt[0]
        assert tg.ssh_host_key == img.ssh_host_key
        assert tg.disks[0].driver == disk_driver and tg.nics[0].driver == nic_driver, (profile, tg.disks, tg.nics)
        assert f"driver virtio_net -> {nic_driver}" in g["nics"][2]


def test_agent_image_is_graded_by_its_agent_where_the_target_presents_one_and_its_console_elsewhere(drv, work):
    """plain-agent with nothing declared: on KVM profiles (the agent channel) the guest agent decides
    disks, cpu_memory and nics; on the Xen stand-in (no agent channel) the console decides boots and
    cpu_memory, and disks, nics and app are unobservable, with the lost channel named."""
    img = build_plain_image("plain-agent")
    image = GuestImage("plain-agent", source=str(img.disk))
    src = _boot(drv, work, img.disk, "kvm", image)
    sg = src[0]
    assert sg.channels == ["console", "guest-agent"], (sg.channels, sg.agent_note)
    assert sg.hostname == "plain-agent" and sg.root_dev == "/dev/vda1" and sg.cpus == 1
    assert [d.name for d in sg.disks] == ["vda"] and sg.nics[0].ipv4.startswith("10.0.2.")

    g = _grades(src, _boot(drv, work, img.disk, "kvm-virtio-scsi", image), MARKER_HEX)
    assert {c: (grade, ch) for c, (grade, ch, _r) in g.items()} == {
        "boots": (Grade.PASS, "console"),
        "disks": (Grade.PASS, "guest-agent"),
        "cpu_memory": (Grade.PASS, "guest-agent"),
        "nics": (Grade.PASS, "guest-agent"),
        "app": (Grade.UNOBSERVABLE, "none"),
    }, g

    g = _grades(src, _boot(drv, work, img.disk, "xen-hvm", image), MARKER_HEX)
    assert {c: (grade, ch) for c, (grade, ch, _r) in g.items()} == {
        "boots": (Grade.PASS, "console"),
        "disks": (Grade.UNOBSERVABLE, "none"),
        "cpu_memory": (Grade.PASS, "console"),
        "nics": (Grade.UNOBSERVABLE, "none"),
        "app": (Grade.UNOBSERVABLE, "none"),
    }, g
    assert "the guest-agent channel answered on the source, not on the target" in g["disks"][2]
    assert "no guest agent channel" in g["disks"][2]
