"""Inventory from a real NetBox: hypervisor hosts, leases and health, stored in NetBox itself.

Mapping (device -> ``Host``): devices with role ``role`` (default ``hypervisor-host``), status
``active`` and without the ``crossvisor-unhealthy`` tag. ``kind`` comes from the device's
virtualization cluster type, ``driver`` from the kind, the rest from custom fields (see
``netbox_schema``), ``endpoint`` from ``mgmt_endpoint`` or else the primary IP.

Malformed records (no cluster / unknown cluster type / no endpoint): skipped with a warning and
listed in ``problems`` so one bad device does not hide the rest; ``strict=True`` raises
``InventoryError`` naming the device and field instead.

Leases use NetBox's optimistic concurrency: read the device (ETag), PATCH ``crossvisor_lease``
with ``If-Match``; NetBox re-checks the ETag under a row lock, so of two racing writers exactly
one succeeds and the other gets HTTP 412, re-reads, and sees the host full.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import replace
from typing import Any

from domain.model import HYPERVISOR_KINDS, Host
from inventory.netbox_http import (
    NetBoxAuthError,
    NetBoxHttp,
    NetBoxUnavailable,
    resolve_token,
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
    DEFAULT_ROLE,
    INTERNAL_FIELDS,
    UNHEALTHY_TAG,
    ensure_schema,
    kind_of_cluster_type,
)
from inventory.selection import matches
from inventory.source import InventoryError, InventorySource

__all__ = [
    "NetBoxAuthError",
    "NetBoxInventory",
    "NetBoxUnavailable",
    "ensure_schema",
]

log = logging.getLogger("crossvisor.inventory.netbox")

from inventory.selection import SELECT_KEYS  # noqa: E402

# Measured on NetBox 4.7 (5,000 devices): server-side serialization dominates a pull, and the
# nested ``tags`` (~1.2 s), ``status`` choice labels and ``primary_ip`` are its dearest parts.
# So the listing asks only for what every host needs; tags come from one id-only listing per
# tag in use on devices (few, cheap), primary IPs only for devices lacking ``mgmt_endpoint``,
# and status is known from the ``status=active`` filter.
DEVICE_FIELDS = "id,name,site,custom_fields,cluster"
# Above this many device tags, per-tag listings cost more than serializing nested tags.
MAX_TAG_QUERIES = 12
CAS_ATTEMPTS = 20


def driver_for(kind: str) -> str:
    return "vsphere" if kind == "vsphere" else "libvirt"


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


class NetBoxInventory(InventorySource):
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_env: str = "NETBOX_TOKEN",
        token_file: str | None = None,
        role: str = DEFAULT_ROLE,
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
        self.role = role
        self.failure_threshold = failure_threshold
        self.page_size = page_size
        self.strict = strict
        self.problems: list[str] = []  # malformed records skipped by the last hosts()
        self._used: dict[str, Host] = {}  # every host handed out, for snapshot()
        self._ids: dict[str, int] = {}  # host name -> device id
        self._cf_names: set[str] | None = None
        self._known: dict[tuple[str, str], bool] = {}  # (endpoint, slug) seen to exist

    @classmethod
    def from_env(cls, **kwargs: Any) -> NetBoxInventory:
        """``NETBOX_URL`` plus ``NETBOX_TOKEN``/``NETBOX_TOKEN_FILE`` (as written by netbox-up.sh)."""
        import os

        url = os.environ.get("NETBOX_URL", "")
        if not url:
            raise InventoryError("NETBOX_URL is not set")
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        return f"NetBoxInventory(url={self.url!r}, role={self.role!r}, token='***')"

    def close(self) -> None:
        self.http.close()

    # --- selection ---------------------------------------------------------------------------

    def _custom_field_names(self) -> set[str]:
        if self._cf_names is None:
            rows = self.http.list_all(
                "extras/custom-fields/",
                {"object_type": "dcim.device", "fields": "id,name"},
            )
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

    def _server_filters(self, select: dict[str, str]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "role": self.role,
            "status": "active",
            "fields": DEVICE_FIELDS,
        }
        # Excluding a tag NetBox does not have is a 400: only filter once ensure_schema made it.
        if self._exists("extras/tags/", UNHEALTHY_TAG):
            params["tag__n"] = UNHEALTHY_TAG
        for key, value in select.items():
            value = str(value)
            if key == "site":
                self._check_exists("dcim/sites/", "site", value)
                params["site"] = value
            elif key == "tag":
                self._check_exists("extras/tags/", "tag", value)
                params["tag"] = value
            elif key == "kind":
                if value not in HYPERVISOR_KINDS:
                    raise InventoryError(f"selection kind={value!r}: expected one of {', '.join(HYPERVISOR_KINDS)}")
            elif key == "version":
                params[f"cf_{CF_VERSION}"] = value
            elif key.startswith("cf_") and len(key) > 3:
                if key[3:] not in self._custom_field_names():
                    raise InventoryError(f"selection {key}: NetBox has no device custom field {key[3:]!r}")
                params[key] = value
            else:
                raise InventoryError(f"unknown selection key {key!r}; allowed: {', '.join(SELECT_KEYS)}, cf_<name>")
        return params

    # --- hosts -------------------------------------------------------------------------------

    def hosts(self, select: dict[str, str] | None = None) -> list[Host]:
        select = dict(select or {})
        params = self._server_filters(select)
        t0 = time.monotonic()
        tag_slugs = self._device_tags()
        if len(tag_slugs) > MAX_TAG_QUERIES:
            params["fields"] += ",tags"
        devices = self.http.list_all("dcim/devices/", params, self.page_size)
        if len(tag_slugs) <= MAX_TAG_QUERIES:
            self._attach_tags(devices, params, tag_slugs)
        kinds = self._cluster_kinds({d["cluster"]["id"] for d in devices if d.get("cluster")})
        self._attach_primary_ips(devices)
        hosts: list[Host] = []
        self.problems = []
        for dev in devices:
            try:
                host = self._to_host(dev, kinds)
            except InventoryError as exc:
                if self.strict:
                    raise
                self.problems.append(str(exc))
                log.warning("skipping malformed NetBox device: %s", exc)
                continue
            # re-checked client side: cheap, and robust to how NetBox matches custom field values
            if matches(host, select):
                hosts.append(host)
        for h in hosts:
            self._used[h.name] = replace(h, tags=list(h.tags), custom=dict(h.custom))
        log.debug("netbox hosts: %d devices, %d hosts in %.2fs", len(devices), len(hosts), time.monotonic() - t0)
        return hosts

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

    def _attach_primary_ips(self, devices: list[dict]) -> None:
        """Fetch primary IPs only for the devices that need one as their endpoint."""
        need = [d for d in devices if not (d.get("custom_fields") or {}).get(CF_ENDPOINT)]
        by_id = {d["id"]: d for d in need}
        ids = list(by_id)
        for i in range(0, len(ids), 100):  # keep URLs short
            chunk = ids[i : i + 100]
            rows = self.http.list_all("dcim/devices/", {"id": chunk, "fields": "id,primary_ip"}, self.page_size)
            for row in rows:
                by_id[row["id"]]["primary_ip"] = row.get("primary_ip")

    def _cluster_kinds(self, cluster_ids: set[int]) -> dict[int, tuple[str, str | None]]:
        """cluster id -> (cluster type name, kind or None). One small listing, not one per device."""
        if not cluster_ids:
            return {}
        rows = self.http.list_all("virtualization/clusters/", {"fields": "id,type"}, self.page_size)
        out: dict[int, tuple[str, str | None]] = {}
        for r in rows:
            t = r.get("type") or {}
            name, slug = t.get("name", ""), t.get("slug", "")
            out[r["id"]] = (name or slug, kind_of_cluster_type(name, slug))
        return out

    def _to_host(self, dev: dict, kinds: dict[int, tuple[str, str | None]]) -> Host:
        name = dev.get("name") or f"device-{dev['id']}"
        cf = dev.get("custom_fields") or {}
        cluster = dev.get("cluster")
        if not cluster:
            raise InventoryError(f"device {name!r}: field 'cluster' is empty (kind unknown)")
        type_name, kind = kinds.get(cluster["id"], ("?", None))
        if kind is None:
            raise InventoryError(f"device {name!r}: field 'cluster.type' {type_name!r} is not a known hypervisor type")
        endpoint = cf.get(CF_ENDPOINT) or ""
        if not endpoint and dev.get("primary_ip"):
            endpoint = dev["primary_ip"]["address"].split("/")[0]
        if not endpoint:
            raise InventoryError(f"device {name!r}: field '{CF_ENDPOINT}' is empty and there is no primary IP")
        self._ids[name] = dev["id"]
        return Host(
            name=name,
            kind=kind,
            driver=driver_for(kind),
            endpoint=endpoint,
            site=(dev.get("site") or {}).get("slug", ""),
            version=str(cf.get(CF_VERSION) or ""),
            tags=sorted(t["slug"] for t in dev.get("tags") or []),
            cpus=int(cf.get(CF_CPUS) or 0),
            memory_mib=int(cf.get(CF_MEMORY) or 0),
            slots=int(cf.get(CF_SLOTS) or 1),
            credentials_ref=str(cf.get(CF_CREDENTIALS) or ""),
            status=(dev.get("status") or {}).get("value", "active"),  # hosts() filters status=active
            custom={
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in cf.items()
                if v is not None and k not in INTERNAL_FIELDS
            },
            inventory_id=str(dev["id"]),
        )

    def snapshot(self) -> list[Host]:
        """Copies of every host this inventory handed out (by name), for the campaign record."""
        return [replace(h, tags=list(h.tags), custom=dict(h.custom)) for _, h in sorted(self._used.items())]

    # --- device access -----------------------------------------------------------------------

    def _device_id(self, host: str) -> int:
        if host not in self._ids:
            rows = self.http.get("dcim/devices/", {"name": host, "role": self.role, "fields": "id,name"})["results"]
            if len(rows) != 1:
                raise InventoryError(f"host {host!r}: {len(rows)} NetBox devices with role {self.role!r}")
            self._ids[host] = rows[0]["id"]
        return self._ids[host]

    def _read(self, dev_id: int) -> tuple[dict, str]:
        resp = self.http.request("GET", f"dcim/devices/{dev_id}/")
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
            resp = self.http.request(
                "PATCH",
                f"dcim/devices/{dev_id}/",
                json=patch,
                headers={"If-Match": etag},
            )
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

    # --- leases ------------------------------------------------------------------------------

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
        """host -> owner; a host with several slots taken lists its owners comma-separated."""
        rows = self.http.list_all(
            "dcim/devices/",
            {"role": self.role, "fields": "id,name,custom_fields"},
            self.page_size,
        )
        out = {}
        for r in rows:
            if owners := _owners((r.get("custom_fields") or {}).get(CF_LEASE)):
                out[r["name"]] = ",".join(owners)
        return out

    # --- health ------------------------------------------------------------------------------

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
            log.warning("host %s marked unhealthy after %d failed checks", host, threshold)
            self._journal(
                self._device_id(host),
                "danger",
                f"crossvisor: {threshold} consecutive health check failures, marked failed"
                + (f"; last: {detail}" if detail else ""),
            )

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
