"""vSphere operations the tests exercise on the simulator that no stage uses (inventory listing,
vMotion, clone): kept beside the tests, on the driver's connection, not in the product."""

from __future__ import annotations

from pyVmomi import vim

from domain.vm import Hardware
from drivers.base import InfraFault
from drivers.vsphere.driver import VsphereDriver


def datacenters(d: VsphereDriver) -> list[str]:
    return sorted(d._names(vim.Datacenter))


def clusters(d: VsphereDriver) -> list[str]:
    return sorted(d._names(vim.ClusterComputeResource, d.dc.hostFolder))


def hosts(d: VsphereDriver) -> list[str]:
    return sorted(d._names(vim.HostSystem, d.dc.hostFolder))


def datastores(d: VsphereDriver) -> list[str]:
    return sorted(d._names(vim.Datastore, d.dc.datastoreFolder))


def relocate(d: VsphereDriver, name: str, host: str = "", datastore: str = "") -> Hardware:
    """Move a VM to another host (vMotion) and/or datastore (Storage vMotion)."""
    vm = d._vm(name)
    spec = vim.vm.RelocateSpec()
    if host:
        h = d._names(vim.HostSystem, d.dc.hostFolder).get(host)
        if h is None:
            raise InfraFault(f"host {host!r} not found")
        spec.host, spec.pool = h, h.parent.resourcePool
    if datastore:
        ds = d._names(vim.Datastore, d.dc.datastoreFolder).get(datastore)
        if ds is None:
            raise InfraFault(f"datastore {datastore!r} not found")
        spec.datastore = ds
    d._wait(vm.RelocateVM_Task(spec=spec), f"relocate {name}")
    return d._hardware(vm)


def datastores_of(d: VsphereDriver, name: str) -> list[str]:
    """Datastores vCenter lists for the VM (vcsim updates this on relocate, not disk paths)."""
    return sorted(ds.name for ds in d._vm(name).datastore)


def host_of(d: VsphereDriver, name: str) -> str:
    return d._vm(name).runtime.host.name


def clone(d: VsphereDriver, name: str, new_name: str, power_on: bool = False) -> Hardware:
    """Full clone; idempotent by ``new_name``."""
    if (vm := d._find_vm(new_name)) is not None:
        return d._hardware(vm)
    src = d._vm(name)
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(), powerOn=power_on, template=False)
    vm = d._wait(src.CloneVM_Task(folder=src.parent, name=new_name, spec=spec), f"clone {name} -> {new_name}")
    return d._hardware(vm)
