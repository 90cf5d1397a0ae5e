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
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.stages import STAGE_ACTIVITIES
    from crossvisor.core.errors import NON_RETRYABLE
    from domain import grading, prediction, stages
    from domain.messages import CachedResultRequest, CellInput
    from domain.model import CellResult, StageRecord
    from domain.stage_io import CellContext, StageCall, StageResult, context_field
    from workflows.cell_v3 import cause_of, run_v3
    from workflows.reporting import ReportsToCampaign

# workflow.patched ids
CACHED_LOOKUP_LOCAL = "cached-lookup-local"  # deprecated: every recorded run predating it is retired (v1)
TYPED_STAGES = "typed-stages"  # one activity per stage with typed context (histories before it: cell_v3)


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

    async def _run_stage(self, inp: CellInput, stage: stages.StageDef, ctx: CellContext) -> StageResult:
        self._stage = stage.name
        return await workflow.execute_activity_method(
            STAGE_ACTIVITIES[stage.name].run,
            StageCall(inp, ctx),
            start_to_close_timeout=timedelta(seconds=stage.timeout_s),
            heartbeat_timeout=timedelta(seconds=stage.heartbeat_s),
            retry_policy=retry_policy(inp, stage),
        )

    async def _pipeline(self, inp: CellInput, base: CellResult) -> CellResult:
        cell = inp.cell
        started = workflow.now()
        ctx = CellContext()
        records: list[StageRecord] = []
        decided = []
        verdict = None  # grades fixed by an early stop
        for stage in stages.PIPELINE:
            if stage.always or stage.remedial:
                continue
            t0 = workflow.now()
            try:
                out = await self._run_stage(inp, stage, ctx)
            except ActivityError as e:
                if isinstance(e.cause, CancelledError):  # the campaign was cancelled mid-stage
                    records.append(
                        StageRecord(stage.name, "skipped", reason="campaign cancelled", started_at=t0.isoformat())
                    )
                    verdict = _cancelled(cell.checks)
                    break
                reason = cause_of(e)
                records.append(StageRecord(stage.name, "error", _since(t0), reason=reason, started_at=t0.isoformat()))
                verdict = grading.after_infra_error(cell.checks, stage.name, reason)
                break
            except asyncio.CancelledError:
                records.append(
                    StageRecord(stage.name, "skipped", reason="campaign cancelled", started_at=t0.isoformat())
                )
                verdict = _cancelled(cell.checks)
                break
            records.append(
                StageRecord(stage.name, out.status, _since(t0), reason=out.reason, started_at=t0.isoformat())
            )
            if out.status == "fail":
                verdict = grading.after_stage_failure(cell.checks, stage.name, out.reason, out.evidence)
                break
            ctx = replace(ctx, **{context_field(stage.name): out})
            decided.extend(out.checks)

        # Cleanup and release run whatever happened, cancellation included: a leaked VM or a
        # host lease left behind blocks the lab for every later campaign.
        for stage in stages.PIPELINE:
            if not stage.always:
                continue
            t0 = workflow.now()
            try:
                out = await self._run_stage(inp, stage, ctx)
                records.append(
                    StageRecord(stage.name, out.status, _since(t0), reason=out.reason, started_at=t0.isoformat())
                )
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
            started_at=started.isoformat(),
            finished_at=workflow.now().isoformat(),
            artifacts=_artifacts(ctx),
        )


def _since(t0) -> float:
    return (workflow.now() - t0).total_seconds()


def _cancelled(checks: list[str]):
    return [replace(c, reason="cancelled by operator") for c in grading.merge(checks, [])]


def _artifacts(ctx: CellContext) -> dict[str, str]:
    out = {}
    for name, seen in (("source console", ctx.baseline), ("target console", ctx.boot)):
        if seen is not None and seen.guest.console_artifact:
            out[name] = seen.guest.console_artifact
    return out
