"""``crossvisor report`` and ``crossvisor serve``: the matrix as HTML / JUnit / JSON, the terminal
matrix and scorecard, and the read-only web UI."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from crossvisor.client import reading
from crossvisor.commands.common import EXIT_OK, fail_on_code, fail_on_option, note
from crossvisor.core.config import Settings


def register(sub) -> None:
    from crossvisor.commands.common import connection_options

    rp = sub.add_parser(
        "report",
        help="interop matrix as HTML / JUnit / JSON, and the matrix + scorecard in the terminal",
        description="Waits for a running campaign to finish (not for a paused or stalled one); "
        "stages and evidence come from the result store under the stack's home.",
    )
    connection_options(rp)
    rp.add_argument("id", help="campaign id")
    rp.add_argument("--html", metavar="FILE", help="self-contained HTML report")
    rp.add_argument("--junit", metavar="FILE", help="JUnit XML (a test case per image/check)")
    rp.add_argument("--json", metavar="FILE", help="everything as JSON ('-' = stdout); --compare reads it back")
    rp.add_argument("-o", "--output", choices=("text", "json"), default="text", help="json: the JSON report on stdout")
    rp.add_argument("--no-wait", action="store_true", help="report a running campaign as it stands")
    rp.add_argument(
        "--compare", metavar="PREVIOUS", help="an earlier campaign of the same spec (id or JSON report file)"
    )
    fail_on_option(rp)

    sv = sub.add_parser("serve", help="read-only web UI on loopback: campaigns, matrix, cells, consoles")
    connection_options(sv)
    sv.add_argument("--port", type=int, default=17290, help="port (default 17290)")
    sv.add_argument("--host", default="127.0.0.1", help="a loopback address (the UI has no login)")


async def dispatch(a, settings: Settings) -> int:
    if a.cmd == "serve":
        from crossvisor import serve

        await serve.run(settings, a.host, a.port)
        return EXIT_OK
    return await cmd_report(a, settings)


def render_matrix(res, stream=None) -> None:
    """The matrix and the ODCA scorecard in the terminal (crossvisor/terminal.py)."""
    from rich.console import Console

    from crossvisor.terminal import render_matrix as matrix
    from crossvisor.terminal import render_scorecard

    console = Console(file=stream) if stream else Console()
    matrix(res, console)
    render_scorecard(res, console)


def write_reports(
    res, html: str | None, junit: str | None, js: str | None, previous=None, home: Path | None = None
) -> list[str]:
    """Write the requested formats ('-' = stdout for JSON). ``previous``: a campaign to compare
    with (HTML); ``home``: CROSSVISOR_HOME, so the HTML links artifacts relative to where the file
    lands."""
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
        if not path:
            continue
        if path == "-":
            sys.stdout.write(fn(res))
            sys.stdout.flush()
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(fn(res))
        out.append(path)
    return out


async def report_result(settings: Settings, cid: str, wait: bool = True):
    """The campaign as reports show it; waits for a running one unless it is paused or stalled."""
    if wait:
        await wait_for_report(settings, cid)
    return await reading.load_result(settings, cid)


async def previous_campaign(settings: Settings, ref: str):
    """``--compare``: a JSON report file (``crossvisor report --json``) or a campaign id."""
    from crossvisor import report

    if Path(ref).is_file():
        try:
            return report.parse_json(Path(ref).read_text())
        except ValueError as e:
            raise ValueError(f"--compare {ref}: {e}") from e
    return await report_result(settings, ref)


def warn_missing_store(settings: Settings, res, how: str = "") -> None:
    """A report from a machine or directory without the worker's result store has grades but no
    stages or evidence: say so loudly, naming where it looked."""
    from crossvisor.core import result_store

    folder = result_store.campaign_dir(settings.home, res.campaign_id)
    ran = [c for c in res.cells if c.grade.value != "skipped" or c.stages]
    missing = [c for c in res.cells if any("full result not found" in k.evidence.get("note", "") for k in c.checks)]
    if not ran and not missing:
        return
    where = f"{folder} (home {settings.home}{', ' + how if how else ''})"
    if not folder.is_dir():
        note(
            f"WARNING: no result store for {res.campaign_id} at {where}: every stage and piece of evidence is "
            "missing from this report. Run it where the worker's CROSSVISOR_HOME is, or pass --home / set CROSSVISOR_HOME."
        )
    elif missing:
        note(f"WARNING: {len(missing)} of {len(res.cells)} cells have no stored result under {where}")


async def cmd_report(a, settings: Settings) -> int:
    res = await report_result(settings, a.id, wait=not a.no_wait)
    previous = await previous_campaign(settings, a.compare) if a.compare else None
    warn_missing_store(settings, res, getattr(a, "home_source", ""))
    js = "-" if a.output == "json" and not a.json else a.json
    to_stdout = js == "-"
    paths = write_reports(res, a.html, a.junit, js, previous, settings.home)
    # stdout carries the JSON alone when it is asked for there; people get the matrix on stderr
    render_matrix(res, sys.stderr if to_stdout else None)
    if paths:
        (note if to_stdout else print)("wrote " + ", ".join(paths))
    return fail_on_code(reading.counts_of(res), a.fail_on)


async def wait_for_report(settings: Settings, cid: str, interval: float = 1.0) -> str:
    """``report`` waits for a running campaign to end, but not for a paused or stalled one (that
    could be forever): those are reported as they stand. Returns why it stopped waiting."""
    said = False
    while True:
        desc = await reading.describe(settings, cid)
        if reading.status_name(desc.status) != "running":
            return ""
        p = await reading.progress(settings, cid)
        if p is not None and (p.paused or p.status in ("paused", "stalled")):
            why = "paused" if p.paused else f"stalled: {p.stall_reason}"
            note(f"{cid} is {why}: reporting it as it stands (`campaign resume {cid}` to go on)")
            return why
        if not said:
            done = f"{p.counts.get('done', 0)}/{p.counts.get('total', 0)} cells done" if p else "progress unknown"
            note(f"waiting for {cid} to finish ({done}; --no-wait reports it as it stands)")
            said = True
        await asyncio.sleep(interval)
