"""How NetBox devices become crossvisor hosts: which devices, which hypervisor kind, which endpoint.

Modelled on what NetBox-integrated tools do (Ansible's ``netbox.netbox.nb_inventory``:
``query_filters`` choose the devices, ``compose`` builds host variables from templates), with
defaults that fit a lab as operators really have it, and every part overridable:

``roles``      device role slugs; a device with any of them is a candidate (default ``hypervisor-host``).
               Roles NetBox does not have are left out of the query (NetBox answers HTTP 400 to an
               unknown slug); when none exists, listing hosts is an error that says how to fix it.
``tags``       tag slugs a candidate must all carry (default none).
``statuses``   device statuses that count as in service (default ``active``).
``filters``    any other NetBox device filter, passed as is (``{"tenant": "lab"}``, ``{"rack_id": [3, 4]}``).
               NetBox ignores filters it does not know: ``crossvisor netbox check`` warns when one
               narrows nothing.
``kinds``      cluster type slug (or device platform slug) -> hypervisor kind, merged over ``DEFAULT_KINDS``;
               ``""`` un-maps a default slug.
``endpoints``  kind -> endpoint template, merged over ``DEFAULT_ENDPOINTS``. The device custom field
               ``mgmt_endpoint`` overrides: a URI is used as is, a bare host name or address fills
               ``{host}`` instead of the primary IP.

Template placeholders: ``{host}`` (the ``mgmt_endpoint`` host, else the primary IP; IPv6 in
brackets), ``{primary_ip}``, ``{primary_ip4}``, ``{primary_ip6}`` (bracketed), ``{name}``, ``{id}``,
``{site}``, ``{cluster}`` and ``{cf_<custom field>}``.

Settings come from, later overriding earlier: the defaults, the YAML file named by
``CROSSVISOR_NETBOX_CONFIG``, and the campaign spec's ``netbox:`` block. Scalars and lists replace;
``kinds``, ``endpoints`` and ``filters`` merge key by key.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.model import HYPERVISOR_KINDS
from inventory.source import InventoryError

DEFAULT_ROLES = ("hypervisor-host",)
DEFAULT_STATUSES = ("active",)

# Cluster type / platform slugs seen in real NetBox instances (the community demo data has
# ``vmware`` and ``kvm``; the cloud types ``aws``, ``azure``... are deliberately absent).
DEFAULT_KINDS: dict[str, str] = {
    # VMware
    "vmware": "vsphere",
    "vmware-esxi": "vsphere",
    "vmware-vsphere": "vsphere",
    "vsphere": "vsphere",
    "esxi": "vsphere",
    "esx": "vsphere",
    "vcenter": "vsphere",
    # KVM (libvirt, Proxmox VE, oVirt/RHV are KVM hypervisors)
    "kvm": "kvm",
    "qemu": "kvm",
    "qemu-kvm": "kvm",
    "libvirt": "kvm",
    "libvirt-kvm": "kvm",
    "proxmox": "kvm",
    "proxmox-ve": "kvm",
    "pve": "kvm",
    "ovirt": "kvm",
    "rhv": "kvm",
    # Hyper-V
    "hyper-v": "hyperv",
    "hyperv": "hyperv",
    "microsoft-hyper-v": "hyperv",
    "ms-hyper-v": "hyperv",
    # Xen
    "xen": "xen",
    "xenserver": "xen",
    "citrix-hypervisor": "xen",
    "xcp-ng": "xen",
    "xcpng": "xen",
}

DEFAULT_ENDPOINTS: dict[str, str] = {
    "kvm": "qemu+ssh://root@{host}/system",
    "xen": "xen+ssh://root@{host}/system",
    "vsphere": "https://{host}/sdk",
    "hyperv": "hyperv://{host}/?transport=https",
}

# URI schemes each driver accepts (libvirt: drivers/libvirt/uri.py; vSphere: http(s) vCenter URLs).
LIBVIRT_SCHEMES = ("test", "qemu", "xen", "libxl", "esx", "vpx", "gsx", "hyperv")
VSPHERE_SCHEMES = ("https", "http")

PLACEHOLDERS = ("host", "primary_ip", "primary_ip4", "primary_ip6", "name", "id", "site", "cluster")
KEYS = ("roles", "tags", "statuses", "filters", "kinds", "endpoints")
_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _check_entry(where: str, key: str, name: str, value: Any) -> None:
    at = f"{where}: netbox.{key}.{name}"
    if key == "kinds" and value not in (*HYPERVISOR_KINDS, "", None):
        raise InventoryError(
            f"{at}: {value!r} is not a hypervisor kind; expected one of {', '.join(HYPERVISOR_KINDS)} (or '' for none)"
        )
    if key == "endpoints":
        if name not in HYPERVISOR_KINDS:
            raise InventoryError(f"{at}: not a hypervisor kind; expected one of {', '.join(HYPERVISOR_KINDS)}")
        if not isinstance(value, str) or not value:
            raise InventoryError(f"{at}: expected a template string")
        for field_name in template_fields(value, at):
            if field_name not in PLACEHOLDERS and not field_name.startswith("cf_"):
                raise InventoryError(
                    f"{at}: unknown placeholder {{{field_name}}} in {value!r}; "
                    f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}, {{cf_<custom field>}}"
                )
    if key == "filters":
        if name in ("role", "tag", "status"):
            raise InventoryError(f"{at}: use netbox.roles / tags / statuses instead")
        if name in ("limit", "offset", "fields", "brief", "ordering"):
            raise InventoryError(f"{at}: not a device filter")
        if not isinstance(value, (str, int, bool, list)):
            raise InventoryError(f"{at}: expected a value or a list, got {value!r}")


def template_fields(template: str, at: str = "endpoint template") -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise InventoryError(f"{at}: {template!r}: {e}") from None


@dataclass
class NetBoxMapping:
    roles: list[str] = field(default_factory=lambda: list(DEFAULT_ROLES))
    tags: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=lambda: list(DEFAULT_STATUSES))
    filters: dict[str, Any] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_KINDS))
    endpoints: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENDPOINTS))
    sources: list[str] = field(default_factory=lambda: ["defaults"])  # where the settings came from

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def build(cls, *layers: tuple[str, dict[str, Any] | None]) -> NetBoxMapping:
        """Defaults, then each ``(where, settings)`` layer in order (``where`` names it in errors)."""
        m = cls()
        for where, layer in layers:
            if layer:
                m._apply(layer, where)
                m.sources.append(where)
        if not m.roles and not m.tags and not m.filters:
            raise InventoryError(
                f"{', '.join(m.sources)}: netbox roles, tags and filters are all empty: every NetBox device "
                "would be a hypervisor host; name the device role(s) or tag that mark hypervisor hosts"
            )
        return m

    def _apply(self, layer: dict[str, Any], where: str) -> None:
        """Check one layer's values (errors name the layer and key) and merge them in."""
        if not isinstance(layer, dict):
            raise InventoryError(f"{where}: expected a mapping with keys {', '.join(KEYS)}")
        unknown = sorted(set(layer) - set(KEYS))
        if unknown:
            raise InventoryError(f"{where}: unknown keys {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
        for key in ("roles", "tags", "statuses"):
            if key in layer:
                value = layer[key]
                if not isinstance(value, list) or not all(isinstance(v, str) and _SLUG.match(v) for v in value):
                    raise InventoryError(f"{where}: netbox.{key}: expected a list of slugs, got {value!r}")
                setattr(self, key, list(value))
        for key in ("filters", "kinds", "endpoints"):
            value = layer.get(key) or {}
            if not isinstance(value, dict):
                raise InventoryError(f"{where}: netbox.{key}: expected a mapping, got {type(value).__name__}")
            for k, v in value.items():
                _check_entry(where, key, str(k), v)
            getattr(self, key).update({str(k): v for k, v in value.items()})

    # --- use --------------------------------------------------------------------------------------

    def kind_of(self, slug: str, name: str = "") -> str | None:
        """Hypervisor kind of a cluster type / platform (by slug, else by its slugified name)."""
        for key in (slug, slug.lower(), _slugify(name)):
            if key and key in self.kinds:
                return self.kinds[key] or None
        return None

    def slugs_for(self, kind: str) -> list[str]:
        return sorted(s for s, k in self.kinds.items() if k == kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "roles": list(self.roles),
            "tags": list(self.tags),
            "statuses": list(self.statuses),
            "filters": dict(self.filters),
            "kinds": dict(self.kinds),
            "endpoints": dict(self.endpoints),
        }


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The ``CROSSVISOR_NETBOX_CONFIG`` file: the mapping keys at top level (or under ``netbox:``)."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as e:
        raise InventoryError(f"{p}: cannot read NetBox mapping file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise InventoryError(f"{p}: invalid YAML: {e}") from None
    if doc is None:
        return {}
    if isinstance(doc, dict) and set(doc) == {"netbox"}:
        doc = doc["netbox"]
    if not isinstance(doc, dict):
        raise InventoryError(f"{p}: expected a mapping with keys {', '.join(KEYS)}")
    return doc


def mapping_for(spec_block: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> NetBoxMapping:
    """Defaults <- ``CROSSVISOR_NETBOX_CONFIG`` file <- the spec's ``netbox:`` block."""
    import os

    env = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any] | None]] = []
    if path := env.get("CROSSVISOR_NETBOX_CONFIG", ""):
        layers.append((path, load_config_file(path)))
    layers.append(("spec", spec_block))
    return NetBoxMapping.build(*layers)


# --- composing endpoints ------------------------------------------------------------------------


def _bare(address: str) -> str:
    return address.split("/")[0]


def host_form(address: str) -> str:
    """An address as it goes into a URI: IPv6 in brackets."""
    a = _bare(address)
    return f"[{a}]" if ":" in a and not a.startswith("[") else a


def scheme_of(uri: str) -> str:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", uri)
    return m.group(1).lower() if m and "/" in uri else ""


def driver_for_endpoint(endpoint: str) -> str | None:
    """``libvirt`` / ``vsphere`` by the endpoint's scheme, None when neither driver takes it."""
    scheme = scheme_of(endpoint)
    if scheme in VSPHERE_SCHEMES:
        return "vsphere"
    if scheme.split("+", 1)[0] in LIBVIRT_SCHEMES:
        return "libvirt"
    return None


def compose_endpoint(template: str, values: dict[str, str]) -> tuple[str, list[str]]:
    """(endpoint, missing placeholders). A missing value leaves the endpoint empty."""
    missing = [f for f in template_fields(template) if not values.get(f)]
    if missing:
        return "", missing
    return template.format_map(values), []
