"""Where a real cell's time goes (issue 24, goal 1): one move of the demo (esxi -> kvm, the
portable guest) through the real CampaignWorkflow on this machine's libvirtd + QEMU; every stage
records its sub-steps in the execution log and in the cell's result, and ``bench/cell_time.py``
reads them back against the cell's boot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_asyncio

from activities.execlog import ExecutionLog
from bench import cell_time
from domain import stage_time
from tests.harness import demo_run, run_on_own_server

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1200)]
ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(scope="module")
async def one_cell(libvirt_conn, tmp_path_factory):
    plan, settings = demo_run(tmp_path_factory.mktemp("stage-time") / "state", "steps")
    plan.pairs = [["esxi", "kvm"]]
    plan.images = [i for i in plan.images if i.name == "portable"]
    res = await run_on_own_server(plan, settings)
    return res, ExecutionLog(settings.home / "executions.jsonl").read(), settings


def test_every_stage_accounts_for_its_time_in_the_log_and_the_result(one_cell) -> None:
    res, records, _ = one_cell
    (cell,) = res.cells
    # graded from what the guest reported (a guest too slow to boot on a loaded machine fails its
    # boot, and still has every stage's time accounted for)
    assert {c.check for c in cell.checks} >= {"boots", "lifecycle"} and not cell.cached
    ready = {c.check: c for c in cell.checks}["boots"].grade.value == "pass"
    ends = {r["stage"]: r for r in records if r["event"] == "end"}
    for stage in ("provision", "baseline", "export", "convert", "import", "boot", "lifecycle"):
        end = ends[stage]
        steps = end["steps"]
        assert steps, stage
        # exclusive seconds: the named steps never add up to more than the stage itself
        assert sum(s["seconds"] for s in steps.values()) <= end["seconds"] + 0.05, (stage, steps)
    # what the real parts did, step by step
    boot = ends["boot"]["steps"]
    assert {"start", "console wait"} <= set(boot) and ("probe" in boot) == ready
    assert boot["console wait"]["seconds"] > 5  # a TCG boot of a real guest
    assert {"define", "upload"} <= set(ends["import"]["steps"])
    assert ends["import"]["steps"]["upload"]["bytes"] > 0
    assert {"start", "console wait", "power off"} <= set(ends["baseline"]["steps"])
    assert {"power off", "snapshot", "start"} <= set(ends["lifecycle"]["steps"])
    assert ends["convert"]["steps"]["convert"]["cpu_s"] > 0  # qemu-img's own CPU (rusage)
    assert ends["export"]["steps"]["download"]["bytes"] > 0
    # the guests' CPU (libvirt's count for their QEMU), read when they stop: the source's at the
    # baseline's power-off, the target's at the lifecycle's
    assert ends["baseline"]["steps"]["guest cpu"]["cpu_s"] > 5
    assert ends["lifecycle"]["steps"]["guest cpu"]["cpu_s"] > 5
    # the same figures in the cell's result
    by = {s.stage: s for s in cell.stages}
    assert by["boot"].timing["console wait"] == boot["console wait"]
    assert by["import"].timing == ends["import"]["steps"]


def test_the_bench_prints_each_stage_against_the_boot_and_names_the_largest_step(one_cell, capsys) -> None:
    _, records, settings = one_cell
    rep = cell_time.report(records, None, 2)
    rows = {r["stage"]: r for r in rep["rows"]}
    assert rows["boot"]["boots"] == 1.0
    assert rows["boot"]["largest_step"] == "console wait"
    times = {t.stage: t for t in stage_time.stage_times(records)}
    assert rows["import"]["boots"] == round(times["import"].seconds / times["boot"].seconds, 2)
    assert rep["floor"]["cpu_s"] == pytest.approx(sum(t.cpu_s for t in times.values()))
    assert rep["floor"]["cpu_s"] > 10 and rep["floor"]["wall_s"] > 0
    assert {g["goal"].split(" ")[0] for g in rep["goals"]} >= {"import", "lifecycle", "upload", "wall"}
    assert cell_time.main(["--home", str(settings.home)]) == 0
    out = capsys.readouterr().out
    assert "console wait" in out and "CPU floor" in out
    assert json.loads(json.dumps(rep))  # the --json form holds plain values
