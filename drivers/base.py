"""The one driver interface every hypervisor API implements.

Drivers do I/O against one hypervisor API. They raise ``InfraFault`` (or any exception) for
infrastructure trouble that a retry may fix, and ``InteropFailure`` for a real incompatibility the
API reported, which no retry can fix (the stage turns it into a failing grade with the API's text
as evidence).

Every operation is idempotent by name: VM names derive from campaign/cell/stage ids, so a retried
activity finds what its previous attempt created instead of creating a second one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crossvisor.core.errors import BadInput, InfraFault, InteropFailure, NameTaken
from domain.profiles import HardwareProfile
from domain.vm import DiskSpec, ExportedVm, Hardware, NicSpec, VmSpec

__all__ = [
    "ConsoleWatch",
    "DiskSpec",
    "Driver",
    "ExportedVm",
    "Hardware",
    "InfraFault",
    "InteropFailure",
    "NameTaken",
    "NicSpec",
    "VmSpec",
]


def check_owner(kind: str, name: str, host: str, recorded: str | None, owner: str) -> None:
    """Adopt-or-refuse for an object found under a name a cell derived for itself: fine when its
    recorded owner is ``owner`` (an earlier attempt of the cell made it, perhaps a dead worker's
    call that landed late); ``NameTaken`` naming it otherwise. ``owner`` "" checks nothing."""
    if not owner or recorded == owner:
        return
    whose = f"it belongs to {recorded!r}" if recorded else "it carries no crossvisor owner record"
    raise NameTaken(
        f"{kind} {name!r} already exists on {host} and is not this cell's ({owner!r}): {whose}. "
        "Crossvisor will neither use nor remove it; rename or remove it on the host, or run the campaign "
        "under another VM prefix (CROSSVISOR_VM_PREFIX)"
    )


@dataclass
class GuestExec:
    """What a command run inside a guest left: its exit code and output (stdout then stderr,
    capped by the agent), or why it could not run (``refused``: no agent, the agent forbids it)."""

    exit_code: int = -1
    output: str = ""
    refused: str = ""


@dataclass
class ConsoleWatch:
    """The serial console of one boot, as far as it was watched."""

    text: str
    seconds: float  # from the start of watching
    stopped: bool  # the domain is no longer running (powered off, crashed, rebooted with on_reboot=destroy)
    timed_out: bool
    idle: bool = False  # the console stayed silent for ``idle_s`` (while ``quiet_ok`` said nothing follows)
    # seconds the guest's vCPU waited for a host core while watched (0 when the host does not say)
    starved_s: float = 0.0


class TemplateMissing(BadInput):
    """An image's template that the source host does not have: bad input (the spec names a VM the
    host does not hold), never retried. The stage names the image."""

    def __init__(self, template: str, where: str):
        super().__init__(f"template {template!r} does not exist on {where}")
        self.template, self.where = template, where


class Driver(abc.ABC):
    """One hypervisor endpoint (a libvirt URI, a vCenter)."""

    kind: str = ""
    # Whether a guest really runs here and its console can be read. False for the libvirt test
    # driver and the vCenter simulator: guest-side checks are then skipped, never passed.
    runs_guests: bool = False

    def __init__(self) -> None:
        self.last_import_evidence: dict[str, str] = {}  # what the last import_vm did, in the target's words
        self.last_export_evidence: dict[str, str] = {}  # how the last export got the disks (e.g. which API)

    def describe(self) -> str:
        return type(self).__name__

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def provision(self, spec: VmSpec) -> Hardware:
        """Create the VM, or adopt one of that name that is ``spec.owner``'s own (an earlier attempt
        made it, maybe after this one looked): idempotent per name and owner. One of that name
        owned by anyone else is ``NameTaken`` (see ``check_owner``)."""

    @abc.abstractmethod
    def power_on(self, name: str) -> None: ...

    @abc.abstractmethod
    def power_off(self, name: str, hard: bool = False) -> None:
        """Shut the guest down (ACPI, then hard after a grace period; ``hard``: at once); off
        already is fine."""

    @abc.abstractmethod
    def snapshot(self, name: str, snapshot: str) -> None: ...

    @abc.abstractmethod
    def export(self, name: str, out_dir: Path, package_format: str = "ova") -> ExportedVm:
        """Export the (powered-off) VM as an OVF/OVA package under ``out_dir``."""

    @abc.abstractmethod
    def import_vm(
        self, package: ExportedVm, name: str, profile: HardwareProfile | None = None, owner: str = ""
    ) -> Hardware:
        """Import a package (an OVF descriptor and its converted disks, which stay unmodified) as VM
        ``name`` recorded as ``owner``'s; the target decides the virtual hardware (libvirt hosts:
        ``profile``). Idempotent: an existing VM of that name that is ``owner``'s is returned, one
        that is not is ``NameTaken``. Sets ``last_import_evidence``."""

    @abc.abstractmethod
    def inspect(self, name: str) -> Hardware:
        """The VM as the API reports it (never crossvisor's own records)."""

    def watch_console(
        self,
        name: str,
        done: Callable[[str], bool],
        timeout_s: float,
        heartbeat: Callable[[str], None] | None = None,
        idle_s: float = 0.0,
        idle_counts: Callable[[str], bool] | None = None,
    ) -> ConsoleWatch:
        """The guest's serial console of the current boot until ``done(text)``, the domain stops,
        ``timeout_s``, or (``idle_s``) the console stayed silent that long while ``idle_counts(text)``
        (e.g. "the kernel has not started"). Hosts that run no guest return an empty watch at once."""
        return ConsoleWatch("", 0.0, stopped=False, timed_out=False)

    def guest_port(self, name: str, port: int) -> tuple[str, int] | None:
        """Where the worker reaches TCP ``port`` of the guest (through the guest's own NIC), or None."""
        return None

    def clone_template(self, template: str, spec: VmSpec) -> Hardware:
        """A new VM ``spec.name`` cloned from the VM or template ``template`` on this host, which is
        never started nor changed. ``spec.cpus``/``spec.memory_mib`` 0: the template's. Raises
        ``TemplateMissing`` when the host has no such VM."""
        raise BadInput(f"{self.describe()} cannot clone a template (template: images need a libvirt or vSphere host)")

    def guest_tools(self, name: str) -> dict:
        """What VMware Tools report about the guest through the host's API (vSphere), else {}."""
        return {}

    def screenshot(self, name: str) -> bytes | None:
        """What the VM's screen shows now, as PNG, or None when it has no display adapter or this
        host cannot take one. Evidence for a person, never a grade."""
        return None

    def guest_agent(self, name: str, timeout_s: float, beat: Callable[[str], None]) -> dict | None:
        """What the QEMU guest agent in the guest reports (``domain.agent_channel`` reads it), or None
        when this host presents no agent channel to the VM. ``{"error": ...}`` when the channel is
        there and no agent answered within ``timeout_s``."""
        return None

    def guest_exec(self, name: str, argv: list[str], timeout_s: float, beat: Callable[[str], None]) -> GuestExec:
        """``argv`` run inside the guest by its own agent (what an operator's tooling does with the
        QEMU guest agent's guest-exec), waited for up to ``timeout_s``. Hosts whose guests present no
        such channel say so in ``GuestExec.refused``: nothing ran."""
        return GuestExec(refused=f"{self.describe()} offers no way to run a command in a guest")

    @abc.abstractmethod
    def destroy(self, name: str) -> None:
        """Power off and remove the VM and its storage. Missing VM is not an error."""

    def prune_content(self, keep_bytes: int) -> list[str]:
        """Free the host's storage of shared image layers no VM uses (beyond ``keep_bytes``).
        Drivers that keep no such layers have nothing to prune."""
        return []

    def remove_leftovers(self, prefix: str) -> list[str]:
        """Remove storage named under ``prefix`` that no VM stands on (a disk uploaded for a VM whose
        define never came, or was cancelled); returns what went. Hosts without such storage: none."""
        return []

    @abc.abstractmethod
    def list_vms(self, prefix: str) -> list[str]:
        """Names of VMs starting with ``prefix`` (the sweeper uses this to find leaks)."""

    def download_disk(self, name: str, index: int, dest: Path) -> None:
        """The VM's disk ``index`` as one self-contained qcow2 file ``dest`` on this worker (its
        backing chain flattened). Default: the disk is a file this machine can read."""
        from toolbox import diskconv

        disk = self.inspect(name).disks[index]
        diskconv.convert(disk.path, disk.format, dest, "qcow2")

    def read_disk(self, name: str, index: int, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` of the VM's disk ``index``, as the target stores it.
        Default: the disk is a file this machine can read; remote datastores override."""
        from toolbox import diskconv

        disk = self.inspect(name).disks[index]
        return diskconv.read_marker(disk.path, disk.format, offset, n)
