"""reserve and release: the host leases a cell holds (and the health check that comes with them).

Leases live in the inventory, so any site may take them; the health check opens the host, so a
reserve split between two sites (``StageCall.side``) checks only the host of its own side."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.stages.base import Stage
from crossvisor.core import metrics
from domain.stage_io import ReserveOutput, StageCall, StageResult


def _owner(call: StageCall) -> str:
    return f"{call.cell.campaign_id}/{call.cell.cell.id}"


def _hosts(call: StageCall):
    """Source and target host, once each (a same-host cell holds one lease)."""
    seen = {}
    for h in (call.cell.source_host, call.cell.target_host):
        seen.setdefault(h.inventory_id or h.name, h)
    return list(seen.items())


def _on_side(call: StageCall, host) -> bool:
    """Whether this call serves ``host``: a reserve split between two sites' workers takes both
    leases in each call (idempotent) and checks only its own side's host."""
    if not call.side:
        return True
    c = call.cell
    mine = c.source_host if call.side == "source" else c.target_host
    return (host.inventory_id or host.name) == (mine.inventory_id or mine.name)


class Reserve(Stage):
    name = "reserve"

    @activity.defn(name="reserve")
    def run(self, call: StageCall) -> ReserveOutput:
        return self.instrumented(call, ReserveOutput, lambda log: self._reserve(call))

    def _reserve(self, call: StageCall) -> ReserveOutput:
        inv = self.env.inventory(call.cell)
        owner = _owner(call)
        held: list[str] = []
        for key, host in _hosts(call):
            if not inv.acquire_lease(key, owner, note=f"crossvisor cell {call.cell.cell.id}"):
                for k in held:
                    inv.release_lease(k, owner)
                # infrastructure contention, not interop: retried with backoff until the host frees
                raise RuntimeError(f"host {host.name} is leased by another owner: {inv.leases().get(key, '?')}")
            held.append(key)
        for key, host in _hosts(call):
            if not _on_side(call, host):
                continue  # the other site's worker checks that host
            try:
                self.env.driver(host).close()  # health: the endpoint answers
                inv.report_health(key, True)
            except Exception as e:
                inv.report_health(key, False, str(e))
                metrics.HEALTH_FAILURES.labels(host.kind).inc()
                for k in held:
                    inv.release_lease(k, owner)
                if inv.is_unhealthy(key):
                    metrics.HOSTS_AVAILABLE.labels(host.kind, "unhealthy").inc()
                    metrics.HOSTS_AVAILABLE.labels(host.kind, "healthy").dec()
                    # no retry can fix this cell on this host: the campaign reschedules it elsewhere
                    raise ApplicationError(
                        f"host {host.name} marked unhealthy: {e}", host.name, type="HostUnhealthy", non_retryable=True
                    ) from None
                raise
        if call.side != "target":  # a split reserve counts its leases once
            metrics.HOST_LEASES.labels(call.cell.source.kind).inc()
            metrics.HOST_LEASES.labels(call.cell.target.kind).inc()
        return ReserveOutput(leases=held)


class Release(Stage):
    name = "release"

    @activity.defn(name="release")
    def run(self, call: StageCall) -> StageResult:
        return self.instrumented(call, StageResult, lambda log: self._release(call))

    def _release(self, call: StageCall) -> StageResult:
        inv = self.env.inventory(call.cell)
        for key, _host in _hosts(call):
            inv.release_lease(key, _owner(call))
        metrics.HOST_LEASES.labels(call.cell.source.kind).dec()
        metrics.HOST_LEASES.labels(call.cell.target.kind).dec()
        return StageResult()
