"""What every stage activity shares: the typed call it receives, the environment it works in, and
the instrumentation around its body (execution log, metrics, heartbeats, outcome classification).

Outcome contract (what the cell workflow relies on):
- a stage returns its typed output with ``status`` "ok" or "reused" on success;
- ``status="fail"`` for a real interop failure the target or the package reported
  (``InteropFailure``): a result with evidence, never retried;
- it raises for infrastructure faults: Temporal retries them with the campaign's retry policy;
- malformed input met unexpectedly (a KeyError on a record, an IndexError in a package) becomes a
  non-retryable ``BadInput`` naming the stage and the error: retrying it would only loop.
Every side effect is keyed by campaign/cell ids (VM names, work dirs) or content hashes (cache), so
a retried attempt finds what an earlier attempt made.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.artifacts import ArtifactCache
from activities.execlog import ExecutionLog
from crossvisor.core import metrics, steps
from crossvisor.core.config import Settings, vm_name_prefix
from crossvisor.core.errors import BadInput, InteropFailure, WrongSite
from domain import stages
from domain.messages import CellInput
from domain.model import Host
from domain.stage_io import StageCall, StageResult
from drivers.base import Driver
from drivers.factory import open_driver
from inventory.factory import open_inventory
from inventory.source import InventorySource

HEARTBEAT_EVERY_S = 2.0  # well inside the workflow's heartbeat timeouts (>= 10 s)
EVIDENCE_MAX = 4000  # characters kept per evidence value: a console excerpt, an API error
# errors that mean the input (a record, a package, an earlier stage's output) is not what the code
# expects: no retry can change the input, so the policy would only loop
MALFORMED = (KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError)


def stands_in(host: Host) -> bool:
    """Whether the host is a local QEMU presenting a hardware profile (a stand-in for another
    hypervisor), whose firmware limits are the stand-in's, not the hypervisor's."""
    return host.driver == "libvirt" and host.endpoint.split(":", 1)[0].split("+", 1)[0] == "qemu"


def vm_prefix(campaign_id: str) -> str:
    """The prefix of every VM a campaign creates: the sweeper finds leaks by it."""
    return f"{vm_name_prefix()}-{hashlib.sha1(campaign_id.encode()).hexdigest()[:8]}-"


def vm_name(campaign_id: str, cell_id: str, role: str) -> str:
    """Deterministic, short, libvirt/vSphere-safe VM name (a retry finds what it made)."""
    return f"{vm_prefix(campaign_id)}{hashlib.sha1(cell_id.encode()).hexdigest()[:10]}-{role}"


def vm_owner(campaign_id: str, cell_id: str) -> str:
    """What a cell's VMs record as their owner (``domain.vm.OWNER_KEY``): a VM found under a name
    the cell derives is adopted only when it says this (an earlier attempt of the cell made it),
    never by its name alone."""
    return f"{campaign_id}/{cell_id}"


class StageEnv:
    """The worker-side resources stages use: settings, the artifact cache, the execution log."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = ArtifactCache(settings.cache)
        self.execlog = ExecutionLog(settings.home / "executions.jsonl")
        # every host this worker opened a driver for, and how often: a site worker must only ever
        # see its own site's hosts (logged with each open too)
        self.opened: Counter[str] = Counter()

    def driver(self, host: Host) -> Driver:
        site = self.settings.site
        if site and host.site and host.site != site:
            # routing sends a site's stages to that site's workers only: reaching here is a bug
            # or a misconfigured worker, and the host may not even be reachable from this site
            raise WrongSite(
                f"host {host.name} is at site {host.site!r}; this worker serves site {site!r} "
                f"(task queue {self.settings.site_queue}): check CROSSVISOR_SITE_QUEUES on the workflow workers"
            )
        self.opened[host.name] += 1
        structlog.get_logger("crossvisor").debug("driver.open", host=host.name, site=host.site, worker_site=site)
        return open_driver(host, self.settings.home / "drivers")

    def inventory(self, call: CellInput) -> InventorySource:
        return open_inventory(call.inventory, self.settings.home)

    def workdir(self, call: CellInput) -> Path:
        d = self.settings.artifacts / vm_prefix(call.campaign_id).rstrip("-") / call.cell.id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def artifact_path(self, call: CellInput, name: str) -> Path:
        """A file kept with the cell's results (console logs): survives cleanup, linked from reports."""
        d = self.settings.home / "artifacts-kept" / vm_prefix(call.campaign_id).rstrip("-") / call.cell.id
        d.mkdir(parents=True, exist_ok=True)
        return d / name

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.settings.home))
        except ValueError:
            return str(path)


R = TypeVar("R", bound=StageResult)


class Stage:
    """Base of every stage activity class: ``run`` (the activity) calls ``self.instrumented``."""

    name: str = ""

    def __init__(self, env: StageEnv):
        self.env = env

    def keep_alive(self, call: StageCall) -> Callable[[], None] | None:
        """Something to refresh with every heartbeat while the stage runs (a claim), or None."""
        return None

    def ended(self, call: StageCall, outcome: str) -> None:
        """Called after every attempt with its outcome (ok, reused, fail, error)."""

    def heartbeat(self, what: str) -> None:
        if activity.in_activity():
            activity.heartbeat(what)

    def instrumented(self, call: StageCall, out_type: type[R], body: Callable[[structlog.BoundLogger], R]) -> R:
        info = activity.info()
        c = call.cell
        log = structlog.get_logger("crossvisor").bind(
            campaign=c.campaign_id,
            cell=c.cell.id,
            stage=self.name,
            attempt=info.attempt,
            source_host=c.source_host.name,
            target_host=c.target_host.name,
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
        )
        kind = stages.host_kind(self.name, c.source.kind, c.target.kind)
        self.env.execlog.record(c.campaign_id, c.cell.id, self.name, info.attempt, "start")
        log.info("stage.start")
        t0 = time.monotonic()
        outcome = "error"
        beating = _Heartbeat(HEARTBEAT_EVERY_S, self.keep_alive(call))
        recorder = steps.Recorder()
        try:
            with steps.recording(recorder):
                out = body(log)
            outcome = out.status
            out.timing = recorder.as_dict()
            return out
        except InteropFailure as f:
            outcome = "fail"
            log.warning("stage.interop_failure", reason=f.reason)
            return out_type(
                status="fail",
                reason=f.reason,
                evidence={k: str(v)[:EVIDENCE_MAX] for k, v in f.evidence.items()},
                timing=recorder.as_dict(),
            )
        except BadInput as e:
            log.warning("stage.bad_input", error=str(e))
            raise ApplicationError(f"{self.name}: {e}", type="BadInput", non_retryable=True) from None
        except MALFORMED as e:
            log.warning("stage.bad_input", error=f"{type(e).__name__}: {e}")
            raise ApplicationError(
                f"{self.name}: unexpected input ({type(e).__name__}: {e})", type="BadInput", non_retryable=True
            ) from None
        except Exception as e:
            log.warning("stage.infra_fault", error=f"{type(e).__name__}: {e}")
            # counted here because only this attempt knows the cause; Temporal retries it
            metrics.STAGE_RETRIES.labels(self.name, type(e).__name__).inc()
            raise
        finally:
            beating.stop()
            self.ended(call, outcome)
            dt = time.monotonic() - t0
            metrics.STAGE_DURATION.labels(self.name, kind, outcome).observe(dt)
            metrics.HOST_BUSY_SECONDS.labels(kind).inc(dt)
            # where the stage's time went (sub-steps, exclusive seconds; the rest is "other")
            self.env.execlog.record(
                c.campaign_id,
                c.cell.id,
                self.name,
                info.attempt,
                "end",
                outcome=outcome,
                seconds=round(dt, 3),
                steps=recorder.as_dict(),
            )
            log.info("stage.end", outcome=outcome, seconds=round(dt, 3))


class _Heartbeat:
    """Heartbeats from a side thread while a stage blocks in a driver call.

    Without it Temporal notices a dead worker only when the stage's start-to-close timeout ends
    (hours for an export); with it, within the heartbeat timeout, and the stage is retried.
    """

    def __init__(self, every_s: float, also: Callable[[], None] | None = None):
        self._stop = threading.Event()
        self._also = also
        if also is not None:
            also()
        if not activity.in_activity():
            return
        ctx = contextvars.copy_context()  # the activity context lives in contextvars
        self._thread = threading.Thread(target=ctx.run, args=(self._loop, every_s), daemon=True)
        self._thread.start()

    def _loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            activity.heartbeat()
            if self._also is not None:
                self._also()

    def stop(self) -> None:
        self._stop.set()
