"""libvirt driver: KVM/QEMU (TCG here), Xen, ESX and Hyper-V through one API.

On QEMU hosts a platform's hardware profile (``domain.profiles``) decides the virtual hardware a
VM gets: machine type, the disk controller, the NIC model, the firmware. That is how one libvirtd
stands in for other hypervisors on the embedded default; the guest sees exactly that hardware.
Everything ``inspect`` reports is read back from libvirt's own description of the domain.

``LibvirtTestDriver`` (the in-process ``test:///`` driver) runs no guest; it serves fast workflow
tests and keeps its domains across worker restarts the way a real host would.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import libvirt
import structlog

from crossvisor.core.credentials import resolve_secret
from domain import profiles
from domain.profiles import HardwareProfile
from domain.vm import DiskSpec, ExportedVm, Hardware, NicSpec, VmSpec
from drivers import diskconv, packaging
from drivers.base import ConsoleWatch, Driver, InfraFault, InteropFailure
from drivers.libvirt_uri import domain_type, needs_password, redact

META_NS = "https://crossvisor.dev/ns/metadata/1"
FORWARD_KEY = "crossvisor.forward."  # metadata item: guest port -> the loopback port that reaches it
# Debian's OVMF (no Secure Boot): read-only code, a per-VM copy of the variable store
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
BUS_TARGET = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}
# crossvisor's controller names (as in OVF / vSphere) -> libvirt SCSI controller models.
# The choice matters: a guest without the controller's driver never sees its disk.
SCSI_MODELS = {
    "virtio-scsi": "virtio-scsi",
    "pvscsi": "vmpvscsi",
    "VirtualSCSI": "vmpvscsi",
    "lsilogic": "lsilogic",
    "lsilogic-sas": "lsisas1068",
    "buslogic": "buslogic",
}
SHUTDOWN_GRACE_S = 20.0  # ACPI shutdown before a hard power-off
CONSOLE_POLL_S = 0.25
AFTER_DONE_S = 1.5  # keep reading briefly after ``done``: a dying guest's last lines follow its verdict

# errors come back as exceptions that we handle; libvirt's default handler would also print them
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _err(op: str, e: libvirt.libvirtError) -> InfraFault:
    return InfraFault(f"libvirt {op}: {e.get_error_message()}")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LibvirtDriver(Driver):
    def __init__(
        self,
        uri: str,
        *,
        username: str = "",
        credentials_ref: str = "",
        state_dir: Path,
        kind: str = "kvm",
    ):
        super().__init__()
        self.uri = uri
        self.kind = kind
        self.dtype = domain_type(uri)
        self.runs_guests = self.dtype == "qemu"
        self.state_dir = Path(state_dir)
        self.console_dir = self.state_dir / "consoles"
        self.disk_dir = self.state_dir / "disks"
        for d in (self.console_dir, self.disk_dir, self.state_dir / "nvram"):
            d.mkdir(parents=True, exist_ok=True)
        try:
            if needs_password(uri):
                self.conn = self._open_auth(uri, username, credentials_ref)
            else:
                self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise InfraFault(f"libvirt connect {redact(uri)}: {e.get_error_message()}") from None

    @staticmethod
    def _open_auth(uri: str, username: str, credentials_ref: str) -> libvirt.virConnect:
        secret = resolve_secret(credentials_ref)  # resolved here, inside the activity; never stored

        def request(creds: list, _data: object) -> int:
            for cred in creds:
                if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                    cred[4] = username
                elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                    cred[4] = secret.reveal()
            return 0

        auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], request, None]
        return libvirt.openAuth(uri, auth, 0)

    def describe(self) -> str:
        return f"libvirt {redact(self.uri)}"

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass

    def _dom(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise _err("lookup", e) from None

    def _need(self, name: str) -> libvirt.virDomain:
        dom = self._dom(name)
        if dom is None:
            raise InfraFault(f"domain {name!r} not found on {redact(self.uri)}")
        return dom

    def _console(self, name: str) -> Path:
        return self.console_dir / f"{name}.log"

    def _nvram(self, name: str) -> Path:
        return self.state_dir / "nvram" / f"{name}.VARS.fd"

    # -- definition ---------------------------------------------------------------------------------
    def _os_xml(self, spec: VmSpec) -> str:
        machine = f" machine={quoteattr(spec.machine)}" if spec.machine else ""
        typ = f"<type arch='x86_64'{machine}>hvm</type>"
        if spec.firmware == "efi":
            # Debian's OVMF without Secure Boot (lab images are unsigned), a variable store per VM
            # copied by libvirt from the template: the guest's boot entries are its own
            nvram = quoteattr(str(self._nvram(spec.name)))
            fw = f"<loader readonly='yes' type='pflash'>{OVMF_CODE}</loader><nvram template='{OVMF_VARS}'>{nvram[1:-1]}</nvram>"
        else:
            fw = "<bios useserial='yes'/>"  # SeaBIOS's own words ("No bootable device") on the serial console
        return f"<os>{typ}{fw}<boot dev='hd'/></os>"

    def _disks_xml(self, spec: VmSpec) -> str:
        out, used, scsi_model = [], {}, ""
        for d in spec.disks:
            bus, _, model = d.bus.partition(":")  # "scsi:pvscsi": bus plus controller model
            if bus == "scsi" and not scsi_model:
                scsi_model = SCSI_MODELS.get(model or "virtio-scsi", "")
                if not scsi_model:
                    raise InteropFailure(f"SCSI controller {model!r} has no libvirt equivalent", {"controller": model})
            prefix = BUS_TARGET.get(bus, "vd")
            idx = used.get(prefix, 0)
            used[prefix] = idx + 1
            out.append(
                f"<disk type='file' device='disk'><driver name='qemu' type='{d.format}'/>"
                f"<source file={quoteattr(d.path)}/><target dev='{prefix}{'abcdefghijklmnop'[idx]}' bus='{bus}'/></disk>"
            )
        if scsi_model:
            out.append(f"<controller type='scsi' index='0' model='{scsi_model}'/>")
        return "".join(out)

    def _nic_xml(self, n: NicSpec) -> str:
        mac = f"<mac address='{n.mac}'/>" if n.mac else ""
        slot = (
            f"<address type='pci' domain='0x0000' bus='0x00' slot='{n.pci_slot:#04x}' function='0x0'/>"
            if n.pci_slot
            else ""
        )
        # user-mode networking: DHCP for the guest, no bridge and no host address outside loopback
        return f"<interface type='user'>{mac}<model type={quoteattr(n.model)}/>{slot}</interface>"

    def domain_xml(self, spec: VmSpec) -> str:
        nics = "".join(self._nic_xml(n) for n in spec.nics)
        meta = "".join(f"<item key={quoteattr(k)}>{escape(v)}</item>" for k, v in sorted(spec.metadata.items()))
        # transport, not an observation: which loopback port reaches which guest port
        meta += "".join(f"<item key='{FORWARD_KEY}{p}'>{free_loopback_port()}</item>" for p in spec.forward_ports)
        return (
            f"<domain type='{self.dtype}'><name>{escape(spec.name)}</name>"
            f"<memory unit='MiB'>{spec.memory_mib}</memory><vcpu>{spec.cpus}</vcpu>"
            f"<metadata><cv:meta xmlns:cv='{META_NS}'>{meta}</cv:meta></metadata>"
            f"{self._os_xml(spec)}<features><acpi/></features>{self._cpu_xml()}"
            # a reboot ends the observation: a panicking guest (panic=-1) stops instead of looping
            "<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>"
            f"<devices>{self._disks_xml(spec)}{nics}{self._serial_xml(spec.name)}"
            "<memballoon model='none'/></devices>"
            f"{self._seclabel_xml()}</domain>"
        )

    def _cpu_xml(self) -> str:
        # TCG's qemu64 advertises SVM: the guest's udev would load kvm_amd at every boot for nothing
        if self.dtype != "qemu":
            return ""
        return "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model><feature policy='disable' name='svm'/></cpu>"

    def _serial_xml(self, name: str) -> str:
        console = quoteattr(str(self._console(name)))
        return (
            f"<serial type='file'><source path={console}/><target port='0'/></serial>"
            f"<console type='file'><source path={console}/><target type='serial' port='0'/></console>"
        )

    def _seclabel_xml(self) -> str:
        # QEMU runs as root here so that it can open disks and consoles in any state dir
        return "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"

    def _define(self, spec: VmSpec) -> None:
        xml = self.domain_xml(spec)
        try:
            self.conn.defineXML(xml)
        except libvirt.libvirtError as e:
            msg = e.get_error_message()
            if "unsupported" in msg.lower() or "not supported" in msg.lower():
                # the hypervisor refused this hardware: an observation, not a fault to retry
                raise InteropFailure(f"define rejected: {msg}", {"api_error": msg, "xml": xml[:2000]}) from None
            raise _err("define", e) from None

    def provision(self, spec: VmSpec) -> Hardware:
        if self._dom(spec.name) is None:
            self._define(spec)
        return self.inspect(spec.name)

    # -- power ------------------------------------------------------------------------------------
    def power_on(self, name: str) -> None:
        dom = self._need(name)
        if not dom.isActive():
            self._console(name).unlink(missing_ok=True)  # evidence must come from this boot only
            try:
                dom.create()
            except libvirt.libvirtError as e:
                raise _err("start", e) from None
            self._forward_ports(dom)

    def _forward_ports(self, dom: libvirt.virDomain) -> None:
        """Loopback forwards to the guest's ports, added to the user-mode netdev of the running
        QEMU: Debian's libvirt 9.0 has no passt backend (libvirt issue #462), so libvirt's QEMU
        monitor passthrough adds them after every start. A forward that cannot be added (the port
        taken meanwhile) leaves the guest without it: the app check then says so."""
        import libvirt_qemu

        for guest_port, host_port in self._forwards(dom).items():
            cmd = f"hostfwd_add hostnet0 tcp:127.0.0.1:{host_port}-:{guest_port}"
            try:
                reply = libvirt_qemu.qemuMonitorCommand(dom, cmd, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            except libvirt.libvirtError as e:
                reply = e.get_error_message()
            if reply.strip():  # HMP answers nothing on success
                structlog.get_logger("crossvisor").warning(
                    "libvirt.forward_failed", domain=dom.name(), reply=reply.strip()
                )

    def _forwards(self, dom: libvirt.virDomain) -> dict[int, int]:
        root = ET.fromstring(dom.XMLDesc(0))
        out = {}
        for item in root.findall(f"./metadata/{{{META_NS}}}meta/item"):
            key = item.get("key", "")
            if key.startswith(FORWARD_KEY) and (item.text or "").isdigit():
                out[int(key[len(FORWARD_KEY) :])] = int(item.text)
        return out

    def power_off(self, name: str, hard: bool = False) -> None:
        dom = self._need(name)
        if not dom.isActive():
            return
        if not hard:
            try:
                dom.shutdown()  # ACPI: the guest's own shutdown path
            except libvirt.libvirtError:
                pass
        deadline = time.monotonic() + (0 if hard else SHUTDOWN_GRACE_S)
        while time.monotonic() < deadline and dom.isActive():
            time.sleep(0.5)
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if dom.isActive():
                    raise _err("destroy", e) from None

    def snapshot(self, name: str, snapshot: str) -> None:
        dom = self._need(name)
        disks = self.inspect(name).disks
        internal = all(d.format == "qcow2" for d in disks)
        flags = 0 if internal else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        xml = f"<domainsnapshot><name>{escape(snapshot)}</name></domainsnapshot>"
        try:
            dom.snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as e:
            msg = e.get_error_message()
            raise InteropFailure(f"snapshot refused: {msg}", {"api_error": msg}) from None

    # -- export / import --------------------------------------------------------------------------
    def export(self, name: str, out_dir: Path, package_format: str = "ova") -> ExportedVm:
        # libvirt has no export API: describe the VM as libvirt reports it and package its disks
        return packaging.export_package(name, self.inspect(name), out_dir, package_format)

    def import_vm(self, package: ExportedVm, name: str, profile: HardwareProfile | None = None) -> Hardware:
        if self._dom(name) is not None:
            return self.inspect(name)
        desc = packaging.read_descriptor(package.package)
        prof = profile or profiles.for_platform(self.kind if self.kind in profiles.DEFAULT_FOR_KIND else "kvm")
        evidence = {"profile": prof.name, "stands_in_for": prof.stands_in_for}
        firmware = desc.firmware
        if firmware not in prof.firmware:
            # what a hypervisor without that firmware does: it creates the VM with the one it has
            evidence["firmware"] = (
                f"the package asks for {firmware.upper()}; {prof.name} offers {', '.join(prof.firmware)}"
            )
            firmware = prof.firmware[0]
        disks = []
        for i, d in enumerate(package.disks):
            # the converted disk is shared by every cell with this package: boot an overlay on it
            overlay = self.disk_dir / f"{name}-disk{i}.qcow2"
            if not overlay.exists():
                tmp = overlay.with_suffix(".tmp")
                diskconv.create_overlay(tmp, Path(d.path), d.format)
                tmp.rename(overlay)
            disks.append(
                DiskSpec(str(overlay), "qcow2", prof.disk_controller if i == 0 else prof.disk_bus, d.capacity_bytes)
            )
        evidence["disk"] = f"{prof.disk_controller} (the package had {package.disks[0].bus if package.disks else '-'})"
        nics = [
            NicSpec(prof.nic_model, n.mac, n.network, prof.nic_slot if i == 0 else 0) for i, n in enumerate(desc.nics)
        ]
        nics = nics or [NicSpec(prof.nic_model, pci_slot=prof.nic_slot)]
        evidence["nics"] = f"{prof.nic_model} (the package had {', '.join(n.model for n in desc.nics) or '-'})"
        spec = VmSpec(
            name=name,
            cpus=desc.cpus,
            memory_mib=desc.memory_mib,
            disks=disks,
            nics=nics,
            firmware=firmware,
            hardware_version=desc.hardware_version,
            metadata=dict(desc.metadata),
            machine=prof.machine,
            forward_ports=list(package.forward_ports),
        )
        self.last_import_evidence = evidence
        return self.provision(spec)

    # -- what libvirt reports -------------------------------------------------------------------------
    def inspect(self, name: str) -> Hardware:
        dom = self._need(name)
        root = ET.fromstring(dom.XMLDesc(0))
        mem = root.find("memory")
        amount = int(mem.text or "0") if mem is not None else 0
        unit = mem.get("unit", "KiB") if mem is not None else "KiB"
        mem_mib = amount // 1024 if unit == "KiB" else amount
        scsi = root.find("./devices/controller[@type='scsi']")
        scsi_model = profiles.SCSI_NAMES.get(scsi.get("model", ""), scsi.get("model", "")) if scsi is not None else ""
        disks = []
        for d in root.findall("./devices/disk[@device='disk']"):
            src = d.find("source")
            path = src.get("file", "") if src is not None else ""
            drv = d.find("driver")
            fmt = drv.get("type", "raw") if drv is not None else "raw"
            tgt = d.find("target")
            bus = tgt.get("bus", "virtio") if tgt is not None else "virtio"
            disks.append(
                DiskSpec(path, fmt, f"scsi:{scsi_model}" if bus == "scsi" and scsi_model else bus, _size(path, fmt))
            )
        nics = []
        for i in root.findall("./devices/interface"):
            model, mac = i.find("model"), i.find("mac")
            nics.append(
                NicSpec(
                    model.get("type", "") if model is not None else "",
                    mac.get("address", "") if mac is not None else "",
                )
            )
        meta = {
            item.get("key", ""): item.text or ""
            for item in root.findall(f"./metadata/{{{META_NS}}}meta/item")
            if not item.get("key", "").startswith("crossvisor.")
            or item.get("key") in ("crossvisor.image", "crossvisor.os")
        }
        os_el = root.find("os")
        efi = os_el is not None and (
            os_el.get("firmware") == "efi"
            or (os_el.find("loader") is not None and os_el.find("loader").get("type") == "pflash")
        )
        controllers = sorted(
            {
                f"{c.get('type')}:{c.get('model', '')}".rstrip(":")
                for c in root.findall("./devices/controller")
                if c.get("type") in ("scsi", "ide", "sata")
            }
        )
        return Hardware(
            cpus=int(root.findtext("vcpu", "1")),
            memory_mib=mem_mib,
            disks=disks,
            nics=nics,
            firmware="efi" if efi else "bios",
            controllers=controllers,
            # a vSphere hardware family (vmx-NN) has no libvirt equivalent: the machine type is not one
            hardware_version="",
            metadata=meta,
            power_state="on" if dom.isActive() else "off",
        )

    def watch_console(
        self,
        name: str,
        done: Callable[[str], bool],
        timeout_s: float,
        heartbeat: Callable[[str], None] | None = None,
        idle_s: float = 0.0,
        idle_counts: Callable[[str], bool] | None = None,
    ) -> ConsoleWatch:
        dom = self._need(name)
        console = self._console(name)
        t0 = time.monotonic()
        text, stopped, finished_at = "", False, None
        grew_at, size = t0, -1
        while True:
            text = console.read_text(errors="replace") if console.exists() else ""
            stopped = not dom.isActive()
            now = time.monotonic()
            if len(text) != size:
                grew_at, size = now, len(text)
            if stopped or (finished_at is not None and now - finished_at >= AFTER_DONE_S):
                break
            if finished_at is None and done(text):
                finished_at = now
            if idle_s and now - grew_at >= idle_s and (idle_counts is None or idle_counts(text)):
                return ConsoleWatch(text, now - t0, stopped=False, timed_out=False, idle=True)
            if now - t0 >= timeout_s:
                return ConsoleWatch(text, now - t0, stopped=False, timed_out=True)
            if heartbeat is not None:
                heartbeat(f"console {len(text)} bytes")
            time.sleep(CONSOLE_POLL_S)
        if stopped:  # the last writes before the domain went away
            text = console.read_text(errors="replace") if console.exists() else text
        return ConsoleWatch(text, time.monotonic() - t0, stopped=stopped, timed_out=False)

    def guest_port(self, name: str, port: int) -> tuple[str, int] | None:
        host_port = self._forwards(self._need(name)).get(port)
        return ("127.0.0.1", host_port) if host_port else None

    # -- removal ----------------------------------------------------------------------------------
    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
                for s in dom.listAllSnapshots():
                    s.delete(self._snapshot_delete_flags())
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as e:
                if self._dom(name) is not None:
                    raise _err("undefine", e) from None
        self._console(name).unlink(missing_ok=True)
        self._nvram(name).unlink(missing_ok=True)
        for f in self.disk_dir.glob(f"{name}-disk*"):
            f.unlink(missing_ok=True)

    def _snapshot_delete_flags(self) -> int:
        # external (disk-only) snapshots cannot be deleted by libvirt 9: drop their metadata, the
        # overlays go with the VM's disks
        return libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY

    def list_vms(self, prefix: str) -> list[str]:
        try:
            return sorted(d.name() for d in self.conn.listAllDomains() if d.name().startswith(prefix))
        except libvirt.libvirtError as e:
            raise _err("list", e) from None


class LibvirtTestDriver(LibvirtDriver):
    """libvirt's in-process ``test:///`` driver: a real libvirt API with no guest behind it.

    It keeps domains only in the process that opened it; a lab host keeps them across client
    restarts. So that a killed worker resumes exactly like it would against a real libvirtd, the
    definitions are persisted under ``state_dir`` and re-defined on connect.
    """

    runs_guests = False
    _lock = threading.Lock()
    # test:///default lives as long as one connection to it is open: keep one per process so that
    # the "host" does not forget its domains between two activities
    _keepalive: dict[str, libvirt.virConnect] = {}

    def __init__(self, uri: str, *, state_dir: Path, kind: str = "kvm", **_):
        super().__init__(uri, state_dir=state_dir, kind=kind)
        self.runs_guests = False
        self._restore()

    def describe(self) -> str:
        return f"the libvirt test driver ({self.uri})"

    @property
    def _records(self) -> Path:
        d = self.state_dir / "libvirt-test" / self.uri.replace("/", "_").replace(":", "")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _restore(self) -> None:
        with self._lock:
            if self.uri in self._keepalive:
                return
            self._keepalive[self.uri] = libvirt.open(self.uri)
            for f in sorted(self._records.glob("*.json")):
                try:
                    rec = json.loads(f.read_text())
                    if self._dom(rec["name"]) is not None:
                        continue
                    dom = self.conn.defineXML(rec["xml"])
                    if rec.get("running"):
                        dom.create()
                except (ValueError, KeyError, libvirt.libvirtError) as e:
                    # one bad record must not hide every domain after it
                    structlog.get_logger("crossvisor").warning("libvirt_test.restore_failed", file=f.name, error=str(e))

    def _persist(self, name: str) -> None:
        f = self._records / f"{name}.json"
        dom = self._dom(name)
        if dom is None:
            f.unlink(missing_ok=True)
            return
        # atomic: a worker killed mid-write must not leave a truncated record behind
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": name, "xml": dom.XMLDesc(0), "running": bool(dom.isActive())}))
        os.replace(tmp, f)

    def _nic_xml(self, n: NicSpec) -> str:
        mac = f"<mac address='{n.mac}'/>" if n.mac else ""
        return (
            f"<interface type='network'>{mac}<source network='default'/><model type={quoteattr(n.model)}/></interface>"
        )

    # the test driver knows no firmware auto-selection, serial files or security labels
    def _os_xml(self, spec: VmSpec) -> str:
        return "<os><type arch='x86_64'>hvm</type></os>"

    def _serial_xml(self, name: str) -> str:
        return ""

    def _seclabel_xml(self) -> str:
        return ""

    def provision(self, spec: VmSpec) -> Hardware:
        hw = super().provision(spec)
        self._persist(spec.name)
        return hw

    def power_on(self, name: str) -> None:
        dom = self._need(name)
        if not dom.isActive():
            dom.create()  # no QEMU behind it: nothing to forward
        self._persist(name)

    def power_off(self, name: str, hard: bool = False) -> None:
        dom = self._need(name)
        if dom.isActive():
            dom.destroy()  # no guest to shut down
        self._persist(name)

    def snapshot(self, name: str, snapshot: str) -> None:
        self._need(name).snapshotCreateXML(f"<domainsnapshot><name>{escape(snapshot)}</name></domainsnapshot>", 0)
        self._persist(name)

    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            for s in dom.listAllSnapshots():
                s.delete(0)
            dom.undefine()
        self._persist(name)

    def watch_console(self, name, done, timeout_s, heartbeat=None, idle_s=0.0, idle_counts=None) -> ConsoleWatch:
        return ConsoleWatch("", 0.0, stopped=not self._need(name).isActive(), timed_out=False)

    def guest_port(self, name: str, port: int) -> tuple[str, int] | None:
        return None


def _size(path: str, fmt: str) -> int:
    """Virtual size of a disk image, so capacity survives format changes in the comparison."""
    if not path or not Path(path).exists():
        return 0
    try:
        return diskconv.info(path, fmt).virtual_size
    except Exception:  # noqa: BLE001 - size is evidence, not a reason to fail inspection
        return 0
