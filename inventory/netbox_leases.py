"""Leases and health kept on NetBox devices (``NetBoxInventory``'s concern of who holds a host
and whether it is in service). Leases use NetBox's optimistic concurrency: read the device
(ETag), PATCH ``crossvisor_lease`` with ``If-Match``; of two racing writers exactly one wins,
the other gets HTTP 412, re-reads, and sees the host full."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from typing import Any

from inventory.netbox_devices import unique_names
from inventory.netbox_http import (
    NetBoxUnavailable,
)
from inventory.netbox_schema import (
    CF_FAILURES,
    CF_LEASE,
    CF_SLOTS,
    UNHEALTHY_TAG,
)
from inventory.source import InventoryError

log = logging.getLogger("crossvisor.inventory.netbox")

CAS_ATTEMPTS = 20


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


class LeasesAndHealth:
    """Mixed into ``NetBoxInventory`` (``netbox_source.py``): its methods use the inventory's ``http``,
    ``mapping`` and settings."""

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
