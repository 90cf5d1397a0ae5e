"""The matrix and the ODCA scorecard in a terminal (rich), from the same analysis as the HTML."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from crossvisor.report.analysis import (
    GRADES,
    ODCA_LABEL,
    Scorecard,
    Tally,
    image_order,
    platform_order,
    root_causes,
    scorecard,
)
from crossvisor.report.redaction import scrub
from domain.model import CampaignResult, Grade

STYLE = {
    Grade.PASS: "green",
    Grade.WARN: "yellow",
    Grade.FAIL: "red",
    Grade.ERROR: "magenta",
    Grade.SKIPPED: "bright_black",
    Grade.UNOBSERVABLE: "italic bright_black",
}


def render_matrix(result: CampaignResult, console: Console | None = None) -> None:
    """Sources down, targets across (one order on both axes), one line per image in each pair;
    then the failures, one line per root cause, and the counts."""
    console = console or Console()
    order = platform_order(result)
    images = image_order(result)
    by = {(c.source, c.target, c.image): c for c in result.cells}
    t = Table(
        title=f"{scrub(result.name)}: source rows x target columns",
        show_lines=True,
        caption=f"a cell is SOURCE:TARGET:IMAGE, e.g. {_example_id(result)} (crossvisor campaign show ID CELL)",
        caption_justify="left",
    )
    t.add_column("source \\ target", style="bold")
    for tg in order:
        t.add_column(tg)
    for s in order:
        row: list[Text | str] = [s]
        for tg in order:
            lines = Text()
            for image in images:
                c = by.get((s, tg, image))
                if c is None:
                    continue
                g = c.grade
                label = g.value.upper() + (" cached" if c.cached else "") + (" \u2260" if c.mismatches else "")
                if lines:
                    lines.append("\n")
                lines.append(f"{image} ", style="dim")
                lines.append(label, style=STYLE[g])
            row.append(lines if lines else Text("same platform" if s == tg else "", style="dim"))
        t.add_row(*row)
    console.print(t)
    human = {c.cell_id: f"{c.source}:{c.target}:{c.image}" for c in result.cells}
    causes = root_causes(result)
    if causes:
        console.print("[bold]Failures by root cause[/]")
        for rc in causes:
            n = len(rc.cells)
            first = ", ".join(human.get(c, c) for c in rc.cells[:3]) + (f" +{n - 3} more" if n > 3 else "")
            line = Text("  ")
            line.append(rc.grade.value.upper(), style=STYLE[rc.grade])
            line.append(f" {n} cell{'s' if n != 1 else ''} ({', '.join(rc.checks)}): {scrub(rc.reason)}  ")
            line.append(first, style="dim")
            console.print(line)
    sc = scorecard(result)
    console.print(
        f"cells: {len(result.cells)}  "
        + "  ".join(f"{g.value}: {sc.overall.grades[g]}" for g in GRADES if sc.overall.grades[g])
    )


def _example_id(result: CampaignResult) -> str:
    """A cell of this campaign in the one form operators type (a failing one when there is one)."""
    cells = sorted(result.cells, key=lambda c: c.grade == Grade.PASS)
    c = cells[0] if cells else None
    return f"{c.source}:{c.target}:{c.image}" if c else "kvm:esxi-8:tiny-bios"


def _rate(t: Tally) -> str:
    share = t.share(Grade.PASS)
    return f"{share:.0%}" if share is not None else "-"


def _row(label: str, t: Tally) -> list[Text | str]:
    cells: list[Text | str] = [label]
    for g in (Grade.PASS, Grade.WARN, Grade.FAIL):
        n = t.grades[g]
        cells.append(Text(str(n), style=STYLE[g] if n else "dim"))
    cells.append(Text(f"{t.grades[Grade.ERROR]}/{t.grades[Grade.SKIPPED]}", style="dim"))
    cells.append(_rate(t))
    pred = f"{t.predicted - t.missed}/{t.predicted}" if t.predicted else "-"
    cells.append(Text(pred, style="red" if t.missed else ""))
    cells.append(", ".join(f"{scrub(name)} x{n}" for name, n in t.remedies.most_common()) or "-")
    return cells


def _table(title: str, first: str) -> Table:
    # compact: fits an 80-column terminal (CI logs) with platform names of a dozen characters
    t = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title_justify="left",
        caption="ok: ODCA success, warn: warning (works after the remedy in 'fixed by'), fail: failure; "
        "pass: success among verdicts; pred.: predictions that held",
        caption_justify="left",
    )
    t.add_column(first, style="bold", no_wrap=True)
    for head in ("ok", "warn", "fail", "err/skip", "pass", "pred."):
        t.add_column(head, justify="right", no_wrap=True)
    t.add_column("fixed by", min_width=14, overflow="fold")
    return t


def render_scorecard(result: CampaignResult, console: Console | None = None, sc: Scorecard | None = None) -> None:
    """ODCA-style scorecard: success / warning / failure (+ error, skipped) per source -> target
    pair and per guest image, the remediations that made the warnings work, and how many of the
    predictions held."""
    console = console or Console()
    sc = sc or scorecard(result)
    o = sc.overall
    head = Text(f"{scrub(result.name)} scorecard: ")
    for g in GRADES:
        head.append(f"{ODCA_LABEL[g]} {o.grades[g]}  ", style=STYLE[g])
    if o.predicted:
        head.append(f"predictions held {o.predicted - o.missed}/{o.predicted}", style="red" if o.missed else "green")
    console.print(head)
    pairs = _table("per source -> target pair", "pair")
    for (s, t), tally in sc.by_pair.items():
        pairs.add_row(*_row(f"{s} -> {t}", tally))
    pairs.add_row(*_row("all", o), style="bold")
    console.print(pairs)
    images = _table("per guest image", "image")
    images.caption = None
    for image, tally in sc.by_image.items():
        images.add_row(*_row(image, tally))
    console.print(images)
