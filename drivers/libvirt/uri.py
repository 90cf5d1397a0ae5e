"""libvirt connection URIs for every hypervisor kind libvirt can drive.

libvirt speaks to KVM/QEMU (``qemu:///system``, ``qemu+ssh://host/system``), Xen (``xen:///system``,
``xen+ssh://``), VMware ESX/vCenter (``esx://host/?no_verify=1``, ``vpx://vcenter/dc/cluster/host``)
and Hyper-V (``hyperv://host/?transport=http``), plus the in-process ``test:///`` driver.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

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


def transport(uri: str) -> str:
    """The transport of a URI: ``tls`` (``qemu://host/``, ``qemu+tls://``), ``tcp``, ``ssh``,
    ``libssh``, ``libssh2``, ``unix``, ``ext``; ``""`` for a local URI without a host."""
    parts = urlsplit(uri)
    _, plus, t = parts.scheme.partition("+")
    if plus:
        return t
    return "tls" if parts.hostname else ""


def is_remote(uri: str) -> bool:
    """Whether the URI reaches a libvirtd over the network (it names a host): its files are then
    not this machine's (``qemu:///system`` and ``qemu+unix:///system`` are local)."""
    return bool(urlsplit(uri).hostname) and transport(uri) != "unix"


def host_of(uri: str) -> str:
    """The host a network URI names (``""`` for a local one)."""
    return urlsplit(uri).hostname or ""


def with_params(uri: str, params: dict[str, str]) -> str:
    """``uri`` with query parameters added (those it sets itself win): pkipath, keyfile..."""
    base, _, query = uri.partition("?")
    have = dict(parse_qsl(query, keep_blank_values=True))
    merged = {**{k: v for k, v in params.items() if v}, **have}
    # by hand: urlunsplit would turn "qemu:///system" into "qemu:/system"
    return f"{base}?{urlencode(merged, safe='/:,')}" if merged else base


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
