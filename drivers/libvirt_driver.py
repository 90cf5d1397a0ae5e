"""libvirt driver: KVM/QEMU (forced to TCG here), Xen, ESX and Hyper-V through one API, plus the
in-process ``test:///`` driver used by the embedded demo and the fast tests.

The test driver keeps its domains only in the process that opened it; a lab host keeps them across
client restarts. So that a killed worker resumes exactly like it would against a real libvirtd,
this driver persists test-driver definitions under ``state_dir`` and re-defines them on connect.
"""

from __future__ import annotations

import json
import os
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import libvirt
import structlog

from domain.vm import DiskSpec, ExportedVm, Hardware, NicSpec, VmSpec
from drivers import packaging
from drivers.base import Driver, InfraFault, InteropFailure
from drivers.credentials import resolve_secret
from drivers.libvirt_uri import domain_type, needs_password, redact, scheme_of

META_NS = "https://crossvisor.dev/ns/metadata/1"
# libvirt NIC models per domain type; a model outside the set is an interop failure on import
NIC_MODELS = {
    "qemu": {"virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "ne2k_pci"},
    "test": {
        "virtio",
        "e1000",
        "e1000e",
        "rtl8139",
        "vmxnet3",
        "ne2k_pci",
        "netfront",
        "netvsc",
    },
    "xen": {"netfront", "e1000", "rtl8139"},
    "hyperv": {"netvsc", "e1000"},
    "vmware": {"vmxnet3", "e1000", "e1000e", "vlance"},
}
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
SCSI_NAMES = {"vmpvscsi": "pvscsi", "lsisas1068": "lsilogic-sas"}

# errors come back as exceptions that we handle; libvirt's default handler would also print them
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
_test_lock = threading.Lock()
# test:///default lives as long as one connection to it is open: keep one per process so that the
# "host" does not forget its domains between two activities
_keepalive: dict[str, libvirt.virConnect] = {}


def _err(op: str, e: libvirt.libvirtError) -> InfraFault:
    return InfraFault(f"libvirt {op}: {e.get_error_message()}")


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
        self.uri = uri
        self.kind = kind
        self.dtype = domain_type(uri)
        self.state_dir = Path(state_dir)
        self.console_dir = self.state_dir / "consoles"
        self.console_dir.mkdir(parents=True, exist_ok=True)
        self._is_test = scheme_of(uri) == "test"
        try:
            if needs_password(uri):
                self.conn = self._open_auth(uri, username, credentials_ref)
            else:
                self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise InfraFault(f"libvirt connect {redact(uri)}: {e.get_error_message()}") from None
        if self._is_test:
            self._restore_test_state()

    @staticmethod
    def _open_auth(uri: str, username: str, credentials_ref: str) -> libvirt.virConnect:
        def request(creds: list, _data: object) -> int:
            for cred in creds:
                if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                    cred[4] = username
                elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                    cred[4] = resolve_secret(credentials_ref)  # resolved here, never stored
            return 0

        auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], request, None]
        return libvirt.openAuth(uri, auth, 0)

    # -- test driver persistence -------------------------------------------------------------------
    @property
    def _test_dir(self) -> Path:
        d = self.state_dir / "libvirt-test" / self.uri.replace("/", "_").replace(":", "")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _restore_test_state(self) -> None:
        with _test_lock:
            if self.uri in _keepalive:
                return
            _keepalive[self.uri] = libvirt.open(self.uri)
            for f in sorted(self._test_dir.glob("*.json")):
                try:
                    rec = json.loads(f.read_text())
                    try:
                        self.conn.lookupByName(rec["name"])
                        continue
                    except libvirt.libvirtError:
                        pass
                    dom = self.conn.defineXML(rec["xml"])
                    if rec.get("running"):
                        dom.create()
                except (ValueError, KeyError, libvirt.libvirtError) as e:
                    # one bad record must not hide every domain after it
                    structlog.get_logger("crossvisor").warning("libvirt_test.restore_failed", file=f.name, error=str(e))

    def _persist(self, name: str) -> None:
        if not self._is_test:
            return
        f = self._test_dir / f"{name}.json"
        try:
            dom = self.conn.lookupByName(name)
        except libvirt.libvirtError:
            f.unlink(missing_ok=True)
            return
        # atomic: a worker killed mid-write must not leave a truncated record behind
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": name, "xml": dom.XMLDesc(0), "running": bool(dom.isActive())}))
        os.replace(tmp, f)

    # -- Driver -------------------------------------------------------------------------------------
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

    def domain_xml(self, spec: VmSpec) -> str:
        allowed = NIC_MODELS.get(self.dtype, set())
        for n in spec.nics:
            if allowed and n.model not in allowed:
                raise InteropFailure(
                    f"NIC model {n.model!r} not available on {self.dtype} (supported: {sorted(allowed)})",
                    {"nic_model": n.model},
                )
        if spec.firmware == "efi" and self.dtype == "xen":
            raise InteropFailure("EFI firmware requested on a Xen PV host", {"firmware": "efi"})
        os_parts = ["<type arch='x86_64'>hvm</type>"]
        if spec.kernel:
            os_parts += [
                f"<kernel>{escape(spec.kernel)}</kernel>",
                f"<initrd>{escape(spec.initrd)}</initrd>",
            ]
            os_parts.append(f"<cmdline>{escape(spec.cmdline)}</cmdline>")
        loader = " firmware='efi'" if spec.firmware == "efi" and self.dtype != "test" else ""
        disks, used, scsi_model = [], {}, ""
        for d in spec.disks:
            bus, _, model = d.bus.partition(":")  # "scsi:pvscsi": bus plus controller model
            if bus == "scsi" and not scsi_model:
                scsi_model = SCSI_MODELS.get(model or "virtio-scsi")
                if scsi_model is None:
                    raise InteropFailure(f"SCSI controller {model!r} has no libvirt equivalent", {"controller": model})
            prefix = BUS_TARGET.get(bus, "vd")
            idx = used.get(prefix, 0)
            used[prefix] = idx + 1
            dev = prefix + "abcdefghijklmnop"[idx]
            disks.append(
                f"<disk type='file' device='disk'><driver name='qemu' type='{_libvirt_fmt(d.format)}'/>"
                f"<source file={quoteattr(d.path)}/><target dev='{dev}' bus='{bus}'/></disk>"
            )
        if scsi_model:
            disks.append(f"<controller type='scsi' index='0' model='{scsi_model}'/>")
        nics = [
            f"<interface type='user'><mac address='{n.mac}'/><model type='{n.model}'/></interface>"
            if n.mac
            else f"<interface type='user'><model type='{n.model}'/></interface>"
            for n in spec.nics
        ]
        if self.dtype == "test":
            nics = [
                x.replace("type='user'", "type='network'").replace("<model", "<source network='default'/><model")
                for x in nics
            ]
        console = self.console_dir / f"{spec.name}.log"
        serial = (
            f"<serial type='file'><source path={quoteattr(str(console))}/><target port='0'/></serial>"
            f"<console type='file'><source path={quoteattr(str(console))}/><target type='serial' port='0'/></console>"
            if self.dtype == "qemu"
            else ""
        )
        # QEMU runs as root here so that it can open disks and consoles in any state dir
        seclabel = (
            "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"
            if self.dtype == "qemu"
            else ""
        )
        meta = "".join(f"<item key={quoteattr(k)}>{escape(v)}</item>" for k, v in sorted(spec.metadata.items()))
        hwv = (
            f"<item key='crossvisor.hardware_version'>{escape(spec.hardware_version)}</item>"
            if spec.hardware_version
            else ""
        )
        hwv += f"<item key='crossvisor.firmware'>{spec.firmware}</item>"
        return (
            f"<domain type='{self.dtype}'><name>{escape(spec.name)}</name>"
            f"<memory unit='MiB'>{spec.memory_mib}</memory><vcpu>{spec.cpus}</vcpu>"
            f"<metadata><cv:meta xmlns:cv='{META_NS}'>{meta}{hwv}</cv:meta></metadata>"
            f"<os{loader}>{''.join(os_parts)}</os><features><acpi/></features>"
            f"<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
            f"<devices>{''.join(disks)}{''.join(nics)}{serial}</devices>{seclabel}</domain>"
        )

    def provision(self, spec: VmSpec) -> Hardware:
        if self._dom(spec.name) is None:
            xml = self.domain_xml(spec)
            try:
                self.conn.defineXML(xml)
            except libvirt.libvirtError as e:
                msg = e.get_error_message()
                if "unsupported" in msg.lower() or "not supported" in msg.lower():
                    raise InteropFailure(f"define rejected: {msg}", {"xml": xml[:2000]}) from None
                raise _err("define", e) from None
            self._persist(spec.name)
        return self.inspect(spec.name)

    def power_on(self, name: str) -> None:
        dom = self._need(name)
        if not dom.isActive():
            console = self.console_dir / f"{name}.log"
            console.unlink(missing_ok=True)  # evidence must come from this boot only
            try:
                dom.create()
            except libvirt.libvirtError as e:
                raise _err("start", e) from None
        self._persist(name)

    def power_off(self, name: str) -> None:
        dom = self._need(name)
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if dom.isActive():
                    raise _err("destroy", e) from None
        self._persist(name)

    def snapshot(self, name: str, snapshot: str) -> None:
        dom = self._need(name)
        if snapshot in (dom.snapshotListNames() or []):
            return
        flags = 0 if self._is_test else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY * 0
        try:
            dom.snapshotCreateXML(
                f"<domainsnapshot><name>{escape(snapshot)}</name></domainsnapshot>",
                flags,
            )
        except libvirt.libvirtError as e:
            raise InteropFailure(f"snapshot rejected: {e.get_error_message()}") from None

    def export(self, name: str, out_dir: Path) -> ExportedVm:
        hw = self.inspect(name)
        if hw.power_state == "on":
            raise InfraFault(f"{name} must be powered off before export")
        return packaging.export_package(name, hw, out_dir)

    def import_vm(self, package: ExportedVm, name: str) -> Hardware:
        desc = packaging.read_descriptor(package.package)
        hw = packaging.ovf.hardware_from_descriptor(
            desc,
            [d.path for d in package.disks],
            package.disks[0].format if package.disks else "qcow2",
        )
        spec = VmSpec(
            name=name,
            cpus=hw.cpus,
            memory_mib=hw.memory_mib,
            disks=[DiskSpec(d.path, d.format, _bus_for(d.bus), d.capacity_bytes) for d in package.disks],
            nics=[NicSpec(package.nic_map.get(n.model, n.model), n.mac, n.network) for n in hw.nics],
            firmware=hw.firmware,
            hardware_version=hw.hardware_version,
            metadata=hw.metadata,
            kernel=package.boot.get("kernel", ""),
            initrd=package.boot.get("initrd", ""),
            cmdline=package.boot.get("cmdline", ""),
        )
        return self.provision(spec)

    def inspect(self, name: str) -> Hardware:
        dom = self._need(name)
        root = ET.fromstring(dom.XMLDesc(0))
        mem_kib = int(root.findtext("memory", "0"))
        unit = root.find("memory").get("unit", "KiB") if root.find("memory") is not None else "KiB"
        mem_mib = mem_kib // 1024 if unit == "KiB" else mem_kib
        disks = []
        scsi = root.find("./devices/controller[@type='scsi']")
        scsi_model = SCSI_NAMES.get(scsi.get("model", ""), scsi.get("model", "")) if scsi is not None else ""
        for d in root.findall("./devices/disk[@device='disk']"):
            src = d.find("source")
            path = src.get("file", "") if src is not None else ""
            fmt = d.find("driver").get("type", "raw") if d.find("driver") is not None else "raw"
            disks.append(
                DiskSpec(
                    path=path,
                    format=_crossvisor_fmt(fmt),
                    bus=_bus_name(d.find("target").get("bus", "virtio"), scsi_model),
                    capacity_bytes=_size(path, _crossvisor_fmt(fmt)),
                )
            )
        nics = [
            NicSpec(
                model=(i.find("model").get("type") if i.find("model") is not None else "rtl8139"),
                mac=i.find("mac").get("address", "") if i.find("mac") is not None else "",
            )
            for i in root.findall("./devices/interface")
        ]
        meta: dict[str, str] = {}
        hwv = ""
        fw_meta = ""
        for item in root.findall(f"./metadata/{{{META_NS}}}meta/item"):
            if item.get("key") == "crossvisor.hardware_version":
                hwv = item.text or ""
            elif item.get("key") == "crossvisor.firmware":
                fw_meta = item.text or ""
            else:
                meta[item.get("key", "")] = item.text or ""
        os_el = root.find("os")
        fw = (
            "efi"
            if os_el is not None and (os_el.get("firmware") == "efi" or os_el.find("loader") is not None)
            else "bios"
        )
        fw = fw_meta or fw  # the test driver drops <os firmware>; the requested value is kept as metadata
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
            firmware=fw,
            controllers=controllers,
            hardware_version=hwv,
            metadata=meta,
            power_state="on" if dom.isActive() else "off",
        )

    def guest_evidence(self, name: str, timeout_s: float = 60.0) -> str:
        dom = self._need(name)
        if self._is_test:
            # The test driver runs no guest: the only evidence is the domain state it reports.
            state, reason = dom.state()
            return f"test-driver domain {name} state={state} reason={reason} running={bool(dom.isActive())}"
        console = self.console_dir / f"{name}.log"
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "CROSSVISOR-BOOT-END" in text or (not dom.isActive() and text):
                break
            time.sleep(0.2)
        return text

    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
                for s in dom.listAllSnapshots():
                    s.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if not self._is_test else 0)
                dom.undefine()
            except libvirt.libvirtError as e:
                if self._dom(name) is not None:
                    raise _err("undefine", e) from None
        self._persist(name)
        (self.console_dir / f"{name}.log").unlink(missing_ok=True)

    def list_vms(self, prefix: str) -> list[str]:
        try:
            return sorted(d.name() for d in self.conn.listAllDomains() if d.name().startswith(prefix))
        except libvirt.libvirtError as e:
            raise _err("list", e) from None

    def is_booted(self, name: str, evidence: str) -> bool:
        if self._is_test:
            return "running=True" in evidence
        return super().is_booted(name, evidence)


def _libvirt_fmt(fmt: str) -> str:
    return {"vpc": "vpc", "vmdk": "vmdk", "vhdx": "vhdx"}.get(fmt, fmt)


def _crossvisor_fmt(fmt: str) -> str:
    return fmt


def _bus_for(bus: str) -> str:
    return bus if bus.partition(":")[0] in BUS_TARGET else "virtio"


def _bus_name(bus: str, scsi_model: str) -> str:
    return f"scsi:{scsi_model}" if bus == "scsi" and scsi_model else bus


def _size(path: str, fmt: str) -> int:
    """Virtual size of a disk image, so capacity survives format changes in the comparison."""
    if not path or not Path(path).exists():
        return 0
    from drivers import diskconv

    try:
        return diskconv.info(path, fmt).virtual_size
    except Exception:  # noqa: BLE001 - size is evidence, not a reason to fail inspection
        return 0
