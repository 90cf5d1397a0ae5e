"""The one driver interface every hypervisor kind implements.

Drivers do I/O against a real hypervisor API. They raise ``InfraFault`` (or any exception) for
infrastructure trouble that a retry may fix, and ``InteropFailure`` for a real incompatibility
that no retry can fix (the activity turns it into a failing grade with evidence).

Every operation is idempotent by name: VM names derive from campaign/cell/stage ids, so a retried
activity finds what its previous attempt created instead of creating a second one.
"""

from __future__ import annotations

import abc
from pathlib import Path

from crossvisor.core.errors import InfraFault, InteropFailure
from domain.vm import DiskSpec, ExportedVm, Hardware, NicSpec, VmSpec

__all__ = [
    "DiskSpec",
    "Driver",
    "ExportedVm",
    "Hardware",
    "InfraFault",
    "InteropFailure",
    "NicSpec",
    "VmSpec",
]


class Driver(abc.ABC):
    """One hypervisor endpoint (a libvirt URI, a vCenter)."""

    kind: str = ""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def provision(self, spec: VmSpec) -> Hardware:
        """Create (or find) the VM. Idempotent by ``spec.name``."""

    @abc.abstractmethod
    def power_on(self, name: str) -> None: ...

    @abc.abstractmethod
    def power_off(self, name: str) -> None: ...

    @abc.abstractmethod
    def snapshot(self, name: str, snapshot: str) -> None: ...

    @abc.abstractmethod
    def export(self, name: str, out_dir: Path) -> ExportedVm:
        """Export the (powered-off) VM as an OVF/OVA package under ``out_dir``."""

    @abc.abstractmethod
    def import_vm(self, package: ExportedVm, name: str) -> Hardware:
        """Import a package as VM ``name``. Idempotent: an existing VM of that name is returned."""

    @abc.abstractmethod
    def inspect(self, name: str) -> Hardware: ...

    @abc.abstractmethod
    def guest_evidence(self, name: str, timeout_s: float = 60.0) -> str:
        """Text the guest produced (serial console) — evidence that it booted."""

    @abc.abstractmethod
    def destroy(self, name: str) -> None:
        """Power off and remove the VM and its storage. Missing VM is not an error."""

    @abc.abstractmethod
    def list_vms(self, prefix: str) -> list[str]:
        """Names of VMs starting with ``prefix`` (the sweeper uses this to find leaks)."""

    def is_booted(self, name: str, evidence: str) -> bool:
        """Whether ``guest_evidence`` proves the guest booted. Real guests print a serial marker;
        drivers without a real guest (test driver, simulators) override with what they can prove."""
        return "CROSSVISOR-BOOT-OK" in evidence

    def read_disk(self, name: str, index: int, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` of the VM's disk ``index``: proves content survived a move.
        Default: the disk is a file this machine can read; remote datastores override."""
        from drivers import diskconv

        disk = self.inspect(name).disks[index]
        return diskconv.read_marker(disk.path, disk.format, offset, n)
