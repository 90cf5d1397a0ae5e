"""Replay every committed history (tests/replay/histories, recorded by record.py from real campaign
runs) against the current workflow code: a change that is not replay-compatible fails here, before
it can strand running campaigns. Intentional changes go behind ``workflow.patched``."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.replay.mutants import PatchedCellWorkflow, UnpatchedCellWorkflow
from worker import workflow_runner
from workflows.campaign import CampaignWorkflow
from workflows.cell import CellWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
FILES = sorted(HISTORIES.glob("*/*.json"))  # one folder per recorded set (v1 = oldest)
SETS = sorted({p.parent.name for p in FILES})
# scenarios record.py covers; each must have its campaign history committed
SCENARIOS = ("normal", "interop-fail", "transient-retry", "steer", "cancel", "continue-as-new")  # + "stall" from v4 on
# scenarios a set has from then on
LATER = {
    "v4": ("stall",),
    "v5": ("stall", "handover", "handover-cancel"),
    "v6": ("stall", "handover", "handover-cancel", "temporal-cancel", "searchable", "inventory-refresh", "sites"),
    "v7": (
        *("stall", "handover", "handover-cancel", "temporal-cancel", "searchable", "inventory-refresh", "sites"),
        "cancel-before-start",
        "cancel-in-cleanup",
    ),
}


def load(path: Path) -> WorkflowHistory:
    # file name = workflow id, plus "@run<N>" for the runs of a continued-as-new campaign
    return WorkflowHistory.from_json(path.stem.split("@")[0], path.read_text())


def is_cell(path: Path) -> bool:
    return ".cell." in path.stem


@pytest.mark.parametrize("set_name", SETS)
def test_the_recorded_set_is_complete(set_name: str) -> None:
    files = [p for p in FILES if p.parent.name == set_name]
    names = {p.stem.split("@")[0] for p in files}
    later = {s for v, extra in LATER.items() if set_name >= v for s in extra}
    assert {f"replay-{s}" for s in (*SCENARIOS, *later)} <= names, "re-run tests/replay/record.py"
    assert sum(is_cell(p) for p in files) >= 4
    assert len([p for p in files if "@run" in p.stem]) >= 2  # a continue-as-new chain


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
async def test_history_replays_on_current_code(path: Path) -> None:
    replayer = Replayer(workflows=[CampaignWorkflow, CellWorkflow], workflow_runner=workflow_runner())
    await replayer.replay_workflow(load(path))  # raises on nondeterminism


async def test_an_incompatible_change_fails_replay() -> None:
    replayer = Replayer(workflows=[CampaignWorkflow, UnpatchedCellWorkflow], workflow_runner=workflow_runner())
    cells = [p for p in FILES if is_cell(p)]
    for path in cells:
        # cells open with the cache lookup: its patch marker (v2, v3) or, once deprecated, the local activity (v4)
        with pytest.raises(NondeterminismError, match="lookup_cached_result|cached-lookup-local|LocalActivity"):
            await replayer.replay_workflow(load(path))


async def test_the_same_change_behind_patched_replays() -> None:
    replayer = Replayer(workflows=[CampaignWorkflow, PatchedCellWorkflow], workflow_runner=workflow_runner())
    for path in [p for p in FILES if is_cell(p)]:
        await replayer.replay_workflow(load(path))
