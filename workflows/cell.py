"""One cell: the stage pipeline for source x target x image, with cleanup and release always run."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from crossvisor.core.errors import NON_RETRYABLE
    from domain import grading
    from domain.messages import CachedResultRequest, CellInput, StageInput, StageOutput
    from domain.model import ALWAYS_STAGES, STAGES, CellResult, StageRecord

# start-to-close per stage: generous for real labs (a virt-v2v conversion takes minutes)
STAGE_TIMEOUT = {
    "reserve": timedelta(minutes=5),
    "provision": timedelta(minutes=30),
    "baseline": timedelta(minutes=15),
    "export": timedelta(hours=2),
    "convert": timedelta(hours=4),
    "import": timedelta(hours=2),
    "boot": timedelta(minutes=15),
    "verify": timedelta(minutes=15),
    "lifecycle": timedelta(minutes=30),
    "cleanup": timedelta(minutes=30),
    "release": timedelta(minutes=5),
}
# every stage heartbeats (a side thread in the activity): a worker killed mid-stage is noticed
# in seconds and the stage retried elsewhere, instead of after its start-to-close timeout
HEARTBEAT_DEFAULT = timedelta(seconds=10)
HEARTBEAT = {"convert": timedelta(seconds=30)}  # qemu-img progress also heartbeats


def _cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, ApplicationError):
        return f"{err.type}: {err.message}"
    return str(err)


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
    req = CachedResultRequest(inp.cell.fingerprint)
    if workflow.patched("cached-lookup-local"):
        # a file read of milliseconds: a local activity saves a server round trip per cell
        cached = await workflow.execute_local_activity(
            "lookup_cached_result", req, result_type=CellResult | None, start_to_close_timeout=timedelta(seconds=30)
        )
    else:  # histories recorded before the patch scheduled a regular activity
        cached = await workflow.execute_activity(
            "lookup_cached_result", req, result_type=CellResult | None, start_to_close_timeout=timedelta(seconds=60)
        )
    if cached is None:
        return None
    return replace(base, checks=cached.checks, stages=cached.stages, cached=True)


@workflow.defn
class CellWorkflow:
    def __init__(self) -> None:
        self._stage = ""

    @workflow.query
    def current_stage(self) -> str:
        return self._stage

    async def _run_stage(self, inp: CellInput, stage: str, ctx: dict[str, str]) -> StageOutput:
        self._stage = stage
        r = inp.retry
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=r.initial_interval_s),
            backoff_coefficient=r.backoff,
            maximum_interval=timedelta(seconds=r.max_interval_s),
            # a host held by another campaign frees up eventually: keep trying to reserve it
            maximum_attempts=0 if stage == "reserve" else r.max_attempts,
            non_retryable_error_types=list(NON_RETRYABLE),
        )
        return await workflow.execute_activity(
            "run_stage",
            StageInput(
                campaign_id=inp.campaign_id,
                cell=inp.cell,
                stage=stage,
                source=inp.source,
                target=inp.target,
                image=inp.image,
                source_host=inp.source_host,
                target_host=inp.target_host,
                inventory=inp.inventory,
                context=dict(ctx),
                export_format=inp.export_format,
            ),
            result_type=StageOutput,
            start_to_close_timeout=STAGE_TIMEOUT[stage],
            heartbeat_timeout=HEARTBEAT.get(stage, HEARTBEAT_DEFAULT),
            retry_policy=retry,
        )

    @workflow.run
    async def run(self, inp: CellInput) -> CellResult:
        cell = inp.cell
        base = base_result(inp)
        cached = await cached_result(inp, base)
        if cached is not None:
            return cached

        ctx: dict[str, str] = {}
        records: list[StageRecord] = []
        decided = []
        verdict = None  # grades fixed by an early stop
        for stage in [s for s in STAGES if s not in ALWAYS_STAGES]:
            t0 = workflow.now()
            try:
                out = await self._run_stage(inp, stage, ctx)
            except ActivityError as e:
                if isinstance(e.cause, CancelledError):  # the campaign was cancelled mid-stage
                    records.append(StageRecord(stage, "skipped", reason="campaign cancelled"))
                    verdict = [replace(c, reason="cancelled by operator") for c in grading.merge(cell.checks, [])]
                    break
                reason = _cause(e)
                records.append(
                    StageRecord(
                        stage,
                        "error",
                        (workflow.now() - t0).total_seconds(),
                        reason=reason,
                    )
                )
                verdict = grading.after_infra_error(cell.checks, stage, reason)
                break
            except asyncio.CancelledError:
                records.append(StageRecord(stage, "skipped", reason="campaign cancelled"))
                verdict = [replace(c, reason="cancelled by operator") for c in grading.merge(cell.checks, [])]
                break
            records.append(
                StageRecord(
                    stage,
                    out.status,
                    (workflow.now() - t0).total_seconds(),
                    reason=out.reason,
                )
            )
            if out.status == "fail":
                verdict = grading.after_stage_failure(cell.checks, stage, out.reason, out.evidence)
                break
            ctx.update(out.outputs)
            decided.extend(out.checks)

        # Cleanup and release run whatever happened, cancellation included: a leaked VM or a
        # host lease left behind blocks the lab for every later campaign.
        for stage in ALWAYS_STAGES:
            t0 = workflow.now()
            try:
                out = await self._run_stage(inp, stage, ctx)
                records.append(
                    StageRecord(
                        stage,
                        out.status,
                        (workflow.now() - t0).total_seconds(),
                        reason=out.reason,
                    )
                )
            except ActivityError as e:
                records.append(
                    StageRecord(
                        stage,
                        "error",
                        (workflow.now() - t0).total_seconds(),
                        reason=_cause(e),
                    )
                )
        self._stage = "done"
        checks = verdict if verdict is not None else grading.merge(cell.checks, decided)
        # a cancelled cell still completes with its (skipped) grades: the campaign reports it
        return replace(base, checks=checks, stages=records)
