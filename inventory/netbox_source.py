"""Inventory from a real NetBox: hypervisor hosts, leases and health, stored in NetBox itself.

``NetBoxInventory`` is one ``InventorySource`` made of one module per concern: reading devices
(``netbox_reading``), following the change feed (``netbox_changes``), mapping devices to hosts
(``netbox_devices``), leases and health (``netbox_leases``); this module holds the connection, the
settings and the check that NetBox is set up for crossvisor.

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

from typing import Any

from domain.model import Host
from inventory.netbox_changes import CHANGE_OVERLAP_S, ChangeFeed
from inventory.netbox_devices import DeviceMapping, SkippedDevice, display_name, unique_names, why_no_host
from inventory.netbox_http import (
    NetBoxAuthError,
    NetBoxHttp,
    NetBoxUnavailable,
    resolve_token,
)
from inventory.netbox_leases import LeasesAndHealth
from inventory.netbox_mapping import (
    NetBoxMapping,
)
from inventory.netbox_reading import ID_CHUNK, DeviceReading
from inventory.netbox_schema import (
    CUSTOM_FIELDS,
    UNHEALTHY_TAG,
    ensure_schema,
    init_schema,
)
from inventory.source import InventoryError, InventorySource

__all__ = [
    "ID_CHUNK",
    "NetBoxAuthError",
    "NetBoxInventory",
    "NetBoxUnavailable",
    "SkippedDevice",
    "display_name",
    "ensure_schema",
    "init_schema",
    "unique_names",
    "why_no_host",
]


class NetBoxInventory(DeviceReading, ChangeFeed, DeviceMapping, LeasesAndHealth, InventorySource):
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
