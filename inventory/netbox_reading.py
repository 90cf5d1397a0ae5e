"""Reading NetBox (``NetBoxInventory``'s reading concern): which devices are candidates, the
one GraphQL query (REST with ``?fields=`` otherwise) that lists them, the details and tags only
some need, and the survey ``crossvisor netbox check`` prints."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from domain.model import HYPERVISOR_KINDS, Host
from inventory.netbox_devices import SkippedDevice, unique_names, why_no_host
from inventory.netbox_http import (
    NetBoxUnavailable,
)
from inventory.netbox_mapping import (
    scheme_of,
)
from inventory.netbox_schema import (
    CF_ENDPOINT,
    CF_VERSION,
    UNHEALTHY_TAG,
)
from inventory.selection import SELECT_KEYS, matches
from inventory.source import InventoryError

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


ID_CHUNK = 100  # ids per ?id= listing: keeps URLs short


def _query_of(url: str) -> list[tuple[str, str]]:
    """A ``next`` link's query parameters, without its offset (the caller sets it)."""
    from urllib.parse import parse_qsl, urlsplit

    return [(k, v) for k, v in parse_qsl(urlsplit(url).query) if k != "offset"]


class DeviceReading:
    """Mixed into ``NetBoxInventory`` (``netbox_source.py``): its methods use the inventory's ``http``,
    ``mapping`` and settings."""

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

    def _all_pages(self, first, path: str) -> list[dict]:
        """The rows of a listing whose first page is the response ``first`` (more pages: rare)."""
        page = first.json()
        rows = list(page["results"])
        while page.get("next"):
            page = self.http.get(path, {"offset": len(rows), **dict(_query_of(page["next"]))})
            rows.extend(page["results"])
        return rows

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

    def _with_details(self, devices: list[dict]) -> list[dict]:
        unnamed = [d for d in devices if not d.get("name")]
        if unnamed:
            self._attach_details(unnamed)
        return devices
