"""The interface every inventory source implements (file, NetBox)."""

from __future__ import annotations

import abc

from crossvisor.core.errors import InventoryError
from domain.model import Host

__all__ = ["InventoryError", "InventorySource"]


class InventorySource(abc.ABC):
    @abc.abstractmethod
    def hosts(self, select: dict[str, str] | None = None) -> list[Host]:
        """Active hosts matching ``select`` (keys: site, tag, kind, version, cf_<name>).

        An unknown selection key is an ``InventoryError``, never "all hosts".
        """

    @abc.abstractmethod
    def acquire_lease(self, host: str, owner: str, note: str = "") -> bool:
        """Mark ``host`` as taken by ``owner`` (``<campaign>/<cell>``). Succeeds when ``owner``
        already holds it (idempotent) or fewer than ``host.slots`` owners hold it; False otherwise.
        Two campaigns can never push a host past its slots (no double booking)."""

    @abc.abstractmethod
    def release_lease(self, host: str, owner: str) -> None:
        """Release ``owner``'s lease; releasing a lease not held is not an error."""

    @abc.abstractmethod
    def leases(self) -> dict[str, str]:
        """host name -> owner, for every held lease."""

    @abc.abstractmethod
    def report_health(self, host: str, ok: bool, detail: str = "") -> None:
        """Record a health check outcome; repeated failures mark the host unhealthy."""

    @abc.abstractmethod
    def clear_health(self, host: str) -> None:
        """Return a host marked unhealthy to service (an operator's decision)."""

    def is_unhealthy(self, host: str) -> bool:
        """Whether health reporting has taken ``host`` out of service (default: it left ``hosts()``)."""
        return host not in {h.name for h in self.hosts()}
