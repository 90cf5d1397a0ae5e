"""The boot families (deploy/guests/build-boot-family.sh, no crossvisor part in them) fail where
they really fail when moved, and the rungs aimed at them cure it. Each boot is real (libvirtd, QEMU
TCG, the product's driver and domain XML, the stages' own observation code); each rung is the
remediate stage's own guestfish run on the moved disk; the grades are grading's own from what the
guest's channels reported. One move per family proves the point:

- vmware-born, born on the ESXi stand-in (PVSCSI: its disk is sda, its root /dev/sda1 in fstab and
  GRUB's root=), moved to KVM (virtio-blk: vda): initramfs-tools gives up waiting for /dev/sda1.
  fstab-uuid cures it; guest-agent then makes the guest-agent channel answer on KVM.
- uefi-nvram boots on KVM from its own NVRAM entry; the same disk with a fresh NVRAM (what an OVF
  import gives) finds no boot option in OVMF; uefi-fallback cures it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from activities.channels import service, ssh
from activities.stages import guest, remediate
from domain import agent_channel, grading, observation, remedies
from domain.model import Grade, GuestImage, ServiceProbe, SshAccess
from domain.profiles import PROFILES
from domain.stage_io import AppProbe, ConvertedDisk, GuestObservation
from domain.vm import DiskSpec, Hardware, NicSpec, VmSpec
from tests.qemu.guest_boot import overlay_with_marker, product_driver
from toolbox.guest_images import PlainImage, build_plain_image

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(3600)]

PREFIX = "cvg-bootfam-"
MARKER = "crossvisor-marker family"
MARKER_HEX = MARKER.encode().ljust(64, b"\0").hex()
CHECKS = ["boots", "disks", "cpu_memory", "nics", "app"]
BOOT_TIMEOUT_S = 600.0


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def drv(libvirt_conn, work):
    yield from product_driver(work, PREFIX)


@pytest.fixture(scope="module")
def gf_env() -> dict[str, str]:
    return remediate._libguestfs_env()


Boot = tuple[GuestObservation, AppProbe, Hardware, str]


def _boot(
    drv, work: Path, disk: Path, profile: str, image: GuestImage, img: PlainImage, nvram: str = "", agent=False
) -> Boot:
    """One boot of ``disk`` (a qcow2 the VM overlays) through the stages' own observation code. The
    guest-agent channel only where the test looks for the agent: a channel no agent answers costs
    the stage's whole agent wait (45 s a boot), and these images have no agent until a rung adds it."""
    prof = PROFILES[profile]
    name = PREFIX + uuid.uuid4().hex[:8]
    spec = VmSpec(
        name=name,
        cpus=1,
        memory_mib=512,
        disks=[DiskSpec(str(disk), "qcow2", prof.disk_controller, 0)],
        nics=[NicSpec(prof.nic_model, pci_slot=prof.nic_slot)],
        firmware=img.firmware,
        machine=prof.machine,
        forward_ports=guest.forward_ports(image),
        guest_agent=agent and prof.guest_agent_channel,
        nvram=nvram,
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
            ssh.observe(drv, name, image.ssh, seen, lambda _w: None)
            app = service.probe(drv, name, image.app, lambda _w: None)
        else:
            app = AppProbe(detail="the guest never got ready")
        (work / f"{name}-{profile}-{img.name}.console.log").write_text(watch.text)
        return seen, app, hw, watch.text
    finally:
        drv.destroy(name)


def _grades(src: Boot, tgt: Boot) -> dict:
    o = grading.Observed(src[2], src[0], src[1], MARKER_HEX, tgt[2], tgt[0], tgt[1])
    return {c.check: c for c in grading.grade_observed(CHECKS, o)}


def _rung(rung: str, disk: Path, work: Path, env: dict[str, str]) -> tuple[Path, str]:
    d = work / f"{rung}-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    [out], report = remediate.apply_family_rung(rung, [ConvertedDisk(str(disk), "qcow2", "virtio", 0)], d, env)
    return Path(out.path), report


def _image(img: PlainImage) -> GuestImage:
    return GuestImage(img.name, source=str(img.disk), app=ServiceProbe("tcp", 22), ssh=SshAccess(f"file:{img.ssh_key}"))


def test_vmware_born_fails_on_kvm_by_its_root_device_name_fstab_uuid_cures_and_guest_agent_answers(drv, work, gf_env):
    img = build_plain_image("vmware-born")
    assert img.manifest["crossvisor_parts"] == [] and "open-vm-tools" in img.manifest["packages"]
    assert "qemu-guest-agent" not in img.manifest["packages"]
    image = _image(img)
    moved = work / "vmware-born-moved.qcow2"
    assert overlay_with_marker(img.disk, moved, MARKER) == MARKER_HEX

    src = _boot(drv, work, moved, "esxi", image, img)
    sg = src[0]
    assert sg.reached_init and sg.root_source == "/dev/sda1", (sg.root_source, sg.failure)
    assert sg.channels == ["console", "ssh"], (sg.channels, sg.ssh_note)  # no agent: VMware's own tools

    unmodified = _grades(src, _boot(drv, work, moved, "kvm", image, img))
    boots = unmodified["boots"]
    assert boots.grade == Grade.FAIL, boots
    # the one-line cause, as the console showed it: initramfs-tools waited for sda1, the kernel named vda
    assert boots.reason.startswith("root device /dev/sda1 not found: initramfs-tools gave up waiting"), boots.reason
    assert "the kernel named the disk vda" in boots.reason, boots.reason
    assert "ALERT!  /dev/sda1 does not exist" in boots.evidence["console"]
    failing = list(unmodified.values())
    # a rung runs only for a failure it can change
    assert remedies.applicable("fstab-uuid", "kvm", failing) == ""
    assert "uefi-fallback addresses boots failures" in remedies.applicable("uefi-fallback", "kvm", failing)
    assert remedies.applicable("guest-agent", "kvm", failing) != ""

    fixed, report = _rung("fstab-uuid", moved, work, gf_env)
    assert "fstab: / /dev/sda1 -> UUID=" + img.manifest["root_uuid"] in report, report
    assert "grub: root=UUID=" + img.manifest["root_uuid"] in report, report
    after = _boot(drv, work, fixed, "kvm", image, img)
    g = _grades(src, after)
    assert {c: (r.grade, r.evidence.get("channel", "")) for c, r in g.items()} == {
        "boots": (Grade.PASS, "console"),
        "disks": (Grade.PASS, "ssh"),
        "cpu_memory": (Grade.PASS, "ssh"),
        "nics": (Grade.PASS, "ssh"),
        "app": (Grade.PASS, "service-probe"),
    }, {c: (r.grade, r.reason) for c, r in g.items()}
    assert after[0].root_source.startswith("UUID=")
    combined, cured_by = remedies.combine(failing, [(["fstab-uuid"], list(g.values()))])
    assert cured_by == "fstab-uuid"
    assert next(c for c in combined if c.check == "boots").grade == Grade.WARN

    agent_disk, report = _rung("guest-agent", fixed, work, gf_env)
    assert "guest-agent: installed qemu-guest-agent" in report and "guest-agent: removed open-vm-tools" in report, (
        report
    )
    ag = _boot(drv, work, agent_disk, "kvm", image, img, agent=True)[0]
    assert ag.channels == ["console", "guest-agent", "ssh"], (ag.channels, ag.agent_note)
    assert ag.hostname == "vmware-born"


def test_uefi_nvram_boots_from_its_own_nvram_finds_nothing_with_a_fresh_one_and_uefi_fallback_cures(drv, work, gf_env):
    img = build_plain_image("uefi-nvram")
    assert img.firmware == "efi" and img.nvram is not None
    image = _image(img)
    moved = work / "uefi-nvram-moved.qcow2"
    overlay_with_marker(img.disk, moved, MARKER)

    src = _boot(drv, work, moved, "kvm", image, img, nvram=str(img.nvram))
    assert src[0].reached_init, src[0].failure
    assert 'BdsDxe: starting Boot0001 "debian"' in src[3]  # its own NVRAM entry started GRUB

    fresh = _grades(src, _boot(drv, work, moved, "kvm", image, img))  # the same hardware, NVRAM left behind
    boots = fresh["boots"]
    assert boots.grade == Grade.FAIL and boots.reason.startswith("OVMF (UEFI)"), boots.reason
    failing = list(fresh.values())
    assert remedies.applicable("uefi-fallback", "kvm", failing) == ""
    assert "fstab-uuid addresses" in remedies.applicable("fstab-uuid", "kvm", failing)

    fixed, report = _rung("uefi-fallback", moved, work, gf_env)
    assert "uefi-fallback: /boot/efi/EFI/debian/grubx64.efi -> /boot/efi/EFI/BOOT/BOOTX64.EFI" in report, report
    g = _grades(src, _boot(drv, work, fixed, "kvm", image, img))
    assert {c: r.grade for c, r in g.items()} == dict.fromkeys(CHECKS, Grade.PASS), {
        c: (r.grade, r.reason) for c, r in g.items()
    }
    assert g["boots"].evidence["channel"] == "console"
