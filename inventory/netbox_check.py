"""``crossvisor netbox check``: can a campaign run on this NetBox, and if not, what exactly to fix.

Connects, reads the objects crossvisor uses (roles, tags, custom fields, cluster types), surveys
every candidate device (whatever its status) and each platform's selection, and returns findings
an operator can act on: what is missing, which devices are skipped and why (each reason once, with
the fix), which devices almost match (a hypervisor cluster but not the host role), and, for a
platform that selects no host, the reason. ``CheckReport.ok`` is False when the campaign could
not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.model import Host
from inventory.netbox_schema import (
    CF_VERSION,
    CUSTOM_FIELDS,
    FIELDS_BY_NAME,
    UNHEALTHY_TAG,
    SchemaState,
    read_schema,
)
from inventory.netbox_source import ID_CHUNK, NetBoxInventory, SkippedDevice, display_name, why_no_host
from inventory.selection import matches
from inventory.source import InventoryError


@dataclass
class Finding:
    level: str  # error (the campaign cannot run) | warn
    what: str
    fix: str = ""


@dataclass
class PlatformCheck:
    name: str
    kind: str
    select: dict[str, str]
    hosts: list[Host] = field(default_factory=list)
    reason: str = ""  # why no host, when none


@dataclass
class NearMiss:
    """Devices in hypervisor clusters that the mapping does not select, grouped by their role."""

    role: str
    labels: list[str]


@dataclass
class CheckReport:
    url: str
    version: str = ""
    sources: list[str] = field(default_factory=list)
    selects: str = ""  # the mapping's host filter, in words
    host_role: str = ""  # the role a device needs to become a host (the mapping's first)
    findings: list[Finding] = field(default_factory=list)
    cluster_types: list[tuple[str, str, str | None]] = field(default_factory=list)  # name, slug, kind
    candidates: int = 0
    hosts: list[Host] = field(default_factory=list)
    skipped: list[SkippedDevice] = field(default_factory=list)
    near_misses: list[NearMiss] = field(default_factory=list)
    platforms: list[PlatformCheck] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors and all(p.hosts for p in self.platforms)

    def skip_groups(self) -> list[tuple[str, str, list[str]]]:
        """(reason, fix, device labels): each distinct reason once."""
        groups: dict[tuple[str, str], list[str]] = {}
        for s in self.skipped:
            groups.setdefault((s.reason, s.fix), []).append(f"{s.label} (#{s.device_id})")
        return [(r, f, labels) for (r, f), labels in groups.items()]


def describe(m) -> str:
    parts = []
    if m.roles:
        parts.append(f"role {' or '.join(m.roles)}")
    if m.tags:
        parts.append(f"tags {' and '.join(m.tags)}")
    parts += [f"{k}={v}" for k, v in m.filters.items()]
    parts.append(f"status {' or '.join(m.statuses)}")
    return ", ".join(parts)


def _roles_hint(st: SchemaState) -> str:
    used = sorted(((r["device_count"], slug) for slug, r in st.roles.items() if r["device_count"]), reverse=True)
    return ", ".join(f"{slug} ({n} device{'s' if n > 1 else ''})" for n, slug in used[:8]) or "none with devices"


def check_netbox(
    inv: NetBoxInventory, platforms: list[tuple[str, str, dict[str, str]]], spec: str = "SPEC"
) -> CheckReport:
    """``platforms``: (name, kind, select) of each campaign platform; ``spec`` names the spec in fixes."""
    init_cmd = f"crossvisor netbox init {spec}"  # the fix most findings share
    m = inv.mapping
    st = read_schema(inv.http)  # connection and token problems surface here, as themselves
    inv.memoize = True  # one consistent read of clusters and device details for every view below
    rep = CheckReport(url=inv.url, version=st.version, sources=list(m.sources), selects=describe(m))
    rep.host_role = m.roles[0] if m.roles else ""
    add = rep.findings.append

    # --- roles, tags, custom fields ----------------------------------------------------------------
    roles_present = [r for r in m.roles if r in st.roles]
    if m.roles and not roles_present:
        add(
            Finding(
                "error",
                f"device role {' / '.join(m.roles)} does not exist: no device can be a hypervisor host",
                f"`{init_cmd}` creates {m.roles[0]}, then give it to the hypervisor hosts; or set netbox.roles "
                f"to the role they already have (roles in use: {_roles_hint(st)})",
            )
        )
    if UNHEALTHY_TAG not in st.tags:
        add(
            Finding(
                "error", f"tag {UNHEALTHY_TAG} does not exist: failed hosts cannot be taken out of service", init_cmd
            )
        )
    for tag in m.tags:
        if tag not in st.tags:
            add(Finding("error", f"tag {tag} (netbox.tags) does not exist: no device can carry it", init_cmd))
    device_fields = st.device_fields()
    optional_missing = []
    for f in CUSTOM_FIELDS:
        have = st.custom_fields.get(f.name)
        if have and have["type"] != f.type:
            add(
                Finding(
                    "error" if f.required else "warn",
                    f"custom field {f.name} has type {have['type']!r}, crossvisor needs {f.type!r} ({f.used_for})",
                    "change its type in NetBox (or remove it, then run init)",
                )
            )
        elif f.name not in device_fields:
            if f.required:
                add(Finding("error", f"device custom field {f.name} ({f.type}) does not exist: {f.used_for}", init_cmd))
            else:
                optional_missing.append(f.name)
    if optional_missing:
        add(
            Finding(
                "warn",
                f"optional device custom fields missing: {', '.join(optional_missing)} (hosts then use defaults)",
                init_cmd,
            )
        )
    for name, _kind, select in platforms:
        for key in select:
            cf = CF_VERSION if key == "version" else key[3:] if key.startswith("cf_") else ""
            if cf and cf not in device_fields:
                add(
                    Finding(
                        "error",
                        f"platform {name}: selection {key} needs the device custom field {cf}, which does not exist",
                        init_cmd
                        if cf in FIELDS_BY_NAME
                        else f"create custom field {cf} on devices, or change the selection",
                    )
                )

    # --- cluster types -----------------------------------------------------------------------------
    for t in st.cluster_types:
        rep.cluster_types.append((t["name"], t["slug"], m.kind_of(t["slug"], t["name"])))
    mapped_kinds = {k for _, _, k in rep.cluster_types if k}
    for name, kind, _ in platforms:
        if kind not in mapped_kinds:
            add(
                Finding(
                    "warn" if m.slugs_for(kind) else "error",
                    f"platform {name}: no cluster type in NetBox maps to kind {kind} "
                    f"(slugs that do: {', '.join(m.slugs_for(kind)) or 'none'})",
                    f"`{init_cmd}` creates one; or map your type: netbox.kinds: {{<slug>: {kind}}}",
                )
            )

    # --- devices -----------------------------------------------------------------------------------
    if not m.roles or roles_present:
        hosts, skipped, devices = inv.survey()
        rep.candidates, rep.hosts, rep.skipped = len(devices), hosts, skipped
        inv._warned |= {(s.device_id, s.reason) for s in skipped}  # the report tells them, once
        _check_filters(inv, rep)
        candidate_ids = {d["id"] for d in devices}
    else:
        candidate_ids = set()
    rep.near_misses = _near_misses(inv, candidate_ids)

    # --- platforms ---------------------------------------------------------------------------------
    ready = not rep.errors
    for name, kind, select in platforms:
        pc = PlatformCheck(name, kind, dict(select))
        rep.platforms.append(pc)
        want = {**select, "kind": kind}
        try:
            if ready:
                pc.hosts = inv.hosts(want)
            else:  # hosts() refuses an unprepared NetBox: validate the selection, match the survey
                inv._server_filters(want)
                pc.hosts = [h for h in rep.hosts if matches(h, want)]
        except InventoryError as e:
            pc.reason = str(e)
            continue
        if not pc.hosts:
            pc.reason = why_no_host(
                m.roles,
                bool(roles_present),
                rep.candidates,
                rep.hosts,
                rep.skipped,
                kind,
                select,
                bool(rep.near_misses),
            )
    return rep


def _check_filters(inv: NetBoxInventory, rep: CheckReport) -> None:
    """NetBox ignores filters it does not know: warn when a filter narrows nothing."""
    filters = inv.mapping.filters
    if not filters:
        return
    base = {k: v for k, v in inv.base_filters(with_status=False).items() if k not in filters}
    total = inv.http.get("dcim/devices/", {**base, "limit": 1, "brief": 1})["count"]
    for key, value in filters.items():
        n = inv.http.get("dcim/devices/", {**base, key: value, "limit": 1, "brief": 1})["count"]
        if n == total:
            rep.findings.append(
                Finding(
                    "warn",
                    f"filter {key}={value!r} (netbox.filters) narrows nothing ({n} of {total} devices): "
                    "NetBox silently ignores filters it does not know",
                    "check the filter name against NetBox's /api/dcim/devices/ filters",
                )
            )


def _near_misses(inv: NetBoxInventory, candidate_ids: set[int]) -> list[NearMiss]:
    """Devices sitting in clusters whose type maps to a hypervisor kind, not selected as hosts."""
    clusters = inv._clusters()
    hv = [cid for cid, (tname, tslug, _) in clusters.items() if inv.mapping.kind_of(tslug, tname)]
    rows: list[dict[str, Any]] = []
    for i in range(0, len(hv), ID_CHUNK):
        rows += inv.http.list_all(
            "dcim/devices/", {"cluster_id": hv[i : i + ID_CHUNK], "fields": "id,name,role,device_type"}, inv.page_size
        )
    by_role: dict[str, list[str]] = {}
    for r in rows:
        if r["id"] in candidate_ids:
            continue
        role = (r.get("role") or {}).get("slug", "?")
        by_role.setdefault(role, []).append(f"{display_name(r)} (#{r['id']})")
    return [NearMiss(role, labels) for role, labels in sorted(by_role.items())]
