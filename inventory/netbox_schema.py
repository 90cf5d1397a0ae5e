"""The NetBox objects crossvisor relies on, how to read what a NetBox has, and ``init_schema``.

``init_schema`` (``crossvisor netbox init``) creates what is missing and nothing else: every device
custom field a driver or the inventory reads, the lease/health fields, the unhealthy tag, the host
role when the mapping names none that exists, and a cluster type only for a hypervisor kind no
existing type maps to (an existing ``VMware`` type is mapped, never doubled by a ``VMware ESXi``).
It is idempotent: a second run reports every object as already there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain.model import HYPERVISOR_KINDS
from inventory.netbox_http import NetBoxHttp
from inventory.netbox_mapping import NetBoxMapping

DEFAULT_ROLE = "hypervisor-host"
UNHEALTHY_TAG = "crossvisor-unhealthy"

CF_VERSION = "hypervisor_version"
CF_ENDPOINT = "mgmt_endpoint"
CF_CPUS = "cpus"
CF_MEMORY = "memory_mib"
CF_SLOTS = "cell_slots"
CF_CREDENTIALS = "credentials_ref"
CF_LEASE = "crossvisor_lease"  # JSON list of owners ("<campaign>/<cell>")
CF_FAILURES = "crossvisor_health_failures"  # consecutive failed health checks
# Volatile bookkeeping: not part of a host's identity, so kept out of Host.custom/snapshots.
INTERNAL_FIELDS = frozenset({CF_LEASE, CF_FAILURES})


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str  # NetBox custom field type
    label: str
    used_for: str  # what reads it (shown by `netbox check`)
    default: Any = None
    required: bool = False  # a campaign cannot run without it


CUSTOM_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(CF_LEASE, "json", "crossvisor lease owners", "host leases (reserve/release)", required=True),
    FieldDef(CF_FAILURES, "integer", "crossvisor consecutive health failures", "host health", required=True),
    FieldDef(CF_ENDPOINT, "text", "Management endpoint (URI or host)", "endpoint override"),
    FieldDef(CF_VERSION, "text", "Hypervisor version", "selection key 'version'"),
    FieldDef(CF_CPUS, "integer", "CPUs", "host capacity"),
    FieldDef(CF_MEMORY, "integer", "Memory (MiB)", "host capacity"),
    FieldDef(CF_SLOTS, "integer", "crossvisor cell slots", "cells per host at once (default 1)", default=1),
    FieldDef(CF_CREDENTIALS, "text", "Credentials reference (env:NAME / file:/path)", "driver login"),
    # Read by the drivers from Host.custom (drivers/factory.py, drivers/vsphere/driver.py).
    FieldDef("username", "text", "Hypervisor / vCenter login user", "libvirt and vSphere drivers"),
    FieldDef("datacenter", "text", "vSphere datacenter", "vSphere driver placement"),
    FieldDef("cluster", "text", "vSphere cluster (compute resource)", "vSphere driver placement"),
    FieldDef("datastore", "text", "vSphere datastore", "vSphere driver placement"),
    FieldDef("network", "text", "vSphere network (default 'VM Network')", "vSphere driver placement"),
    FieldDef("verify_tls", "text", "vCenter TLS check: true, false or a CA file", "vSphere driver TLS"),
)
FIELDS_BY_NAME = {f.name: f for f in CUSTOM_FIELDS}

# What init creates for a kind no existing cluster type maps to: (name, slug).
KIND_CLUSTER_TYPES: dict[str, tuple[str, str]] = {
    "vsphere": ("VMware ESXi", "vmware-esxi"),
    "kvm": ("KVM", "kvm"),
    "hyperv": ("Hyper-V", "hyper-v"),
    "xen": ("Xen", "xen"),
}


@dataclass
class SchemaState:
    """What one NetBox has of the objects crossvisor uses (one cheap listing each)."""

    version: str
    roles: dict[str, dict[str, Any]]  # slug -> {id, name, device_count}
    tags: dict[str, int]  # slug -> id
    custom_fields: dict[str, dict[str, Any]]  # name -> {id, type, object_types}
    cluster_types: list[dict[str, Any]]  # {id, name, slug}

    def device_fields(self) -> set[str]:
        return {n for n, f in self.custom_fields.items() if "dcim.device" in f["object_types"]}


def read_schema(http: NetBoxHttp) -> SchemaState:
    status = http.get("status/")
    roles = {
        r["slug"]: {"id": r["id"], "name": r["name"], "device_count": r.get("device_count") or 0}
        for r in http.list_all("dcim/device-roles/", {"fields": "id,name,slug,device_count"})
    }
    tags = {t["slug"]: t["id"] for t in http.list_all("extras/tags/", {"fields": "id,slug"})}
    cfs = {
        c["name"]: {
            "id": c["id"],
            "type": (c.get("type") or {}).get("value", ""),
            "object_types": list(c.get("object_types") or []),
        }
        for c in http.list_all("extras/custom-fields/", {"fields": "id,name,type,object_types"})
    }
    types = http.list_all("virtualization/cluster-types/", {"fields": "id,name,slug"})
    return SchemaState(str(status.get("netbox-version", "?")), roles, tags, cfs, types)


@dataclass
class Action:
    verb: str  # created | exists | extended | mapped | conflict
    what: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.verb:<9} {self.what}" + (f": {self.detail}" if self.detail else "")


@dataclass
class InitResult:
    actions: list[Action] = field(default_factory=list)
    on_action: Callable[[Action], None] | None = None  # told each step as it happens

    def add(self, action: Action) -> None:
        self.actions.append(action)
        if self.on_action:
            self.on_action(action)

    @property
    def changed(self) -> list[Action]:
        return [a for a in self.actions if a.verb in ("created", "extended")]

    @property
    def conflicts(self) -> list[Action]:
        return [a for a in self.actions if a.verb == "conflict"]


def init_schema(
    http: NetBoxHttp,
    mapping: NetBoxMapping | None = None,
    kinds: tuple[str, ...] | list[str] = HYPERVISOR_KINDS,
    on_action: Callable[[Action], None] | None = None,
) -> InitResult:
    """Create what crossvisor needs in this NetBox, reuse what is there, report each step (to
    ``on_action`` as it happens: a failure half-way still shows what was done)."""
    mapping = mapping or NetBoxMapping()
    st = read_schema(http)
    res = InitResult(on_action=on_action)
    act = res.add

    # device role: one of the mapping's roles must exist (a mapping by tag/filters needs none)
    present = [r for r in mapping.roles if r in st.roles]
    if mapping.roles and not present:
        slug = mapping.roles[0]
        http.request("POST", "dcim/device-roles/", json={"name": _title(slug), "slug": slug, "color": "2196f3"})
        act(Action("created", f"device role {slug}", "give it to the devices that are hypervisor hosts"))
    for slug in present:
        act(Action("exists", f"device role {slug}", f"{st.roles[slug]['device_count']} devices"))

    # tags: the unhealthy marker, and any tag the mapping requires
    for slug, color, why in [(UNHEALTHY_TAG, "f44336", "marks hosts taken out of service by health checks")] + [
        (t, "9e9e9e", "selects hypervisor hosts (netbox.tags)") for t in mapping.tags
    ]:
        if slug in st.tags:
            act(Action("exists", f"tag {slug}"))
        else:
            http.request("POST", "extras/tags/", json={"name": slug, "slug": slug, "color": color, "description": why})
            act(Action("created", f"tag {slug}", why))

    # custom fields on devices: create, or extend an existing field of the right type to devices
    for f in CUSTOM_FIELDS:
        have = st.custom_fields.get(f.name)
        if have is None:
            body: dict[str, Any] = {
                "name": f.name,
                "label": f.label,
                "type": f.type,
                "object_types": ["dcim.device"],
                "required": False,
                "description": f"crossvisor: {f.used_for}",
            }
            if f.default is not None:
                body["default"] = f.default
            http.request("POST", "extras/custom-fields/", json=body)
            act(Action("created", f"custom field {f.name} ({f.type})", f.used_for))
        elif have["type"] != f.type:
            act(
                Action(
                    "conflict",
                    f"custom field {f.name}",
                    f"exists with type {have['type']!r}, crossvisor needs {f.type!r}: left alone; "
                    f"change its type in NetBox or remove it",
                )
            )
        elif "dcim.device" not in have["object_types"]:
            http.request(
                "PATCH",
                f"extras/custom-fields/{have['id']}/",
                json={"object_types": [*have["object_types"], "dcim.device"]},
            )
            act(Action("extended", f"custom field {f.name}", "now also on devices"))
        else:
            act(Action("exists", f"custom field {f.name}"))

    # cluster types: map what exists; create one only for a wanted kind nothing maps to
    covered: dict[str, list[str]] = {}
    for t in st.cluster_types:
        kind = mapping.kind_of(t["slug"], t["name"])
        if kind:
            covered.setdefault(kind, []).append(t["slug"])
            act(Action("mapped", f"cluster type {t['name']} ({t['slug']})", f"-> {kind}"))
    slugs = {t["slug"] for t in st.cluster_types}
    for kind in kinds:
        if kind in covered:
            continue
        name, slug = KIND_CLUSTER_TYPES[kind]
        if slug in slugs:  # exists but un-mapped by the operator's netbox.kinds: respect that
            act(
                Action(
                    "conflict", f"cluster type {slug}", f"exists but netbox.kinds maps it to no kind; no {kind} type"
                )
            )
            continue
        http.request("POST", "virtualization/cluster-types/", json={"name": name, "slug": slug})
        act(Action("created", f"cluster type {name} ({slug})", f"-> {kind}"))
    return res


def _title(slug: str) -> str:
    return slug.replace("-", " ").replace("_", " ").title()


def ensure_schema(api: Any, mapping: NetBoxMapping | None = None) -> InitResult:
    """``init_schema`` for a ``pynetbox.api`` (tests, bench): same objects, same idempotence."""
    http = NetBoxHttp(api.base_url.removesuffix("/api"), api.token)
    try:
        return init_schema(http, mapping)
    finally:
        http.close()
