"""Campaign-level activities: inventory snapshot, result store (resume without rework), progress
metrics and the leak sweeper."""

from __future__ import annotations

import time
from pathlib import Path

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.stages.base import vm_prefix
from crossvisor.core import metrics, result_store
from crossvisor.core.config import Settings
from domain.messages import (
    CachedResultRequest,
    InventoryRequest,
    InventorySnapshot,
    ProgressReport,
    StoreResultRequest,
    SweepRequest,
)
from domain.model import CellResult, Grade, Host
from drivers.factory import open_driver
from inventory.factory import open_inventory


class CampaignActivities:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.results_dir = result_store.results_dir(settings.home)
        self.results_dir.mkdir(parents=True, exist_ok=True)

    @activity.defn(name="load_inventory")
    def load_inventory(self, req: InventoryRequest) -> InventorySnapshot:
        """Hosts per platform, snapshotted into the campaign so the run is reproducible."""
        inv = open_inventory(req.inventory, self.settings.home, req.netbox or None)
        hosts: dict[str, Host] = {}
        per_platform: dict[str, list[str]] = {}
        for platform, select in req.selections.items():
            found = inv.hosts(select)
            per_platform[platform] = sorted(h.name for h in found)
            for h in found:
                hosts[h.name] = h
        kinds: dict[str, int] = {}
        for h in hosts.values():
            kinds[h.kind] = kinds.get(h.kind, 0) + 1
        for k, n in kinds.items():
            metrics.HOSTS_AVAILABLE.labels(k, "healthy").set(n)
        return InventorySnapshot(
            hosts=sorted(hosts.values(), key=lambda h: h.name),
            platform_hosts=per_platform,
        )

    def _path(self, fingerprint: str) -> Path:
        return self.results_dir / f"{fingerprint}.json"

    @activity.defn(name="lookup_cached_result")
    def lookup_cached_result(self, req: CachedResultRequest) -> CellResult | None:
        """A passed result of an identical cell from any earlier run, or None."""
        result = result_store.read(self._path(req.fingerprint))
        return result if result is not None and result.grade == Grade.PASS else None

    @activity.defn(name="store_result")
    def store_result(self, req: StoreResultRequest, result: CellResult | None = None) -> None:
        """Every result goes to the campaign's folder (reports read it: the workflow keeps only
        a short outcome per cell); a fresh pass also goes to the fingerprint cache."""
        r = result or req.result
        if r is None:
            raise ApplicationError("store_result got no result", non_retryable=True)
        result_store.save(self.settings.home, req.campaign_id, r)
        if not r.cached:
            metrics.CELLS_FINISHED.labels(req.source_kind, req.target_kind, r.grade.value).inc()
        if r.fingerprint and r.grade == Grade.PASS and not r.cached:
            result_store.write_atomic(self._path(r.fingerprint), r)

    @activity.defn(name="publish_progress")
    def publish_progress(self, rep: ProgressReport) -> None:
        for state, n in rep.counts.items():
            metrics.CAMPAIGN_CELLS.labels(rep.campaign, state).set(n)
        metrics.CAMPAIGN_LAST_PROGRESS.labels(rep.campaign).set(time.time())
        running = _running_campaigns(self.settings.home, rep.campaign, rep.running)
        metrics.CAMPAIGNS_RUNNING.set(running)

    @activity.defn(name="sweep_leaks")
    def sweep_leaks(self, req: SweepRequest) -> list[str]:
        """Destroy VMs of this campaign that no cell owns any more, and free its leases.

        Best effort per host: an unreachable host is logged and skipped (the next sweep gets it),
        so one dead hypervisor never blocks a campaign from finishing."""
        removed = []
        log = structlog.get_logger("crossvisor").bind(campaign=req.campaign_id, component="sweeper")
        for h in req.hosts:
            try:
                drv = open_driver(h, self.settings.home / "drivers")
            except Exception as e:  # noqa: BLE001
                log.warning("sweep.host_unreachable", host=h.name, error=str(e))
                continue
            try:
                for name in drv.list_vms(vm_prefix(req.campaign_id)):
                    drv.destroy(name)
                    removed.append(f"{h.name}:{name}")
            finally:
                drv.close()
        inv = open_inventory(req.inventory, self.settings.home, req.netbox or None)
        prefix = f"{req.campaign_id}/"
        for host, owners in inv.leases().items():
            for owner in owners.split(","):
                if owner.startswith(prefix):
                    inv.release_lease(host, owner)
                    removed.append(f"{host}:lease:{owner}")
        return removed


def _running_campaigns(home: Path, campaign: str, running: bool) -> int:
    # per-worker view is enough for a gauge; the set lives in memory of this process
    s = _RUNNING
    (s.add if running else s.discard)(campaign)
    return len(s)


_RUNNING: set[str] = set()
