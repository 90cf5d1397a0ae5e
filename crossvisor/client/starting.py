"""Starting a campaign: from a spec (or finding the one already running under its id), and the
workflow start itself, which reruns (``rerun.py``) share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossvisor.client.connection import EXIT_INPUT, CliError, connect, rpc_error
from crossvisor.core.config import Settings

Notify = Callable[[str], None]  # a message for the operator (the CLI prints it on stderr)


def campaign_id_for(name: str) -> str:
    return f"campaign-{name}"


def _silent(_text: str) -> None:
    pass


def refuse_missing_templates(plan, settings: Settings, notify: Notify) -> None:
    """Ask the source hosts for the spec's templates; bad input names the image, template and host.
    A host this machine cannot reach is said, not refused: provision checks it there."""
    from crossvisor.client.templates import check_templates

    found = check_templates(plan, settings.home)
    for line in found.unchecked:
        notify(f"template not checked: {line}")
    if found.missing:
        raise CliError("; ".join(found.missing), EXIT_INPUT)


async def start_campaign(
    settings: Settings, spec: str, cid: str | None, notify: Notify | None = None
) -> tuple[str, bool, str]:
    """Start the campaign, or find it. Returns (id, started now, why not). An id that exists with
    another spec is refused, naming the difference."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from crossvisor.client import plandiff, reading
    from crossvisor.spec import load_spec
    from domain.matrix import expand
    from domain.messages import CampaignInput

    plan = load_spec(spec)  # validated before anything starts
    # a template the source hosts do not have is refused now, not at each cell's provision
    refuse_missing_templates(plan, settings, notify or _silent)
    cid = cid or campaign_id_for(plan.name)
    client = await connect(settings)
    try:
        desc = await client.get_workflow_handle(cid).describe()
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise rpc_error(e, settings, cid) from None
        desc = None
    if desc is not None and desc.status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
        inp = await reading.campaign_input(settings, cid)
        diffs = plandiff.differences(inp.plan, plan) if inp else []
        if diffs:
            raise CliError(
                f"campaign {cid} exists with another spec ({plandiff.describe(diffs)}): "
                "start this spec under another --id",
                EXIT_INPUT,
            )
        running = desc.status == WorkflowExecutionStatus.RUNNING
        return cid, False, "already running" if running else "already finished (`campaign retry` reruns cells)"
    # new, or an earlier run failed/was cancelled/terminated: start again; passed cells come from
    # the result store
    inp = CampaignInput(plan=plan, campaign_id=cid)
    await start_workflow(settings, inp, cid, len(expand(plan)), notify)
    return cid, True, ""


async def start_workflow(settings: Settings, inp, cid: str, total: int, notify: Notify | None = None) -> None:
    """Start the campaign workflow under ``cid`` (an earlier closed run's id may be reused), with
    crossvisor's search attributes where the server has them."""
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.service import RPCError

    from workflows import search
    from workflows.campaign import CampaignWorkflow

    client = await connect(settings)
    kw: dict[str, Any] = dict(
        id=cid,
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    attrs = search.search_attributes({"total": total, "pending": total}, "starting", inp.plan.name)
    try:
        await client.start_workflow(CampaignWorkflow.run, inp, search_attributes=attrs, **kw)
        return
    except RPCError as e:
        if "search attribute" not in e.message.lower():
            raise rpc_error(e, settings, cid) from None
    # a server without crossvisor's search attributes (`crossvisor up` registers them)
    (notify or _silent)(
        f"note: {settings.temporal_address} lacks crossvisor's search attributes "
        f"({', '.join(search.DEFINITIONS)}): `campaign list` falls back to queries; `crossvisor up` registers them"
    )
    try:
        await client.start_workflow(CampaignWorkflow.run, inp, **kw)
    except RPCError as e:
        raise rpc_error(e, settings, cid) from None
