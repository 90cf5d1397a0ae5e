"""NetBox devices as crossvisor hosts (``NetBoxInventory``'s mapping concern): a device's kind,
endpoint and driver from the mapping (``netbox_mapping``), its unique name, and why a device
cannot be a host (``SkippedDevice``, listed by ``crossvisor netbox check``)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass

from domain.model import HYPERVISOR_KINDS, Host
from inventory.netbox_mapping import (
    LIBVIRT_SCHEMES,
    compose_endpoint,
    driver_for_endpoint,
    host_form,
    scheme_of,
)
from inventory.netbox_schema import (
    CF_CPUS,
    CF_CREDENTIALS,
    CF_ENDPOINT,
    CF_MEMORY,
    CF_SLOTS,
    CF_VERSION,
    INTERNAL_FIELDS,
)

log = logging.getLogger("crossvisor.inventory.netbox")


def _redact(uri: str) -> str:
    """An endpoint without a password in its userinfo (reasons are printed and logged)."""
    head, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        user, _, after = rest.partition("@")
        if ":" in user:
            return f"{head}://{user.split(':', 1)[0]}:***@{after}"
    return uri


def display_name(dev: dict) -> str:
    """A device's name, or ``<device-type-slug>-<id>`` when it has none."""
    if dev.get("name"):
        return str(dev["name"])
    dtype = (dev.get("device_type") or {}).get("slug") or "device"
    return f"{dtype}-{dev['id']}"


def unique_names(devices: list[dict], universe: Counter) -> dict[int, str]:
    """device id -> host name, unique among ``devices``. ``universe`` counts the real names of
    every candidate (not just these devices): a name several candidates share becomes
    ``<name>-<id>`` for each of them, whichever selection is asked."""
    names: dict[int, str] = {}
    for d in devices:
        shown = display_name(d)
        # a real name shared by candidates, or a fallback that some candidate is really called
        dup = universe.get(shown, 0) > (1 if d.get("name") else 0)
        names[d["id"]] = f"{shown}-{d['id']}" if dup else shown
    # "<name>-<id>" may itself be some device's real name: suffix again until unique
    while True:
        counts = Counter(names.values())
        clash = [i for i, n in names.items() if counts[n] > 1]
        if not clash:
            return names
        for i in clash:
            names[i] = f"{names[i]}-{i}"


@dataclass(frozen=True)
class SkippedDevice:
    """A candidate device that did not become a host. ``reason`` and ``fix`` name no device, so
    ``netbox check`` prints each once with the devices it applies to."""

    device_id: int
    label: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"device {self.label!r} (#{self.device_id}): {self.reason}; fix: {self.fix}"


def why_no_host(
    roles: list[str],
    roles_exist: bool,
    candidates: int,
    hosts: list[Host],
    skipped: list[SkippedDevice],
    kind: str,
    select: dict[str, str],
    near_misses: bool = False,
) -> str:
    """Why a platform (``kind`` + ``select``) got no host, from a survey of the candidates."""
    who = f"role {' / '.join(roles)}" if roles else "the mapping's tags/filters"
    if roles and not roles_exist:
        return f"the device role {' / '.join(roles)} does not exist in NetBox"
    if not candidates:
        hint = " (see the devices that almost match)" if near_misses else ""
        return f"no device has {who}{hint}"
    if not hosts:
        reasons = sorted({s.reason.split(" (")[0] for s in skipped})
        return f"all {candidates} devices with {who} are skipped: {'; '.join(reasons)}"
    of_kind = [h for h in hosts if not kind or h.kind == kind]
    if not of_kind:
        present = ", ".join(f"{k} x{n}" for k, n in sorted(Counter(h.kind for h in hosts).items()))
        return f"none of the {len(hosts)} usable hosts is of kind {kind} (kinds present: {present})"
    sites = sorted({h.site for h in of_kind})
    return (
        f"the selection {select} matches none of the {len(of_kind)} {kind or 'usable'} hosts (their sites: {', '.join(sites)}; "
        "version, tags and custom fields as set on the devices)"
    )


class DeviceMapping:
    """Mixed into ``NetBoxInventory`` (``netbox_source.py``): its methods use the inventory's ``http``,
    ``mapping`` and settings."""

    def materialize(self, devices: list[dict], universe: Counter) -> tuple[list[Host], list[SkippedDevice]]:
        """Devices (as listed) -> hosts and skipped devices. ``universe`` counts the candidates'
        names, to tell a duplicate name apart."""
        self._attach_details(devices)
        clusters = self._clusters() if any(d.get("cluster") for d in devices) else {}
        named = unique_names(devices, universe)
        hosts: list[Host] = []
        skipped: list[SkippedDevice] = []
        for dev in devices:
            name = named[dev["id"]]
            self._labels[str(dev["id"])] = name
            out = self._to_host(dev, name, clusters)
            (hosts if isinstance(out, Host) else skipped).append(out)
        return hosts, skipped

    def _kind(self, dev: dict, clusters: dict[int, tuple[str, str, str]]) -> tuple[str | None, str, str]:
        """(kind, reason, fix); a kind of None comes with why and what to do."""
        m = self.mapping
        accepted = "; ".join(f"{k}: {', '.join(m.slugs_for(k))}" for k in HYPERVISOR_KINDS if m.slugs_for(k))
        cluster = dev.get("cluster")
        if cluster:
            type_name, type_slug, _ = clusters.get(cluster["id"], ("?", "?", ""))
            kind = m.kind_of(type_slug, type_name)
            if kind:
                return kind, "", ""
            return (
                None,
                f"cluster type {type_name!r} ({type_slug}) is not a hypervisor type crossvisor knows "
                f"(known slugs by kind: {accepted})",
                f"if {type_slug!r} clusters are hypervisors, map the slug: netbox.kinds: {{{type_slug}: "
                f"{'|'.join(HYPERVISOR_KINDS)}}}; otherwise take the host role off the device",
            )
        platform = dev.get("platform") or {}
        if platform:
            kind = m.kind_of(platform.get("slug", ""), platform.get("name", ""))
            if kind:
                return kind, "", ""
            return (
                None,
                f"no cluster, and its platform {platform.get('name')!r} ({platform.get('slug')}) is no known "
                f"hypervisor (known slugs by kind: {accepted})",
                "assign the device to a cluster of a hypervisor type, or map the platform slug in netbox.kinds",
            )
        return (
            None,
            "no cluster and no platform: the hypervisor kind is unknown",
            f"assign the device to a cluster whose type slug is a known one ({accepted}), or map your type's "
            "slug in netbox.kinds",
        )

    def _endpoint(self, dev: dict, name: str, kind: str, clusters: dict) -> tuple[str, str, str]:
        """(endpoint, reason, fix); an empty endpoint comes with why and what to do."""
        cf = dev.get("custom_fields") or {}
        given = str(cf.get(CF_ENDPOINT) or "").strip()
        if given and scheme_of(given):
            return given, "", ""
        template = self.mapping.endpoints.get(kind, "")
        if not template:
            return "", f"no endpoint template for kind {kind}", f"set netbox.endpoints.{kind} or {CF_ENDPOINT}"
        ips = {
            k: host_form(str((dev.get(k) or {}).get("address") or "")) if dev.get(k) else ""
            for k in ("primary_ip", "primary_ip4", "primary_ip6")
        }
        cluster = dev.get("cluster") or {}
        values = {
            **ips,
            "host": host_form(given) if given else ips["primary_ip"],
            "name": str(dev.get("name") or name),
            "id": str(dev["id"]),
            "site": (dev.get("site") or {}).get("slug", ""),
            "cluster": clusters.get(cluster.get("id"), ("", "", ""))[2] if cluster else "",
            **{f"cf_{k}": str(v) for k, v in cf.items() if v not in (None, "")},
        }
        endpoint, missing = compose_endpoint(template, values)
        if not missing:
            return endpoint, "", ""
        if "host" in missing or any(m.startswith("primary_ip") for m in missing):
            return (
                "",
                f"no management address: {CF_ENDPOINT} is empty and the device has no primary IP "
                f"(the {kind} endpoint template is {template!r})",
                f"give the device a primary IP, or set its {CF_ENDPOINT} custom field (a URI or a host name)",
            )
        return (
            "",
            f"the {kind} endpoint template {template!r} needs {', '.join('{' + m + '}' for m in missing)}, "
            "which the device does not have",
            f"fill those fields on the device, set {CF_ENDPOINT}, or change netbox.endpoints.{kind}",
        )

    def _to_host(self, dev: dict, name: str, clusters: dict) -> Host | SkippedDevice:
        def skip(reason: str, fix: str) -> SkippedDevice:
            return SkippedDevice(dev["id"], name, reason, fix)

        kind, reason, fix = self._kind(dev, clusters)
        if kind is None:
            return skip(reason, fix)
        endpoint, reason, fix = self._endpoint(dev, name, kind, clusters)
        if not endpoint:
            return skip(reason, fix)
        driver = driver_for_endpoint(endpoint)
        if driver is None:
            return skip(
                f"endpoint {_redact(endpoint)!r} has scheme {scheme_of(endpoint) or '(none)'!r}, which no driver "
                f"takes (libvirt: {', '.join(LIBVIRT_SCHEMES)}[+transport]; vSphere: https)",
                f"set {CF_ENDPOINT} to a libvirt URI or https://<vcenter>/sdk, or fix netbox.endpoints.{kind}",
            )
        if driver == "vsphere" and kind != "vsphere":
            return skip(
                f"endpoint {_redact(endpoint)!r} is a vCenter URL, but the host's kind is {kind}",
                f"set {CF_ENDPOINT} to a libvirt URI for {kind} (e.g. {self.mapping.endpoints.get(kind, '')!r})",
            )
        cf = dev.get("custom_fields") or {}
        try:
            cpus, memory, slots = (int(cf.get(CF_CPUS) or 0), int(cf.get(CF_MEMORY) or 0), int(cf.get(CF_SLOTS) or 1))
        except (TypeError, ValueError):
            return skip(f"{CF_CPUS}/{CF_MEMORY}/{CF_SLOTS} must be integers", "correct the custom field values")
        return Host(
            name=name,
            kind=kind,
            driver=driver,
            endpoint=endpoint,
            site=(dev.get("site") or {}).get("slug", ""),
            version=str(cf.get(CF_VERSION) or ""),
            tags=sorted(t["slug"] for t in dev.get("tags") or []),
            cpus=cpus,
            memory_mib=memory,
            slots=slots,
            credentials_ref=str(cf.get(CF_CREDENTIALS) or ""),
            status=(dev.get("status") or {}).get("value", "active"),  # hosts() filters by status
            custom={
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in cf.items()
                if v is not None and k not in INTERNAL_FIELDS
            },
            inventory_id=str(dev["id"]),
        )
