"""One image on one hardware profile, booted through the product's own libvirt driver.

What the image tests (tests/qemu/test_guest_images.py) and the capture of the console fixtures
(bench/guest_boot_matrix.py) share: the domain XML, the console watch, the port forward and the
shutdown are the ones the stages use, so a fixture shows what a campaign's boot sees.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from domain import observation
from domain.profiles import HardwareProfile
from domain.vm import MARKER_OFFSET, DiskSpec, NicSpec, VmSpec
from drivers.libvirt.driver import LibvirtDriver
from toolbox import diskconv

MARKER_LEN = 64
APP_PORT = 8080
URI = "qemu:///system"


@dataclass
class BootObservation:
    console: str
    seconds: float  # power-on -> CV-READY (or until the domain ended / watching stopped)
    ended: str  # "ready" | "domain-off" | "dead-end" | "timeout"
    host_port: int | None = None
    app_body: str | None = None
    app_error: str | None = None
    shutdown_s: float | None = None  # ACPI power button -> domain off
    off_s: float | None = None  # power-on -> off, for a boot that powers itself off (birth)
    milestones_s: dict[str, float] = field(default_factory=dict)


def product_driver(work: Path, prefix: str) -> Iterator[LibvirtDriver]:
    """The product's driver on the local libvirtd (the same domain XML a campaign defines), with a
    pool of its own; afterwards the module's VMs and the disks it put on the host are gone."""
    d = LibvirtDriver(URI, state_dir=work / "driver", pool=f"{prefix}pool", pool_path=str(work / "pool"))
    yield d
    for name in d.list_vms(prefix):
        d.destroy(name)
    d.storage.remove_pool()
    d.close()


def overlay_with_marker(base: Path, out: Path, marker: str) -> str:
    """A qcow2 overlay ``out`` on ``base`` carrying ``marker`` (<= 64 bytes, zero-padded) at byte
    MARKER_OFFSET of the disk; returns the marker block's hex as the guest prints it."""
    block = marker.encode().ljust(MARKER_LEN, b"\0")
    if len(block) > MARKER_LEN:
        raise ValueError(f"marker longer than {MARKER_LEN} bytes")
    diskconv.create_overlay(out, base, "qcow2")
    diskconv.write_marker(out, "qcow2", MARKER_OFFSET, block)
    return block.hex()


def boot(
    drv: LibvirtDriver,
    name: str,
    profile: HardwareProfile,
    firmware: str,
    disk: Path,
    timeout_s: float = 90.0,
    until_off: bool = False,
    shutdown: bool = True,
) -> BootObservation:
    """Define ``name`` on ``profile``'s hardware, power on, watch the console until the guest is
    ready (or, ``until_off``, until it powers itself off as a birth does), ask its service, press
    the ACPI power button. The VM is gone on return; ``disk`` stays (after ``until_off``, replaced
    by the disk as the guest left it, fetched back from the host)."""
    spec = VmSpec(
        name=name,
        cpus=1,
        memory_mib=512,
        disks=[DiskSpec(str(disk), "qcow2", profile.disk_controller, 0)],
        nics=[NicSpec(profile.nic_model, pci_slot=profile.nic_slot)],
        firmware=firmware,
        machine=profile.machine,
        forward_ports=[APP_PORT],
    )
    drv.destroy(name)
    drv.provision(spec)
    try:
        drv.power_on(name)
        watch = drv.watch_console(
            name,
            (lambda _t: False) if until_off else observation.ready,
            timeout_s,
            idle_s=45.0,
            idle_counts=observation.silence_means_dead,
        )
        if watch.stopped:
            ended = "domain-off"
        elif watch.timed_out:
            ended = "timeout"
        else:
            ended = "ready" if observation.READY in watch.text else "dead-end"
        obs = BootObservation(console=watch.text, seconds=round(watch.seconds, 1), ended=ended)
        addr = drv.guest_port(name, APP_PORT)
        obs.host_port = addr[1] if addr else None
        if until_off and ended == "domain-off":
            obs.off_s = obs.seconds
            # what the guest made of its disk: the host booted its own copy (a volume in its pool)
            drv.download_disk(name, 0, disk)
        if ended == "ready" and addr is not None:
            try:
                with urllib.request.urlopen(f"http://{addr[0]}:{addr[1]}/cv", timeout=10) as r:
                    obs.app_body = r.read().decode(errors="replace").strip()
            except Exception as e:  # noqa: BLE001 - the absence of an answer is the observation
                obs.app_error = f"{type(e).__name__}: {e}"
        if ended == "ready" and shutdown:
            ts = time.monotonic()
            drv.power_off(name)  # the ACPI power button first, a hard stop after the grace period
            took = time.monotonic() - ts
            obs.shutdown_s = round(took, 1) if took < 20 else None
        obs.console = watch.text
        return obs
    finally:
        drv.destroy(name)
