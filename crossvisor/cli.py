"""The ``crossvisor`` command line.

crossvisor demo                      local stack + example campaign + progress + matrix
crossvisor up | down                 local Temporal dev server and worker
crossvisor worker                    run a worker in the foreground
crossvisor campaign start SPEC [--id ID] [--wait]
crossvisor campaign status|watch|cancel|pause|resume ID
crossvisor campaign retry ID (--failed | CELL...)   | skip ID CELL...
crossvisor campaign swap-host ID HOST [--replacement H] | concurrency ID N | add-cells ID SRC TGT IMAGE
crossvisor campaign history ID --out FILE
crossvisor report ID [--html F] [--junit F] [--json F] [--compare PREVIOUS_ID_OR_JSON]
crossvisor serve [--port 17290]          read-only web UI on loopback
crossvisor netbox check SPEC | init [SPEC]   and   crossvisor inventory ...   (crossvisor/netbox_cli.py)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import uuid
from pathlib import Path

from crossvisor.core.config import Settings


def _exit(code: int) -> None:
    # sdk-python#300: a process that held a Temporal client can crash at interpreter exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def campaign_id_for(name: str) -> str:
    return f"campaign-{name}"


async def _client(settings: Settings):
    from crossvisor.core.temporal_client import connect

    return await connect(settings)


async def start_campaign(settings: Settings, spec: str, cid: str | None) -> tuple[str, bool]:
    """Start (or find) the campaign workflow. Returns (id, started_now)."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.service import RPCError

    from crossvisor.spec import load_spec
    from domain.messages import CampaignInput
    from workflows.campaign import CampaignWorkflow

    plan = load_spec(spec)  # validated before anything starts
    cid = cid or campaign_id_for(plan.name)
    client = await _client(settings)
    try:
        desc = await client.get_workflow_handle(cid).describe()
        if desc.status in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.COMPLETED,
        ):
            return cid, False
    except RPCError:
        pass
    # a failed/cancelled/terminated earlier run: start again; passed cells come from the result store
    await client.start_workflow(
        CampaignWorkflow.run,
        CampaignInput(plan=plan, campaign_id=cid),
        id=cid,
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return cid, True


async def progress(settings: Settings, cid: str):
    from workflows.campaign import CampaignWorkflow

    client = await _client(settings)
    return await client.get_workflow_handle(cid).query(CampaignWorkflow.progress)


async def result(settings: Settings, cid: str, wait: bool = True):
    from temporalio.client import WorkflowExecutionStatus

    from crossvisor.core import result_store
    from domain.model import CampaignResult, CellSummary
    from workflows.campaign import CampaignWorkflow

    client = await _client(settings)
    h = client.get_workflow_handle(cid)
    desc = await h.describe()
    if desc.status == WorkflowExecutionStatus.RUNNING and not wait:
        rows = await h.query(CampaignWorkflow.results, result_type=list[CellSummary])
        p = await h.query(CampaignWorkflow.progress)
        res = CampaignResult(campaign_id=cid, name=p.name, summary=rows, status=p.status)
    else:
        res = await client.get_workflow_handle(cid, result_type=CampaignResult).result()
    # the workflow returns one short row per cell; stages and evidence come from the store
    return result_store.attach(res, settings.home)


async def report_result(settings: Settings, cid: str, wait: bool = True):
    """The campaign as reports show it: ``result`` plus each cell's start and finish from its
    cell workflow when the cell recorded none (the timeline needs them)."""
    from crossvisor.serve import fill_cell_times

    res = await result(settings, cid, wait)
    await fill_cell_times(await _client(settings), res)
    return res


async def watch(settings: Settings, cid: str, poll_s: float = 0.5) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from temporalio.client import WorkflowExecutionStatus

    client = await _client(settings)
    h = client.get_workflow_handle(cid)
    from workflows.campaign import CampaignWorkflow

    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*cols, transient=False) as bar:
        task = bar.add_task(cid, total=None, detail="")
        while True:
            desc = await h.describe()
            if desc.status != WorkflowExecutionStatus.RUNNING:
                break
            try:
                p = await h.query(CampaignWorkflow.progress)
            except Exception:  # noqa: BLE001 - a query can fail during continue-as-new; poll again
                await asyncio.sleep(poll_s)
                continue
            c = p.counts
            detail = f"{p.status} pass {c.get('pass', 0)} fail {c.get('fail', 0)} error {c.get('error', 0)} skipped {c.get('skipped', 0)} running {c.get('running', 0)}"
            bar.update(task, total=c.get("total", 0), completed=c.get("done", 0), detail=detail)
            await asyncio.sleep(poll_s)
        from domain.model import CampaignResult

        r = await client.get_workflow_handle(cid, result_type=CampaignResult).result()
        done = len(r.summary)
        bar.update(task, total=done, completed=done, detail=r.status)


def render_matrix(res) -> None:
    """The matrix and the ODCA scorecard in the terminal (crossvisor/terminal.py)."""
    from rich.console import Console

    from crossvisor.terminal import render_matrix as matrix
    from crossvisor.terminal import render_scorecard

    console = Console()
    matrix(res, console)
    render_scorecard(res, console)


def write_reports(
    res, html: str | None, junit: str | None, js: str | None, previous=None, home: Path | None = None
) -> list[str]:
    """Write the requested formats. ``previous``: a campaign to compare with (HTML); ``home``:
    CROSSVISOR_HOME, so the HTML links artifacts relative to where the file lands."""
    from crossvisor import report

    def page(r) -> str:
        base = Path(os.path.relpath(home.resolve(), Path(html).resolve().parent)).as_posix() if home else None
        return report.render_html(r, previous, artifact_base=base)

    out = []
    for path, fn in (
        (html, page),
        (junit, report.render_junit),
        (js, report.render_json),
    ):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(fn(res))
            out.append(path)
    return out


async def previous_campaign(settings: Settings, ref: str):
    """``--compare``: a JSON report file (``crossvisor report --json``) or a campaign id."""
    from crossvisor import report

    if Path(ref).is_file():
        try:
            return report.parse_json(Path(ref).read_text())
        except ValueError as e:
            raise ValueError(f"--compare {ref}: {e}") from e
    return await report_result(settings, ref)


async def steer(settings: Settings, cid: str, **kw) -> str:
    from workflows.campaign import CampaignWorkflow, SteerRequest

    client = await _client(settings)
    req = SteerRequest(request_id=kw.pop("request_id", None) or uuid.uuid4().hex, **kw)
    r = await client.get_workflow_handle(cid).execute_update(CampaignWorkflow.steer, req)
    return r.message


async def export_history(settings: Settings, cid: str, out: str) -> int:
    client = await _client(settings)
    hist = await client.get_workflow_handle(cid).fetch_history()
    Path(out).write_text(hist.to_json())
    return len(hist.events)


async def demo(settings: Settings, spec: str) -> int:
    from crossvisor import stack

    print(f"crossvisor demo: state in {settings.home}", flush=True)
    stack.temporal_up(settings)
    print(
        f"temporal dev server: {settings.temporal_address} (sqlite {settings.home / 'temporal.db'})",
        flush=True,
    )
    pid = stack.worker_up(settings)
    print(
        f"worker: pid {pid}, metrics http://127.0.0.1:{settings.metrics_port}/metrics, log {settings.home / 'run/worker.log'}",
        flush=True,
    )
    cid, started = await start_campaign(settings, spec, None)
    print(
        f"campaign {cid}: {'started' if started else 'already there (finished cells are not redone)'}",
        flush=True,
    )
    await watch(settings, cid)
    res = await report_result(settings, cid)
    render_matrix(res)
    paths = write_reports(
        res,
        str(settings.home / "reports/demo.html"),
        str(settings.home / "reports/demo.junit.xml"),
        str(settings.home / "reports/demo.json"),
        home=settings.home,
    )
    print("reports: " + ", ".join(paths))
    print("browse it: crossvisor serve  (http://127.0.0.1:17290/, read-only)")
    print("stop the local stack with: crossvisor down")
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="crossvisor", description="hypervisor interoperability campaigns")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the example campaign on the embedded local stack")
    d.add_argument("--spec", help="campaign spec (default: the packaged examples/demo.yaml)")
    sub.add_parser("up", help="start the local Temporal dev server and a worker")
    sub.add_parser("down", help="stop the local stack")
    w = sub.add_parser("worker", help="run a worker in the foreground")
    w.add_argument("--metrics-port", type=int)
    w.add_argument("--sdk-metrics-port", type=int)
    w.add_argument("--metrics-host", default=os.environ.get("CROSSVISOR_METRICS_HOST", "127.0.0.1"))
    v = sub.add_parser("validate", help="validate a campaign spec without running it")
    v.add_argument("spec")

    c = sub.add_parser("campaign", help="start and steer campaigns").add_subparsers(dest="sub", required=True)
    s = c.add_parser("start")
    s.add_argument("spec")
    s.add_argument("--id")
    s.add_argument("--wait", action="store_true")
    for name in ("status", "watch", "cancel", "pause", "resume"):
        c.add_parser(name).add_argument("id")
    r = c.add_parser("retry")
    r.add_argument("id")
    r.add_argument("cells", nargs="*")
    r.add_argument("--failed", action="store_true")
    k = c.add_parser("skip")
    k.add_argument("id")
    k.add_argument("cells", nargs="+")
    sh = c.add_parser("swap-host")
    sh.add_argument("id")
    sh.add_argument("host")
    sh.add_argument("--replacement", default="")
    cc = c.add_parser("concurrency")
    cc.add_argument("id")
    cc.add_argument("max_cells", type=int)
    ac = c.add_parser("add-cells")
    ac.add_argument("id")
    ac.add_argument("triples", nargs="+", help="SOURCE:TARGET:IMAGE")
    hi = c.add_parser("history")
    hi.add_argument("id")
    hi.add_argument("--out", required=True)

    inv = sub.add_parser("inventory", help="hosts, leases and health of a spec's inventory").add_subparsers(
        dest="sub", required=True
    )
    for name in ("hosts", "leases"):
        x = inv.add_parser(name)
        x.add_argument("spec", help="campaign spec whose inventory to read (file: or netbox)")
    ch = inv.add_parser("clear-health", help="return a host marked unhealthy to service")
    ch.add_argument("spec")
    ch.add_argument("host")

    from crossvisor import netbox_cli

    netbox_cli.register(sub)
    rp = sub.add_parser("report", help="interop matrix as HTML / JUnit / JSON")
    rp.add_argument("id")
    rp.add_argument("--html")
    rp.add_argument("--junit")
    rp.add_argument("--json")
    rp.add_argument("--no-wait", action="store_true", help="report a running campaign as it stands")
    rp.add_argument(
        "--compare", metavar="PREVIOUS", help="an earlier campaign of the same spec (id or JSON report file)"
    )

    sv = sub.add_parser("serve", help="read-only web UI on loopback: campaigns, matrix, cells, consoles")
    sv.add_argument("--port", type=int, default=17290)
    sv.add_argument("--host", default="127.0.0.1", help="a loopback address (the UI has no login)")

    a = ap.parse_args(argv)
    settings = Settings()
    try:
        code = asyncio.run(_dispatch(a, settings))
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear line and a non-zero exit
        from crossvisor.core.redact import redact_text

        # one line per problem, secrets masked (every secret this process resolved, and anything
        # credential-shaped); a spec refusal is exit 2 and happens before any connection
        print(f"crossvisor: error: {redact_text(str(e))}", file=sys.stderr)
        code = 2 if type(e).__name__ in ("SpecError", "InventoryError", "ValueError") else 1
    _exit(code)


async def _dispatch(a, settings: Settings) -> int:
    from crossvisor import stack

    if a.cmd == "demo":
        from crossvisor.core.resources import example

        return await demo(settings, a.spec or str(example("demo.yaml")))
    if a.cmd == "up":
        stack.temporal_up(settings)
        pid = stack.worker_up(settings)
        print(f"temporal {settings.temporal_address}; worker pid {pid}")
        return 0
    if a.cmd == "down":
        print("stopped: " + (", ".join(stack.down(settings)) or "nothing"))
        return 0
    if a.cmd == "validate":
        from crossvisor.spec import load_spec
        from domain.matrix import expand

        plan = load_spec(a.spec)  # reads only the spec and the files it names; never connects
        print(f"{a.spec}: ok, {len(expand(plan))} cells")
        if plan.inventory == "netbox":  # the spec is fine; can it run on this NetBox?
            from crossvisor import netbox_cli

            return netbox_cli.check_plan(plan, a.spec)
        return 0
    if a.cmd == "worker":
        # the worker is its own program (python -m worker): the CLI only hands it its settings
        env = dict(os.environ, CROSSVISOR_METRICS_HOST=a.metrics_host)
        if a.metrics_port:
            env["CROSSVISOR_METRICS_PORT"] = str(a.metrics_port)
        if a.sdk_metrics_port:
            env["CROSSVISOR_SDK_METRICS_PORT"] = str(a.sdk_metrics_port)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "worker"], env)
    if a.cmd in ("netbox", "inventory"):
        from crossvisor import netbox_cli

        return await netbox_cli.dispatch(a, settings)
    if a.cmd == "report":
        res = await report_result(settings, a.id, wait=not a.no_wait)
        previous = await previous_campaign(settings, a.compare) if a.compare else None
        paths = write_reports(res, a.html, a.junit, a.json, previous, settings.home)
        render_matrix(res)
        if paths:
            print("wrote " + ", ".join(paths))
        return 0
    if a.cmd == "serve":
        from crossvisor import serve

        await serve.run(settings, a.host, a.port)
        return 0
    if a.cmd == "campaign":
        if a.sub == "start":
            cid, started = await start_campaign(settings, a.spec, a.id)
            print(f"{cid}: {'started' if started else 'already running or finished'}")
            if a.wait:
                await watch(settings, cid)
                render_matrix(await result(settings, cid))
            return 0
        if a.sub == "status":
            p = await progress(settings, a.id)
            print(json.dumps(dataclasses.asdict(p), indent=1))
            return 0
        if a.sub == "watch":
            await watch(settings, a.id)
            render_matrix(await result(settings, a.id))
            return 0
        if a.sub == "history":
            n = await export_history(settings, a.id, a.out)
            print(f"{a.out}: {n} events")
            return 0
        kw: dict = {}
        if a.sub in ("cancel", "pause", "resume"):
            kw = {"action": a.sub}
        elif a.sub == "retry":
            kw = {"action": "retry", "cells": ["*failed"] if a.failed else a.cells}
        elif a.sub == "skip":
            kw = {"action": "skip", "cells": a.cells}
        elif a.sub == "swap-host":
            kw = {"action": "swap_host", "host": a.host, "replacement": a.replacement}
        elif a.sub == "concurrency":
            kw = {"action": "set_concurrency", "max_cells": a.max_cells}
        elif a.sub == "add-cells":
            kw = {"action": "add_cells", "add": [t.split(":") for t in a.triples]}
        print(await steer(settings, a.id, **kw))
        return 0
    return 2


if __name__ == "__main__":
    main()
