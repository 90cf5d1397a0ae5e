"""Steering a running campaign: one Temporal update per operator action (a refusal is the
campaign's own reason, cells named as the operator typed them), and Temporal's cancel request."""

from __future__ import annotations

from typing import Any

from crossvisor.client import reading
from crossvisor.client.connection import EXIT_INPUT, CliError, connect, rpc_error
from crossvisor.core.config import Settings
from domain.matrix import human_id


def humanise(message: str, typed: dict[str, str]) -> str:
    """A refusal names cells by internal id: show them as the operator typed them."""
    for internal, human in typed.items():
        if internal != human:
            message = message.replace(f"'{internal}'", f"'{human}'")
    return message


async def send_update(settings: Settings, cid: str, update: str, req, typed: dict[str, str] | None = None) -> Any:
    """Send one operator update; a refusal raises CliError with the campaign's reason (cells
    named as the operator typed them)."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    from domain.control import ControlResult

    client = await connect(settings)
    handle = client.get_workflow_handle(cid)
    try:
        return await handle.execute_update(update, req, result_type=ControlResult)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        reason = getattr(cause, "message", "") or str(cause or e)
        raise CliError(f"{cid}: refused: {humanise(reason, typed or {})}", EXIT_INPUT) from None
    except RPCError as e:
        if "already completed" in e.message or "already finished" in e.message:
            desc = await reading.describe(settings, cid)
            raise CliError(
                f"campaign {cid} has ended ({reading.status_name(desc.status)}): nothing to steer; "
                "`crossvisor campaign retry` starts a rerun of its failed cells",
                EXIT_INPUT,
            ) from None
        raise rpc_error(e, settings, cid) from None


async def human_names(settings: Settings, cid: str, cells: list[str], typed: dict[str, str]) -> list[str]:
    if not cells or all(c in typed for c in cells):
        return [typed.get(c, c) for c in cells]
    inp = await reading.campaign_input(settings, cid)
    known = reading.cells_of(inp) if inp else {}
    return [
        typed.get(c) or (human_id(known[c].source, known[c].target, known[c].image) if c in known else c) for c in cells
    ]


async def request_cancel(settings: Settings, cid: str) -> str:
    """Temporal's cancellation request (what the Web UI and `temporal workflow cancel` send): the
    campaign cancels its running cells, which clean up and release their hosts, and ends as
    Canceled. Refused unless the campaign runs. Returns the run id it went to."""
    desc = await reading.describe(settings, cid)
    status = reading.status_name(desc.status)
    if status != "running":
        raise CliError(f"{cid}: refused: campaign is {status}", EXIT_INPUT)
    client = await connect(settings)
    try:
        await client.get_workflow_handle(cid).cancel()
    except Exception as e:  # noqa: BLE001
        raise rpc_error(e, settings, cid) from None
    return desc.run_id
