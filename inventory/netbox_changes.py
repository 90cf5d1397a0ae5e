"""Following NetBox's changes (``NetBoxInventory``'s change feed): ``changes_since(cursor)``, the
campaign's incremental refresh: devices with a newer ``last_updated`` plus the change log
(deletions, cluster and IP changes), then only the changed devices are read."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from domain.messages import InventoryDelta
from inventory.netbox_http import (
    NetBoxUnavailable,
)
from inventory.netbox_reading import DEVICE_FIELDS, GRAPHQL_DEVICE, ID_CHUNK
from inventory.netbox_schema import (
    UNHEALTHY_TAG,
)
from inventory.selection import matches
from inventory.source import InventoryError

log = logging.getLogger("crossvisor.inventory.netbox")

# Incremental refresh (changes_since). The cursor is NetBox's own clock (its HTTP Date header, 1 s
# resolution) minus this overlap, so a change committed while a pull ran, or stamped by a
# transaction that began before it, is read again next time: re-reading is harmless, missing is not.
CHANGE_OVERLAP_S = 10


# What NetBox's change log is asked about besides devices' last_updated: deleted devices (a
# deletion leaves no row to carry a timestamp), and objects a Host is derived from that change
# without touching the device row (its cluster, the cluster's type, tags, the primary IP).
CHANGE_TYPES = ("dcim.device", "virtualization.cluster", "virtualization.clustertype", "extras.tag", "ipam.ipaddress")


class ChangeFeed:
    """Mixed into ``NetBoxInventory`` (``netbox_source.py``): its methods use the inventory's ``http``,
    ``mapping`` and settings."""

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
