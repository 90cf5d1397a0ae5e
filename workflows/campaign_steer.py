"""The single ``steer`` update of earlier releases (one update for every operator action), kept so
that older CLIs and recorded histories still work. It holds no logic of its own: a
``SteerRequest`` names the typed update it stands for (``action`` is that update's name) and is
validated and applied by it. New callers use the typed updates (``campaign.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain import control
    from domain.control import (
        AddCellsRequest,
        CancelRequest,
        ConcurrencyRequest,
        PauseRequest,
        ResumeRequest,
        RetryRequest,
        SkipRequest,
        SwapHostRequest,
    )


@dataclass
class SteerRequest:
    action: str  # pause | resume | cancel | retry | skip | swap_host | add_cells | set_concurrency
    request_id: str = ""
    cells: list[str] = field(default_factory=list)  # retry/skip: cell ids ("*failed" = all failed)
    host: str = ""
    replacement: str = ""
    add: list[list[str]] = field(default_factory=list)
    max_cells: int = 0


@dataclass
class SteerResponse:
    applied: bool
    message: str


def typed_request(req: SteerRequest):
    """The typed update request a legacy SteerRequest stands for."""
    rid = req.request_id
    if req.action == "pause":
        return PauseRequest(rid)
    if req.action == "resume":
        return ResumeRequest(rid)
    if req.action == "cancel":
        return CancelRequest(rid)
    if req.action == "retry":
        failed = "*failed" in req.cells
        return RetryRequest([c for c in req.cells if c != "*failed"], failed=failed, request_id=rid)
    if req.action == "skip":
        return SkipRequest(list(req.cells), rid)
    if req.action == "swap_host":
        return SwapHostRequest(req.host, req.replacement, rid)
    if req.action == "add_cells":
        return AddCellsRequest([list(t) for t in req.add], rid)
    if req.action == "set_concurrency":
        return ConcurrencyRequest(req.max_cells, rid)
    raise control.Refused(f"unknown action {req.action!r}")


class LegacySteer:
    """Mixed into ``CampaignWorkflow``: ``steer`` runs the typed update named by ``req.action``
    (``pause`` ... ``set_concurrency``) and its validator ``_check_<action>``."""

    @workflow.update
    async def steer(self, req: SteerRequest) -> SteerResponse:
        r = await getattr(self, req.action)(typed_request(req))
        return SteerResponse(r.applied, r.message)

    @steer.validator
    def _check_steer(self, req: SteerRequest) -> None:
        typed = typed_request(req)  # refuses an unknown action before it is looked up
        getattr(self, f"_check_{req.action}")(typed)
