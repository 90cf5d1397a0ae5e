"""Open the right driver for an inventory host."""

from __future__ import annotations

from pathlib import Path

from domain.model import Host
from drivers.base import Driver, InfraFault


def open_driver(host: Host, state_dir: Path) -> Driver:
    if host.driver == "libvirt":
        from drivers.libvirt_driver import LibvirtDriver, LibvirtTestDriver
        from drivers.libvirt_uri import scheme_of

        if scheme_of(host.endpoint) == "test":
            return LibvirtTestDriver(host.endpoint, state_dir=state_dir, kind=host.kind)
        user = host.custom.get("username", "")
        return LibvirtDriver(
            host.endpoint,
            username=user,
            credentials_ref=host.credentials_ref,
            state_dir=state_dir,
            kind=host.kind,
        )
    if host.driver == "vsphere":
        from drivers.vsphere_driver import VsphereDriver

        return VsphereDriver.for_host(host, state_dir=state_dir)
    raise InfraFault(f"host {host.name}: no driver {host.driver!r}")
