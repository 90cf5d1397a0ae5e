"""The cell pipeline as it ran before typed stages (replay sets v1-v3): frozen, for histories only.

Cells started on that code (one ``run_stage`` activity per stage, string-keyed context) replay and
continue through here; ``activities/stages/legacy.py`` serves their ``run_stage`` calls with the
current stage bodies. Deprecate the ``typed-stages`` patch and delete this module once no such
cell can still be running (see tests/replay/README.md).
"""

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
    from domain.messages import CellInput, StageInput, StageOutput
    from domain.model import CellResult, StageRecord

STAGES_V3 = ("reserve", "provision", "baseline", "export", "convert", "import", "boot", "verify", "lifecycle")
ALWAYS_V3 = ("cleanup", "release")
STAGE_TIMEOUT_V3 = {
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


def cause_of(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, ApplicationError):
        return f"{err.type}: {err.message}"
    return str(err)


async def _run_stage(wf, inp: CellInput, stage: str, ctx: dict[str, str]) -> StageOutput:
    wf._stage = stage
    r = inp.retry
    retry = RetryPolicy(
        initial_interval=timedelta(seconds=r.initial_interval_s),
        backoff_coefficient=r.backoff,
        maximum_interval=timedelta(seconds=r.max_interval_s),
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
        start_to_close_timeout=STAGE_TIMEOUT_V3[stage],
        heartbeat_timeout=timedelta(seconds=30 if stage == "convert" else 10),
        retry_policy=retry,
    )


async def run_v3(wf, inp: CellInput, base: CellResult) -> CellResult:
    cell = inp.cell
    ctx: dict[str, str] = {}
    records: list[StageRecord] = []
    decided = []
    verdict = None
    for stage in STAGES_V3:
        t0 = workflow.now()
        try:
            out = await _run_stage(wf, inp, stage, ctx)
        except ActivityError as e:
            if isinstance(e.cause, CancelledError):
                records.append(StageRecord(stage, "skipped", reason="campaign cancelled"))
                verdict = [replace(c, reason="cancelled by operator") for c in grading.merge(cell.checks, [])]
                break
            reason = cause_of(e)
            records.append(StageRecord(stage, "error", (workflow.now() - t0).total_seconds(), reason=reason))
            verdict = grading.after_infra_error(cell.checks, stage, reason)
            break
        except asyncio.CancelledError:
            records.append(StageRecord(stage, "skipped", reason="campaign cancelled"))
            verdict = [replace(c, reason="cancelled by operator") for c in grading.merge(cell.checks, [])]
            break
        records.append(StageRecord(stage, out.status, (workflow.now() - t0).total_seconds(), reason=out.reason))
        if out.status == "fail":
            verdict = grading.after_stage_failure(cell.checks, stage, out.reason, out.evidence)
            break
        ctx.update(out.outputs)
        decided.extend(out.checks)
    for stage in ALWAYS_V3:
        t0 = workflow.now()
        try:
            out = await _run_stage(wf, inp, stage, ctx)
            records.append(StageRecord(stage, out.status, (workflow.now() - t0).total_seconds(), reason=out.reason))
        except ActivityError as e:
            records.append(StageRecord(stage, "error", (workflow.now() - t0).total_seconds(), reason=cause_of(e)))
    wf._stage = "done"
    checks = verdict if verdict is not None else grading.merge(cell.checks, decided)
    return replace(base, checks=checks, stages=records)
