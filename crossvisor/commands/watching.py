"""``watch``: a campaign followed until it ends. On a terminal: a progress bar with the running
cells and their stage; otherwise (CI logs) one line per change; ``--json``: one JSON object per
change. Then the matrix, and ``--fail-on``'s exit code."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

from crossvisor.client import reading
from crossvisor.client.formats import age_text
from crossvisor.commands.common import EXIT_OK, emit_json, emit_json_line, fail_on_code
from crossvisor.core.config import Settings


def change_key(doc: dict[str, Any]) -> tuple:
    """What makes a new line: status, counts, running cells and their stages (not the clock)."""
    return (
        doc.get("status"),
        doc.get("paused"),
        doc.get("stall_reason"),
        tuple(sorted((doc.get("counts") or {}).items())),
        tuple((r["cell"], r.get("stage", "")) for r in doc.get("running", [])),
    )


def format_line(doc: dict[str, Any]) -> str:
    c = doc.get("counts") or {}
    now = datetime.now(UTC).strftime("%H:%M:%S")
    grades = " ".join(f"{g} {c.get(g, 0)}" for g in ("pass", "warn", "fail", "error", "skipped") if c.get(g, 0))
    running = ", ".join(r["cell"] + (f" [{r['stage']}]" if r.get("stage") else "") for r in doc.get("running", []))
    line = f"{now} {doc['campaign_id']} {doc['status']} {c.get('done', 0)}/{c.get('total', 0)}"
    line += f" {grades}" if grades else ""
    line += f" | running {len(doc.get('running', []))}: {running}" if running else ""
    if doc.get("stall_reason"):
        line += f" | stalled: {doc['stall_reason']}"
    line += f" | {age_text(doc)}"
    return line


async def follow(settings: Settings, cid: str, interval: float = 1.0, mode: str = "auto") -> dict[str, Any]:
    """Poll until the campaign's workflow closes; returns the last snapshot. ``mode``: tty |
    lines | json | auto (tty when stdout is a terminal)."""
    if mode == "auto":
        mode = "tty" if sys.stdout.isatty() else "lines"
    last_key: tuple | None = None
    bar = None
    try:
        while True:
            doc = await reading.snapshot(settings, cid)
            key = change_key(doc)
            if mode == "tty":
                bar = bar or _Bar(cid)
                bar.update(doc)
            elif key != last_key:
                if mode == "lines":
                    print(format_line(doc), flush=True)
                elif mode == "json":
                    emit_json_line({"event": "progress", "at": time.time(), **doc})
            last_key = key
            if doc["workflow_status"] != "running":
                return doc
            await asyncio.sleep(interval)
    finally:
        if bar is not None:
            bar.stop()


class _Bar:
    """rich progress on the terminal: the bar, counts, age/ETA, then one line per running cell."""

    def __init__(self, cid: str):
        from rich.console import Console
        from rich.live import Live

        self.cid = cid
        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def update(self, doc: dict[str, Any]) -> None:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        c = doc.get("counts") or {}
        total, done = c.get("total", 0) or 1, c.get("done", 0)
        head = Text(f"{self.cid} ", style="bold")
        head.append(f"{doc['status']} {done}/{c.get('total', 0)}  ")
        for g, style in (
            ("pass", "green"),
            ("warn", "yellow"),
            ("fail", "red"),
            ("error", "magenta"),
            ("skipped", "dim"),
        ):
            if c.get(g):
                head.append(f"{g} {c[g]}  ", style=style)
        head.append(age_text(doc))
        parts: list[Any] = [head, ProgressBar(total=total, completed=done, width=60)]
        if doc.get("stall_reason"):
            parts.append(Text(f"stalled: {doc['stall_reason']}", style="red"))
        for r in doc.get("running", []):
            parts.append(Text(f"  {r['cell']} on {r['hosts']}" + (f" [{r['stage']}]" if r.get("stage") else "")))
        self.live.update(Group(*parts))

    def stop(self) -> None:
        self.live.stop()


async def watch_and_report(settings: Settings, cid: str, a) -> int:
    """Follow, then print the matrix (text) or the final state (JSON); ``--fail-on``."""
    json_out = getattr(a, "output", "text") == "json"
    doc = await follow(settings, cid, getattr(a, "interval", 1.0), "json" if json_out else "auto")
    res = await reading.load_result(settings, cid)
    counts = reading.counts_of(res)
    if json_out:
        emit_json_line({"event": "end", "campaign_id": cid, "status": doc["status"], "counts": counts})
    else:
        print(
            f"{cid}: {doc['status']}, "
            + ", ".join(f"{g} {counts[g]}" for g in ("pass", "warn", "fail", "error", "skipped"))
        )
        from crossvisor.commands.results import render_matrix

        render_matrix(res)
    return fail_on_code(counts, getattr(a, "fail_on", frozenset()))


__all__ = ["EXIT_OK", "emit_json", "follow", "format_line", "watch_and_report"]
