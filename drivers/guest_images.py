"""Test guests: the tiny guest (direct kernel boot) and the images that boot themselves.

The second half of this module builds the self-booting images (``build_image``), describes the
QEMU hardware profiles that stand in for other hypervisors (``PROFILES``,
``profile_domain_xml``), forwards the guest app's port to loopback (``forward_app_port``) and
boots + watches one domain (``boot_and_observe``); their console is parsed by
``domain.guest_evidence``.

The tiny guest:

``deploy/guests/build-tiny-guest.sh`` builds a Debian cloud kernel + busybox initramfs whose /init
prints ``CV-*`` lines on ttyS0 between ``CROSSVISOR-BOOT-OK`` and ``CROSSVISOR-BOOT-END``, then
powers off. The verify stage reads the serial log with :func:`parse_boot_evidence`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "deploy" / "guests" / "build-tiny-guest.sh"

BOOT_OK = "CROSSVISOR-BOOT-OK"
BOOT_END = "CROSSVISOR-BOOT-END"
# Where crossvisor writes its content marker on the first disk (past MBR/GPT, 64 KiB aligned).
MARKER_OFFSET = 1024 * 1024
MARKER_LEN = 64
# ttyS0 for the evidence; panic=-1 reboots at once on a panic so a broken guest ends its domain
# (use on_reboot=destroy) instead of hanging until the timeout.
CMDLINE = "console=ttyS0 panic=-1"


@dataclass(frozen=True)
class TinyGuest:
    kernel: Path
    initrd: Path
    cmdline: str = CMDLINE


def cache_dir() -> Path:
    return Path(os.environ.get("CROSSVISOR_CACHE", Path.home() / ".cache" / "crossvisor"))


def tiny_guest(timeout_s: float = 600.0) -> TinyGuest:
    """Build (or find in the cache) the tiny guest. The script owns the cache key."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"build-tiny-guest.sh failed ({proc.returncode}): {proc.stderr.strip()}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    guest = TinyGuest(kernel=Path(paths["KERNEL"]), initrd=Path(paths["INITRD"]))
    for p in (guest.kernel, guest.initrd):
        if not p.is_file():
            raise RuntimeError(f"build-tiny-guest.sh reported a missing file: {p}")
    return guest


def marker_bytes(text: str) -> bytes:
    """The 64-byte marker block for ``text`` (zero-padded), as the guest will read it back."""
    raw = text.encode()
    if len(raw) > MARKER_LEN:
        raise ValueError(f"marker longer than {MARKER_LEN} bytes")
    return raw.ljust(MARKER_LEN, b"\0")


def write_marker(path: Path, text: str, offset: int = MARKER_OFFSET) -> None:
    """Write the content marker into a *raw* image file (convert to other formats afterwards)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(marker_bytes(text))


def _fields(rest: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in rest.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def parse_boot_evidence(console_text: str) -> dict:
    """Parse the tiny guest's serial output. Pure; tolerates kernel log lines and CRLF.

    Returns ``booted`` (the OK marker was seen), ``complete`` (the END marker too: every fact was
    printed), ``cpus``, ``mem_kib``, ``kernel``, ``uptime_s`` (guest seconds at the end), ``disks`` {name: bytes}, ``disk_markers``
    {name: hex}, ``disk_marker_hex`` (of the first disk), ``nic_drivers`` (bound netdev drivers,
    in guest order) and ``pci`` (storage/network functions: slot, class, id, driver).
    """
    ev: dict = {
        "booted": False,
        "complete": False,
        "cpus": None,
        "mem_kib": None,
        "kernel": None,
        "uptime_s": None,
        "marker_offset": None,
        "disks": {},
        "disk_markers": {},
        "disk_marker_hex": None,
        "nic_drivers": [],
        "nics": [],
        "pci": [],
    }
    for raw in console_text.splitlines():
        line = raw.strip("\r\n\x00 ")
        # A kernel message may share a line with ours; our lines start at their tag.
        for tag in (BOOT_OK, BOOT_END, "CV-FACT ", "CV-DISK ", "CV-NIC ", "CV-PCI "):
            idx = line.find(tag)
            if idx > 0:
                line = line[idx:]
                break
        if line == BOOT_OK:
            ev["booted"] = True
        elif line == BOOT_END:
            ev["complete"] = ev["booted"]
        elif line.startswith("CV-FACT "):
            for k, v in _fields(line[8:]).items():
                if k in ("cpus", "mem_kib", "marker_offset") and v.isdigit():
                    ev[k] = int(v)
                elif k == "kernel":
                    ev[k] = v
                elif k == "uptime_s":
                    try:
                        ev[k] = float(v)
                    except ValueError:
                        pass
        elif line.startswith("CV-DISK "):
            f = _fields(line[8:])
            if "name" in f and f.get("bytes", "").isdigit():
                ev["disks"][f["name"]] = int(f["bytes"])
                ev["disk_markers"][f["name"]] = f.get("marker", "")
                if ev["disk_marker_hex"] is None:
                    ev["disk_marker_hex"] = f.get("marker", "")
        elif line.startswith("CV-NIC "):
            f = _fields(line[7:])
            ev["nics"].append(f)
            if f.get("driver", "none") != "none":
                ev["nic_drivers"].append(f["driver"])
        elif line.startswith("CV-PCI "):
            ev["pci"].append(_fields(line[7:]))
    return ev


# --- Guest images that boot themselves (deploy/guests/build-guest-image.sh) ----------------------
#
# Unlike the tiny guest, these boot from their own disk through their own firmware path, GRUB,
# kernel, initramfs-tools initramfs, fstab and network config (systemd). Their console evidence
# is parsed by domain.guest_evidence.

IMAGES = ("legacy-bios", "uefi", "portable-bios")
IMAGE_SCRIPT = REPO / "deploy" / "guests" / "build-guest-image.sh"
# OVMF from Debian's ovmf package: read-only code + a per-VM copy of the variable store.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
APP_PORT = 8080


@dataclass(frozen=True)
class BuiltImage:
    name: str
    disk: Path  # qcow2, read-only base: boot an overlay (or a copy), never the file itself
    firmware: str  # "bios" | "efi"
    manifest: dict


def build_image(name: str, timeout_s: float = 900.0) -> BuiltImage:
    """Build (or find in the cache) guest image ``name`` (one of :data:`IMAGES`)."""
    if name not in IMAGES:
        raise ValueError(f"unknown guest image {name!r} (expected one of {', '.join(IMAGES)})")
    proc = subprocess.run(
        ["bash", str(IMAGE_SCRIPT), name], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise RuntimeError(f"build-guest-image.sh {name} failed ({proc.returncode}):\n{tail}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    disk, manifest_path = Path(paths.get("DISK", "")), Path(paths.get("MANIFEST", ""))
    if not disk.is_file() or not manifest_path.is_file():
        raise RuntimeError(f"build-guest-image.sh {name} reported missing files: {proc.stdout.strip()!r}")
    manifest = json.loads(manifest_path.read_text())
    return BuiltImage(name=name, disk=disk, firmware=manifest["firmware"], manifest=manifest)


@dataclass(frozen=True)
class HardwareProfile:
    """QEMU virtual hardware standing in for another hypervisor's (all ``<domain type='qemu'>``)."""

    name: str  # "kvm" | "esxi" | "hyperv-gen1" | "xen-hvm"
    variant: str  # "" for the main one
    machine: str  # libvirt machine type: "q35" | "pc" (i440fx)
    disk_bus: str  # "virtio" | "scsi" | "ide"
    scsi_model: str | None  # libvirt <controller type='scsi' model=...> when disk_bus == "scsi"
    nic_model: str  # libvirt <model type=...> of the NIC
    firmwares: tuple[str, ...]  # what the platform offers: ("bios",) or ("bios", "efi")
    # PCI slot of the NIC on bus 0 (i440fx): each hypervisor places its NIC elsewhere, so the
    # guest's predictable interface name (ens<slot>) changes across a move, as it does between
    # real hypervisors. None: libvirt's choice (q35: behind a root port, enp1s0).
    nic_slot: int | None = None

    @property
    def key(self) -> str:
        return f"{self.name}--{self.variant}" if self.variant else self.name


PROFILES: dict[str, HardwareProfile] = {
    p.key: p
    for p in (
        HardwareProfile("kvm", "", "q35", "virtio", None, "virtio", ("bios", "efi")),
        HardwareProfile("kvm", "virtio-scsi", "q35", "scsi", "virtio-scsi", "virtio", ("bios", "efi")),
        HardwareProfile("esxi", "", "pc", "scsi", "vmpvscsi", "vmxnet3", ("bios", "efi"), nic_slot=0x0B),
        HardwareProfile("esxi", "lsisas", "pc", "scsi", "lsisas1068", "e1000e", ("bios", "efi"), nic_slot=0x0B),
        HardwareProfile("hyperv-gen1", "", "pc", "ide", None, "tulip", ("bios",), nic_slot=0x0A),
        HardwareProfile("xen-hvm", "", "pc", "ide", None, "rtl8139", ("bios",), nic_slot=0x04),
        HardwareProfile("xen-hvm", "e1000", "pc", "ide", None, "e1000", ("bios",), nic_slot=0x04),
    )
}

_TARGET_DEV = {"virtio": "vda", "scsi": "sda", "ide": "hda"}


def profile_domain_xml(
    name: str,
    profile: HardwareProfile,
    firmware: str,
    disk: Path,
    serial_log: Path,
    nvram: Path | None = None,
    memory_mib: int = 512,
    vcpus: int = 1,
) -> str:
    """A TCG domain that boots ``disk`` (qcow2) on ``profile``'s hardware with ``firmware``.

    ``on_reboot=destroy``: a guest that gives up (initramfs root wait, kernel panic with panic=-1)
    ends its domain at once. ``<bios useserial='yes'/>`` puts SeaBIOS's own messages (and "No
    bootable device") on the serial console. EFI uses Debian's OVMF (no Secure Boot) with a per-VM
    variable store copied by libvirt from the template into ``nvram``. The NIC is libvirt's
    user-mode (SLIRP) interface; the app's port is forwarded with :func:`forward_app_port`.
    The static DAC label runs QEMU as root so it can read disks under /root and pytest tmp dirs.
    TCG's default qemu64 CPU advertises SVM, so a guest's udev loads kvm_amd for nothing at every
    boot: the CPU element hides it.
    """
    if firmware not in ("bios", "efi"):
        raise ValueError(f"firmware must be 'bios' or 'efi', not {firmware!r}")
    if firmware == "efi":
        if nvram is None:
            raise ValueError("an EFI domain needs a per-VM nvram path")
        os_fw = (
            f"<loader readonly='yes' type='pflash'>{OVMF_CODE}</loader>"
            f"<nvram template='{OVMF_VARS}'>{escape(str(nvram))}</nvram>"
        )
    else:
        os_fw = "<bios useserial='yes'/>"
    target = _TARGET_DEV[profile.disk_bus]
    controller = f"<controller type='scsi' index='0' model='{profile.scsi_model}'/>" if profile.scsi_model else ""
    nic_addr = (
        f"<address type='pci' domain='0x0000' bus='0x00' slot='{profile.nic_slot:#04x}' function='0x0'/>"
        if profile.nic_slot is not None
        else ""
    )
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='{profile.machine}'>hvm</type>
    {os_fw}
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model><feature policy='disable' name='svm'/></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    {controller}
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(disk))}'/>
      <target dev='{target}' bus='{profile.disk_bus}'/>
    </disk>
    <interface type='user'><model type='{profile.nic_model}'/>{nic_addr}</interface>
    <serial type='file'>
      <source path='{escape(str(serial_log))}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def forward_app_port(dom, host_port: int, guest_port: int = APP_PORT, netdev: str = "hostnet0") -> None:
    """Forward 127.0.0.1:``host_port`` on the host to the guest's ``guest_port`` (loopback only).

    libvirt 9.0 as shipped by Debian 12 rejects ``<backend type='passt'/>`` ("Invalid value for
    attribute 'type' in element 'backend'", libvirt issue #462), so the forward is added to the
    user-mode (SLIRP) netdev libvirt created for the first ``<interface type='user'>`` (id
    ``hostnet0``) through libvirt's QEMU monitor passthrough, right after the domain starts.
    """
    import libvirt_qemu

    cmd = f"hostfwd_add {netdev} tcp:127.0.0.1:{host_port}-:{guest_port}"
    reply = libvirt_qemu.qemuMonitorCommand(dom, cmd, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    if reply.strip():  # HMP answers nothing on success, an error text otherwise
        raise RuntimeError(f"{cmd!r} failed: {reply.strip()}")


def overlay_with_marker(base: Path, out: Path, marker: str) -> str:
    """A qcow2 overlay ``out`` on ``base`` with ``marker`` (<= 64 bytes, zero-padded) written at
    byte :data:`MARKER_OFFSET` of the disk; returns the marker block's hex as the guest prints it."""
    block = marker_bytes(marker)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    blob = out.with_name(out.name + ".marker")
    blob.write_bytes(block)
    try:
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -s {blob} {MARKER_OFFSET} {MARKER_LEN}", str(out)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    finally:
        blob.unlink()
    return block.hex()


# What the console shows when a boot is going nowhere (firmware or GRUB waiting for a human).
_DEAD_END = re.compile(
    r"No bootable device|Boot failed: not a bootable disk|No bootable option or device|Shell> |grub rescue> |grub> |"
    r"BdsDxe: failed to load Boot\w+ \"UEFI PXE"
)
_MILESTONES = {
    "firmware": re.compile(r"SeaBIOS|BdsDxe|Booting from"),
    "kernel": re.compile(r"Linux version \d"),
    "initramfs": re.compile(r"CV-INITRAMFS stage=local-top"),
    "userspace": re.compile(r"CROSSVISOR-BOOT-OK|CV-BIRTH stage=start"),
    "ready": re.compile(r"CV-READY|CV-BIRTH stage=done"),
}


@dataclass
class BootObservation:
    console: str
    seconds: float  # domain start -> CV-READY (or until the domain ended / waiting stopped)
    milestones_s: dict[str, float]  # first sight of firmware, kernel, initramfs, userspace, ready
    ended: str  # "ready" | "domain-off" | "dead-end" | "timeout"
    host_port: int | None = None
    app_body: str | None = None
    app_error: str | None = None
    shutdown_s: float | None = None  # ACPI power button -> domain off
    off_s: float | None = None  # domain start -> off, for a boot that powers itself off (birth)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(dom) -> bool:
    import libvirt

    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:  # a transient domain is gone once it is off
        return False


def boot_and_observe(
    conn,
    name: str,
    profile: HardwareProfile,
    firmware: str,
    disk: Path,
    work: Path,
    timeout_s: float = 90.0,
    until_off: bool = False,
    shutdown: bool = True,
) -> BootObservation:
    """Start a transient domain for ``disk`` on ``profile``, forward the app port to 127.0.0.1,
    watch the serial console until CV-READY (or, ``until_off``, until the guest powers itself off,
    as a birth does), then ``GET /cv`` through the forward and, ``shutdown``, press the ACPI power
    button and time it. Whatever happens, the domain is gone on return."""
    import urllib.request

    import libvirt

    log = work / f"{name}.console.log"
    nvram = work / f"{name}.VARS.fd" if firmware == "efi" else None
    xml = profile_domain_xml(name, profile, firmware, disk, log, nvram=nvram)
    port = _free_port()
    t0 = time.monotonic()
    dom = conn.createXML(xml, 0)
    seen: dict[str, float] = {}
    ended = "timeout"
    try:
        try:
            forward_app_port(dom, port)
        except Exception:  # noqa: BLE001 - a guest without the forward still boots; recorded below
            port = None
        dead_at = None
        last_len, last_growth = -1, 0.0
        while True:
            now = time.monotonic() - t0
            text = log.read_text(errors="replace") if log.exists() else ""
            for k, rx in _MILESTONES.items():
                if k not in seen and rx.search(text):
                    seen[k] = round(now, 1)
            if not _alive(dom):
                ended = "domain-off"
                break
            if "ready" in seen and not until_off:
                ended = "ready"
                break
            if dead_at is None and _DEAD_END.search(text):
                dead_at = now
            if dead_at is not None and now - dead_at > 3:
                ended = "dead-end"
                break
            # Before the kernel speaks, a console silent for 45 s is a firmware that jumped into
            # nothing (e.g. SeaBIOS into an EFI-only disk's empty MBR): nothing will follow.
            if len(text) != last_len:
                last_len, last_growth = len(text), now
            elif "kernel" not in seen and now - last_growth > 45:
                ended = "dead-end"
                break
            if now > timeout_s:
                break
            time.sleep(0.1)
        obs = BootObservation(console="", seconds=round(time.monotonic() - t0, 1), milestones_s=seen, ended=ended)
        obs.host_port = port
        if ended == "domain-off" and until_off:
            obs.off_s = obs.seconds
        if ended == "ready" and port is not None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/cv", timeout=10) as r:
                    obs.app_body = r.read().decode(errors="replace").strip()
            except Exception as e:  # noqa: BLE001 - the absence of an answer is the observation
                obs.app_error = f"{type(e).__name__}: {e}"
        if ended == "ready" and shutdown:
            ts = time.monotonic()
            dom.shutdown()  # the ACPI power button (virDomainShutdown)
            while _alive(dom) and time.monotonic() - ts < 60:
                time.sleep(0.2)
            obs.shutdown_s = None if _alive(dom) else round(time.monotonic() - ts, 1)
    finally:
        if _alive(dom):
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
    obs.console = log.read_text(errors="replace") if log.exists() else ""
    return obs
