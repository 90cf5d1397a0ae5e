"""libvirt driver: KVM/QEMU (TCG here), Xen, ESX and Hyper-V through one API, local or remote.

On QEMU hosts a platform's hardware profile (``domain.profiles``) decides the virtual hardware a
VM gets: machine type, the disk controller, the NIC model, the firmware. That is how one libvirtd
stands in for other hypervisors on the embedded default; the guest sees exactly that hardware.
Everything ``inspect`` reports is read back from libvirt's own description of the domain.

The host is reached only through libvirt's API, never through its file system, whether it is this
machine (``qemu:///system``) or one across the network (``qemu+ssh://``, ``qemu+tls://``,
``qemu+tcp://``); the same code serves both:

* disks are storage volumes in a pool on the host (``drivers.libvirt.storage``): a disk given to
  ``provision`` is a file on the worker, uploaded through volume streams (each layer once per
  host, by content), and the VM boots an overlay volume of its own; export, births and
  ``read_disk`` flatten the VM's disk on the host and download it.
* the serial console is a pty read through ``virDomainOpenConsole``: the domain starts paused,
  the console stream attaches, then the guest runs, so the evidence covers the whole boot.
* the guest's service is forwarded with QEMU's ``hostfwd`` (Debian's libvirt 9.0 has no passt)
  on the address the worker reaches the host at: 127.0.0.1 for a local URI, the URI's host for a
  remote one (``forward_address`` overrides), on a port free on the host.
* NVRAM of EFI guests lives where the host's libvirt keeps it (its own default path), copied at
  the first start from OVMF's empty store, or from the VM's own (``VmSpec.nvram``: a file on the
  worker, uploaded as a content volume like a disk layer).

Credentials are resolved inside the activity: a password (``credentials_ref``: SASL on
qemu+tcp/tls, ESX, Hyper-V) through libvirt's auth callback; key-based connections through files
on the worker (``pki_path``: a TLS client certificate directory, libvirt's ``pkipath``;
``ssh_key`` for qemu+ssh / qemu+libssh, plus ``known_hosts`` for qemu+libssh). A rejected credential is a ``CredentialError`` naming
the host: never retried.

``LibvirtTestDriver`` (the in-process ``test:///`` driver) runs no guest and keeps disks as the
worker's files; it serves fast workflow tests and keeps its domains across worker restarts the
way a real host would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import libvirt
import structlog

from crossvisor.core import steps
from crossvisor.core.credentials import CredentialError, resolve_secret
from crossvisor.core.errors import BadInput, HostUnreachable
from domain import profiles
from domain.profiles import HardwareProfile
from domain.vm import OWNER_KEY, DiskSpec, ExportedVm, Hardware, NicSpec, VmSpec
from drivers.base import ConsoleWatch, Driver, GuestExec, InfraFault, InteropFailure, TemplateMissing, check_owner
from drivers.libvirt.storage import HostStorage, volume_of_source
from drivers.libvirt.uri import domain_type, host_of, is_remote, needs_password, redact, transport, with_params
from toolbox import diskconv, packaging, screens

META_NS = "https://crossvisor.dev/ns/metadata/1"
FORWARD_NS = "https://crossvisor.dev/ns/forward/1"  # live metadata: where each guest port is reachable
FORWARD_KEY = "crossvisor.forward."  # definition metadata item per guest port to forward
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
AGENT_EXEC_WAIT_S = 60.0  # for the agent to answer before a guest-exec: it starts late under TCG
CONSOLE_POLL_S = 0.25
# the guest's CPU and run-queue wait are read every this many polls (each is a call libvirtd
# answers from /proc): once a second is enough for a deadline counted in tens of seconds
GUEST_STATS_EVERY = 4
# a console wait's deadline counts the time the guest could run: wall time less the time its vCPU
# threads waited for a core (libvirt's vcpu.N.delay, the host scheduler's run-queue wait); a host
# so loaded that the wall time reaches this many times the deadline is a fault, not a verdict
STARVED_WALL_FACTOR = 4.0
AFTER_DONE_S = 1.5  # keep reading briefly after ``done``: a dying guest's last lines follow its verdict
FORWARD_TRIES = 8
AUTH_ERRORS = (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_AUTH_UNAVAILABLE)

# errors come back as exceptions that we handle; libvirt's default handler would also print them
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _guest_cpu_s(dom: libvirt.virDomain) -> float:
    """CPU seconds the running guest's QEMU has used since its start, as libvirt reports them."""
    try:
        return dom.info()[4] / 1e9
    except libvirt.libvirtError:
        return 0.0


def _vcpu_delay_s(conn: libvirt.virConnect, dom: libvirt.virDomain) -> float:
    """Seconds the guest's vCPUs waited on the host's run queue since its start, divided by their
    count (0 when the host does not say): time it wanted to run and had no core."""
    try:
        ((_, stats),) = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_VCPU)
    except (libvirt.libvirtError, ValueError, TypeError):
        return 0.0
    delays = [v for k, v in stats.items() if k.startswith("vcpu.") and k.endswith(".delay")]
    return sum(delays) / len(delays) / 1e9 if delays else 0.0


def _agent_ping(dom: libvirt.virDomain, timeout_s: float, beat: Callable[[str], None]) -> str:
    """guest-ping until the guest's agent answers: "" once it does, else why not (the agent starts
    with the system, under TCG a little after the login prompt)."""
    import libvirt_qemu

    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        beat("guest-agent")
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
            return ""
        except libvirt.libvirtError as e:
            last = str(e).splitlines()[0][:200]
        if time.monotonic() >= deadline:
            return f"the agent channel is present, no agent answered within {timeout_s:.0f} s ({last})"
        time.sleep(1.0)


def _charge_guest_cpu(dom: libvirt.virDomain) -> None:
    """A guest is about to stop: its whole run's CPU counts to the open step (the demo's floor
    adds the CPU of every boot; read at the stop, so each run is counted once)."""
    steps.add_cpu(_guest_cpu_s(dom), "guest cpu")


def _err(op: str, e: libvirt.libvirtError) -> InfraFault:
    return InfraFault(f"libvirt {op}: {e.get_error_message()}")


def _log():
    return structlog.get_logger("crossvisor")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ConsoleTap:
    """The serial console of one boot, read from a ``virDomainOpenConsole`` stream by a thread."""

    def __init__(self, conn: libvirt.virConnect, name: str, carried: bytes = b""):
        # a connection of its own: the reader blocks in the stream while the driver's connection
        # goes on with other calls (one connection serving both can stall under libvirt's client)
        self.conn = conn
        try:
            self.stream = conn.newStream(0)
            # FORCE: a session a dead worker left open must not keep this boot's console from us
            conn.lookupByName(name).openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError:
            conn.close()
            raise
        self._chunks: list[bytes] = [carried] if carried else []  # what an earlier stream of this boot read
        self._lock = threading.Lock()
        self.ended = threading.Event()
        self.error = ""
        self._thread = threading.Thread(target=self._read, name=f"console-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                data = self.stream.recv(65536)
                if data == -2:  # would block (non-blocking streams only)
                    time.sleep(0.05)
                    continue
                if not data:
                    break
                with self._lock:
                    self._chunks.append(data)
        except libvirt.libvirtError as e:
            self.error = e.get_error_message()
        finally:
            self.ended.set()

    def raw(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def text(self) -> str:
        return self.raw().decode(errors="replace")

    def close(self) -> None:
        if not self.ended.is_set():
            try:
                self.stream.abort()
            except libvirt.libvirtError:
                pass
        self._thread.join(timeout=5)
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass


class LibvirtDriver(Driver):
    def __init__(
        self,
        uri: str,
        *,
        username: str = "",
        credentials_ref: str = "",
        state_dir: Path,
        kind: str = "kvm",
        host: str = "",
        pool: str = "",
        pool_path: str = "",
        forward_address: str = "",
        pki_path: str = "",
        ssh_key: str = "",
        known_hosts: str = "",
    ):
        super().__init__()
        self.uri = uri
        self.kind = kind
        self.host = host or host_of(uri) or "localhost"  # names the host in errors
        self.dtype = domain_type(uri)
        self.runs_guests = self.dtype == "qemu"
        self.state_dir = Path(state_dir)
        self._forward_address = forward_address
        self._taps: dict[str, _ConsoleTap] = {}
        # references and paths only (the secret is resolved again at each open, never kept)
        self._open_args = (uri, username, credentials_ref, pki_path, ssh_key, known_hosts)
        self.conn = self._open(*self._open_args)
        self.storage = HostStorage(self.conn, self.host, pool, pool_path, self.state_dir)

    # -- connection -------------------------------------------------------------------------------
    def _open(
        self, uri: str, username: str, credentials_ref: str, pki_path: str, ssh_key: str, known_hosts: str
    ) -> libvirt.virConnect:
        where = f"libvirt host {self.host} ({redact(uri)})"
        params: dict[str, str] = {}
        t = transport(uri)
        if pki_path:
            if t != "tls":
                raise CredentialError(f"{where}: pki_path is for TLS URIs (qemu+tls://), not {t or 'local'}")
            missing = [
                f for f in ("cacert.pem", "clientcert.pem", "clientkey.pem") if not (Path(pki_path) / f).is_file()
            ]
            if missing:
                raise CredentialError(f"{where}: pki_path {pki_path} lacks {', '.join(missing)}")
            params["pkipath"] = pki_path
        if ssh_key or known_hosts:
            if t not in ("ssh", "libssh", "libssh2"):
                raise CredentialError(f"{where}: ssh_key/known_hosts are for ssh URIs, not {t or 'local'}")
            if known_hosts and t == "ssh":
                # libvirt runs OpenSSH for qemu+ssh:// and gives it no known-hosts file: the one
                # named here would be silently ignored, the host key checked against ~/.ssh instead
                raise CredentialError(
                    f"{where}: known_hosts needs qemu+libssh:// or qemu+libssh2:// (qemu+ssh:// runs OpenSSH, "
                    "which checks the worker user's ~/.ssh/known_hosts)"
                )
            for label, f in (("ssh_key", ssh_key), ("known_hosts", known_hosts)):
                if f and not Path(f).is_file():
                    raise CredentialError(f"{where}: {label} {f} is not a readable file")
            params.update(keyfile=ssh_key, known_hosts=known_hosts)
        full = with_params(uri, params) if params else uri
        try:
            if credentials_ref or needs_password(uri):
                return self._open_auth(full, username, credentials_ref)
            return libvirt.open(full)
        except libvirt.libvirtError as e:
            msg = e.get_error_message()
            if e.get_error_code() in AUTH_ERRORS:
                user = username or urlsplit(uri).username or ""
                who = f"{user!r}" if user else "the configured user"
                if credentials_ref:
                    src = f" (password from {credentials_ref})"
                elif ssh_key:
                    src = f" (ssh key {ssh_key})"
                elif pki_path:
                    src = f" (client certificate in {pki_path})"
                else:
                    src = " (no credentials_ref configured)"
                raise CredentialError(f"{where} rejected the credentials of {who}{src}: {msg}") from None
            if "host key" in msg:
                # the host is not the one the worker knows (or not known at all): trusting it on
                # first use would hand it the credentials; retrying cannot change the answer
                kh = f"known_hosts {known_hosts}" if known_hosts else "the worker's known_hosts"
                raise CredentialError(f"{where}: its ssh host key could not be verified against {kh}: {msg}") from None
            if e.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR and e.get_error_domain() == libvirt.VIR_FROM_RPC:
                # no daemon behind the socket or port: nothing about the host's health is known
                hint = " (is libvirtd running? `crossvisor up` starts the local one)" if not is_remote(uri) else ""
                raise HostUnreachable(f"libvirtd does not answer on {where}: {msg}{hint}") from None
            raise InfraFault(f"libvirt connect {where}: {msg}") from None

    @staticmethod
    def _open_auth(uri: str, username: str, credentials_ref: str) -> libvirt.virConnect:
        secret = resolve_secret(credentials_ref) if credentials_ref else None  # here, in the activity

        def request(creds: list, _data: object) -> int:
            for cred in creds:
                if cred[0] in (libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_USERNAME):
                    cred[4] = username or cred[3] or ""
                elif cred[0] in (libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT):
                    if secret is None:
                        return -1  # the host wants a password crossvisor was not given
                    cred[4] = secret.reveal()
                elif cred[0] == libvirt.VIR_CRED_REALM:
                    cred[4] = cred[3] or ""  # the realm the server offers
                else:
                    return -1
            return 0

        auth = [
            [
                libvirt.VIR_CRED_AUTHNAME,
                libvirt.VIR_CRED_USERNAME,
                libvirt.VIR_CRED_PASSPHRASE,
                libvirt.VIR_CRED_NOECHOPROMPT,
                libvirt.VIR_CRED_REALM,
            ],
            request,
            None,
        ]
        return libvirt.openAuth(uri, auth, 0)

    def describe(self) -> str:
        return f"libvirt {redact(self.uri)}"

    def close(self) -> None:
        for tap in list(self._taps.values()):
            tap.close()
        self._taps.clear()
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

    def _disk_volume(self, name: str, index: int) -> libvirt.virStorageVol:
        """The storage volume behind disk ``index`` of a VM (a pool volume, or a file the host's
        libvirt knows as one)."""
        root = ET.fromstring(self._need(name).XMLDesc(0))
        disks = root.findall("./devices/disk[@device='disk']")
        if index >= len(disks):
            raise InfraFault(f"{name} has no disk {index}")
        try:
            vol = volume_of_source(self.conn, disks[index].find("source"))
        except libvirt.libvirtError as e:
            raise _err(f"disk {index} of {name}", e) from None
        if vol is None:
            raise InfraFault(f"disk {index} of {name} is not a storage volume on {self.host}")
        return vol

    def download_disk(self, name: str, index: int, dest: Path) -> None:
        flat = self.storage.flatten(self._disk_volume(name, index), f"{name}-flat{index}.qcow2", "qcow2")
        try:
            self.storage.download(flat, dest)
        except libvirt.libvirtError as e:
            raise _err(f"download disk {index} of {name} from {self.host}", e) from None
        finally:
            self.storage.delete(flat.name())

    def read_disk(self, name: str, index: int, offset: int, n: int) -> bytes:
        # guest bytes, whatever the image format: a raw flattening, of which only the range comes back
        flat = self.storage.flatten(self._disk_volume(name, index), f"{name}-flat{index}.raw", "raw")
        dest = self.state_dir / "staging" / f"{name}-read{index}.{threading.get_ident()}"
        try:
            got = self.storage.download(flat, dest, offset, n)
            if got != n:
                raise InfraFault(f"read of {n} bytes at {offset} of {name} disk {index} returned {got}")
            return dest.read_bytes()
        except libvirt.libvirtError as e:
            raise _err(f"read disk {index} of {name} on {self.host}", e) from None
        finally:
            dest.unlink(missing_ok=True)
            self.storage.delete(flat.name())

    # -- definition ---------------------------------------------------------------------------------
    def _os_xml(self, spec: VmSpec, nvram_template: str = "") -> str:
        machine = f" machine={quoteattr(spec.machine)}" if spec.machine else ""
        typ = f"<type arch='x86_64'{machine}>hvm</type>"
        if spec.firmware == "efi":
            # Debian's OVMF without Secure Boot (lab images are unsigned), a variable store per VM
            # that the host's libvirt copies from the template to its own nvram directory: the
            # guest's boot entries are its own. A VM that brings its own store (its boot entries,
            # VmSpec.nvram) starts from a copy of that instead of the firmware's empty one.
            template = quoteattr(nvram_template or OVMF_VARS)
            fw = f"<loader readonly='yes' type='pflash'>{OVMF_CODE}</loader><nvram template={template}/>"
        else:
            fw = "<bios useserial='yes'/>"  # SeaBIOS's own words ("No bootable device") on the serial console
        return f"<os>{typ}{fw}<boot dev='hd'/></os>"

    def _disk_sources(self, spec: VmSpec) -> list[str]:
        """``<disk>`` type + source per disk: the VM's overlay volumes in the host's pool."""
        pool = escape(self.storage.pool_name)
        return [
            f"type='volume'|<source pool='{pool}' volume={quoteattr(self.storage.place(spec.name, i, d))}/>|qcow2"
            for i, d in enumerate(spec.disks)
        ]

    def _disks_xml(self, spec: VmSpec, sources: list[str]) -> str:
        out, used, scsi_model = [], {}, ""
        for d, placed in zip(spec.disks, sources, strict=True):
            dtype, source, fmt = placed.split("|")
            bus, _, model = d.bus.partition(":")  # "scsi:pvscsi": bus plus controller model
            if bus == "scsi" and not scsi_model:
                scsi_model = SCSI_MODELS.get(model or "virtio-scsi", "")
                if not scsi_model:
                    raise InteropFailure(f"SCSI controller {model!r} has no libvirt equivalent", {"controller": model})
            prefix = BUS_TARGET.get(bus, "vd")
            idx = used.get(prefix, 0)
            used[prefix] = idx + 1
            out.append(
                f"<disk {dtype} device='disk'><driver name='qemu' type='{fmt}'/>"
                f"{source}<target dev='{prefix}{'abcdefghijklmnop'[idx]}' bus='{bus}'/></disk>"
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

    def domain_xml(self, spec: VmSpec, sources: list[str] | None = None, nvram_template: str = "") -> str:
        if sources is None:
            sources = [f"type='file'|<source file={quoteattr(d.path)}/>|{d.format}" for d in spec.disks]
            nvram_template = nvram_template or spec.nvram
        nics = "".join(self._nic_xml(n) for n in spec.nics)
        items = dict(spec.metadata)
        items.pop(OWNER_KEY, None)  # a package's claim to an owner is not one: only the cell's own counts
        if spec.owner:
            items[OWNER_KEY] = spec.owner
        meta = "".join(f"<item key={quoteattr(k)}>{escape(v)}</item>" for k, v in sorted(items.items()))
        # transport, not an observation: which guest ports to reach (where: decided at each start)
        meta += "".join(f"<item key='{FORWARD_KEY}{p}'>auto</item>" for p in spec.forward_ports)
        return (
            f"<domain type='{self.dtype}'><name>{escape(spec.name)}</name>"
            f"<memory unit='MiB'>{spec.memory_mib}</memory><vcpu>{spec.cpus}</vcpu>"
            f"<metadata><cv:meta xmlns:cv='{META_NS}'>{meta}</cv:meta></metadata>"
            f"{self._os_xml(spec, nvram_template)}<features><acpi/></features>{self._cpu_xml()}"
            # a reboot ends the observation: a panicking guest (panic=-1) stops instead of looping
            "<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>"
            f"<devices>{self._disks_xml(spec, sources)}{nics}{self._serial_xml(spec.name)}{self._agent_xml(spec)}{self._video_xml(spec)}"
            "<memballoon model='none'/></devices>"
            f"{self._seclabel_xml()}</domain>"
        )

    def _agent_xml(self, spec: VmSpec) -> str:
        # libvirt adds the virtio-serial controller and connects the channel's host side itself
        if not spec.guest_agent:
            return ""
        return "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"

    def _video_xml(self, spec: VmSpec) -> str:
        # no <graphics>: QEMU runs without a display, and libvirt's screenshot reads the adapter itself
        return f"<video><model type={quoteattr(spec.video)}/></video>" if spec.video else ""

    def _cpu_xml(self) -> str:
        # TCG's qemu64 advertises SVM: the guest's udev would load kvm_amd at every boot for nothing
        if self.dtype != "qemu":
            return ""
        return "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model><feature policy='disable' name='svm'/></cpu>"

    def _serial_xml(self, name: str) -> str:
        # a pty, read through libvirt's console stream: no file on the host that the worker must read
        return "<serial type='pty'><target port='0'/></serial><console type='pty'><target type='serial' port='0'/></console>"

    def _seclabel_xml(self) -> str:
        # QEMU runs as root here so that it can open the pool's volumes whatever their owner
        return "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"

    def _nvram_template(self, spec: VmSpec) -> str:
        """The host's copy of the VM's own UEFI variable store (uploaded once per host, by
        content, like a disk layer), or "" for the firmware's empty one."""
        if spec.firmware != "efi" or not spec.nvram:
            return ""
        with steps.step("upload nvram"):
            return self.storage.content_volume(Path(spec.nvram), "raw", None, "raw").path()

    def _define(self, spec: VmSpec, sources: list[str] | None = None) -> libvirt.virDomain:
        xml = self.domain_xml(
            spec, self._disk_sources(spec) if sources is None else sources, self._nvram_template(spec)
        )
        try:
            with steps.step("define"):
                return self.conn.defineXML(xml)
        except libvirt.libvirtError as e:
            msg = e.get_error_message()
            if e.get_error_code() in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_DOM_EXIST) and (
                "already exists" in msg
            ):
                # defined since we looked: an earlier attempt's define (a dead worker's, queued in
                # libvirtd) landed late, or a concurrent attempt's; whose it is, the caller checks
                dom = self._dom(spec.name)
                if dom is not None:
                    _log().info("libvirt.define_landed_meanwhile", domain=spec.name, host=self.host)
                    return dom
            if "unsupported" in msg.lower() or "not supported" in msg.lower():
                # the hypervisor refused this hardware: an observation, not a fault to retry
                raise InteropFailure(f"define rejected: {msg}", {"api_error": msg, "xml": xml[:2000]}) from None
            raise _err("define", e) from None

    def provision(self, spec: VmSpec) -> Hardware:
        dom = self._dom(spec.name)
        if dom is None:
            dom = self._define(spec)
        self._check_owner(dom, spec.owner)
        return self.inspect(spec.name)

    def clone_template(self, template: str, spec: VmSpec) -> Hardware:
        """A new domain whose disks are qcow2 overlays on the template domain's disks: the template
        is only read (never started, its XML and disks never written). The clone keeps the
        template's disk buses and firmware (what its guest was installed for) and vCPUs/memory
        unless the image gives them; its NICs are the platform profile's (``spec.nics``)."""
        dom = self._dom(spec.name)
        if dom is None:
            if self._dom(template) is None:
                raise TemplateMissing(template, f"libvirt host {self.host} ({redact(self.uri)})")
            tpl = self.inspect(template)
            root = ET.fromstring(self._need(template).XMLDesc(0))
            disks = root.findall("./devices/disk[@device='disk']")
            if not disks:
                raise BadInput(f"template {template!r} on libvirt host {self.host} has no disk to clone")
            bases = [self._template_base(template, d) for d in disks]
            clone = replace(
                spec,
                cpus=spec.cpus or tpl.cpus,
                memory_mib=spec.memory_mib or tpl.memory_mib,
                firmware=tpl.firmware or spec.firmware,
                disks=[DiskSpec("", "qcow2", d.bus, d.capacity_bytes) for d in tpl.disks],
            )
            with steps.step("overlay on template"):
                sources = self._overlay_sources(spec.name, bases)
            dom = self._define(clone, sources)
        self._check_owner(dom, spec.owner)
        return self.inspect(spec.name)

    def _template_base(self, template: str, disk: ET.Element) -> tuple[str, str, int]:
        """A template disk's file on the host, its format and virtual size."""
        drv = disk.find("driver")
        fmt = drv.get("type", "raw") if drv is not None else "raw"
        try:
            vol = volume_of_source(self.conn, disk.find("source"))
        except libvirt.libvirtError as e:
            raise BadInput(
                f"template {template!r} on libvirt host {self.host}: a disk is no storage volume the host knows "
                f"({e.get_error_message()})"
            ) from None
        if vol is None:
            raise BadInput(f"template {template!r} on libvirt host {self.host}: a disk has no file or volume source")
        return vol.path(), fmt, vol.info()[1]

    def _overlay_sources(self, name: str, bases: list[tuple[str, str, int]]) -> list[str]:
        pool = escape(self.storage.pool_name)
        return [
            f"type='volume'|<source pool='{pool}' volume={quoteattr(self.storage.overlay(name, i, p, f, n))}/>|qcow2"
            for i, (p, f, n) in enumerate(bases)
        ]

    def _check_owner(self, dom: libvirt.virDomain, owner: str) -> None:
        if not owner:
            return
        try:
            root = ET.fromstring(dom.XMLDesc(0))
        except libvirt.libvirtError as e:
            raise _err(f"describe {dom.name()}", e) from None
        recorded = next(
            (
                item.text or ""
                for item in root.findall(f"./metadata/{{{META_NS}}}meta/item")
                if item.get("key") == OWNER_KEY
            ),
            None,
        )
        check_owner("domain", dom.name(), self.host, recorded, owner)

    # -- power ------------------------------------------------------------------------------------
    def power_on(self, name: str) -> None:
        dom = self._need(name)
        if not dom.isActive():
            self._start_observed(dom)

    def _start_observed(self, dom: libvirt.virDomain) -> None:
        """Start paused, attach the console, forward the guest's ports, then let it run: the
        console stream sees the boot from its first byte."""
        with steps.step("start"):
            self._start_paused_then_run(dom)

    def _start_paused_then_run(self, dom: libvirt.virDomain) -> None:
        name = dom.name()
        old = self._taps.pop(name, None)
        if old is not None:
            old.close()
        try:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as e:
            raise _err("start", e) from None
        try:
            self._taps[name] = _ConsoleTap(self._open(*self._open_args), name)
        except (libvirt.libvirtError, InfraFault) as e:  # a domain without a serial console: nothing to observe
            msg = e.get_error_message() if isinstance(e, libvirt.libvirtError) else str(e)
            _log().warning("libvirt.console_unavailable", domain=name, error=msg)
        self._forward_ports(dom)
        try:
            dom.resume()
        except libvirt.libvirtError as e:
            raise _err("resume", e) from None

    def _forward_host(self) -> str:
        """The address the guest's forwarded ports listen on, and the worker connects to."""
        if self._forward_address:
            return self._forward_address
        host = host_of(self.uri)
        if not host or not is_remote(self.uri):
            return "127.0.0.1"
        try:
            return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        except OSError as e:
            raise InfraFault(
                f"cannot resolve {host} (libvirt host {self.host}) for the guest port forward: {e}"
            ) from None

    def _forward_ports(self, dom: libvirt.virDomain) -> None:
        """Forwards to the guest's ports, added to the user-mode netdev of the running QEMU through
        libvirt's monitor passthrough (Debian's libvirt 9.0 has no passt backend, libvirt issue
        #462), on a port free on the host, recorded in the live metadata. A forward that cannot be
        added leaves the guest without it: the app check then says so."""
        import libvirt_qemu

        wanted = self._wanted_forwards(dom)
        if not wanted:
            return
        address = self._forward_host()
        local = address.startswith("127.") and not is_remote(self.uri)
        placed: dict[int, int] = {}
        for guest_port, first in wanted.items():
            for attempt in range(FORWARD_TRIES):
                # on this machine a port can be checked free; on a remote host only tried
                port = (first if attempt == 0 and first else 0) or (
                    free_loopback_port() if local else random.randint(20000, 60999)
                )
                cmd = f"hostfwd_add hostnet0 tcp:{address}:{port}-:{guest_port}"
                try:
                    reply = libvirt_qemu.qemuMonitorCommand(dom, cmd, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
                except libvirt.libvirtError as e:
                    reply = e.get_error_message()
                if not reply.strip():  # HMP answers nothing on success
                    placed[guest_port] = port
                    break
                _log().warning("libvirt.forward_failed", domain=dom.name(), port=port, reply=reply.strip())
        xml = (
            "<forwards>"
            + "".join(f"<port guest='{g}' host='{h}' address={quoteattr(address)}/>" for g, h in sorted(placed.items()))
            + "</forwards>"
        )
        try:
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, "cvfw", FORWARD_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE
            )
        except libvirt.libvirtError as e:
            _log().warning("libvirt.forward_unrecorded", domain=dom.name(), error=e.get_error_message())

    def _wanted_forwards(self, dom: libvirt.virDomain) -> dict[int, int]:
        """Guest port -> the host port to try first (0: any). Definitions before the live record
        carried a fixed loopback port: it is tried first."""
        root = ET.fromstring(dom.XMLDesc(0))
        out = {}
        for item in root.findall(f"./metadata/{{{META_NS}}}meta/item"):
            key = item.get("key", "")
            if key.startswith(FORWARD_KEY) and key[len(FORWARD_KEY) :].isdigit():
                text = item.text or ""
                out[int(key[len(FORWARD_KEY) :])] = int(text) if text.isdigit() else 0
        return out

    def power_off(self, name: str, hard: bool = False) -> None:
        dom = self._need(name)
        if not dom.isActive():
            return
        with steps.step("power off"):
            _charge_guest_cpu(dom)
            self._power_off(dom, hard)

    def _power_off(self, dom: libvirt.virDomain, hard: bool) -> None:
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
        if snapshot in dom.snapshotListNames(0):
            return  # an earlier attempt of the stage took it: the VM's own, taken once
        disks = self.inspect(name).disks
        internal = all(d.format == "qcow2" for d in disks)
        flags = 0 if internal else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        xml = f"<domainsnapshot><name>{escape(snapshot)}</name></domainsnapshot>"
        try:
            with steps.step("snapshot"):
                dom.snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as e:
            msg = e.get_error_message()
            raise InteropFailure(f"snapshot refused: {msg}", {"api_error": msg}) from None

    # -- export / import --------------------------------------------------------------------------
    def export(self, name: str, out_dir: Path, package_format: str = "ova") -> ExportedVm:
        # libvirt has no export API: describe the VM as libvirt reports it, fetch its disks
        # through the host's pool and package them here
        hw = self.inspect(name)
        out_dir.mkdir(parents=True, exist_ok=True)
        fetched: list[Path] = []
        try:
            local = []
            for i, d in enumerate(hw.disks):
                dest = out_dir / f".{name}-src{i}.qcow2"
                self.download_disk(name, i, dest)
                fetched.append(dest)
                local.append(replace(d, path=str(dest), format="qcow2"))
            self.last_export_evidence = {
                "export_path": f"volume download from {self.host} (flattened there from pool {self.storage.pool_name})"
            }
            with steps.step("package"):
                return packaging.export_package(name, replace(hw, disks=local), out_dir, package_format)
        finally:
            for f in fetched:
                f.unlink(missing_ok=True)

    def import_vm(
        self, package: ExportedVm, name: str, profile: HardwareProfile | None = None, owner: str = ""
    ) -> Hardware:
        if (dom := self._dom(name)) is not None:
            self._check_owner(dom, owner)
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
        # the converted disks are shared by every cell with this package: the host keeps one copy
        # of each and boots an overlay on it
        disks = [
            DiskSpec(d.path, d.format, prof.disk_controller if i == 0 else prof.disk_bus, d.capacity_bytes)
            for i, d in enumerate(package.disks)
        ]
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
            owner=owner,
            guest_agent=package.guest_agent and prof.guest_agent_channel,
            video=prof.video if package.screen else "",
        )
        self.last_import_evidence = evidence
        return self.provision(spec)

    # -- what libvirt reports -------------------------------------------------------------------------
    def _disk_info(self, disk: ET.Element) -> tuple[str, int]:
        """Where a disk lives (``pool/volume``, or the host's path) and its virtual size, as the
        host's libvirt reports them."""
        src = disk.find("source")
        if src is None:
            return "", 0
        try:
            if src.get("pool"):
                vol = self.conn.storagePoolLookupByName(src.get("pool")).storageVolLookupByName(src.get("volume", ""))
                return f"{src.get('pool')}/{src.get('volume')}", vol.info()[1]
            path = src.get("file", "")
            return path, self.conn.storageVolLookupByPath(path).info()[1] if path else 0
        except libvirt.libvirtError:  # a file no pool of the host knows: size unknown, not a fault
            return src.get("file", "") or f"{src.get('pool')}/{src.get('volume')}", 0

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
            path, size = self._disk_info(d)
            drv = d.find("driver")
            fmt = drv.get("type", "raw") if drv is not None else "raw"
            tgt = d.find("target")
            bus = tgt.get("bus", "virtio") if tgt is not None else "virtio"
            disks.append(DiskSpec(path, fmt, f"scsi:{scsi_model}" if bus == "scsi" and scsi_model else bus, size))
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
        with steps.step("console wait"):
            return self._watch_console(name, done, timeout_s, heartbeat, idle_s, idle_counts)

    def _watch_console(
        self,
        name: str,
        done: Callable[[str], bool],
        timeout_s: float,
        heartbeat: Callable[[str], None] | None,
        idle_s: float,
        idle_counts: Callable[[str], bool] | None,
    ) -> ConsoleWatch:
        dom = self._need(name)
        tap = self._taps.get(name)
        if tap is None and dom.isActive():
            # running since before this driver attached (a stage retried on another worker): the
            # start of this boot's console is gone, so boot again and watch a whole boot
            _log().info("libvirt.console_restart", domain=name, reason="console not attached since power-on")
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if dom.isActive():
                    raise _err("destroy", e) from None
            self._start_observed(dom)
            tap = self._taps.get(name)
        if tap is None:
            return ConsoleWatch("", 0.0, stopped=not dom.isActive(), timed_out=False)
        t0 = time.monotonic()
        text, stopped, finished_at = "", False, None
        grew_at, size = 0.0, -1  # on the guest's clock (``ran``), not the wall's
        reattached = 0
        cpu_s = 0.0  # the guest's CPU so far: once it stops on its own (a birth), libvirt forgets it
        delay0 = delay = _vcpu_delay_s(self.conn, dom)
        polls = 0
        while True:
            text = tap.text()
            stopped = not dom.isActive()
            if not stopped and polls % GUEST_STATS_EVERY == 0:
                cpu_s = _guest_cpu_s(dom) or cpu_s
                delay = _vcpu_delay_s(self.conn, dom) or delay
            polls += 1
            if not stopped and tap.ended.is_set() and reattached < 3:
                # the stream broke while the guest runs: attach again and go on (what the guest
                # wrote in between is lost, and the log says so)
                reattached += 1
                _log().warning("libvirt.console_reattach", domain=name, error=tap.error or "end of stream")
                tap = self._reattach(name, tap)
            now = time.monotonic()
            # the time the guest could run: a loaded host's run-queue waits are not the guest's
            ran = max(0.0, now - t0 - (delay - delay0))
            if len(text) != size:
                grew_at, size = ran, len(text)
            if stopped or (finished_at is not None and now - finished_at >= AFTER_DONE_S):
                break
            if finished_at is None and done(text):
                finished_at = now
            if idle_s and ran - grew_at >= idle_s and (idle_counts is None or idle_counts(text)):
                return ConsoleWatch(text, now - t0, stopped=False, timed_out=False, idle=True)
            if now - t0 >= timeout_s * STARVED_WALL_FACTOR:
                raise InfraFault(
                    f"{name}: the host starved the guest: in {now - t0:.0f} s its vCPU got a core for {ran:.0f} s "
                    f"(it waited {delay - delay0:.0f} s on the run queue); the boot is retried, not graded"
                )
            if ran >= timeout_s:
                _log().info(
                    "libvirt.console_timeout", domain=name, bytes=len(text), silent_s=round(ran - grew_at, 1),
                    stream_ended=tap.ended.is_set(), stream_error=tap.error,
                )  # fmt: skip
                return ConsoleWatch(text, now - t0, stopped=False, timed_out=True)
            if heartbeat is not None:
                heartbeat(f"console {len(text)} bytes")
            time.sleep(CONSOLE_POLL_S)
        if stopped:  # the last bytes before the domain went away: the stream ends after them
            steps.add_cpu(cpu_s, "guest cpu")
            tap.ended.wait(timeout=3)
            text = tap.text()
        else:
            cpu_s = _guest_cpu_s(dom) or cpu_s
        # where a boot's wall time went: the guest's CPU, its wait for a core, and the rest (the
        # guest idle, or QEMU's own threads): what tells a crowded host from a waiting guest
        _log().info(
            "libvirt.console_watched", domain=name, wall_s=round(time.monotonic() - t0, 1),
            guest_cpu_s=round(cpu_s, 1), run_queue_s=round(max(0.0, delay - delay0), 1), stopped=stopped,
        )  # fmt: skip
        return ConsoleWatch(
            text, time.monotonic() - t0, stopped=stopped, timed_out=False, starved_s=max(0.0, delay - delay0)
        )

    def _reattach(self, name: str, old: _ConsoleTap) -> _ConsoleTap:
        old.close()
        try:
            tap = _ConsoleTap(self._open(*self._open_args), name, carried=old.raw())
        except (libvirt.libvirtError, InfraFault) as e:
            msg = e.get_error_message() if isinstance(e, libvirt.libvirtError) else str(e)
            _log().warning("libvirt.console_unavailable", domain=name, error=msg)
            return old
        self._taps[name] = tap
        return tap

    def guest_port(self, name: str, port: int) -> tuple[str, int] | None:
        dom = self._need(name)
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, FORWARD_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError:
            xml = ""
        if xml:
            for p in ET.fromstring(xml).findall("port"):
                if p.get("guest") == str(port) and (p.get("host") or "").isdigit():
                    return p.get("address") or "127.0.0.1", int(p.get("host"))
            return None
        host_port = self._wanted_forwards(dom).get(port)  # defined before live records: fixed loopback port
        return ("127.0.0.1", host_port) if host_port else None

    def screenshot(self, name: str) -> bytes | None:
        """The screen of a running domain with a display adapter, as PNG (QEMU's screendump; libvirt
        asks for PNG where QEMU can write it, else PPM, converted here)."""
        dom = self._dom(name)
        if dom is None or not dom.isActive() or "<video>" not in dom.XMLDesc(0):
            return None
        stream = self.conn.newStream(0)
        try:
            mime = dom.screenshot(stream, 0, 0)
            chunks = []
            while True:
                got = stream.recv(256 * 1024)
                if not got:
                    break
                chunks.append(got)
            stream.finish()
        except libvirt.libvirtError as e:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            _log().info("libvirt.screenshot_failed", domain=name, error=str(e)[:200])
            return None
        data = b"".join(chunks)
        return data if mime == "image/png" else screens.ppm_to_png(data)

    def guest_agent(self, name: str, timeout_s: float, beat: Callable[[str], None]) -> dict | None:
        """guest-ping until the agent answers, then guestInfo(), the agent's interface addresses and
        its online vCPUs (libvirt-python; the agent channel of the domain XML)."""
        import libvirt_qemu

        dom = self._need(name)
        if "org.qemu.guest_agent.0" not in dom.XMLDesc(0):
            return None
        silent = _agent_ping(dom, timeout_s, beat)
        if silent:
            return {"error": silent}
        out: dict = {"info": {}, "interfaces": {}, "vcpus_online": 0}
        try:
            out["info"] = {k: str(v) for k, v in dom.guestInfo(0, 0).items()}
        except libvirt.libvirtError as e:
            out["info_error"] = str(e)[:200]
        try:
            addrs = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
            out["interfaces"] = {
                n: {
                    "hwaddr": v.get("hwaddr") or "",
                    "addrs": [
                        f"{a['addr']}/{a['prefix']}"
                        for a in v.get("addrs") or []
                        if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4
                    ],
                }
                for n, v in addrs.items()
            }
        except libvirt.libvirtError as e:
            out["interfaces_error"] = str(e)[:200]
        try:
            reply = json.loads(libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-get-vcpus"}', 5, 0))
            out["vcpus_online"] = sum(1 for c in reply.get("return", []) if c.get("online"))
        except (libvirt.libvirtError, ValueError) as e:
            out["vcpus_error"] = str(e)[:200]
        return out

    def guest_exec(self, name: str, argv: list[str], timeout_s: float, beat: Callable[[str], None]) -> GuestExec:
        """The QEMU guest agent's guest-exec, then guest-exec-status until the command exits (its
        output base64 in the reply, capped by the agent); an agent that refuses the command (RHEL's
        default forbids guest-exec) or never answers is said in ``refused``."""
        import libvirt_qemu

        dom = self._need(name)
        if "org.qemu.guest_agent.0" not in dom.XMLDesc(0):
            return GuestExec(refused="the VM has no guest-agent channel")
        silent = _agent_ping(dom, AGENT_EXEC_WAIT_S, beat)  # a ping: the agent's reports are not needed here
        if silent:
            return GuestExec(refused=silent)
        cmd = {"execute": "guest-exec", "arguments": {"path": argv[0], "arg": argv[1:], "capture-output": True}}
        try:
            pid = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), 10, 0))["return"]["pid"]
        except libvirt.libvirtError as e:
            return GuestExec(refused=f"the guest agent refused guest-exec: {str(e).splitlines()[0][:200]}")
        deadline = time.monotonic() + timeout_s
        status = {"execute": "guest-exec-status", "arguments": {"pid": pid}}
        while True:
            beat("guest-exec")
            # the agent is the guest's: one that stops answering mid-command or replies with
            # something else is what the guest did (the rung's result), not a host fault to retry
            try:
                reply = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(status), 10, 0))["return"]
                if reply.get("exited"):
                    out = b"".join(base64.b64decode(reply.get(k, "")) for k in ("out-data", "err-data"))
                    return GuestExec(exit_code=int(reply.get("exitcode", -1)), output=out.decode(errors="replace"))
            except libvirt.libvirtError as e:
                raise InteropFailure(
                    f"{name}: the guest agent stopped answering while {argv[0]} ran: {str(e).splitlines()[0][:200]}"
                ) from None
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise InteropFailure(
                    f"{name}: the guest agent's guest-exec-status reply is not one: {e!r:.200}"
                ) from None
            if time.monotonic() >= deadline:
                raise InteropFailure(f"{name}: {argv[0]} in the guest did not exit within {timeout_s:.0f} s")
            time.sleep(1.0)

    # -- removal ----------------------------------------------------------------------------------
    def destroy(self, name: str) -> None:
        tap = self._taps.pop(name, None)
        if tap is not None:
            tap.close()
        dom = self._dom(name)
        if dom is not None:
            try:
                if dom.isActive():
                    _charge_guest_cpu(dom)
                    dom.destroy()
                for s in dom.listAllSnapshots():
                    s.delete(self._snapshot_delete_flags())
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as e:
                if self._dom(name) is not None:
                    raise _err("undefine", e) from None
        self._remove_vm_volumes(name)

    def _remove_vm_volumes(self, name: str) -> None:
        """The VM's own volumes (overlays, flattened copies); content volumes stay for later VMs."""
        self.storage.remove_prefixed((f"{name}-disk", f"{name}-flat"))

    def _snapshot_delete_flags(self) -> int:
        # external (disk-only) snapshots cannot be deleted by libvirt 9: drop their metadata, the
        # overlays go with the VM's disks
        return libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY

    def prune_content(self, keep_bytes: int) -> list[str]:
        return self.storage.prune_content(keep_bytes)

    def remove_leftovers(self, prefix: str) -> list[str]:
        # the VMs' own volumes are named after them (``{vm}-disk0.qcow2``): under ``prefix`` and
        # not used by a defined VM, one is a leftover of a define that never came
        used = {name for name in self.list_vms(prefix)}
        return self.storage.remove_prefixed(
            (prefix,), keep=lambda vol: any(vol.startswith((f"{vm}-disk", f"{vm}-flat")) for vm in used)
        )

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

    # an in-process "host": the worker's files are its files, so disks stay where they are
    def _disk_sources(self, spec: VmSpec) -> list[str]:
        return [f"type='file'|<source file={quoteattr(d.path)}/>|{d.format}" for d in spec.disks]

    def _disk_info(self, disk: ET.Element) -> tuple[str, int]:
        src = disk.find("source")
        path = src.get("file", "") if src is not None else ""
        drv = disk.find("driver")
        return path, _size(path, drv.get("type", "raw") if drv is not None else "raw")

    def _template_base(self, template: str, disk: ET.Element) -> tuple[str, str, int]:
        src, drv = disk.find("source"), disk.find("driver")
        path = src.get("file", "") if src is not None else ""
        fmt = drv.get("type", "raw") if drv is not None else "raw"
        if not path or not Path(path).is_file():
            raise BadInput(f"template {template!r} on {self.uri}: its disk {path or '(none)'} is not a file")
        return path, fmt, _size(path, fmt)

    def _overlay_sources(self, name: str, bases: list[tuple[str, str, int]]) -> list[str]:
        # the in-process "host" keeps its disks in the worker's files: the overlays beside its records
        out = []
        for i, (path, fmt, _n) in enumerate(bases):
            overlay = self._records / f"{name}-disk{i}.qcow2"
            overlay.unlink(missing_ok=True)
            diskconv.create_overlay(overlay, Path(path), fmt)
            out.append(f"type='file'|<source file={quoteattr(str(overlay))}/>|qcow2")
        return out

    def clone_template(self, template: str, spec: VmSpec) -> Hardware:
        hw = super().clone_template(template, spec)
        self._persist(spec.name)
        return hw

    def export(self, name: str, out_dir: Path, package_format: str = "ova") -> ExportedVm:
        self.last_export_evidence = {"export_path": "the worker's own disk files (in-process test driver)"}
        return packaging.export_package(name, self.inspect(name), out_dir, package_format)

    def download_disk(self, name: str, index: int, dest: Path) -> None:
        Driver.download_disk(self, name, index, dest)

    def read_disk(self, name: str, index: int, offset: int, n: int) -> bytes:
        return Driver.read_disk(self, name, index, offset, n)

    def _nic_xml(self, n: NicSpec) -> str:
        mac = f"<mac address='{n.mac}'/>" if n.mac else ""
        return (
            f"<interface type='network'>{mac}<source network='default'/><model type={quoteattr(n.model)}/></interface>"
        )

    # the test driver knows no firmware auto-selection, serial files or security labels
    def _os_xml(self, spec: VmSpec, nvram_template: str = "") -> str:
        return "<os><type arch='x86_64'>hvm</type></os>"

    def _nvram_template(self, spec: VmSpec) -> str:
        return ""  # no firmware runs here

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
        if snapshot in self._need(name).snapshotListNames(0):
            return
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

    def remove_leftovers(self, prefix: str) -> list[str]:
        return []  # its disks are the worker's files (the cell's work directory)

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
