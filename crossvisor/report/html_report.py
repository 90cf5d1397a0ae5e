"""The HTML report, one self-contained page (``render_html``), and the pieces the web UI
(``crossvisor serve``) reuses with other links (``Links``).

The page shows before it lists: an ODCA-style scorecard beside the matrix (sources down, targets
across, one order on both axes), failures grouped by root cause, charts (``charts.py``), the
comparison with a previous campaign, and one detail section per cell (stage timeline, every check
with its prediction and evidence, console excerpt, remediation ladder, artifacts). Every string from
a guest, a host or a tool is escaped and scrubbed (``markup.escape``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from urllib.parse import quote

from crossvisor.core.redact import is_secret_key
from crossvisor.core.timefmt import human_duration, human_time, span_seconds
from crossvisor.report.analysis import (
    GRADES,
    ODCA_LABEL,
    VERDICTS,
    Change,
    Comparison,
    RootCause,
    Scorecard,
    Tally,
    cell_seconds,
    compare,
    first_reason,
    image_order,
    platform_order,
    root_causes,
    scorecard,
)
from crossvisor.report.charts import charts_html, stage_timeline_html
from crossvisor.report.json_report import _host_dict
from crossvisor.report.markup import Links, _a, _e, cell_anchor, file_links, safe_relative
from crossvisor.report.redaction import REDACTED
from domain.matrix import human_id
from domain.model import (
    CampaignResult,
    CellResult,
    CheckResult,
    Grade,
    Prediction,
    agrees,
    unmodified,
)

# ---------------------------------------------------------------------------------------- HTML


_PATH_PREFIX = "path:"


def _badge(grade: Grade | None, text: str | None = None) -> str:
    name = grade.value if grade else "none"
    label = text if text is not None else (name if grade else "\u2014")
    return f'<span class="badge g-{name}">{_a(label)}</span>'


def html_page(title: str, body: str, *, head: str = "") -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>"
        f"<title>{_e(title)}</title>{head}</head><body>{body}</body></html>\n"
    )


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return resources.files("crossvisor").joinpath("web/static/crossvisor.css").read_text(encoding="utf-8")


def campaign_header(result: CampaignResult) -> str:
    span = span_seconds(result.started_at, result.finished_at)
    hosts = len(result.hosts)
    return (
        f"<h1>{_e(result.name)}</h1><p class='meta'>"
        f"<span>campaign <code>{_e(result.campaign_id)}</code></span>"
        f"<span>status <b data-status='{_a(result.status)}'>{_e(result.status)}</b></span>"
        f"<span>started <time datetime='{_e(result.started_at)}'>{_e(human_time(result.started_at))}</time></span>"
        f"<span>finished <time datetime='{_e(result.finished_at)}'>{_e(human_time(result.finished_at))}</time></span>"
        + (f"<span>took <b>{human_duration(span)}</b></span>" if span is not None else "")
        + f"<span>{len(result.cells)} cells on {hosts} host{'s' if hosts != 1 else ''}</span></p>"
    )


def _rate_bar(t: Tally) -> str:
    if not t.verdicts:
        return "<span class='muted'>no verdict</span>"
    p, w = t.share(Grade.PASS) or 0.0, t.share(Grade.WARN) or 0.0
    return (
        f"<span title='success {p:.0%}; with warnings {p + w:.0%} work'><span class='rate'>"
        f"<i class='w' style='width:{(p + w) * 100:.1f}%'></i><i style='width:{p * 100:.1f}%'></i></span> {p:.0%}</span>"
    )


def _remedies(t: Tally) -> str:
    return ", ".join(f"{_e(name)} &times;{n}" for name, n in t.remedies.most_common()) or "<span class='muted'>—</span>"


def _tally_row(label: str, t: Tally) -> str:
    def num(g: Grade) -> str:
        n = t.grades[g]
        return (
            f"<span class='g-{g.value}' data-count='{g.value}'>{n}</span>"
            if n
            else "<span class='muted'>&middot;</span>"
        )

    # ODCA's three tiers get a column each; error and skipped (no verdict) share one
    nums = "".join(
        f"<td class='num{f' g-{g.value}' if t.grades[g] else ''}' data-count='{g.value}'>{t.grades[g] or '&middot;'}</td>"
        for g in VERDICTS
    )
    nums += f"<td class='num small'>{num(Grade.ERROR)} / {num(Grade.SKIPPED)}</td>"
    pred = f"{t.predicted - t.missed}/{t.predicted}" if t.predicted else "—"
    if t.missed:
        pred = f"<span class='miss-flag' title='{t.missed} predictions missed'>{pred}</span>"
    return f"<tr><th>{label}</th>{nums}<td>{_rate_bar(t)}</td><td>{_remedies(t)}</td><td class='num'>{pred}</td></tr>"


def scorecard_html(result: CampaignResult, sc: Scorecard) -> str:
    o = sc.overall
    tiles = []
    for g in GRADES:
        share = o.share(g) if g in VERDICTS else None
        pct = f"<div class='p'>{share:.0%} of verdicts</div>" if share is not None else ""
        tiles.append(
            f"<div class='tile g-{g.value}' data-tile='{g.value}'><div class='n'>{o.grades[g]}</div>"
            f"<div class='l'>{ODCA_LABEL[g]}</div>{pct}</div>"
        )
    held = (
        f"Predictions held for {o.predicted - o.missed} of {o.predicted} checks"
        + (f" &mdash; <span class='miss-flag'>{o.missed} missed</span> (marked &ne; in the matrix)" if o.missed else "")
        if o.predicted
        else "No predictions recorded."
    )
    head = (
        "<tr><th></th>"
        + "".join(f"<th class='num'>{ODCA_LABEL[g]}</th>" for g in VERDICTS)
        + "<th class='num' title='no verdict: infrastructure error / skipped'>err / skip</th>"
        + "<th>pass rate</th><th>what fixed it</th><th class='num' title='predictions that held'>predicted</th></tr>"
    )
    pairs = "".join(_tally_row(f"{_e(s)} &rarr; {_e(t)}", v) for (s, t), v in sc.by_pair.items())
    images = "".join(_tally_row(f"<code>{_e(i)}</code>", v) for i, v in sc.by_image.items())
    return (
        "<div class='panel' id='scorecard'><h2>Scorecard</h2>"
        f"<div class='tiles'>{''.join(tiles)}</div><p class='small'>{held}</p>"
        f"<table class='scorecard' id='scorecard-pairs'><caption class='small muted'>cells per source &rarr; target pair</caption>{head}{pairs}</table>"
        f"<table class='scorecard' id='scorecard-images'><caption class='small muted'>cells per guest image</caption>{head}{images}</table>"
        "<p class='legend'>success: works unmodified &middot; warning: works after the named remediation &middot; "
        "failure: does not work &middot; error: infrastructure, no verdict &middot; pass rate: success among verdicts "
        "(lighter: with warnings)</p></div>"
    )


def _chip(cell: CellResult, grade: Grade, links: Links) -> str:
    miss = cell.mismatches
    title = f"{cell.image}: {grade.value.upper()}"
    if grade == Grade.WARN and cell.remedy:
        title += f" after {cell.remedy}"
    reason = first_reason(cell)
    if reason:
        title += f" \u2014 {reason[:120]}"
    if miss:
        title += f" (prediction missed: {', '.join(miss)})"
    cls = f"chip g-{grade.value}" + (" miss" if miss else "")
    return (
        f'<a class="{cls}" href="{_a(links.cell(cell.cell_id))}" data-cell="{_a(cell.cell_id)}" '
        f'data-grade="{grade.value}" data-image="{_e(cell.image)}" title="{_e(title[:300])}">'
        f"{_e(cell.image)}<b>{grade.value}</b></a>"
    )


def matrix_html(result: CampaignResult, links: Links) -> str:
    order = platform_order(result)
    images = image_order(result)
    rank = {im: i for i, im in enumerate(images)}
    by_pair: dict[tuple[str, str], list[CellResult]] = {}
    for c in result.cells:
        by_pair.setdefault((c.source, c.target), []).append(c)
    compact = len(images) > 4
    out = [
        "<div class='panel' id='matrix'><h2>Matrix</h2>",
        f"<table class='matrix{' chips-compact' if compact else ''}'><tr><th class='corner'>source&nbsp;&darr;<br>target&nbsp;&rarr;</th>",
        *(f"<th data-target='{_e(t)}'>{_e(t)}</th>" for t in order),
        "</tr>",
    ]
    for s in order:
        out.append(f"<tr><th data-source='{_e(s)}'>{_e(s)}</th>")
        for t in order:
            cells = sorted(by_pair.get((s, t), []), key=lambda c: rank[c.image])
            diag = " diag" if s == t else ""
            inner = "".join(_chip(c, c.grade, links) for c in cells)
            if not inner:
                inner = (
                    "<span class='same'>same platform</span>" if s == t else "<span class='muted small'>not run</span>"
                )
            out.append(f"<td class='pair{diag}' data-source='{_e(s)}' data-target='{_e(t)}'>{inner}</td>")
        out.append("</tr>")
    out.append("</table>")
    out.append(
        "<p class='legend'>"
        + " ".join(_badge(g) for g in GRADES)
        + " one entry per guest image; &ne; a prediction that missed; hatched: the diagonal (same platform). "
        "Each entry links to its cell.</p></div>"
    )
    return "".join(out)


def _hits(
    cell_ids: list[str], grade_of: dict[str, Grade], name_of: dict[str, str], links: Links, limit: int = 24
) -> str:
    """One chip per cell, named as operators type it (``esxi:hyperv:portable``), linked by its id."""
    chips = [
        f'<a class="hit g-{grade_of.get(cid, Grade.FAIL).value}" href="{_a(links.cell(cid))}" data-cell="{_a(cid)}">'
        f"{_e(name_of.get(cid, cid))}</a>"
        for cid in cell_ids
    ]
    if len(chips) <= limit:
        return "".join(chips)
    return (
        "".join(chips[:limit])
        + f"<details><summary>{len(chips) - limit} more</summary>{''.join(chips[limit:])}</details>"
    )


def root_causes_html(result: CampaignResult, causes: list[RootCause], links: Links) -> str:
    if not causes:
        return "<h2 id='causes'>Failures by root cause</h2><p>No failures and no infrastructure errors.</p>"
    grade_of = {c.cell_id: c.grade for c in result.cells}
    name_of = {c.cell_id: human_id(c.source, c.target, c.image) for c in result.cells}
    items = []
    for rc in causes:
        n = len(rc.cells)
        items.append(
            f"<li data-cause-cells='{n}'>{_badge(rc.grade)} <b>{n} cell{'s' if n != 1 else ''}</b> "
            f"<span class='muted small'>({', '.join(_a(c) for c in rc.checks)})</span><br>"
            f"<span class='why'>{_e(rc.reason)}</span><br>{_hits(rc.cells, grade_of, name_of, links)}</li>"
        )
    return f"<h2 id='causes'>Failures by root cause ({len(causes)})</h2><ol class='causes'>{''.join(items)}</ol>"


def _change_rows(changes: list[Change], links: Links) -> str:
    rows = []
    for ch in changes:
        href = links.cell(ch.cell_id) if ch.after is not None else None
        shown = _e(human_id(ch.source, ch.target, ch.image))
        name = f"<a href='{_a(href)}'>{shown}</a>" if href else shown
        rows.append(
            f"<tr data-change-cell='{_a(ch.cell_id)}'><td>{name}</td><td>{_badge(ch.before)}</td><td>{_badge(ch.after)}</td>"
            f"<td class='small'>{_e(ch.reason_after or ch.reason_before)}</td></tr>"
        )
    return "".join(rows)


def comparison_html(cmp: Comparison, links: Links) -> str:
    blocks = []
    for title, key, changes in (
        ("New failures", "new", cmp.new_failures),
        ("Fixed", "fixed", cmp.fixed),
        ("Still failing", "still", cmp.still_failing),
        ("Other changes", "other", cmp.other_changes),
    ):
        if not changes:
            blocks.append(f"<h3 data-compare='{key}' data-count='0'>{title}: none</h3>")
            continue
        blocks.append(
            f"<h3 data-compare='{key}' data-count='{len(changes)}'>{title} ({len(changes)})</h3>"
            "<table><tr><th>cell</th><th>before</th><th>now</th><th>reason</th></tr>"
            + _change_rows(changes, links)
            + "</table>"
        )
    when = f", finished {_e(human_time(cmp.previous_finished))}" if cmp.previous_finished else ""
    return (
        f"<h2 id='compare'>Compared with <code>{_e(cmp.previous_id)}</code></h2>"
        f"<p class='meta'>{_e(cmp.previous_name)}{when}: {len(cmp.new_failures)} new failures, {len(cmp.fixed)} fixed, "
        f"{len(cmp.still_failing)} still failing, {len(cmp.other_changes)} other changes, {cmp.unchanged} unchanged.</p>"
        + "".join(blocks)
    )


# ------------------------------------------------------------------------------------ cell detail


def _evidence_html(evidence: dict[str, str], skip: Iterable[str] = ()) -> str:
    """Short facts inline ("key value · key value"), multi-line values as blocks, ``path:``
    values as links when they stay relative; secret-named keys never show their value."""
    inline, blocks = [], []
    for key, value in evidence.items():
        if key in skip:
            continue
        if is_secret_key(key):
            inline.append(f"<span class='kv'><i>{_e(key)}</i> {REDACTED}</span>")
            continue
        value = str(value)
        rel = safe_relative(value[len(_PATH_PREFIX) :]) if value.startswith(_PATH_PREFIX) else None
        if rel is not None:
            inline.append(f"<span class='kv'><i>{_e(key)}</i> <a href='{_e(quote(rel))}'>{_e(rel)}</a></span>")
        elif "\n" in value:
            blocks.append(f"<div class='kv'><i>{_e(key)}</i><pre class='console'>{_e(value)}</pre></div>")
        else:
            inline.append(f"<span class='kv'><i>{_e(key)}</i> {_e(value)}</span>")
    return (f"<div class='ev'>{''.join(inline)}</div>" if inline else "") + "".join(blocks)


def distinct_consoles(cell: CellResult) -> list[tuple[list[str], str]]:
    """Distinct console excerpts and the checks that carry each: a failed stage hands the same
    console to every check, and it is shown once."""
    seen: dict[str, list[str]] = {}
    for ch in cell.checks:
        text = ch.evidence.get("console")
        if text:
            seen.setdefault(text, []).append(ch.check)
    return [(checks, text) for text, checks in seen.items()]


def _prediction_html(p: Prediction | None, observed: Grade) -> str:
    if p is None:
        return "<span class='muted'>\u2014</span>"
    rule = f" <span class='small muted'>{_e(p.rule)}</span>" if p.rule else ""
    if not agrees(p.grade, observed):
        why = f"<div class='small muted'>{_e(p.reason)}</div>" if p.reason else ""
        return f"{_badge(p.grade)} <span class='miss-flag' title='prediction missed'>&ne; missed</span>{rule}{why}"
    if p.grade == observed:
        return f"<span class='muted small' title='{_e(p.rule)}'>as predicted</span>"
    return f"{_badge(p.grade)}{rule}"


def _shared_evidence(cell: CellResult) -> dict[str, str]:
    """Facts every check of the cell carries with the same value (hosts, say): shown once."""
    with_ev = [ch.evidence for ch in cell.checks if ch.evidence]
    if len(with_ev) < 2:
        return {}
    first = with_ev[0]
    return {k: v for k, v in first.items() if k != "console" and all(ev.get(k) == v for ev in with_ev[1:])}


def _notable_stages(cell: CellResult) -> str:
    """Stages worth a line: failed, errored, retried or skipped for a reason."""
    items = []
    for s in cell.stages:
        if s.status in ("fail", "error") or s.attempts > 1 or (s.reason and s.status != "skipped"):
            tries = f" after {s.attempts} attempts" if s.attempts > 1 else ""
            items.append(
                f"<li>{_status_badge(s.status)} <b>{_a(s.stage)}</b>{tries}, {human_duration(s.duration_s)}"
                + (f": {_e(s.reason)}" if s.reason else "")
                + "</li>"
            )
    skipped = [s.stage for s in cell.stages if s.status == "skipped"]
    if skipped:
        items.append(f"<li>{_status_badge('skipped')} {', '.join(_a(x) for x in skipped)}</li>")
    return f"<ul class='notes'>{''.join(items)}</ul>" if items else ""


def cell_detail_html(cell: CellResult, links: Links, *, heading: str = "h3") -> str:
    """Everything about one cell: what ran where and when, the stage timeline, every check with
    its prediction, reason and evidence, the console, the remediation ladder and the artifacts."""
    g = cell.grade
    predicted = {p.check: p for p in cell.predictions}
    facts = [
        f"<span><b>{_e(cell.source_host or '?')}</b> &rarr; <b>{_e(cell.target_host or '?')}</b></span>",
        f"<span>started <time datetime='{_e(cell.started_at)}'>{_e(human_time(cell.started_at))}</time></span>",
        f"<span>took <b>{human_duration(cell_seconds(cell))}</b></span>",
    ]
    if cell.cached:
        facts.append("<span><b>cached</b>: result reused from an identical earlier run</span>")
    if cell.fingerprint:
        facts.append(f"<span>fingerprint <code>{_e(cell.fingerprint[:12])}</code></span>")
    out = [
        f"<section class='cell' id='{_a(cell_anchor(cell.cell_id))}' data-cell='{_a(cell.cell_id)}' data-grade='{g.value}'>",
        f"<{heading}>{_badge(g)} {_e(cell.source)} &rarr; {_e(cell.target)} &middot; <code>{_e(cell.image)}</code> "
        f"<span class='muted small'>{_a(cell.cell_id)}</span></{heading}><p class='meta'>{''.join(facts)}</p>",
    ]
    if g == Grade.WARN:
        out.append(
            f"<p class='notice'>Works only after remediation <b>{_e(cell.remedy or 'unnamed')}</b> (ODCA warning).</p>"
        )
    out.append(stage_timeline_html(cell))
    out.append(_notable_stages(cell))
    shared = _shared_evidence(cell)
    has_pred = bool(cell.predictions)  # no prediction column for a cell the rules said nothing about
    out.append(
        "<table class='checks'><tr><th>check</th><th>observed</th>"
        + ("<th>predicted</th>" if has_pred else "")
        + "<th>reason and evidence</th></tr>"
    )
    # checks with the same grade, reason and prediction share one row (a failed import fails all
    # seven with one reason: one line, each check's own evidence inside it)
    rows: dict[tuple[str, str, str], list[CheckResult]] = {}
    for ch in cell.checks:
        rows.setdefault(
            (ch.grade.value, ch.reason, _prediction_html(predicted.get(ch.check), unmodified(ch))), []
        ).append(ch)
    for (grade, reason, pred), group in rows.items():
        names = " ".join(ch.check for ch in group)
        evidence = []
        for ch in group:
            ev = _evidence_html(ch.evidence, skip=("console", *shared))
            if ev:
                evidence.append(f"<div class='ev-of'><b>{_a(ch.check)}</b> {ev}</div>" if len(group) > 1 else ev)
        out.append(
            f"<tr data-checks='{_a(names)}' data-grade='{grade}'><th>{_a(', '.join(ch.check for ch in group))}</th>"
            f"<td>{_badge(Grade(grade))}</td>{f'<td>{pred}</td>' if has_pred else ''}"
            f"<td>{f'<div>{_e(reason)}</div>' if reason else ''}{''.join(evidence)}</td></tr>"
        )
    if shared:
        span = 3 if has_pred else 2
        out.append(
            f"<tr><th class='muted small'>every check</th><td colspan='{span}'>{_evidence_html(shared)}</td></tr>"
        )
    out.append("</table>")
    for checks, text in distinct_consoles(cell):
        opened = " open" if g not in (Grade.PASS, Grade.SKIPPED) else ""
        out.append(
            f"<details class='console'{opened}><summary>console excerpt ({', '.join(_a(c) for c in checks)}, "
            f"{text.count(chr(10)) + 1} lines)</summary><pre class='console'>{_e(text)}</pre></details>"
        )
    console_href = links.console(cell)
    if console_href:
        out.append(f"<p class='small'><a href='{_a(console_href)}' download>download the console excerpts</a></p>")
    if cell.remediations:
        out.append(
            "<h4>Remediation ladder</h4><table class='remediations'><tr><th>#</th><th>remediation</th><th>status</th>"
            "<th>cured</th><th>changed</th><th>evidence</th></tr>"
        )
        for i, r in enumerate(cell.remediations, 1):
            st = {"cured": Grade.PASS, "not-cured": Grade.FAIL, "failed": Grade.FAIL}.get(r.status, Grade.SKIPPED)
            out.append(
                f"<tr data-remedy='{_e(r.name)}'><td class='num'>{i}</td><td><b>{_e(r.name)}</b></td><td>{_badge(st, r.status)}</td>"
                f"<td class='small'>{_e(r.cured)}</td><td class='small'>{_e(r.changed)}</td>"
                f"<td>{_evidence_html(r.evidence)}</td></tr>"
            )
        out.append("</table>")
    if cell.artifacts:
        items = []
        for name, path in cell.artifacts.items():
            href = links.artifact(cell, name)
            shown = f"<a href='{_a(href)}'>{_e(name)}</a>" if href else f"<b>{_e(name)}</b>"
            items.append(f"<li>{shown} <span class='muted small'>{_e(path)}</span></li>")
            if href and name.endswith(" screen"):  # a guest silent on serial: its screen, shown
                items.append(f"<li><img class='screen' src='{_a(href)}' alt='{_e(name)}' width='360'></li>")
        out.append(f"<p class='small'>Artifacts:</p><ul class='artifacts small'>{''.join(items)}</ul>")
    out.append("</section>")
    return "".join(out)


def _status_badge(status: str) -> str:
    grade = {"ok": Grade.PASS, "reused": Grade.PASS, "fail": Grade.FAIL, "error": Grade.ERROR, "skipped": Grade.SKIPPED}
    return _badge(grade.get(status), status)


def inventory_html(result: CampaignResult) -> str:
    rows = []
    for host in result.hosts:
        h = _host_dict(host)
        custom = ", ".join(f"{k}={v}" for k, v in h["custom"].items())
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(h[k]))}</td>" for k in ("name", "kind", "driver", "endpoint", "site", "version")
            )
            + f"<td>{html.escape(', '.join(h['tags']))}</td><td class='num'>{host.cpus}</td><td class='num'>{host.memory_mib}</td>"
            f"<td class='num'>{host.slots}</td><td>{html.escape(h['status'])}</td><td>{html.escape(h['credentials_ref'])}</td>"
            f"<td>{html.escape(custom)}</td></tr>"
        )
    return (
        f"<details id='inventory'><summary>Inventory snapshot ({len(result.hosts)} hosts)</summary>"
        "<table><tr><th>name</th><th>kind</th><th>driver</th><th>endpoint</th><th>site</th><th>version</th><th>tags</th>"
        "<th>cpus</th><th>memory MiB</th><th>slots</th><th>status</th><th>credentials</th><th>custom</th></tr>"
        + "".join(rows)
        + "</table></details>"
    )


def campaign_body(
    result: CampaignResult, links: Links, previous: CampaignResult | None = None, *, after_header: str = ""
) -> str:
    """The campaign overview both the report and the web UI show: scorecard beside the matrix,
    root causes, comparison, charts, inventory. ``after_header``: HTML the web UI puts under the
    title (links, live progress)."""
    sc = scorecard(result)
    parts = [
        campaign_header(result),
        after_header,
        f"<div class='layout'>{matrix_html(result, links)}{scorecard_html(result, sc)}</div>",
        root_causes_html(result, root_causes(result), links),
    ]
    if previous is not None:
        parts.append(comparison_html(compare(result, previous), links))
    parts.append(charts_html(result, links))
    parts.append(inventory_html(result))
    return "".join(parts)


_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(
    result: CampaignResult, previous: CampaignResult | None = None, *, artifact_base: str | None = None
) -> str:
    """A single self-contained page (inline CSS and SVG, no scripts, no external assets): the
    overview, then one detail section per cell that the matrix, root causes and timeline link to.
    ``previous``: an earlier campaign of the same spec to compare with. ``artifact_base``: URL of
    CROSSVISOR_HOME relative to where the file will live, to link artifacts."""
    links = file_links(artifact_base)
    body = [
        f"<main>{campaign_body(result, links, previous)}",
        f"<h2 id='cells'>Cells ({len(result.cells)})</h2>",
        *(cell_detail_html(c, links) for c in result.cells),
        "</main>",
    ]
    head = (
        # no network access from the page at all, even if a hostile string slipped through
        f"<meta http-equiv='Content-Security-Policy' content=\"{_REPORT_CSP}\"><style>{stylesheet()}</style>"
    )
    return html_page(f"crossvisor report: {result.name}", "".join(body), head=head)
