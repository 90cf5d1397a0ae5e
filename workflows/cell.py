"""One cell: the stage pipeline for source x target x image, with cleanup and release always run.

The order, timeouts, heartbeats and retry rules of every stage come from the stage table
(``domain.stages``); each stage is an activity of its own (``activities/stages``) that takes a
``StageCall`` (the cell and the typed context of what earlier stages produced) and returns its own
output type. The grade comes from the verify stage, i.e. from what the target and its guest
reported; the predictions of the declared traits are recorded beside it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.stages import STAGE_ACTIVITIES
    from crossvisor.core.errors import NON_RETRYABLE
    from domain import grading, prediction, remedies, stages
    from domain.messages import CachedResultRequest, CellInput
    from domain.model import CellResult, Grade, RemediationRecord, StageRecord
    from domain.stage_io import CellContext, StageCall, StageResult, context_field
    from workflows.cell_v3 import cause_of, run_v3
    from workflows.reporting import ReportsToCampaign

# workflow.patched ids
CACHED_LOOKUP_LOCAL = "cached-lookup-local"  # deprecated: every recorded run predating it is retired (v1)
TYPED_STAGES = "typed-stages"  # one activity per stage with typed context (histories before it: cell_v3)
REMEDIATION_LADDER = "remediation-ladder"  # only cells with a ladder take that path
SITE_TASK_QUEUES = "site-task-queues"  # stages of hosts at sites with workers of their own go to those sites' queues
# replay set v7 on, asked only when a cancel arrives during cleanup or release: they run to the end
CLEANUP_OUTLASTS_CANCEL = "cleanup-outlasts-cancel"
# a cancel waits for the stage in flight to end (its define or upload landed, or it stopped at a
# heartbeat) before cleanup looks: before, cleanup ran at once, found nothing, and the stage's
# VM and volumes appeared minutes later, swept by no one (issue 26)
CLEANUP_AFTER_STAGE_ENDS = "cleanup-after-stage-ends"
# a stage's sub-step times (upload, define, console wait, ...) kept in its record of the result
STAGE_TIMING = "stage-timing"
# a stage whose attempts ran out on a heartbeat timeout (its worker died: killed, restarted, its
# machine lost) gets a fresh set of attempts, a few times: a worker's death is not the host's
# fault, and three kills during one long birth had graded the cell ERROR (issue 26's chaos run)
WORKER_LOSS_IS_NOT_A_HOST_FAULT = "worker-loss-is-not-a-host-fault"
WORKER_LOSSES_FORGIVEN = 3


def base_result(inp: CellInput) -> CellResult:
    """An empty result for the cell, filled in by whichever workflow runs it."""
    cell = inp.cell
    return CellResult(
        cell_id=cell.id,
        source=cell.source,
        target=cell.target,
        image=cell.image,
        checks=[],
        stages=[],
        source_host=inp.source_host.name,
        target_host=inp.target_host.name,
        fingerprint=cell.fingerprint,
    )


async def cached_result(inp: CellInput, base: CellResult) -> CellResult | None:
    """The passed result of an identical cell from an earlier run (resume without rework), or None."""
    workflow.deprecate_patch(CACHED_LOOKUP_LOCAL)
    return await lookup_cached(inp, base)


async def lookup_cached(inp: CellInput, base: CellResult) -> CellResult | None:
    """The reuse rule itself, without the patch marker (simulated cells have no history before it)."""
    # a file read of milliseconds: a local activity saves a server round trip per cell
    cached = await workflow.execute_local_activity(
        "lookup_cached_result",
        CachedResultRequest(inp.cell.fingerprint),
        result_type=CellResult | None,
        start_to_close_timeout=timedelta(seconds=30),
    )
    if cached is None:
        return None
    return replace(
        base,
        checks=cached.checks,
        stages=cached.stages,
        cached=True,
        predictions=cached.predictions,
        remediations=cached.remediations,
        remedy=cached.remedy,
        artifacts=cached.artifacts,
    )


def retry_policy(inp: CellInput, stage: stages.StageDef) -> RetryPolicy:
    r = inp.retry
    return RetryPolicy(
        initial_interval=timedelta(seconds=r.initial_interval_s),
        backoff_coefficient=r.backoff,
        maximum_interval=timedelta(seconds=r.max_interval_s),
        maximum_attempts=0 if stage.retry_forever else r.max_attempts,
        non_retryable_error_types=list(NON_RETRYABLE),
    )


@workflow.defn
class CellWorkflow(ReportsToCampaign):  # a campaign that continued as new hears of the result by signal
    @workflow.init
    def __init__(self, inp: CellInput) -> None:
        self._stage = ""
        self._remedy = ""
        self._tried: list[RemediationRecord] = []
        # side -> the task queue of that host's site ("" = the campaign's own queue)
        self._queues: dict[str, str] = {"source": "", "target": ""}

    async def _ladder(self, inp: CellInput, ctx: CellContext, unmodified: list):
        """The unmodified move failed: try each rung of the ladder (cumulatively), re-importing,
        booting and verifying after each, until one makes the VM work. Returns the context (the
        last round's), the combined checks, the remedy ("" if none cured), the stage records, the
        rungs' records, and grades fixed by an infrastructure error or a cancel (None otherwise)."""
        workflow.patched(REMEDIATION_LADDER)  # marks histories that ran a ladder (none before it)
        records: list[StageRecord] = []
        tried: list[RemediationRecord] = []
        rounds: list[tuple[list[str], list]] = []
        applied: list[str] = []
        for n, rung in enumerate(inp.remediate, 1):
            rec = RemediationRecord(rung, "applied")
            tried.append(rec)
            for stage in (stages.BY_NAME[x] for x in ("remediate", "import", "boot", "verify")):
                t0 = workflow.now()
                try:
                    out = await self._run_stage(inp, stage, ctx, n, rung)
                except (ActivityError, asyncio.CancelledError) as e:
                    cancelled = isinstance(e, asyncio.CancelledError) or isinstance(e.cause, CancelledError)
                    reason = "campaign cancelled" if cancelled else cause_of(e)
                    records.append(
                        StageRecord(
                            stage.name,
                            "skipped" if cancelled else "error",
                            _since(t0),
                            reason=reason,
                            started_at=t0.isoformat(),
                            round=n,
                            remedy=rung,
                        )  # fmt: skip
                    )
                    rec.status, rec.changed = "failed", reason
                    fixed = (
                        _cancelled(inp.cell.checks)
                        if cancelled
                        else grading.after_infra_error(
                            inp.cell.checks, f"{stage.name} after {rung}", reason, _bad_input(reason)
                        )
                    )
                    return ctx, unmodified, "", records, tried, fixed
                records.append(
                    StageRecord(
                        stage.name,
                        out.status,
                        _since(t0),
                        reason=out.reason,
                        started_at=t0.isoformat(),
                        round=n,
                        remedy=rung,
                        timing=_timing(out),
                    )
                )
                if stage.name == "remediate":
                    rec.changed, rec.evidence = out.changed or out.reason, {"report": out.report} if out.report else {}
                    if out.status == "skipped":  # does not apply to this target: the next rung may
                        rec.status = "skipped"
                        break
                if out.status == "fail":  # e.g. the target refused the remediated disk: the next rung may help
                    rec.status, rec.changed = "failed", out.reason
                    break
                ctx = replace(ctx, **{context_field(stage.name): out})
                if stage.name == "remediate":
                    applied.append(rung)
                if stage.name == "verify":
                    rounds.append((list(applied), out.checks))
                    if not remedies.move_failed(out.checks):
                        checks, remedy = remedies.combine(unmodified, rounds)
                        cured = "; ".join(
                            c.evidence.get("failed_unmodified", "") for c in checks if c.grade == Grade.WARN
                        )
                        for r in tried:
                            if r.name in applied:
                                r.status, r.cured = "cured", cured
                        return ctx, checks, remedy, records, tried, None
                    rec.status = "not-cured"
        checks, remedy = remedies.combine(unmodified, rounds)
        return ctx, checks, remedy, records, tried, None

    @workflow.query
    def current_stage(self) -> str:
        return self._stage

    @workflow.run
    async def run(self, inp: CellInput) -> CellResult:
        return await self.reported(inp, await self._run(inp))

    async def _run(self, inp: CellInput) -> CellResult:
        base = base_result(inp)
        cached = await cached_result(inp, base)
        if cached is not None:
            return cached
        if not workflow.patched(TYPED_STAGES):
            return await run_v3(self, inp, base)
        return await self._pipeline(inp, base)

    def _route(self, inp: CellInput) -> None:
        """Where each host's stages run: the queue of its site's workers when the campaign's
        inventory snapshot gave the host one (cells without routed hosts: the campaign's queue)."""
        src, tgt = inp.source_host.task_queue, inp.target_host.task_queue
        if (src or tgt) and workflow.patched(SITE_TASK_QUEUES):
            self._queues = {"source": src, "target": tgt}

    def _sides(self, stage: stages.StageDef) -> list[str]:
        """The calls a stage takes: one, or for a stage that opens both hosts (reserve's health
        check, cleanup) one per side when the two hosts' sites have different queues."""
        if stage.name in ("reserve", "cleanup") and self._queues["source"] != self._queues["target"]:
            return ["source", "target"]
        return [""]

    def _queue(self, stage: stages.StageDef, side: str) -> str:
        if side:
            return self._queues[side]
        if stage.side == stages.SOURCE or stage.side == stages.BOTH:
            return self._queues["source"]  # release (leases only) and unsplit both-host stages
        # the target's stages, and those on no host: the conversion runs where its result is used
        return self._queues["target"]

    async def _run_stage(
        self, inp: CellInput, stage: stages.StageDef, ctx: CellContext, round_: int = 0, rung: str = "", side: str = ""
    ) -> StageResult:
        self._stage = stage.name if not round_ else f"{stage.name} (after {rung or 'remediation'})"
        queue = self._queue(stage, side)
        extra: dict = {"task_queue": queue} if queue else {}
        wait_for_end = not stage.always and workflow.patched(CLEANUP_AFTER_STAGE_ENDS)
        if wait_for_end:
            # a stage blocked in a host call sees the cancel only when the call returns: wait for
            # that, so that what it made is there when cleanup looks
            extra["cancellation_type"] = workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        forgiven = 0
        while True:
            try:
                out = await workflow.execute_activity_method(
                    STAGE_ACTIVITIES[stage.name].run,
                    StageCall(inp, ctx, round_, rung, side),
                    start_to_close_timeout=timedelta(seconds=stage.timeout_s),
                    heartbeat_timeout=timedelta(seconds=stage.heartbeat_s),
                    retry_policy=retry_policy(inp, stage),
                    **extra,
                )
                break
            except ActivityError as e:
                # asked only on this path: histories without it replay the old raise
                if (
                    forgiven < WORKER_LOSSES_FORGIVEN
                    and _worker_lost(e)
                    and workflow.patched(WORKER_LOSS_IS_NOT_A_HOST_FAULT)
                ):
                    forgiven += 1
                    continue
                raise
        task = asyncio.current_task()
        if wait_for_end and task is not None and task.cancelling():
            # the cancel came while the stage ran and the stage finished anyway (its result
            # stands, but the cell goes no further): the SDK hands back the result and forgets
            # the cancel, so it is raised here, once the stage has ended
            raise asyncio.CancelledError()
        return out

    async def _run_sides(self, inp: CellInput, stage: stages.StageDef, ctx: CellContext) -> StageResult:
        """``_run_stage`` once per side (see ``_sides``): every side runs even when one fails; the
        first failure is raised after all ran, else the last side's output is returned."""
        first: BaseException | None = None
        out: StageResult | None = None
        for side in self._sides(stage):
            try:
                out = await self._run_stage(inp, stage, ctx, side=side)
            except ActivityError as e:
                first = first or e
                if stage.always:
                    continue  # the other host still needs cleaning
                raise
        if first is not None:
            raise first
        return out

    async def _pipeline(self, inp: CellInput, base: CellResult) -> CellResult:
        cell = inp.cell
        started = workflow.now()
        ctx = CellContext()
        records: list[StageRecord] = []
        decided = []
        verdict = None  # grades fixed by an early stop
        self._route(inp)
        for stage in stages.PIPELINE:
            if stage.always or stage.remedial:
                continue
            t0 = workflow.now()
            try:
                out = await self._run_sides(inp, stage, ctx)
            except ActivityError as e:
                if isinstance(e.cause, CancelledError):  # the campaign was cancelled mid-stage
                    records.append(
                        StageRecord(stage.name, "skipped", reason="campaign cancelled", started_at=t0.isoformat())
                    )
                    verdict = _cancelled(cell.checks)
                    break
                reason = cause_of(e)
                records.append(StageRecord(stage.name, "error", _since(t0), reason=reason, started_at=t0.isoformat()))
                verdict = grading.after_infra_error(cell.checks, stage.name, reason, _bad_input(reason))
                break
            except asyncio.CancelledError:
                records.append(
                    StageRecord(stage.name, "skipped", reason="campaign cancelled", started_at=t0.isoformat())
                )
                verdict = _cancelled(cell.checks)
                break
            records.append(_ended(stage.name, out, t0))
            if out.status == "fail":
                verdict = grading.after_stage_failure(cell.checks, stage.name, out.reason, out.evidence)
                break
            ctx = replace(ctx, **{context_field(stage.name): out})
            decided.extend(out.checks)
            if stage.name == "verify" and inp.remediate and remedies.move_failed(out.checks):
                ctx, verdict_checks, remedy, ladder_records, self._tried, stopped = await self._ladder(
                    inp, ctx, out.checks
                )
                records.extend(ladder_records)
                decided = [c for c in decided if c.check not in {x.check for x in verdict_checks}] + verdict_checks
                self._remedy = remedy
                if stopped is not None:
                    verdict = stopped
                    break

        # Cleanup and release run whatever happened, cancellation included: a leaked VM or a
        # host lease left behind blocks the lab for every later campaign.
        for stage in stages.PIPELINE:
            if not stage.always:
                continue
            t0 = workflow.now()
            try:
                out = await _run_to_the_end(self._run_sides(inp, stage, ctx))
                records.append(_ended(stage.name, out, t0))
            except ActivityError as e:
                records.append(
                    StageRecord(stage.name, "error", _since(t0), reason=cause_of(e), started_at=t0.isoformat())
                )
        self._stage = "done"
        checks = verdict if verdict is not None else grading.merge(cell.checks, decided)
        # a cancelled cell still completes with its (skipped) grades: the campaign reports it
        return replace(
            base,
            checks=checks,
            stages=records,
            predictions=prediction.predict(cell.checks, inp.source, inp.target, inp.image),
            remedy=self._remedy,
            remediations=self._tried,
            started_at=started.isoformat(),
            finished_at=workflow.now().isoformat(),
            artifacts=_artifacts(ctx),
        )


async def _run_to_the_end(coro) -> StageResult:
    """Await a cleanup or release stage so that a cancel arriving meanwhile does not cut it short:
    a cleanup stopped halfway left the cell's VMs for the campaign's final sweep and recorded
    "cleanup: error, Cancelled" for a cell whose cleanup was merely interrupted."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # histories before the patch cancelled the stage here (TRY_CANCEL: the activity is
        # asked to stop and the stage fails with CancelledError)
        if not workflow.patched(CLEANUP_OUTLASTS_CANCEL):
            task.cancel()
        return await task


def _timing(out: StageResult) -> dict:
    """The stage's sub-step times for its record (histories before the patch kept none)."""
    return out.timing if workflow.patched(STAGE_TIMING) else {}


def _worker_lost(e: ActivityError) -> bool:
    """The last attempt stopped heartbeating: its worker is gone (a stage blocked in a host call
    keeps heartbeating and ends on its start-to-close timeout instead)."""
    return isinstance(e.cause, ActivityTimeout) and e.cause.type == TimeoutType.HEARTBEAT


def _bad_input(reason: str) -> bool:
    """``cause_of`` says "<type>: <message>": a type the retry policy never retries is bad input."""
    return reason.partition(":")[0] in NON_RETRYABLE


def _ended(stage: str, out: StageResult, t0) -> StageRecord:
    """The record of a stage that ran to its end (ok, fail, or what cleanup reports)."""
    return StageRecord(stage, out.status, _since(t0), reason=out.reason, started_at=t0.isoformat(), timing=_timing(out))


def _since(t0) -> float:
    return (workflow.now() - t0).total_seconds()


def _cancelled(checks: list[str]):
    return [replace(c, reason="cancelled by operator") for c in grading.merge(checks, [])]


def _artifacts(ctx: CellContext) -> dict[str, str]:
    out = {}
    for side, seen in (("source", ctx.baseline), ("target", ctx.boot)):
        if seen is not None and seen.guest.console_artifact:
            out[f"{side} console"] = seen.guest.console_artifact
        if seen is not None and seen.guest.screenshot_artifact:
            out[f"{side} screen"] = seen.guest.screenshot_artifact
    return out
