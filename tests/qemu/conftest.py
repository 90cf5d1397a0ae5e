"""Real QEMU host for tests: a hand-started libvirtd (qemu:///system) and the tiny guest.

Domains are TCG (``type='qemu'``): KVM is advertised here but guests hang under it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as plain `pytest` without an installed package
    sys.path.insert(0, str(REPO))

from drivers.guest_images import TinyGuest, tiny_guest  # noqa: E402

URI = "qemu:///system"
DOMAIN_PREFIX = "cvtest-tiny-"
UP = REPO / "deploy" / "libvirt" / "libvirtd-up.sh"
DOWN = REPO / "deploy" / "libvirt" / "libvirtd-down.sh"


def _answers() -> bool:
    return subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, check=False).returncode == 0


def _purge(conn, prefix: str) -> None:
    """Destroy + undefine every domain with ``prefix`` (ours, possibly left by a killed run)."""
    import libvirt

    for dom in conn.listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            pass
        try:
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError:
            pass


@pytest.fixture(scope="session")
def libvirt_conn() -> Iterator[object]:
    """qemu:///system; starts libvirtd for the session unless one already answers."""
    import libvirt  # fails loudly if libvirt-python is missing: these tests must not silently skip

    started = False
    if not _answers():
        subprocess.run(["bash", str(UP)], check=True, timeout=60)
        started = True
    conn = libvirt.open(URI)
    _purge(conn, DOMAIN_PREFIX)
    try:
        yield conn
    finally:
        _purge(conn, DOMAIN_PREFIX)
        conn.close()
        if started:
            subprocess.run(["bash", str(DOWN)], check=False, timeout=60)


@pytest.fixture(scope="session")
def guest() -> TinyGuest:
    return tiny_guest()


def domain_xml(
    name: str,
    guest: TinyGuest,
    disk: Path,
    disk_format: str,
    serial_log: Path,
    nic_model: str | None = "virtio",
    cpus: int = 2,
    memory_mib: int = 256,
    disk_bus: str = "virtio",
) -> str:
    """A TCG direct-kernel-boot domain: one disk, a user-mode NIC, ttyS0 to a file.

    The static DAC label runs this domain's QEMU as root: with the default libvirt-qemu user it
    could not traverse /root (cache) or pytest's 0700 tmp dirs, and relabel='no' leaves the
    caller's files untouched.
    """
    target = {"virtio": "vda", "scsi": "sda", "ide": "hda", "sata": "sda"}[disk_bus]
    nic = f"<interface type='user'><model type='{nic_model}'/></interface>" if nic_model else ""
    scsi = "<controller type='scsi' model='virtio-scsi'/>" if disk_bus == "scsi" else ""
    return f"""
<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(guest.kernel))}</kernel>
    <initrd>{escape(str(guest.initrd))}</initrd>
    <cmdline>{escape(guest.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{disk_format}'/>
      <source file='{escape(str(disk))}'/>
      <target dev='{target}' bus='{disk_bus}'/>
    </disk>
    {scsi}
    {nic}
    <serial type='file'>
      <source path='{escape(str(serial_log))}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


class BootRun:
    """Defines, starts and always cleans up one tiny-guest domain."""

    def __init__(self, conn, tmp: Path):
        self.conn = conn
        self.tmp = tmp
        self.names: list[str] = []

    def boot(self, xml_kwargs: dict, timeout_s: float = 45.0) -> tuple[str, float]:
        """Boot to power-off; returns (serial text, seconds). Raises on timeout."""
        name = DOMAIN_PREFIX + uuid.uuid4().hex[:8]
        log = self.tmp / f"{name}.serial.log"
        self.names.append(name)
        dom = self.conn.defineXML(domain_xml(name=name, serial_log=log, **xml_kwargs))
        t0 = time.monotonic()
        dom.create()
        # on_poweroff=destroy: the domain goes inactive once /init has printed everything.
        while dom.isActive():
            if time.monotonic() - t0 > timeout_s:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise TimeoutError(f"{name} still running after {timeout_s} s; serial tail:\n{text[-2000:]}")
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        return log.read_text(errors="replace"), elapsed

    def cleanup(self) -> None:
        import libvirt

        for name in self.names:
            try:
                dom = self.conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefine()


@pytest.fixture
def boot_run(libvirt_conn, tmp_path: Path) -> Iterator[BootRun]:
    run = BootRun(libvirt_conn, tmp_path)
    try:
        yield run
    finally:
        run.cleanup()
