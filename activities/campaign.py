"""Campaign-level activities: inventory snapshot, result store (resume without rework), progress
metrics and the leak sweeper."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.routing import route_hosts
from activities.stages.base import vm_prefix
from crossvisor.core import metrics, result_store
from crossvisor.core.config import Settings
from domain.messages import (
    CachedResultRequest,
    InventoryDelta,
    InventoryRefreshRequest,
    InventoryRequest,
    InventorySnapshot,
    ProgressReport,
    StoreResultRequest,
    SweepRequest,
)
from domain.model import CellResult, Grade, Host
from drivers.factory import open_driver
from inventory.factory import open_inventory
from inventory.source import InventorySource


class CampaignActivities:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.results_dir = result_store.results_dir(settings.home)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        # every host the leak sweeper opened here, and how often (a site's worker: its own only)
        self.swept: Counter[str] = Counter()
        metrics.init_worker()  # per-kind series at 0 from the worker's start
        # refresh_inventory keeps one inventory per (reference, mapping): a NetBox inventory checks
        # once that NetBox is set up, not every interval (that alone is ~4 requests). A lock per
        # entry: the inventory objects are not meant for two threads at once.
        self._refreshers: dict[tuple[str, str], tuple[threading.Lock, InventorySource]] = {}
        self._refreshers_lock = threading.Lock()

    @activity.defn(name="load_inventory")
    def load_inventory(self, req: InventoryRequest) -> InventorySnapshot:
        """Hosts per platform, snapshotted into the campaign so the run is reproducible."""
        inv = open_inventory(req.inventory, self.settings.home, req.netbox or None)
        # before the pull: a change made while it runs is seen by the first refresh
        cursor = inv.cursor_now()
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
            metrics.HOSTS_AVAILABLE.labels(k, "unhealthy").inc(0)
        # every platform pair's cell counters exist at 0 from the start (panels show 0, not "No data")
        metrics.init_campaign({p: sel.get("kind", "") for p, sel in req.selections.items()})
        routed = route_hosts(list(hosts.values()), self.settings, _task_queue())
        return InventorySnapshot(
            hosts=sorted(routed, key=lambda h: h.name),
            platform_hosts=per_platform,
            cursor=cursor,
        )

    @activity.defn(name="refresh_inventory")
    def refresh_inventory(self, req: InventoryRefreshRequest) -> InventoryDelta:
        """What changed in the inventory since ``req.cursor`` (NetBox: only the changed devices;
        a file inventory: the file re-read, a full delta)."""
        key = (req.inventory, json.dumps(req.netbox, sort_keys=True))
        with self._refreshers_lock:
            if key not in self._refreshers:
                self._refreshers[key] = (
                    threading.Lock(),
                    open_inventory(req.inventory, self.settings.home, req.netbox or None),
                )
            lock, inv = self._refreshers[key]
        with lock:
            delta = inv.changes_since(req.selections, req.cursor)
        # a refreshed host keeps going to its site's workers (as in the first snapshot)
        route_hosts(delta.hosts, self.settings, _task_queue())
        structlog.get_logger("crossvisor").info(
            "inventory.refresh",
            **_workflow_ids(),
            full=delta.full,
            changed=len(delta.hosts),
            gone=sorted(delta.gone),
        )
        return delta

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
            metrics.CELLS_FINISHED.labels(r.source, r.target, req.source_kind, req.target_kind, r.grade.value).inc()
        wf = _workflow_ids()
        structlog.get_logger("crossvisor").info(
            "cell.graded",
            campaign=req.campaign_id,
            **wf,
            cell=f"{r.source}:{r.target}:{r.image}",
            grade=r.grade.value,
            cached=r.cached,
            reason=next((c.reason for c in r.checks if c.grade not in (Grade.PASS, Grade.SKIPPED) and c.reason), ""),
            source_host=r.source_host,
            target_host=r.target_host,
        )
        if r.fingerprint and r.grade == Grade.PASS and not r.cached:
            result_store.write_atomic(self._path(r.fingerprint), r)

    @activity.defn(name="publish_progress")
    def publish_progress(self, rep: ProgressReport) -> None:
        """The campaign's gauges, labelled with the campaign id (the id the CLI takes: the
        workflow id of the campaign this local activity runs for), and its start/end in the log."""
        wf = _workflow_ids()
        campaign = wf.get("workflow_id") or rep.campaign
        now = time.time()
        for state, n in rep.counts.items():
            metrics.CAMPAIGN_CELLS.labels(campaign, state).set(n)
        metrics.CAMPAIGN_LAST_PROGRESS.labels(campaign).set(now)
        metrics.CAMPAIGN_PAUSED.labels(campaign).set(1 if rep.paused else 0)
        metrics.CAMPAIGN_STALLED.labels(campaign).set(1 if rep.stalled else 0)
        log = structlog.get_logger("crossvisor").bind(campaign=campaign, name=rep.campaign, **wf)
        run = wf.get("run_id", "")
        if rep.running and run and run not in _RUNS_SEEN:
            _RUNS_SEEN[run] = now
            # the first report of a run this worker sees: a start, a continue-as-new or a worker restart
            log.info("campaign.start", counts=rep.counts, paused=rep.paused)
        if not rep.running:
            _RUNS_SEEN.pop(run, None)
            log.info("campaign.end", counts=rep.counts)
            _FINISHED[campaign] = now
        else:
            _FINISHED.pop(campaign, None)
        if rep.stalled:
            log.warning("campaign.stalled", reason=rep.stalled)
        for old, at in list(_FINISHED.items()):  # bounded: finished campaigns go after a while
            if now - at > metrics.FINISHED_KEPT_S:
                metrics.remove_campaign(old)
                del _FINISHED[old]
        running = _running_campaigns(self.settings.home, campaign, rep.running)
        metrics.CAMPAIGNS_RUNNING.set(running)

    @activity.defn(name="sweep_leaks")
    def sweep_leaks(self, req: SweepRequest) -> list[str]:
        """Destroy VMs of this campaign that no cell owns any more, free its leases, and trim each
        host's shared image layers that no VM stands on to ``host_content_keep_gib``.

        Best effort per host: an unreachable host is logged and skipped (the next sweep gets it),
        so one dead hypervisor never blocks a campaign from finishing."""
        removed = []
        log = structlog.get_logger("crossvisor").bind(campaign=req.campaign_id, component="sweeper")
        for h in req.hosts:
            if self.settings.site and h.site and h.site != self.settings.site:
                # a site's worker never opens another site's hosts; their cells' cleanup ran there
                log.info("sweep.other_site", host=h.name, site=h.site)
                continue
            self.swept[h.name] += 1
            try:
                drv = open_driver(h, self.settings.home / "drivers")
            except Exception as e:  # noqa: BLE001
                log.warning("sweep.host_unreachable", host=h.name, error=str(e))
                continue
            try:
                for name in drv.list_vms(vm_prefix(req.campaign_id)):
                    drv.destroy(name)
                    removed.append(f"{h.name}:{name}")
                # disks uploaded for VMs whose define never came: a cell's cleanup removes its
                # own, these are of cells whose cleanup never ran (a kill, a cancel before it)
                removed += [f"{h.name}:volume:{v}" for v in drv.remove_leftovers(vm_prefix(req.campaign_id))]
                try:
                    keep = int(self.settings.host_content_keep_gib * (1 << 30))
                    removed += [f"{h.name}:volume:{v}" for v in drv.prune_content(keep)]
                except Exception as e:  # noqa: BLE001 - storage is tidied next sweep; the campaign goes on
                    log.warning("sweep.prune_failed", host=h.name, error=str(e))
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


def _task_queue() -> str:
    """The task queue of the workflow this activity runs for: the campaign's queue."""
    try:
        return activity.info().task_queue
    except RuntimeError:  # outside an activity (tests calling the method directly)
        return ""


def _workflow_ids() -> dict[str, str]:
    """workflow_id / run_id of the workflow this activity runs for (empty outside an activity)."""
    try:
        info = activity.info()
    except RuntimeError:
        return {}
    return {"workflow_id": info.workflow_id or "", "run_id": info.workflow_run_id or ""}


_RUNS_SEEN: dict[str, float] = {}  # run id -> first report (this worker)
_FINISHED: dict[str, float] = {}  # campaign id -> when it reported its end


def _running_campaigns(home: Path, campaign: str, running: bool) -> int:
    # per-worker view is enough for a gauge; the set lives in memory of this process
    s = _RUNNING
    (s.add if running else s.discard)(campaign)
    return len(s)


_RUNNING: set[str] = set()
