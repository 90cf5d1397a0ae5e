"""``crossvisor campaign``: start, list, status, show, watch, history, and the steering commands
(one Temporal update per action; a refusal prints the campaign's own reason). Arguments and
printing only: the work is the campaign client's (``crossvisor/client/``)."""

from __future__ import annotations

import argparse
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from crossvisor.client import reading, steering
from crossvisor.client.campaigns import LIST_LIMIT, Campaigns
from crossvisor.client.formats import age_text, counts_text
from crossvisor.client.starting import start_campaign
from crossvisor.commands.common import (
    CELL_FORM,
    EXIT_INPUT,
    EXIT_OK,
    CliError,
    connect,
    emit_json,
    fail_on_option,
    human_id,
    note,
    output_options,
    rpc_error,
    split_cell,
    to_cell_id,
)
from crossvisor.core.config import Settings

STEERING = {
    # command -> (update name, help)
    "pause": ("pause", "no new cells start; running cells finish"),
    "resume": ("resume", "start scheduling cells again"),
    "retry": ("retry", "run failed/errored cells (or the named ones) again; on a finished campaign, a rerun"),
    "skip": ("skip", "grade pending cells 'skipped' without running them"),
    "swap-host": ("swap_host", "take a host out of scheduling (optionally handing its platforms to another)"),
    "concurrency": ("set_concurrency", "change how many cells run at once (up to the spec's max_cells)"),
    "add-cells": ("add_cells", "add cells of the spec's platforms and images to a running campaign"),
}


def register(sub) -> None:
    from crossvisor.commands.common import CommandListHelp, connection_options

    c = sub.add_parser(
        "campaign",
        help="start, watch, list, inspect and steer campaigns",
        description="Campaigns are Temporal workflows; cells are named SOURCE:TARGET:IMAGE (e.g. kvm:esxi-6.5:tiny-bios).",
        formatter_class=CommandListHelp,
    ).add_subparsers(dest="sub", required=True, metavar="COMMAND")

    def leaf(name: str, help_: str, **kw) -> argparse.ArgumentParser:
        p = c.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", **kw)
        connection_options(p)
        return p

    def cid(p: argparse.ArgumentParser) -> None:
        p.add_argument("id", help="campaign id (`crossvisor campaign list` shows them)")

    s = leaf("start", "start a campaign from a spec (or find the one already running under its id)")
    s.add_argument("spec", help="campaign spec (YAML); validated before anything starts")
    s.add_argument("--id", help="campaign id (default: campaign-<spec name>); an existing id must have the same spec")
    s.add_argument("--wait", action="store_true", help="watch it until it ends, then print the matrix")
    fail_on_option(s)
    output_options(s)

    ls = leaf("list", "campaigns Temporal knows, newest first, with status and counts")
    ls.add_argument(
        "--status", help="only campaigns in this status (running, paused, stalled, completed, cancelled...)"
    )
    ls.add_argument("-q", "--query", help='a Temporal visibility query ANDed in, e.g. "CrossvisorFail > 0"')
    ls.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"at most this many (default {LIST_LIMIT})")
    output_options(ls)

    st = leaf("status", "where a campaign stands: status, counts, running cells and their stage, age, ETA")
    cid(st)
    output_options(st)

    sh = leaf("show", "a campaign's cells, or one cell: stage timeline, checks and evidence, console, artifacts")
    cid(sh)
    sh.add_argument("cell", nargs="?", help=f"a cell, {CELL_FORM}; without it, every cell with its grade")
    sh.add_argument("--console-lines", type=int, default=20, help="console excerpt length (default 20 lines)")
    output_options(sh)

    w = leaf("watch", "follow a campaign until it ends (one line per change when not a terminal), then the matrix")
    cid(w)
    w.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    fail_on_option(w)
    output_options(w)

    cancel = leaf("cancel", "cancel: running cells clean up and release their hosts; ends as Canceled in Temporal")
    cid(cancel)
    for name, (_update, help_) in STEERING.items():
        p = leaf(name, help_)
        cid(p)
        p.add_argument("--request-id", help="idempotency key: the same key applies once (default: a new one)")
        output_options(p)
        if name == "retry":
            p.add_argument("cells", nargs="*", metavar="CELL", help=f"cells to run again ({CELL_FORM})")
            p.add_argument("--failed", action="store_true", help="every cell graded fail or error (not skipped ones)")
        elif name == "skip":
            p.add_argument("cells", nargs="+", metavar="CELL", help=f"pending cells to skip ({CELL_FORM})")
        elif name == "swap-host":
            p.add_argument("host", help="host to take out of scheduling")
            p.add_argument("--replacement", default="", help="a host of the same kind that takes over its platforms")
        elif name == "concurrency":
            p.add_argument("max_cells", type=int, help="cells at once (1 .. the spec's concurrency.max_cells)")
        elif name == "add-cells":
            p.add_argument("cells", nargs="+", metavar="CELL", help=f"cells to add ({CELL_FORM})")

    hi = leaf("history", "the campaign workflow's event history as JSON (stdout, or --out FILE)")
    cid(hi)
    hi.add_argument("--out", help="write to this file instead of stdout ('-' = stdout)")


async def dispatch(a, settings: Settings) -> int:
    fn = {
        "start": cmd_start,
        "list": cmd_list,
        "status": cmd_status,
        "show": cmd_show,
        "watch": cmd_watch,
        "cancel": cmd_cancel,
        "history": cmd_history,
    }.get(a.sub, cmd_steer)
    return await fn(a, settings)


# ---------------------------------------------------------------------------------- start


async def cmd_start(a, settings: Settings) -> int:
    cid, started, why = await start_campaign(settings, a.spec, a.id, note)
    if a.output == "json" and not a.wait:
        emit_json({"campaign_id": cid, "started": started, "note": why})
        return EXIT_OK
    msg = f"{cid}: {'started' if started else why}"
    print(msg) if a.output == "text" else note(msg)
    if not a.wait:
        return EXIT_OK
    from crossvisor.commands.watching import watch_and_report

    return await watch_and_report(settings, cid, a)


# ----------------------------------------------------------------------------------- read


async def cmd_status(a, settings: Settings) -> int:
    doc = await reading.snapshot(settings, a.id)
    if a.output == "json":
        emit_json(doc)
    else:
        print(format_status(doc))
    return EXIT_OK


def format_status(doc: dict[str, Any]) -> str:
    head = f"campaign {doc['campaign_id']}"
    if doc.get("name"):
        head += f" ({doc['name']})"
    status = doc["status"]
    if doc.get("paused") and status != "paused":
        status += ", paused"
    lines = [f"{head}: {status}, {age_text(doc)}"]
    if doc.get("stall_reason"):
        lines.append(f"  stalled: {doc['stall_reason']}")
    if doc.get("counts"):
        lines.append("  cells: " + counts_text(doc["counts"]))
    for r in doc.get("running", []):
        lines.append(f"  running {r['cell']} on {r['hosts']}" + (f" [{r['stage']}]" if r.get("stage") else ""))
    return "\n".join(lines)


async def cmd_list(a, settings: Settings) -> int:
    try:
        found = await Campaigns(settings, await connect(settings)).list(a.status or "", a.query or "", a.limit)
    except CliError:
        raise
    except Exception as e:  # noqa: BLE001
        raise rpc_error(e, settings) from None
    rows = [{k: v for k, v in dataclasses.asdict(r).items() if k != "progress"} for r in found]
    if a.output == "json":
        emit_json(rows)
        return EXIT_OK
    if not rows:
        note("no campaigns" + (f" with status {a.status}" if a.status else ""))
        return EXIT_OK
    head = ("campaign", "name", "status", "done", "pass", "warn", "fail", "error", "skipped", "started")
    table = [head]
    for r in rows:
        c = r["counts"]
        table.append(
            (
                r["campaign_id"],
                r["name"] or "-",
                r["status"],
                f"{c.get('done', '-')}/{c.get('total', '-')}" if c else "-",
                *(str(c.get(g, "-")) if c else "-" for g in ("pass", "warn", "fail", "error", "skipped")),
                r["started_at"][:19].replace("T", " "),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:  # plain columns: no truncation, greppable, same on a terminal and in a pipe
        print(
            "  ".join(v.rjust(w) if 3 <= i <= 8 else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))).rstrip()
        )
    return EXIT_OK


async def cmd_show(a, settings: Settings) -> int:
    res = await reading.load_result(settings, a.id)
    if a.cell is None:
        rows = [
            {
                "cell": human_id(c.source, c.target, c.image),
                "cell_id": c.cell_id,
                "grade": c.grade.value,
                "cached": c.cached,
                "reason": next((k.reason for k in c.checks if k.reason and k.grade.value != "pass"), ""),
            }
            for c in res.cells
        ]
        if a.output == "json":
            emit_json({"campaign_id": res.campaign_id, "name": res.name, "status": res.status, "cells": rows})
        else:
            width = max((len(r["cell"]) for r in rows), default=4)
            print(f"campaign {res.campaign_id} ({res.name}): {res.status}, {len(rows)} cells finished")
            for r in rows:
                print(
                    f"  {r['cell']:<{width}}  {r['grade'].upper():<7}{' cached' if r['cached'] else ''}  {r['reason']}"
                )
        return EXIT_OK
    want = to_cell_id(a.cell)
    cell = next((c for c in res.cells if c.cell_id == want), None)
    if cell is None:
        known = ", ".join(human_id(c.source, c.target, c.image) for c in res.cells[:6])
        raise CliError(
            f"campaign {a.id} has no finished cell {a.cell!r}" + (f" (finished: {known}, ...)" if known else ""),
            EXIT_INPUT,
        )
    from crossvisor.commands.cellview import cell_document, format_cell

    doc = cell_document(cell, settings.home, a.console_lines)
    if a.output == "json":
        emit_json(doc)
    else:
        print(format_cell(doc))
    return EXIT_OK


async def cmd_history(a, settings: Settings) -> int:
    import sys
    from pathlib import Path

    client = await connect(settings)
    try:
        hist = await client.get_workflow_handle(a.id).fetch_history()
    except Exception as e:  # noqa: BLE001
        raise rpc_error(e, settings, a.id) from None
    text = hist.to_json()
    if a.out and a.out != "-":
        Path(a.out).write_text(text)
        note(f"{a.out}: {len(hist.events)} events")
    else:
        sys.stdout.write(text + "\n")
    return EXIT_OK


async def cmd_watch(a, settings: Settings) -> int:
    from crossvisor.commands.watching import watch_and_report

    return await watch_and_report(settings, a.id, a)


# ------------------------------------------------------------------------------- steering


def _request(a, rid: str):
    from domain import control

    typed: dict[str, str] = {}

    def cells(names: list[str]) -> list[str]:
        out = []
        for n in names:
            cid = to_cell_id(n)
            typed[cid] = n
            out.append(cid)
        return out

    if a.sub == "retry":
        if not a.failed and not a.cells:
            raise CliError(f"retry: name cells ({CELL_FORM}) or --failed", EXIT_INPUT)
        return control.RetryRequest(cells(a.cells), failed=a.failed, request_id=rid), typed
    if a.sub == "skip":
        return control.SkipRequest(cells(a.cells), rid), typed
    if a.sub == "swap-host":
        return control.SwapHostRequest(a.host, a.replacement, rid), typed
    if a.sub == "concurrency":
        return control.ConcurrencyRequest(a.max_cells, rid), typed
    if a.sub == "add-cells":
        from domain.matrix import cell_id

        triples = [split_cell(t) for t in a.cells]
        typed.update({cell_id(*t): text for t, text in zip(triples, a.cells)})
        return control.AddCellsRequest(triples, rid), typed
    if a.sub == "pause":
        return control.PauseRequest(rid), typed
    return control.ResumeRequest(rid), typed


def _log_action(settings: Settings, action: str, cid: str, run_id: str, **fields: Any) -> None:
    import os

    from crossvisor.core import log

    # the CLI's own log (stderr): for people on a terminal, JSON when collected
    log.configure(settings.log_level, fmt=os.environ.get("CROSSVISOR_LOG_FORMAT", "auto"))
    log.get(component="cli").info(
        f"operator.{action}",
        campaign=cid,
        workflow_id=cid,
        run_id=run_id,
        namespace=settings.temporal_namespace,
        **fields,
    )


async def cmd_steer(a, settings: Settings) -> int:
    update = STEERING[a.sub][0]
    rid = a.request_id or uuid.uuid4().hex
    req, typed = _request(a, rid)
    desc = await reading.describe(settings, a.id)
    if a.sub == "retry" and reading.status_name(desc.status) != "running":
        from crossvisor.client.rerun import rerun

        result = await rerun(settings, a.id, req, desc, typed, note)
        run_id = result.pop("run_id", "")
    else:
        r = await steering.send_update(settings, a.id, update, req, typed)
        names = await steering.human_names(settings, a.id, r.cells, typed)
        result = {
            "applied": r.applied,
            "message": steering.humanise(r.message, typed),
            "cells": names,
            "rerun": False,
        }
        if names:
            result["message"] += ": " + ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        run_id = desc.run_id
    _log_action(settings, update, a.id, run_id, request_id=rid, applied=result["applied"], cells=result["cells"])
    if a.output == "json":
        emit_json({"campaign_id": a.id, "action": update, "request_id": rid, **result})
    else:
        print(f"{a.id}: {result['message']}")
    return EXIT_OK


async def cmd_cancel(a, settings: Settings) -> int:
    """A Temporal cancellation request (what the Web UI's and `temporal workflow cancel` send):
    the campaign cancels its running cells, which clean up and release their hosts, and ends as
    Canceled."""
    run_id = await steering.request_cancel(settings, a.id)
    _log_action(settings, "cancel", a.id, run_id, at=datetime.now(UTC).isoformat())
    print(f"{a.id}: cancel requested: running cells clean up and release their hosts; it ends as cancelled")
    return EXIT_OK
