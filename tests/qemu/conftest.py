"""Real QEMU host for tests: a hand-started libvirtd (qemu:///system).

Domains are TCG (``type='qemu'``): KVM is advertised here but guests hang under it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as plain `pytest` without an installed package
    sys.path.insert(0, str(REPO))


URI = "qemu:///system"
DOMAIN_PREFIX = "cvg-test-"  # the image tests; campaign VMs (cv-*) are cleaned up by their cells
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
