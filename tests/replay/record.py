"""Record workflow histories of real campaign runs for the replay tests (tests/replay/test_replay.py).

    .venv/bin/python tests/replay/record.py v3     # a new set under histories/v3/

Runs small campaigns (real activities: libvirt test driver, qemu-img, OVA) on Temporal's
time-skipping test server and writes every CampaignWorkflow run and CellWorkflow history to
``tests/replay/histories/<set>/<workflow id>[@run<N>].json``. Record a new set after an intentional
workflow change guarded by ``workflow.patched`` (see README.md); earlier sets stay, so the test keeps
proving that runs started before the change still replay.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from temporalio import activity  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHistory  # noqa: E402

from bench.timeskip import HandOverWatcher  # noqa: E402
from crossvisor.core import result_store  # noqa: E402
from crossvisor.core.config import Settings  # noqa: E402
from domain.control import CancelRequest, PauseRequest, SkipRequest  # noqa: E402
from domain.messages import CampaignInput  # noqa: E402
from domain.model import CampaignResult, Grade, GuestImage  # noqa: E402
from tests.harness import (  # noqa: E402
    Sabotage,
    corrupt_package_disk,
    make_worker,
    small_plan,
    start_campaign,
    time_skipping_env,
)
from workflows.campaign import CampaignWorkflow, SteerRequest  # noqa: E402

HISTORIES = Path(__file__).resolve().parent / "histories"
OUT = HISTORIES / "next"  # set by main()
_env = None  # the test environment, set by main()

Scenario = Callable[[Client, Sabotage, Path, str, str], Awaitable[CampaignResult]]


async def normal(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """Both directions pass; the second export is reused from the artifact cache."""
    h = await start_campaign(client, small_plan(tmp), tq, cid)
    res = await h.result()
    assert [c.grade for c in result_store.summary_rows(res)] == [Grade.PASS, Grade.PASS], result_store.summary_rows(res)
    return res


async def interop_fail(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """A package corrupted between export and conversion: convert fails with the manifest's
    evidence (an interop result, not retried), cleanup still runs."""
    plan = small_plan(
        tmp, pairs=[["kvm", "xen"]], images=[GuestImage("efi", disk_mib=8, firmware="efi", nic_model="e1000")]
    )

    sab.after["export"] = lambda call, out: corrupt_package_disk(out.package)
    res = await (await start_campaign(client, plan, tq, cid)).result()
    assert result_store.summary_rows(res)[0].grade == Grade.FAIL, result_store.summary_rows(res)
    return res


async def transient_retry(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """The import stage raises twice (an infrastructure fault), Temporal retries it, the cell passes."""
    calls: list[str] = []

    def flaky(call) -> None:
        calls.append("import")
        if len(calls) < 3:
            raise ConnectionError("hypervisor API timed out")

    sab.before["import"] = flaky
    res = await (await start_campaign(client, small_plan(tmp, pairs=[["kvm", "xen"]]), tq, cid)).result()
    assert result_store.summary_rows(res)[0].grade == Grade.PASS and len(calls) == 3, (
        result_store.summary_rows(res),
        calls,
    )
    return res


async def steer(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """Pause while a cell runs, skip a pending cell, resume (operator steering by update)."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"]], images=[GuestImage(f"i{n}", disk_mib=8) for n in range(3)])
    plan.concurrency.max_cells = 1
    gate, released = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()

    def hold(call) -> None:  # keep the first cell to start busy while the operator steers
        if not gate.is_set():
            loop.call_soon_threadsafe(gate.set)
            released.wait(30)

    sab.before["provision"] = hold
    h = await start_campaign(client, plan, tq, cid)
    await gate.wait()
    running = (await h.query(CampaignWorkflow.progress)).running
    waiting = sorted(f"kvm--xen--i{n}" for n in range(3) if f"kvm--xen--i{n}" not in running)
    r = await h.execute_update(CampaignWorkflow.pause, PauseRequest("p1"))
    print(f"pause: {r.message}")
    r = await h.execute_update(CampaignWorkflow.skip, SkipRequest(waiting[-1:], "s1"))
    print(f"skip: {r.message}")
    released.set()
    # the legacy single update too: older CLIs still send it
    await h.execute_update(CampaignWorkflow.steer, SteerRequest("resume", request_id="r1"))
    res = await h.result()
    assert sorted(c.grade.value for c in result_store.summary_rows(res)) == ["pass", "pass", "skipped"], (
        result_store.summary_rows(res)
    )
    return res


async def cancel(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """Cancel while the first cell boots: it cleans up and releases, the rest is skipped, the sweeper runs."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"]], images=[GuestImage(f"i{n}", disk_mib=8) for n in range(2)])
    plan.concurrency.max_cells = 1
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(call) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.5)

    sab.before["boot"] = slow
    h = await start_campaign(client, plan, tq, cid)
    await started.wait()
    await h.execute_update(CampaignWorkflow.cancel, CancelRequest("c1"))
    res = await h.result()
    # the interrupted cell's grade is whatever the cell workflow makes of the cancelled stage
    assert res.status == "cancelled" and Grade.SKIPPED in {c.grade for c in result_store.summary_rows(res)}, (
        result_store.summary_rows(res)
    )
    return res


async def continue_as_new(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """A tiny history_limit: the campaign continues as new between cells, state carried over."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"]], images=[GuestImage(f"i{n}", disk_mib=8) for n in range(2)])
    plan.concurrency.max_cells = 1
    res = await (await start_campaign(client, plan, tq, cid, history_limit=12)).result()
    assert len(result_store.summary_rows(res)) == 2 and all(
        c.grade == Grade.PASS for c in result_store.summary_rows(res)
    ), result_store.summary_rows(res)
    return res


def _slow(sab: Sabotage, stage: str, seconds: float) -> None:
    def hold(call) -> None:  # cells still in this stage when the campaign continues as new
        time.sleep(seconds)

    sab.before[stage] = hold


async def handover(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(v5 on) A tiny history_limit while cells run: each run asks its running cells to report to
    the campaign by id and continues as new at once; the next run re-attaches to them."""
    plan = small_plan(tmp, images=[GuestImage(f"i{n}", disk_mib=8) for n in range(3)])
    _slow(sab, "boot", 1.0)
    h = await start_campaign(client, plan, tq, cid, history_limit=30)
    async with HandOverWatcher(_env, cid, h.run_id):  # the time-skipping server's leaked lock
        res = await h.result()
    rows = result_store.summary_rows(res)
    assert len(rows) == 6 and all(c.grade == Grade.PASS for c in rows), rows
    return res


async def inventory_refresh(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(inventory-refresh on) The campaign refreshes its file inventory every second; while the
    first cell boots, the file marks the second kvm host retired: it gets no cell after the refresh."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"]], images=[GuestImage(f"i{n}", disk_mib=8) for n in range(3)])
    lab = Path(plan.inventory[5:])
    lab.write_text(
        "hosts:\n"
        "  - {name: kvm-1, kind: kvm, endpoint: 'test:///default', site: s}\n"
        "  - {name: kvm-2, kind: kvm, endpoint: 'test:///default', site: s}\n"
        "  - {name: xen-1, kind: xen, endpoint: 'test:///default', site: s, slots: 2}\n"
    )
    plan.concurrency.max_cells = 1
    plan.inventory_refresh_s = 1

    def retire_and_hold(call) -> None:
        if "kvm-2" in lab.read_text() and "retired" not in lab.read_text():
            lab.write_text(
                lab.read_text().replace("site: s}\n  - {name: xen", "site: s, status: retired}\n  - {name: xen")
            )
        time.sleep(2.5)  # real time: the refresh timer fires meanwhile

    sab.before["boot"] = retire_and_hold
    h = await start_campaign(client, plan, tq, cid)
    res = await h.result()
    rows = result_store.summary_rows(res)
    assert len(rows) == 3 and all(c.grade == Grade.PASS for c in rows), rows
    history = (await h.fetch_history()).to_json()
    assert "refresh_inventory" in history, "no refresh ran"
    return res


async def handover_cancel(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(v5 on) Cancel while cells a previous run started are running: cancelled by id, they clean
    up and report; the cells never started are skipped."""
    plan = small_plan(tmp, images=[GuestImage(f"i{n}", disk_mib=8) for n in range(3)])
    _slow(sab, "verify", 1.5)
    h = await start_campaign(client, plan, tq, cid, history_limit=25)
    async with HandOverWatcher(_env, cid, h.run_id):
        last = client.get_workflow_handle(cid)
        inherited = False
        for _ in range(600):  # until the current run holds cells a previous run started
            p = await last.query(CampaignWorkflow.progress)
            if p.generation >= 1 and p.running:
                start = (await last.fetch_history()).events[0].workflow_execution_started_event_attributes
                inherited = bool((json.loads(start.input.payloads[0].data).get("state") or {}).get("running"))
                if inherited:
                    break
            await asyncio.sleep(0.05)
        assert inherited, p
        await last.execute_update(CampaignWorkflow.cancel, CancelRequest("c1"))
        res = await h.result()
    rows = result_store.summary_rows(res)
    assert res.status == "cancelled" and len(rows) == 6 and Grade.SKIPPED in {c.grade for c in rows}, rows
    return res


async def cancel_before_start(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(v7 on) The cancel reaches cells before their first task ran (their queue has no worker
    until then): they end Canceled, and the campaign grades them skipped, not an error."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"]], images=[GuestImage(f"i{n}", disk_mib=8) for n in range(3)])
    cells_tq = f"{tq}-cells"
    h = await start_campaign(client, plan, tq, cid, cell_task_queue=cells_tq)
    child_ids = [f"{cid}.cell.kvm--xen--i{n}.1" for n in range(3)]
    started = []
    for _ in range(600):  # the campaign's two slots hold started cells
        started = []
        for wid in child_ids:
            try:
                await client.get_workflow_handle(wid).describe()
                started.append(wid)
            except Exception:  # not started (yet)
                pass
        if len(started) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(started) == 2, started
    await h.execute_update(CampaignWorkflow.cancel, CancelRequest("c1"))
    for wid in started:
        for _ in range(600):
            hist = await client.get_workflow_handle(wid).fetch_history()
            if any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED for e in hist.events):
                break
            await asyncio.sleep(0.05)
    settings = Settings()
    settings.home = tmp / "state"
    with ThreadPoolExecutor(4) as ex:
        cell_worker, _ = make_worker(client, settings, cells_tq, ex)
        async with cell_worker:
            res = await h.result()
    rows = result_store.summary_rows(res)
    assert res.status == "cancelled" and [c.grade for c in rows] == [Grade.SKIPPED] * 3, rows
    return res


async def cancel_in_cleanup(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(v7 on) The cancel arrives while the first cell cleans up: its cleanup runs to the end, the
    cell keeps its grades, the cells never started are skipped."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"]], images=[GuestImage(f"i{n}", disk_mib=8) for n in range(2)])
    plan.concurrency.max_cells = 1
    entered, release = threading.Event(), threading.Event()
    held: list[str] = []

    def hold(call) -> None:
        if not held:
            held.append(call.cell.cell.id)
            entered.set()
            while not release.wait(0.2):
                activity.heartbeat()

    sab.before["cleanup"] = hold
    h = await start_campaign(client, plan, tq, cid)
    try:
        assert await asyncio.to_thread(entered.wait, 60)
        await h.execute_update(CampaignWorkflow.cancel, CancelRequest("c1"))
        child = client.get_workflow_handle(f"{cid}.cell.{held[0]}.1")
        for _ in range(300):
            hist = await child.fetch_history()
            if any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED for e in hist.events):
                break
            await asyncio.sleep(0.05)
    finally:
        release.set()
    res = await h.result()
    rows = result_store.summary_rows(res)
    assert res.status == "cancelled" and sorted(c.grade for c in rows) == sorted([Grade.PASS, Grade.SKIPPED]), rows
    return res


async def stall(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """Nothing can ever start (a per-kind cap of 0): the watchdog reports the stall, then a cancel."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"]])
    plan.concurrency.per_kind = {"xen": 0}
    h = await start_campaign(client, plan, tq, cid)
    for _ in range(100):
        p = await h.query(CampaignWorkflow.progress)
        if p.stall_reason:
            break
        await asyncio.sleep(0.1)
    assert p.status == "stalled" and "caps xen at 0" in p.stall_reason, p
    await h.execute_update(CampaignWorkflow.cancel, CancelRequest("c1"))
    res = await h.result()
    assert res.status == "cancelled" and result_store.summary_rows(res)[0].reason == "campaign cancelled", (
        result_store.summary_rows(res)
    )
    return res


async def sites(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(v6 on) Hosts at two sites with workers of their own: each host's stages go to its site's
    queue, reserve and cleanup split one call per site; both directions pass."""
    from tests.remote.sites import site_workers
    from tests.remote.test_sites import two_site_plan

    with ThreadPoolExecutor(8) as ex:
        async with site_workers(client, tmp / "state", tq, ["lab-a", "lab-b"], ex):
            res = await (await start_campaign(client, two_site_plan(tmp), tq, cid)).result()
    rows = result_store.summary_rows(res)
    assert [c.grade for c in rows] == [Grade.PASS, Grade.PASS], rows
    return res


async def temporal_cancel(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(v6 on) Temporal's own cancel request mid-boot (not the cancel update): cells cancelled and
    cleaned up, the rest skipped, leaks swept, the campaign ends cancelled."""
    from temporalio.client import WorkflowFailureError

    plan = small_plan(tmp, images=[GuestImage(f"i{n}", disk_mib=8) for n in range(2)])
    _slow(sab, "boot", 0.5)
    h = await start_campaign(client, plan, tq, cid)
    for _ in range(200):
        if (await h.query(CampaignWorkflow.progress)).running:
            break
        await asyncio.sleep(0.05)
    await h.cancel()
    try:
        await h.result()
    except WorkflowFailureError:
        pass  # ended cancelled, as it should
    else:
        raise AssertionError("a cancelled campaign completed")
    rows = result_store.stored_results(tmp / "state", cid)
    assert rows and Grade.SKIPPED in {c.grade for c in rows}, rows
    return CampaignResult(cid, plan.name, status="cancelled")


async def searchable(client: Client, sab: Sabotage, tmp: Path, cid: str, tq: str) -> CampaignResult:
    """(v6 on) Started with crossvisor's search attributes (as the CLI starts it): the campaign
    keeps them current as its status and counts change."""
    from workflows import search

    plan = small_plan(tmp, pairs=[["kvm", "xen"]])
    h = await client.start_workflow(
        CampaignWorkflow.run,
        CampaignInput(plan=plan),
        id=cid,
        task_queue=tq,
        result_type=CampaignResult,
        search_attributes=search.search_attributes({"total": 2, "pending": 2}, "starting", plan.name),
    )
    res = await h.result()
    # one pair, one image: one cell
    assert [c.grade for c in result_store.summary_rows(res)] == [Grade.PASS], result_store.summary_rows(res)
    return res


# scenario -> (run, how many of its cell histories to keep). Every campaign history is kept; cell
# histories only where the cell's own path differs (pass, interop fail, retried stage, cancelled
# mid-stage, handed over and reporting by signal): the steer / continue-as-new cells repeat the
# normal cell and would triple the size.
SCENARIOS: dict[str, tuple[Scenario, int]] = {
    "normal": (normal, 1),
    "interop-fail": (interop_fail, 1),
    "transient-retry": (transient_retry, 1),
    "steer": (steer, 0),
    "cancel": (cancel, 2),
    "continue-as-new": (continue_as_new, 0),
    "stall": (stall, 0),
    "handover": (handover, 1),
    "handover-cancel": (handover_cancel, 1),
    "temporal-cancel": (temporal_cancel, 1),
    "searchable": (searchable, 0),
    "sites": (sites, 1),  # runs its own site workers (no worker of the campaign queue's own)
    "inventory-refresh": (inventory_refresh, 0),
    "cancel-before-start": (cancel_before_start, 1),
    "cancel-in-cleanup": (cancel_in_cleanup, 1),
}
# scenarios whose kept cell histories are cells that reported by signal (the v5 path in the cell)
REPORTING_CELLS = {"handover", "handover-cancel"}
OWN_WORKERS = {"sites"}


async def save_histories(client: Client, cid: str, max_children: int, reporting: bool = False) -> list[Path]:
    """Every run of the campaign (walking continue-as-new back from the last) and its first
    ``max_children`` children (``reporting``: the first that reported to the campaign by signal)."""
    runs: list[str] = []
    run_id: str | None = None  # None = the latest run
    while True:
        hist = await client.get_workflow_handle(cid, run_id=run_id).fetch_history()
        runs.insert(0, hist.to_json())
        started = hist.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if not run_id:
            break
    children: list[str] = []
    for text in runs:
        hist = WorkflowHistory.from_json(cid, text)
        for e in hist.events:
            if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                children.append(e.start_child_workflow_execution_initiated_event_attributes.workflow_id)
    written = [_write(cid if len(runs) == 1 else f"{cid}@run{n}", text) for n, text in enumerate(runs, 1)]
    kept = 0
    for child in children:
        if kept >= max_children:
            break
        hist = await client.get_workflow_handle(child).fetch_history()
        if reporting and not any(
            e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED for e in hist.events
        ):
            continue
        written.append(_write(child, hist.to_json()))
        kept += 1
    assert kept == max_children or not reporting, f"{cid}: no cell that reported by signal"
    return written


def _write(name: str, text: str) -> Path:
    p = OUT / f"{name}.json"
    p.write_text(json.dumps(json.loads(text), separators=(",", ":")) + "\n")  # compact: ~1/3 smaller
    return p


async def register_search_attributes(client: Client) -> None:
    """crossvisor's search attributes on the test server, as the local stack registers them on its
    dev server (the ``searchable`` scenario starts a campaign with them)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    from workflows import search

    types = {"Keyword": "KEYWORD", "KeywordList": "KEYWORD_LIST", "Int": "INT"}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                n: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{types[t]}") for n, t in search.DEFINITIONS.items()
            },
        )
    )


async def main(set_name: str) -> None:
    global OUT
    OUT = HISTORIES / set_name
    if OUT.exists():
        shutil.rmtree(OUT)  # only this set: older sets are the compatibility proof
    OUT.mkdir(parents=True)
    global _env
    env = _env = await time_skipping_env()
    try:
        await register_search_attributes(env.client)
        with tempfile.TemporaryDirectory(prefix="crossvisor-record-") as td, ThreadPoolExecutor(8) as ex:
            for name, (scenario, max_children) in SCENARIOS.items():
                tmp = Path(td) / name
                tmp.mkdir()
                settings = Settings()
                settings.home = tmp / "state"
                settings.home.mkdir()
                tq = f"replay-{name}"
                cid = f"replay-{name}"
                if name in OWN_WORKERS:
                    await scenario(env.client, None, tmp, cid, tq)
                else:
                    worker, sab = make_worker(env.client, settings, tq, ex, sabotage=True)
                    async with worker:
                        await scenario(env.client, sab, tmp, cid, tq)
                files = await save_histories(env.client, cid, max_children, name in REPORTING_CELLS)
                size = sum(p.stat().st_size for p in files)
                print(f"{name}: {len(files)} histories, {size / 1024:.0f} KiB")
    finally:
        await env.shutdown()
    total = sum(p.stat().st_size for p in OUT.glob("*.json"))
    print(f"{OUT}: {len(list(OUT.glob('*.json')))} files, {total / 1024:.0f} KiB")


if __name__ == "__main__":
    if len(sys.argv) != 2 or "/" in sys.argv[1]:
        sys.exit(f"usage: {sys.argv[0]} SET   (e.g. v3; existing sets: {sorted(p.name for p in HISTORIES.iterdir())})")
    asyncio.run(main(sys.argv[1]))
