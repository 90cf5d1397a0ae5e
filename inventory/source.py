"""The interface every inventory source implements (file, NetBox).

Identity contract:
- ``Host.inventory_id`` is the host's stable KEY: the NetBox device id as a string, the host
  name in a file inventory. Every lease and health method takes that key (``host`` below), and
  ``leases()`` returns keys. Callers pass ``host.inventory_id`` (``or host.name`` for hosts built
  before keys existed).
- ``Host.name`` is unique among the hosts one source yields (NetBox: the device name,
  ``<device-type-slug>-<id>`` for an unnamed device, ``<name>-<id>`` for a shared name); it is
  what people read and what a campaign keys its snapshot by, never what leases are stored under.
"""

from __future__ import annotations

import abc

from crossvisor.core.errors import InventoryError
from domain.messages import InventoryDelta
from domain.model import Host

__all__ = ["InventoryError", "InventorySource"]


class InventorySource(abc.ABC):
    @abc.abstractmethod
    def hosts(self, select: dict[str, str] | None = None) -> list[Host]:
        """Active hosts matching ``select`` (keys: site, tag, kind, version, cf_<name>).

        An unknown selection key is an ``InventoryError``, never "all hosts". Names are unique.
        """

    @abc.abstractmethod
    def acquire_lease(self, host: str, owner: str, note: str = "") -> bool:
        """Mark the host with key ``host`` as taken by ``owner`` (``<campaign>/<cell>``). Succeeds
        when ``owner`` already holds it (idempotent) or fewer than ``Host.slots`` owners hold it;
        False otherwise. Two campaigns can never push a host past its slots (no double booking)."""

    @abc.abstractmethod
    def release_lease(self, host: str, owner: str) -> None:
        """Release ``owner``'s lease on the host with key ``host``; releasing a lease not held is not an error."""

    @abc.abstractmethod
    def leases(self) -> dict[str, str]:
        """host key -> owners (comma-separated), for every held lease."""

    @abc.abstractmethod
    def report_health(self, host: str, ok: bool, detail: str = "") -> None:
        """Record a health check outcome for the host with key ``host``; repeated failures mark it unhealthy."""

    @abc.abstractmethod
    def clear_health(self, host: str) -> None:
        """Return the host with key ``host``, marked unhealthy, to service (an operator's decision)."""

    def is_unhealthy(self, host: str) -> bool:
        """Whether health reporting has taken the host with key ``host`` out of service
        (default: it left ``hosts()``)."""
        return host not in {h.inventory_id or h.name for h in self.hosts()}

    def no_host_reason(self, select: dict[str, str]) -> str:
        """Why ``hosts(select)`` returned no host, for the operator (called only when it did)."""
        return f"no host in service matches {select}"

    def cursor_now(self) -> str:
        """Where an incremental refresh started now would begin ("" = this source has none: every
        refresh is a full pull). Taken *before* a pull, so nothing changed during it is missed."""
        return ""

    def changes_since(self, selections: dict[str, dict[str, str]], cursor: str = "") -> InventoryDelta:
        """What changed since ``cursor`` for these platform selections (platform -> selection).

        Default (and for an empty cursor): a full pull, ``full=True`` (a file inventory re-reads its
        file). Sources with a change feed (NetBox) answer with only the changed hosts."""
        next_cursor = self.cursor_now()
        hosts: dict[str, Host] = {}
        per_platform: dict[str, list[str]] = {}
        for platform, select in selections.items():
            found = self.hosts(select)
            per_platform[platform] = sorted(h.name for h in found)
            hosts.update((h.name, h) for h in found)
        return InventoryDelta(
            full=True,
            hosts=sorted(hosts.values(), key=lambda h: h.name),
            platform_hosts=per_platform,
            cursor=next_cursor,
        )

    def label(self, key: str) -> str:
        """A host's display name for a key (default: the key itself)."""
        return key

    def resolve(self, host: str) -> str:
        """The key for what an operator typed (a key or a host name); default: as typed."""
        return host
