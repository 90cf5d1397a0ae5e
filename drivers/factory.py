"""Open the right driver for an inventory host."""

from __future__ import annotations

from pathlib import Path

from domain.model import Host
from drivers.base import Driver, InfraFault


def open_driver(host: Host, state_dir: Path) -> Driver:
    """A connected driver for ``host``; libvirt hosts read their transport settings from
    ``host.custom`` (NetBox custom fields / file inventory keys): ``username``, ``pool``,
    ``pool_path``, ``forward_address``, ``pki_path``, ``ssh_key``, ``known_hosts``."""
    if host.driver == "libvirt":
        from drivers.libvirt.driver import LibvirtDriver, LibvirtTestDriver
        from drivers.libvirt.uri import scheme_of

        if scheme_of(host.endpoint) == "test":
            return LibvirtTestDriver(host.endpoint, state_dir=state_dir, kind=host.kind)
        c = host.custom
        return LibvirtDriver(
            host.endpoint,
            username=c.get("username", ""),
            credentials_ref=host.credentials_ref,
            state_dir=state_dir,
            kind=host.kind,
            host=host.name,
            # where the host keeps crossvisor's volumes (a pool it has, or a dir pool made there)
            pool=c.get("pool", ""),
            pool_path=c.get("pool_path", ""),
            # the host's address the worker reaches forwarded guest ports at (default: the URI's host)
            forward_address=c.get("forward_address", ""),
            # key-based connections: files on the worker, handed to libvirt as URI parameters
            pki_path=c.get("pki_path", ""),
            ssh_key=c.get("ssh_key", ""),
            known_hosts=c.get("known_hosts", ""),
        )
    if host.driver == "vsphere":
        from drivers.vsphere.driver import VsphereDriver

        return VsphereDriver.for_host(host, state_dir=state_dir)
    raise InfraFault(f"host {host.name}: no driver {host.driver!r}")
