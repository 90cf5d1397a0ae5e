"""Inventory from a real NetBox: hypervisor hosts, leases and health, stored in NetBox itself.

Mapping (device -> ``Host``), see ``netbox_mapping``: candidates are the devices with one of the
mapping's roles (default ``hypervisor-host``), its tags and filters; in service are those with an
allowed status (default ``active``) and without the ``crossvisor-unhealthy`` tag. ``kind`` comes
from the device's cluster type (else its platform) through ``mapping.kinds``; ``endpoint`` is the
``mgmt_endpoint`` custom field when it is a URI, else the kind's template filled from the device
(primary IP, name, ...); ``driver`` follows the endpoint's scheme (``https://`` -> vSphere, libvirt
URIs -> libvirt). Other fields come from custom fields (see ``netbox_schema``).

Identity: a host's key is its NetBox device id (``Host.inventory_id``, a string); every lease and
health method takes that key. ``Host.name`` is unique among the hosts this NetBox yields: the
device name, ``<device-type-slug>-<id>`` for an unnamed device, ``<name>-<id>`` when several
candidates share a name.

Devices that cannot become hosts are skipped and listed in ``skipped`` (reason and fix, for
``crossvisor netbox check``), so one bad device does not hide the rest; ``strict=True`` raises
``InventoryError`` instead. A NetBox lacking what every campaign needs (a host role, the lease and
health fields, the unhealthy tag) is an ``InventoryError`` at once, naming the fix (``crossvisor
netbox init``), never a failure in the middle of a campaign.

Reads: ``hosts()`` of every candidate is one GraphQL query (the needed fields only; REST with
``?fields=`` when the mapping has REST ``filters`` or GraphQL is off). ``changes_since(cursor)``
is the campaign's incremental refresh: devices with a newer ``last_updated`` plus NetBox's change
log (deletions, cluster and IP changes), then only the changed devices are read.

Leases use NetBox's optimistic concurrency: read the device (ETag), PATCH ``crossvisor_lease``
with ``If-Match``; NetBox re-checks the ETag under a row lock, so of two racing writers exactly
one succeeds and the other gets HTTP 412, re-reads, and sees the host full.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.messages import InventoryDelta
from domain.model import HYPERVISOR_KINDS, Host
from inventory.netbox_http import (
    NetBoxAuthError,
    NetBoxHttp,
    NetBoxUnavailable,
    resolve_token,
)
from inventory.netbox_mapping import (
    LIBVIRT_SCHEMES,
    NetBoxMapping,
    compose_endpoint,
    driver_for_endpoint,
    host_form,
    scheme_of,
    split_mgmt_endpoint,
    with_user,
)
from inventory.netbox_schema import (
    CF_CPUS,
    CF_CREDENTIALS,
    CF_ENDPOINT,
    CF_FAILURES,
    CF_LEASE,
    CF_MEMORY,
    CF_SLOTS,
    CF_VERSION,
    CUSTOM_FIELDS,
    INTERNAL_FIELDS,
    UNHEALTHY_TAG,
    ensure_schema,
    init_schema,
)
from inventory.selection import SELECT_KEYS, matches
from inventory.source import InventoryError, InventorySource

__all__ = [
    "NetBoxAuthError",
    "NetBoxInventory",
    "NetBoxUnavailable",
    "SkippedDevice",
    "ensure_schema",
    "init_schema",
]

log = logging.getLogger("crossvisor.inventory.netbox")

# Measured on NetBox 4.7 (5,000 devices): server-side serialization dominates a pull, and the
# nested ``tags`` (~1.2 s), ``status`` choice labels and ``primary_ip`` are its dearest parts.
# So the listing asks only for what every host needs; tags come from one id-only listing per
# tag in use on devices (few, cheap); primary IPs, device types and platforms only for the
# devices that need them (no URI endpoint, no name, no cluster); status is known from the filter.
DEVICE_FIELDS = "id,name,site,custom_fields,cluster"
DETAIL_FIELDS = "id,primary_ip,primary_ip4,primary_ip6,device_type,platform"
GRAPHQL_DEVICE = "id name site { slug } cluster { id } custom_field_data"  # DEVICE_FIELDS in GraphQL
# Above this many device tags, per-tag listings cost more than serializing nested tags.
MAX_TAG_QUERIES = 12
CAS_ATTEMPTS = 20
# Incremental refresh (changes_since). The cursor is NetBox's own clock (its HTTP Date header, 1 s
# resolution) minus this overlap, so a change committed while a pull ran, or stamped by a
# transaction that began before it, is read again next time: re-reading is harmless, missing is not.
CHANGE_OVERLAP_S = 10
# What NetBox's change log is asked about besides devices' last_updated: deleted devices (a
# deletion leaves no row to carry a timestamp), and objects a Host is derived from that change
# without touching the device row (its cluster, the cluster's type, tags, the primary IP).
CHANGE_TYPES = ("dcim.device", "virtualization.cluster", "virtualization.clustertype", "extras.tag", "ipam.ipaddress")
ID_CHUNK = 100  # ids per ?id= listing: keeps URLs short


def _query_of(url: str) -> list[tuple[str, str]]:
    """A ``next`` link's query parameters, without its offset (the caller sets it)."""
    from urllib.parse import parse_qsl, urlsplit

    return [(k, v) for k, v in parse_qsl(urlsplit(url).query) if k != "offset"]


def _owners(value: Any) -> list[str]:
    """The lease custom field as a list; tolerate a JSON string written by hand."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


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


class NetBoxInventory(InventorySource):
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        mapping: NetBoxMapping | None = None,
        token_env: str = "NETBOX_TOKEN",
        token_file: str | None = None,
        failure_threshold: int = 3,
        page_size: int = 5000,
        workers: int = 4,
        timeout: float = 15.0,
        strict: bool = False,
    ) -> None:
        self.http = NetBoxHttp(
            url,
            resolve_token(token, token_env, token_file),
            timeout=timeout,
            workers=workers,
        )
        self.url = self.http.url
        self.mapping = mapping or NetBoxMapping()
        self.failure_threshold = failure_threshold
        self.page_size = page_size
        self.strict = strict
        self.skipped: list[SkippedDevice] = []  # candidates the last hosts() could not use
        self._used: dict[str, Host] = {}  # every host handed out (by key), for snapshot()
        self._labels: dict[str, str] = {}  # key -> display name
        self._cf_names: set[str] | None = None
        self._roles: list[str] | None = None  # the mapping's roles that exist in NetBox
        self._ready = False
        self._known: dict[tuple[str, str], bool] = {}  # (endpoint, slug) seen to exist
        self._warned: set[tuple[int, str]] = set()  # (device id, reason) already logged
        # Off for campaign runs (every call reads NetBox afresh); `netbox check` turns it on to read
        # clusters and device details once for its many views of the same devices.
        self.memoize = False
        self._memo: dict[str, Any] = {}
        self.change_overlap_s = CHANGE_OVERLAP_S
        # clusters as the incremental refresh last read them; dropped when the change log shows one changed
        self._refresh_clusters: dict[int, tuple[str, str, str]] | None = None
        self._candidate_names: dict[int, str] | None = None  # device id -> name, every candidate (refresh)
        self._graphql_cap = 0  # the longest GraphQL list page NetBox has sent (its MAX_PAGE_SIZE, or less)

    @classmethod
    def from_env(cls, **kwargs: Any) -> NetBoxInventory:
        """``NETBOX_URL`` plus ``NETBOX_TOKEN``/``NETBOX_TOKEN_FILE`` (as written by netbox-up.sh)."""
        import os

        url = os.environ.get("NETBOX_URL", "")
        if not url:
            raise InventoryError(
                "NETBOX_URL is not set (or set CROSSVISOR_NETBOX_URL and CROSSVISOR_NETBOX_TOKEN_FILE)"
            )
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        return f"NetBoxInventory(url={self.url!r}, roles={self.mapping.roles!r}, token='***')"

    def close(self) -> None:
        self.http.close()

    @property
    def problems(self) -> list[str]:
        """The skipped devices as one line each (device, reason, fix)."""
        return [str(s) for s in self.skipped]

    # --- what NetBox has ---------------------------------------------------------------------------

    def _custom_field_names(self) -> set[str]:
        if self._cf_names is None:
            rows = self.http.list_all("extras/custom-fields/", {"object_type": "dcim.device", "fields": "id,name"})
            self._cf_names = {r["name"] for r in rows}
        return self._cf_names

    def _exists(self, endpoint: str, slug: str) -> bool:
        # Only positive answers are cached: an object created later must become selectable.
        key = (endpoint, slug)
        if key not in self._known:
            page = self.http.get(endpoint, {"slug": slug, "brief": 1, "limit": 1})
            if page["count"] == 0:
                return False
            self._known[key] = True
        return True

    def _check_exists(self, endpoint: str, what: str, slug: str) -> None:
        # NetBox ignores filters it does not know and some values it cannot match: a typo
        # must not silently widen the selection to "all hosts", so check the object exists.
        if not self._exists(endpoint, slug):
            raise InventoryError(f"selection {what}={slug!r}: no such {what} in NetBox")

    def existing_roles(self) -> list[str]:
        """The mapping's roles that NetBox has (asking for one it lacks is an HTTP 400)."""
        if self._roles is None and self.mapping.roles:
            rows = self.http.get("dcim/device-roles/", {"slug": self.mapping.roles, "fields": "slug", "limit": 0})
            have = {r["slug"] for r in rows["results"]}
            self._roles = [r for r in self.mapping.roles if r in have]
        return list(self._roles or [])

    def ensure_ready(self) -> None:
        """Raise ``InventoryError`` naming the fix when no campaign could run on this NetBox."""
        if self._ready:
            return
        missing = []
        if self.mapping.roles and not self.existing_roles():
            missing.append(f"device role {' / '.join(self.mapping.roles)}")
        cfs = self._custom_field_names()
        missing += [f"device custom field {f.name}" for f in CUSTOM_FIELDS if f.required and f.name not in cfs]
        if not self._exists("extras/tags/", UNHEALTHY_TAG):
            missing.append(f"tag {UNHEALTHY_TAG}")
        for tag in self.mapping.tags:
            if not self._exists("extras/tags/", tag):
                missing.append(f"tag {tag} (netbox.tags)")
        if missing:
            raise InventoryError(
                f"NetBox at {self.url} is not set up for crossvisor: missing {', '.join(missing)}. "
                "Run `crossvisor netbox init [SPEC]` to create them (or set netbox.roles to the role your "
                "hypervisor hosts have); `crossvisor netbox check SPEC` lists everything"
            )
        self._ready = True

    # --- which devices -----------------------------------------------------------------------------

    def base_filters(self, with_status: bool = True) -> dict[str, Any]:
        """The mapping as NetBox device filters (no selection): the candidate hosts."""
        params: dict[str, Any] = dict(self.mapping.filters)
        if self.mapping.roles:
            params["role"] = self.existing_roles()
        if self.mapping.tags:
            params["tag"] = list(self.mapping.tags)
        if with_status:
            params["status"] = list(self.mapping.statuses)
            # Excluding a tag NetBox does not have is a 400; ensure_ready made sure it exists.
            params["tag__n"] = UNHEALTHY_TAG
        return params

    def _server_filters(self, select: dict[str, str]) -> tuple[dict[str, Any], bool]:
        """(params, narrowed): ``narrowed`` when the selection filters on the server side."""
        params = self.base_filters()
        params["fields"] = DEVICE_FIELDS
        narrowed = False
        for key, value in select.items():
            value = str(value)
            if key == "site":
                self._check_exists("dcim/sites/", "site", value)
                params["site"] = value
                narrowed = True
            elif key == "tag":
                self._check_exists("extras/tags/", "tag", value)
                params["tag"] = [*params.get("tag", []), value]
                narrowed = True
            elif key == "kind":
                if value not in HYPERVISOR_KINDS:
                    raise InventoryError(f"selection kind={value!r}: expected one of {', '.join(HYPERVISOR_KINDS)}")
            elif key == "version":
                if CF_VERSION not in self._custom_field_names():
                    raise InventoryError(f"selection version: NetBox has no device custom field {CF_VERSION!r}")
                params[f"cf_{CF_VERSION}"] = value
                narrowed = True
            elif key.startswith("cf_") and len(key) > 3:
                if key[3:] not in self._custom_field_names():
                    raise InventoryError(f"selection {key}: NetBox has no device custom field {key[3:]!r}")
                params[key] = value
                narrowed = True
            else:
                raise InventoryError(f"unknown selection key {key!r}; allowed: {', '.join(SELECT_KEYS)}, cf_<name>")
        return params, narrowed

    # --- hosts -------------------------------------------------------------------------------------

    def hosts(self, select: dict[str, str] | None = None) -> list[Host]:
        select = dict(select or {})
        self.ensure_ready()
        self._refresh_clusters = None  # a full pull reads clusters afresh
        params, narrowed = self._server_filters(select)
        t0 = time.monotonic()
        tag_slugs = self._device_tags()
        # every candidate (no server-side narrowing): one GraphQL query when NetBox serves it
        devices = None if narrowed else self._graphql_candidates(tag_slugs)
        if devices is None:
            if len(tag_slugs) > MAX_TAG_QUERIES:
                params["fields"] += ",tags"
            devices = self.http.list_all("dcim/devices/", params, self.page_size)
            if len(tag_slugs) <= MAX_TAG_QUERIES:
                self._attach_tags(devices, params, tag_slugs)
        # names are made unique among every in-service candidate, not just this selection, so two
        # platforms' selections never hand out the same name for different devices
        universe = self._universe_names() if narrowed else Counter(d.get("name") for d in devices if d.get("name"))
        if not narrowed:
            self._candidate_names = {d["id"]: d["name"] for d in devices if d.get("name")}
        hosts, skipped = self.materialize(devices, universe)
        self.skipped = skipped
        if skipped and self.strict:
            raise InventoryError(str(skipped[0]))
        self._log_skipped(skipped)
        # re-checked client side: cheap, and robust to how NetBox matches custom field values
        hosts = [h for h in hosts if matches(h, select)]
        for h in hosts:
            self._used[h.inventory_id] = replace(h, tags=list(h.tags), custom=dict(h.custom))
        log.debug("netbox hosts: %d devices, %d hosts in %.2fs", len(devices), len(hosts), time.monotonic() - t0)
        return hosts

    # --- incremental refresh -------------------------------------------------------------------------

    def cursor_now(self) -> str:
        """NetBox's clock now, minus the overlap (see ``CHANGE_OVERLAP_S``), as an ISO 8601 UTC time."""
        return self._cursor_from(self.http.request("GET", "status/").headers.get("Date", ""))

    def _cursor_from(self, date_header: str) -> str:
        try:
            when = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            raise NetBoxUnavailable(f"NetBox sent no usable Date header ({date_header!r})") from None
        return (when.astimezone(UTC) - timedelta(seconds=self.change_overlap_s)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def changes_since(self, selections: dict[str, dict[str, str]], cursor: str = "") -> InventoryDelta:
        """Only what changed since ``cursor`` (a ``cursor_now()`` / earlier delta's cursor).

        Steady state (nothing changed) is two small queries, run in parallel: the ids of devices
        with ``last_updated >= cursor`` (GraphQL, else REST) and the change log
        (``core/object-changes``) for the objects a Host depends on. Changed devices are then read in full (few); a device deleted,
        or one no longer in service / no longer a usable candidate, is in ``gone``. A structural
        change the device rows do not show (a cluster type or tag edited or deleted, a cluster or
        an IP address deleted) falls back to a full pull (``full=True``), as does an empty cursor."""
        if not cursor:
            return super().changes_since(selections)
        try:
            datetime.strptime(cursor, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise InventoryError(f"inventory cursor {cursor!r} is not an ISO 8601 UTC time") from None
        self.ensure_ready()
        t0 = time.monotonic()
        # Two cheap questions, in parallel: which devices have a newer last_updated (GraphQL: ~4x
        # cheaper than the REST device list, whose filter set alone costs ~0.1 s), and what the
        # change log recorded (deletions, and the objects a Host depends on).
        with ThreadPoolExecutor(2) as pool:
            dev_job = pool.submit(self._changed_device_ids, cursor)
            log_job = pool.submit(
                self.http.request,
                "GET",
                "core/object-changes/",
                params={
                    "time_after": cursor,
                    "changed_object_type": list(CHANGE_TYPES),
                    "fields": "id,action,changed_object_type,changed_object_id",
                    "limit": 1000,
                },
            )
            (changed_ids, dev_date), log_resp = dev_job.result(), log_job.result()
        next_cursor = min(self._cursor_from(dev_date), self._cursor_from(log_resp.headers.get("Date", "")))
        deleted: set[int] = set()
        clusters: set[int] = set()
        ips: set[int] = set()
        for ch in self._all_pages(log_resp, "core/object-changes/"):
            kind, oid = ch["changed_object_type"], ch["changed_object_id"]
            action = (ch.get("action") or {}).get("value", "")
            if kind == "dcim.device":
                (deleted if action == "delete" else changed_ids).add(oid)
            elif kind == "virtualization.cluster" and action != "delete":
                clusters.add(oid)
            elif kind == "ipam.ipaddress" and action != "delete":
                ips.add(oid)
            elif action != "create":  # a new tag or cluster type changes no device
                log.info("netbox refresh: %s #%s %sd: full pull", kind, oid, action)
                self._refresh_clusters = None
                return super().changes_since(selections)
        if clusters:
            self._refresh_clusters = None  # re-read: a cluster's name or type may have changed
        ids = sorted(changed_ids | self._devices_of(clusters, ips))
        delta = self._delta_for(selections, [i for i in ids if i not in deleted], deleted, next_cursor)
        log.debug(
            "netbox refresh since %s: %d changed, %d gone in %.3fs",
            cursor,
            len(delta.hosts),
            len(delta.gone),
            time.monotonic() - t0,
        )
        return delta

    def _changed_device_ids(self, cursor: str) -> tuple[set[int], str]:
        """Ids of devices (any role) with ``last_updated >= cursor``, and the answer's Date header.
        GraphQL when NetBox serves it, else the REST list."""
        got = self._graphql_lists({"changed": (f"last_updated: {{gte: {json.dumps(cursor)}}}", "id")})
        if got is not None:
            return {int(r["id"]) for r in got[0]["changed"]}, got[1]
        resp = self.http.request(
            "GET", "dcim/devices/", params={"last_updated__gte": cursor, "fields": "id", "limit": 1000}
        )
        return {r["id"] for r in self._all_pages(resp, "dcim/devices/")}, resp.headers.get("Date", "")

    def _all_pages(self, first, path: str) -> list[dict]:
        """The rows of a listing whose first page is the response ``first`` (more pages: rare)."""
        page = first.json()
        rows = list(page["results"])
        while page.get("next"):
            page = self.http.get(path, {"offset": len(rows), **dict(_query_of(page["next"]))})
            rows.extend(page["results"])
        return rows

    def _devices_of(self, clusters: set[int], ips: set[int]) -> set[int]:
        """Devices in changed clusters or whose primary IP changed."""
        out: set[int] = set()
        for key, values in (("cluster_id", clusters), ("primary_ip4_id", ips), ("primary_ip6_id", ips)):
            vals = sorted(values)
            for i in range(0, len(vals), ID_CHUNK):
                rows = self.http.list_all(
                    "dcim/devices/", {key: vals[i : i + ID_CHUNK], "fields": "id"}, self.page_size
                )
                out |= {r["id"] for r in rows}
        return out

    def _delta_for(
        self, selections: dict[str, dict[str, str]], ids: list[int], deleted: set[int], cursor: str
    ) -> InventoryDelta:
        """The delta for these changed device ids (and the deleted ones)."""
        if self._candidate_names is not None:
            for i in deleted:
                self._candidate_names.pop(i, None)
        read = self._changed_graphql(ids) if ids else ([], {}, Counter())
        devices, states, universe = read if read is not None else self._changed_rest(ids)
        known = self._refresh_clusters or {}
        if any(d.get("cluster") and d["cluster"]["id"] not in known for d in devices):
            self._refresh_clusters = None
            self._refresh_clusters = self._clusters()  # kept until the change log shows a cluster change
        hosts, skipped = self.materialize(devices, universe)
        self._log_skipped(skipped)
        for h in hosts:
            self._used[h.inventory_id] = replace(h, tags=list(h.tags), custom=dict(h.custom))
        gone = {str(i): "deleted from NetBox" for i in sorted(deleted)}
        gone.update({str(s.device_id): s.reason for s in skipped})
        serving = {h.inventory_id for h in hosts}
        for i in ids:  # say why: the status, the tag, or not a candidate any more
            if str(i) in serving or str(i) in gone:
                continue
            if i not in states:
                gone[str(i)] = "deleted from NetBox"
                continue
            status, tags = states[i]
            if UNHEALTHY_TAG in tags:
                gone[str(i)] = f"tagged {UNHEALTHY_TAG}"
            elif status not in self.mapping.statuses:
                gone[str(i)] = f"status {status!r} in NetBox"
            else:
                gone[str(i)] = "no longer a hypervisor host candidate (role, tags or netbox.filters)"
        per_platform = {
            platform: sorted(h.name for h in hosts if matches(h, select)) for platform, select in selections.items()
        }
        return InventoryDelta(full=False, hosts=hosts, platform_hosts=per_platform, gone=gone, cursor=cursor)

    def _changed_graphql(self, ids: list[int]) -> tuple[list[dict], dict[int, tuple[str, set[str]]], Counter] | None:
        """(in-service candidates among ``ids`` in the REST listing's shape, id -> (status, tags)
        of every id that exists, name counts among all candidates for their names): two GraphQL
        queries. None when GraphQL cannot answer."""
        flt = self._graphql_filter()
        if flt is None:
            return None
        id_list = json.dumps([str(i) for i in ids])
        got = self._graphql_lists(
            {
                "devices": (f"{flt}, id: {{in_list: {id_list}}}", GRAPHQL_DEVICE + " tags { slug }"),
                "states": (f"id: {{in_list: {id_list}}}", "id status tags { slug }"),
            }
        )
        data = got[0] if got is not None else None
        if data is None:
            return None
        devices = [
            {
                "id": int(d["id"]),
                "name": d.get("name"),
                "site": d.get("site"),
                "cluster": {"id": int(d["cluster"]["id"])} if d.get("cluster") else None,
                "custom_fields": d.get("custom_field_data") or {},
                "tags": d.get("tags") or [],
            }
            for d in data["devices"]
        ]
        # GraphQL spells a status as its enum name (STATUS_ACTIVE); the mapping uses choice values
        states = {
            int(r["id"]): (str(r.get("status") or "").lower().removeprefix("status_"), {t["slug"] for t in r["tags"]})
            for r in data["states"]
        }
        # Is a changed device's name shared by another candidate? The names of every candidate are
        # read once per inventory object (the worker keeps it) and then follow the changes: a
        # device whose name changes is itself in the changed set.
        if self._candidate_names is None:
            names = self._graphql_lists({"names": (flt, "id name")})
            if names is None:
                return None
            every = names[0]
            self._candidate_names = {int(r["id"]): r["name"] for r in every["names"] if r.get("name")}
        for i in ids:
            self._candidate_names.pop(i, None)
        self._candidate_names.update((d["id"], d["name"]) for d in devices if d.get("name"))
        universe = Counter(self._candidate_names.values())
        return devices, states, universe

    def _changed_rest(self, ids: list[int]) -> tuple[list[dict], dict[int, tuple[str, set[str]]], Counter]:
        """``_changed_graphql`` over REST (``netbox.filters`` are REST filters)."""
        devices: list[dict] = []
        states: dict[int, tuple[str, set[str]]] = {}
        universe: Counter = Counter()
        for i in range(0, len(ids), ID_CHUNK):
            chunk = ids[i : i + ID_CHUNK]
            params = {**self.base_filters(), "id": chunk, "fields": DEVICE_FIELDS + ",tags"}
            devices += self.http.list_all("dcim/devices/", params, self.page_size)
            for r in self.http.list_all("dcim/devices/", {"id": chunk, "fields": "id,status,tags"}, self.page_size):
                states[r["id"]] = ((r.get("status") or {}).get("value", ""), {t["slug"] for t in r.get("tags") or []})
        names = sorted({d["name"] for d in devices if d.get("name")})
        for i in range(0, len(names), ID_CHUNK):
            params = {**self.base_filters(), "name": names[i : i + ID_CHUNK], "fields": "id,name"}
            universe.update(r["name"] for r in self.http.list_all("dcim/devices/", params, self.page_size))
        return devices, states, universe

    def _graphql_lists(self, lists: dict[str, tuple[str, str]]) -> tuple[dict[str, list[dict]], str] | None:
        """Device lists by GraphQL, all in one query per round: alias -> (filters, fields). Every
        list is paged (NetBox caps a GraphQL list at MAX_PAGE_SIZE, silently): a page shorter than
        the longest page NetBox has ever sent is the last one; an empty page always is. Returns the
        rows per alias and the first answer's Date header, or None when GraphQL cannot answer (the
        caller uses REST)."""
        rows: dict[str, list[dict]] = {alias: [] for alias in lists}
        open_ = sorted(lists)
        date = ""
        while open_:
            parts = []
            for alias in open_:
                flt, fields = lists[alias]
                where = f"filters: {{{flt}}}, " if flt else ""
                page = f"pagination: {{offset: {len(rows[alias])}, limit: {self.page_size}}}"
                parts.append(f"{alias}: device_list({where}{page}) {{ {fields} }}")
            try:
                resp = self.http.graphql("{ " + " ".join(parts) + " }")
                body = resp.json() if resp.ok else {}
            except (NetBoxUnavailable, ValueError):
                return None
            data = body.get("data") or {}
            if body.get("errors") or any(data.get(alias) is None for alias in open_):
                log.debug("netbox GraphQL unusable (%s): REST listing", str(body.get("errors"))[:200])
                return None
            date = date or resp.headers.get("Date", "")
            self._graphql_cap = max(self._graphql_cap, *(len(data[alias]) for alias in open_))
            still = []
            for alias in open_:
                got = data[alias]
                rows[alias] += got
                if got and (len(got) == self.page_size or len(got) >= self._graphql_cap):
                    still.append(alias)  # maybe more: ask for the next page
            open_ = still
        return rows, date

    def _graphql_filter(self) -> str | None:
        """The candidate filter (roles, statuses, the mapping's tags, not unhealthy) in NetBox's
        GraphQL syntax, or None when it cannot be said there (``netbox.filters`` are REST filters;
        a status that is no plain choice value)."""
        if self.mapping.filters or not all(st.replace("_", "").isalnum() for st in self.mapping.statuses):
            return None
        parts = [
            f"status: {{in_list: [{', '.join(f'STATUS_{st.upper()}' for st in self.mapping.statuses)}]}}",
            f"NOT: {{tags: {{slug: {{exact: {json.dumps(UNHEALTHY_TAG)}}}}}}}",
        ]
        if self.mapping.roles:
            parts.append(f"role: {{slug: {{in_list: {json.dumps(self.existing_roles())}}}}}")
        nested = ""
        for tag in reversed(self.mapping.tags):  # every tag: AND-nested (one key per level)
            nested = f"tags: {{slug: {{exact: {json.dumps(tag)}}}}}" + (f", AND: {{{nested}}}" if nested else "")
        if nested:
            parts.append(f"AND: {{{nested}}}")
        return ", ".join(parts)

    def _graphql_candidates(self, tag_slugs: list[str]) -> list[dict] | None:
        """Every in-service candidate in the REST listing's shape (DEVICE_FIELDS + tags), from one
        GraphQL query: measured ~4x cheaper than the REST listing on 5,000 devices (no REST
        serializer per row). Tags in use come as one id-only alias per tag in the same query (nested
        tags per device cost 5x more). None when GraphQL cannot answer: the caller uses REST."""
        flt = self._graphql_filter()
        if flt is None or len(tag_slugs) > MAX_TAG_QUERIES:
            return None
        # flt holds ``tags`` only inside NOT/AND, so a top-level ``tags`` key may narrow it per alias
        lists = {"devices": (flt, GRAPHQL_DEVICE)}
        for i, slug in enumerate(tag_slugs):
            lists[f"t{i}"] = (f"{flt}, tags: {{slug: {{exact: {json.dumps(slug)}}}}}", "id")
        got = self._graphql_lists(lists)
        if got is None:
            return None
        data = got[0]
        tags_of: dict[int, list[dict]] = {}
        for i, slug in enumerate(tag_slugs):
            for row in data[f"t{i}"]:
                tags_of.setdefault(int(row["id"]), []).append({"slug": slug})
        return [
            {
                "id": int(d["id"]),
                "name": d.get("name"),
                "site": d.get("site"),
                "cluster": {"id": int(d["cluster"]["id"])} if d.get("cluster") else None,
                "custom_fields": d.get("custom_field_data") or {},
                "tags": tags_of.get(int(d["id"]), []),
            }
            for d in data["devices"]
        ]

    def _log_skipped(self, skipped: list[SkippedDevice]) -> None:
        """One warning per reason (with its devices), once per inventory: one hosts() call per
        platform must not repeat the same story."""
        groups: dict[tuple[str, str], list[str]] = {}
        for s in skipped:
            if (s.device_id, s.reason) not in self._warned:
                self._warned.add((s.device_id, s.reason))
                groups.setdefault((s.reason, s.fix), []).append(f"{s.label} (#{s.device_id})")
        for (reason, fix), labels in groups.items():
            log.warning("skipping %d NetBox device(s) %s: %s; fix: %s", len(labels), ", ".join(labels), reason, fix)

    def _universe_names(self) -> Counter:
        params = {**self.base_filters(), "fields": "id,name", "name__empty": "false"}
        return Counter(r["name"] for r in self.http.list_all("dcim/devices/", params, self.page_size))

    def _device_tags(self) -> list[str]:
        rows = self.http.list_all("extras/tags/", {"content_type": "dcim.device", "fields": "id,slug"})
        return [r["slug"] for r in rows]

    def _attach_tags(self, devices: list[dict], params: dict[str, Any], tag_slugs: list[str]) -> None:
        by_id = {d["id"]: d for d in devices}
        for d in devices:
            d["tags"] = []
        base = {k: v for k, v in params.items() if k != "tag"}
        for slug in tag_slugs:
            for row in self.http.list_all("dcim/devices/", {**base, "tag": slug, "fields": "id"}, self.page_size):
                if row["id"] in by_id:
                    by_id[row["id"]]["tags"].append({"slug": slug})

    def _attach_details(self, devices: list[dict]) -> None:
        """Primary IPs, device type and platform, fetched only for the devices that need them."""
        need = [
            d
            for d in devices
            if not d.get("name")
            or not d.get("cluster")
            or not scheme_of(str((d.get("custom_fields") or {}).get(CF_ENDPOINT) or ""))
        ]
        need = [d for d in need if not {"primary_ip", "device_type"} <= set(d)]
        memo = self._memo.setdefault("details", {}) if self.memoize else {}
        for d in need:
            if d["id"] in memo:
                d.update(memo[d["id"]])
        by_id = {d["id"]: d for d in need if d["id"] not in memo}
        ids = list(by_id)
        for i in range(0, len(ids), ID_CHUNK):
            rows = self.http.list_all(
                "dcim/devices/", {"id": ids[i : i + ID_CHUNK], "fields": DETAIL_FIELDS}, self.page_size
            )
            for row in rows:
                details = {k: v for k, v in row.items() if k != "id"}
                by_id[row["id"]].update(details)
                if self.memoize:
                    memo[row["id"]] = details

    def _clusters(self) -> dict[int, tuple[str, str, str]]:
        """cluster id -> (type name, type slug, cluster name). One small listing, not one per device."""
        if self.memoize and "clusters" in self._memo:
            return self._memo["clusters"]
        if self._refresh_clusters is not None:
            return self._refresh_clusters
        rows = self.http.list_all("virtualization/clusters/", {"fields": "id,name,type"}, self.page_size)
        out = {}
        for r in rows:
            t = r.get("type") or {}
            out[r["id"]] = (t.get("name", "") or t.get("slug", ""), t.get("slug", ""), r.get("name", ""))
        if self.memoize:
            self._memo["clusters"] = out
        return out

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
        if given:  # a bare address, maybe with "user@": the user goes where the template has one
            split = split_mgmt_endpoint(given)
            if split is None:
                return (
                    "",
                    f"{CF_ENDPOINT} is neither a URI nor a host name or address",
                    f"set {CF_ENDPOINT} to a URI (qemu+ssh://root@host/system) or a host name, optionally user@host",
                )
            user, given = split
            template = with_user(template, user)
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

    def survey(self) -> tuple[list[Host], list[SkippedDevice], list[dict]]:
        """Every candidate, whatever its status: (hosts in service, skipped, raw devices). For
        ``netbox check``; not part of campaign runs."""
        if self.mapping.roles and not self.existing_roles():
            return [], [], []
        params = {**self.base_filters(with_status=False), "fields": DEVICE_FIELDS + ",status,tags"}
        devices = self.http.list_all("dcim/devices/", params, self.page_size)
        statuses = set(self.mapping.statuses)
        in_service = [
            d
            for d in devices
            if (d.get("status") or {}).get("value") in statuses
            and UNHEALTHY_TAG not in {t["slug"] for t in d.get("tags") or []}
        ]
        universe = Counter(d.get("name") for d in in_service if d.get("name"))
        self._attach_details(devices)
        named = unique_names(devices, universe)
        hosts, skipped = self.materialize(in_service, universe)
        serving = {d["id"] for d in in_service}
        for d in devices:
            if d["id"] in serving:
                continue
            status = (d.get("status") or {}).get("value")
            label = named[d["id"]]
            if status not in statuses:
                skipped.append(
                    SkippedDevice(
                        d["id"],
                        label,
                        f"status {status!r}; hosts must be {' or '.join(sorted(statuses))}",
                        "set the device status, or list the status in netbox.statuses",
                    )
                )
            else:
                skipped.append(
                    SkippedDevice(
                        d["id"],
                        label,
                        f"tagged {UNHEALTHY_TAG}: taken out of service after failed health checks",
                        "repair it, then `crossvisor inventory clear-health SPEC <device>`",
                    )
                )
        return hosts, skipped, devices

    def no_host_reason(self, select: dict[str, str]) -> str:
        """Why ``hosts(select)`` is empty, in operator words (a survey of every candidate)."""
        roles_exist = bool(self.existing_roles()) or not self.mapping.roles
        hosts, skipped, devices = self.survey() if roles_exist else ([], [], [])
        kind = select.get("kind", "")
        return why_no_host(self.mapping.roles, roles_exist, len(devices), hosts, skipped, kind, select)

    def snapshot(self) -> list[Host]:
        """Copies of every host this inventory handed out (by name), for the campaign record."""
        hosts = sorted(self._used.values(), key=lambda h: h.name)
        return [replace(h, tags=list(h.tags), custom=dict(h.custom)) for h in hosts]

    def label(self, key: str) -> str:
        return self._labels.get(key, key)

    # --- device access -----------------------------------------------------------------------------

    def resolve(self, host: str) -> str:
        """A host key from a key (device id) or, for operators, a NetBox device name."""
        if str(host).isdigit():
            return str(host)
        for key, name in self._labels.items():
            if name == host:
                return key
        params = {**self.base_filters(with_status=False), "name": host, "fields": "id,name"}
        rows = (
            self.http.get("dcim/devices/", params)["results"] if self.existing_roles() or not self.mapping.roles else []
        )
        if len(rows) == 1:
            self._labels[str(rows[0]["id"])] = host
            return str(rows[0]["id"])
        if not rows:
            raise InventoryError(f"host {host!r}: no hypervisor host device with that name or id in NetBox")
        ids = ", ".join(f"#{r['id']}" for r in rows)
        raise InventoryError(f"host {host!r}: {len(rows)} NetBox devices have that name ({ids}); use the device id")

    def _device_id(self, host: str) -> int:
        return int(self.resolve(host))

    def _read(self, dev_id: int) -> tuple[dict, str]:
        try:
            resp = self.http.request("GET", f"dcim/devices/{dev_id}/")
        except InventoryError as e:
            if "HTTP 404" in str(e):
                raise InventoryError(f"host {dev_id}: no NetBox device #{dev_id}") from None
            raise
        return resp.json(), resp.headers.get("ETag", "")

    def _cas_update(self, host: str, change: Any) -> Any:
        """Compare-and-set loop: ``change(device) -> (patch | None, result)``. A ``None`` patch
        means nothing to write. Retries when another writer got in between (HTTP 412)."""
        dev_id = self._device_id(host)
        for attempt in range(CAS_ATTEMPTS):
            dev, etag = self._read(dev_id)
            patch, result = change(dev)
            if patch is None:
                return result
            if not etag:
                raise InventoryError(f"NetBox at {self.url} sent no ETag: cannot lease safely")
            try:
                resp = self.http.request("PATCH", f"dcim/devices/{dev_id}/", json=patch, headers={"If-Match": etag})
            except InventoryError as e:
                if "does not exist" in str(e) or "not one of the available" in str(e):
                    raise InventoryError(f"{e}; run `crossvisor netbox init` to create what crossvisor needs") from None
                raise
            if resp.status_code == 412:
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                continue
            if not resp.ok:
                raise InventoryError(f"NetBox at {self.url}: updating {host!r} failed with HTTP {resp.status_code}")
            return result
        raise NetBoxUnavailable(f"NetBox at {self.url}: {host!r} kept changing under us ({CAS_ATTEMPTS} attempts)")

    def _journal(self, dev_id: int, kind: str, text: str) -> None:
        self.http.request(
            "POST",
            "extras/journal-entries/",
            json={
                "assigned_object_type": "dcim.device",
                "assigned_object_id": dev_id,
                "kind": kind,
                "comments": text,
            },
        )

    # --- leases (by host key) ----------------------------------------------------------------------

    def acquire_lease(self, host: str, owner: str, note: str = "") -> bool:
        def change(dev: dict) -> tuple[dict | None, tuple[bool, bool]]:
            cf = dev.get("custom_fields") or {}
            owners = _owners(cf.get(CF_LEASE))
            if owner in owners:
                return None, (True, False)
            if len(owners) >= int(cf.get(CF_SLOTS) or 1):
                return None, (False, False)
            return {"custom_fields": {CF_LEASE: owners + [owner]}}, (True, True)

        ok, written = self._cas_update(host, change)
        if written:
            self._journal(
                self._device_id(host),
                "info",
                f"crossvisor lease acquired by {owner}" + (f": {note}" if note else ""),
            )
        return ok

    def release_lease(self, host: str, owner: str) -> None:
        def change(dev: dict) -> tuple[dict | None, bool]:
            owners = _owners((dev.get("custom_fields") or {}).get(CF_LEASE))
            if owner not in owners:
                return None, False
            rest = [o for o in owners if o != owner]
            return {"custom_fields": {CF_LEASE: rest or None}}, True

        if self._cas_update(host, change):
            self._journal(self._device_id(host), "info", f"crossvisor lease released by {owner}")

    def leases(self) -> dict[str, str]:
        """host key (device id) -> owners, comma-separated when a host has several slots taken.
        ``label(key)`` gives the host's display name afterwards."""
        if self.mapping.roles and not self.existing_roles():
            return {}
        rows = self.http.list_all(
            "dcim/devices/",
            {**self.base_filters(with_status=False), "fields": "id,name,custom_fields"},
            self.page_size,
        )
        out = {}
        leased = []
        for r in rows:
            if owners := _owners((r.get("custom_fields") or {}).get(CF_LEASE)):
                out[str(r["id"])] = ",".join(owners)
                leased.append(r)
        if leased:
            universe = Counter(r.get("name") for r in rows if r.get("name"))
            for dev_id, name in unique_names(self._with_details(leased), universe).items():
                self._labels[str(dev_id)] = name
        return out

    def _with_details(self, devices: list[dict]) -> list[dict]:
        unnamed = [d for d in devices if not d.get("name")]
        if unnamed:
            self._attach_details(unnamed)
        return devices

    # --- health (by host key) ----------------------------------------------------------------------

    def report_health(self, host: str, ok: bool, detail: str = "") -> None:
        """Count consecutive failures in NetBox (shared by every worker). At the threshold the
        device becomes ``failed`` + tagged ``crossvisor-unhealthy`` (so ``hosts()`` skips it)
        until ``clear_health``; a later success only resets the counter."""
        threshold = self.failure_threshold

        def change(dev: dict) -> tuple[dict | None, bool]:
            failures = int((dev.get("custom_fields") or {}).get(CF_FAILURES) or 0)
            if ok:
                return ({"custom_fields": {CF_FAILURES: 0}} if failures else None), False
            failures += 1
            patch: dict[str, Any] = {"custom_fields": {CF_FAILURES: failures}}
            tags = [{"slug": t["slug"]} for t in dev.get("tags") or []]
            marked = any(t["slug"] == UNHEALTHY_TAG for t in tags)
            mark = failures >= threshold and not marked
            if mark:
                patch["status"] = "failed"
                patch["tags"] = tags + [{"slug": UNHEALTHY_TAG}]
            return patch, mark

        if self._cas_update(host, change):
            log.warning("host %s marked unhealthy after %d failed checks", self.label(host), threshold)
            self._journal(
                self._device_id(host),
                "danger",
                f"crossvisor: {threshold} consecutive health check failures, marked failed"
                + (f"; last: {detail}" if detail else ""),
            )

    def is_unhealthy(self, host: str) -> bool:
        dev, _ = self._read(self._device_id(host))
        return any(t["slug"] == UNHEALTHY_TAG for t in dev.get("tags") or [])

    def clear_health(self, host: str) -> None:
        """Return a host marked unhealthy to service (status active, tag removed, counter 0)."""

        def change(dev: dict) -> tuple[dict | None, bool]:
            tags = [{"slug": t["slug"]} for t in dev.get("tags") or []]
            kept = [t for t in tags if t["slug"] != UNHEALTHY_TAG]
            failures = int((dev.get("custom_fields") or {}).get(CF_FAILURES) or 0)
            if kept == tags and not failures and dev["status"]["value"] != "failed":
                return None, False
            return {
                "status": "active",
                "tags": kept,
                "custom_fields": {CF_FAILURES: 0},
            }, True

        if self._cas_update(host, change):
            self._journal(self._device_id(host), "success", "crossvisor: health cleared")
