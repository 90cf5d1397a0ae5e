"""libvirt connection URIs for every hypervisor kind libvirt can drive.

libvirt speaks to KVM/QEMU (``qemu:///system``, ``qemu+ssh://host/system``), Xen (``xen:///system``,
``xen+ssh://``), VMware ESX/vCenter (``esx://host/?no_verify=1``, ``vpx://vcenter/dc/cluster/host``)
and Hyper-V (``hyperv://host/?transport=http``), plus the in-process ``test:///`` driver.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from crossvisor.core.redact import redact_uri

SCHEMES = {
    "test": "test",
    "qemu": "kvm",
    "xen": "xen",
    "libxl": "xen",
    "esx": "vsphere",
    "vpx": "vsphere",
    "gsx": "vsphere",
    "hyperv": "hyperv",
}


class UriError(ValueError):
    pass


def scheme_of(uri: str) -> str:
    base = urlsplit(uri).scheme.split("+", 1)[0]
    if base not in SCHEMES:
        raise UriError(f"unsupported libvirt URI scheme {base!r} in {redact(uri)}; known: {sorted(SCHEMES)}")
    return base


def kind_of(uri: str) -> str:
    """Hypervisor kind a URI reaches (``test`` for the test driver)."""
    return SCHEMES[scheme_of(uri)]


def needs_password(uri: str) -> bool:
    """ESX/vCenter and Hyper-V authenticate with a username/password (openAuth callback)."""
    return scheme_of(uri) in ("esx", "vpx", "gsx", "hyperv")


def domain_type(uri: str) -> str:
    """``<domain type=...>`` to define on this connection. QEMU is forced to TCG ('qemu'):
    KVM is advertised on the lab's nested machines but hangs."""
    s = scheme_of(uri)
    return {
        "test": "test",
        "qemu": "qemu",
        "xen": "xen",
        "libxl": "xen",
        "hyperv": "hyperv",
    }.get(s, "vmware")


def redact(uri: str) -> str:
    """URI without the password of its userinfo, or any secret this process resolved
    (the one redaction routine: ``crossvisor.core.redact``)."""
    return redact_uri(uri)
