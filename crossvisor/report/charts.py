"""The HTML report's charts as inline SVG: pass-rate heatmap, stage durations, the campaign's
timeline, a cell's stage timeline."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime

from crossvisor.core.timefmt import human_duration, human_time, parse_time
from crossvisor.report.analysis import CHECK_GRADES, SOURCE_STAGES, VERDICTS, check_order, platform_order
from crossvisor.report.markup import Links, _a, _e
from domain.model import (
    STAGES,
    CampaignResult,
    CellResult,
    Grade,
)

# ---------------------------------------------------------------------------------------- charts
# Inline SVG drawn here: nothing to load, prints well, and works with scripts forbidden.

_STATUS_FILL = {"ok": "#43a047", "reused": "#81c784", "fail": "#d32f2f", "error": "#8e24aa", "skipped": "#bdbdbd"}
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#d62728",
)


def _rate_fill(rate: float) -> str:
    """Red (0 %) through amber to green (100 %), light enough to read dark text on."""
    stops = ((0.0, (239, 154, 154)), (0.5, (255, 224, 130)), (1.0, (165, 214, 167)))
    for (x0, c0), (x1, c1) in zip(stops, stops[1:]):
        if rate <= x1:
            f = (rate - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1))
    return "#a5d6a7"


def heatmap_svg(result: CampaignResult) -> str:
    """Pass rate per source -> target pair (rows) and check (columns), over the guest images."""
    checks = check_order(result)
    order = {p: i for i, p in enumerate(platform_order(result))}
    stats: dict[tuple[str, str], dict[str, Counter]] = {}
    for c in result.cells:
        per = stats.setdefault((c.source, c.target), {})
        for ch in c.checks:
            per.setdefault(ch.check, Counter())[ch.grade] += 1
        per.setdefault("\u2211 cell", Counter())[c.grade] += 1
    if not stats:
        return "<p class='muted'>No cells.</p>"
    cols = checks + ["\u2211 cell"]
    pairs = sorted(stats, key=lambda p: (order[p[0]], order[p[1]]))
    label_w, cw, ch_h, top = 150, 74, 22, 34
    width, height = label_w + cw * len(cols) + 4, top + ch_h * len(pairs) + 4
    out = [
        f'<svg class="chart" id="chart-heatmap" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="pass rate heatmap">'
    ]
    for j, col in enumerate(cols):
        out.append(f'<text x="{label_w + cw * j + cw / 2}" y="{top - 10}" text-anchor="middle">{_e(col)}</text>')
    for i, pair in enumerate(pairs):
        y = top + ch_h * i
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(pair[0])} \u2192 {_e(pair[1])}</text>')
        for j, col in enumerate(cols):
            cnt = stats[pair].get(col, Counter())
            verdicts = sum(cnt[g] for g in VERDICTS)
            x = label_w + cw * j
            tip = ", ".join(f"{g.value} {cnt[g]}" for g in CHECK_GRADES if cnt[g])
            if verdicts:
                rate = cnt[Grade.PASS] / verdicts
                fill, label = _rate_fill(rate), f"{rate:.0%}"
            elif cnt[Grade.UNOBSERVABLE]:
                fill, label = "#f3efe6", "unobs."
            else:
                fill, label = "#eeeeee", "n/a"
            out.append(
                f'<g><rect x="{x + 1}" y="{y + 1}" width="{cw - 2}" height="{ch_h - 2}" fill="{fill}" data-rate="{label}">'
                f"<title>{_e(pair[0])} \u2192 {_e(pair[1])}, {_e(col)}: {label} pass ({tip})</title></rect>"
                f'<text x="{x + cw / 2}" y="{y + 15}" text-anchor="middle">{label}</text></g>'
            )
    out.append("</svg>")
    return "".join(out)


def _stage_platform(cell: CellResult, stage: str) -> str:
    return cell.source if stage in SOURCE_STAGES else cell.target


def stage_durations_svg(result: CampaignResult) -> str:
    """Median (bar) and slowest (whisker) duration of each stage, one bar per platform that ran it
    (source-side stages count for the source platform, conversion onwards for the target)."""
    samples: dict[str, dict[str, list[float]]] = {}
    for c in result.cells:
        if c.cached:
            continue  # a reused result ran no stage now
        for s in c.stages:
            if s.status in ("skipped", "reused"):
                continue
            samples.setdefault(s.stage, {}).setdefault(_stage_platform(c, s.stage), []).append(s.duration_s)
    if not samples:
        return "<p class='muted'>No stage ran (every cell cached or skipped).</p>"
    stages = [s for s in STAGES if s in samples] + sorted(set(samples) - set(STAGES))
    platforms = [p for p in platform_order(result) if any(p in samples[s] for s in stages)]
    color = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(platforms)}
    longest = max(max(v) for per in samples.values() for v in per.values()) or 1.0
    bar_h, gap, label_w, plot_w = 9, 8, 80, 560
    rows = sum(len(samples[s]) for s in stages)
    height = 30 + rows * bar_h + len(stages) * gap + 20
    width = label_w + plot_w + 90
    out = [
        f'<svg class="chart" id="chart-stages" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="stage durations">'
    ]
    for i, p in enumerate(platforms):  # legend
        out.append(
            f'<rect x="{label_w + i * 120}" y="4" width="10" height="10" fill="{color[p]}"/>'
            f'<text x="{label_w + i * 120 + 14}" y="13">{_e(p)}</text>'
        )
    y = 28
    for st in stages:
        per = samples[st]
        block = len(per) * bar_h
        out.append(f'<text x="{label_w - 6}" y="{y + block / 2 + 4}" text-anchor="end">{_a(st)}</text>')
        for p in platforms:
            if p not in per:
                continue
            vals = per[p]
            med, top = statistics.median(vals), max(vals)
            w, wt = plot_w * med / longest, plot_w * top / longest
            out.append(
                f'<g><rect x="{label_w}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h - 1}" fill="{color[p]}">'
                f"<title>{_a(st)} on {_e(p)}: median {human_duration(med)}, slowest {human_duration(top)}, {len(vals)} runs</title></rect>"
                f'<line x1="{label_w + w:.1f}" x2="{label_w + wt:.1f}" y1="{y + bar_h / 2 - 0.5}" y2="{y + bar_h / 2 - 0.5}" stroke="{color[p]}" stroke-width="1"/>'
                f'<line x1="{label_w + wt:.1f}" x2="{label_w + wt:.1f}" y1="{y + 1}" y2="{y + bar_h - 2}" stroke="{color[p]}"/></g>'
            )
            y += bar_h
        out.append(
            f'<text x="{label_w + plot_w + 6}" y="{y - block / 2 + 4}" class="small">{human_duration(max(max(v) for v in per.values()))}</text>'
        )
        y += gap
    out.append(f'<line class="axis" x1="{label_w}" x2="{label_w}" y1="24" y2="{y}"/>')
    out.append(
        f'<text x="{label_w}" y="{y + 12}">0</text><text x="{label_w + plot_w}" y="{y + 12}" text-anchor="end">{human_duration(longest)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


_NICE_STEPS = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)


def _tick_label(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"+{s} s"
    if s < 3600:
        return f"+{s // 60} min"
    if s < 86400:
        return f"+{s // 3600} h" + (f" {s % 3600 // 60:02d}" if s % 3600 else "")
    return f"+{s // 86400} d" + (f" {s % 86400 // 3600} h" if s % 86400 else "")


def _lanes(spans: list[tuple[datetime, datetime, CellResult]]) -> list[int]:
    """Interval partitioning: each cell on the first lane free at its start, so the number of lanes
    is the campaign's peak concurrency and a gap in a lane is a slot that sat idle."""
    ends: list[datetime] = []
    lanes = []
    for start, end, _ in spans:
        for i, e in enumerate(ends):
            if e <= start:
                ends[i] = end
                lanes.append(i)
                break
        else:
            ends.append(end)
            lanes.append(len(ends) - 1)
    return lanes


def timeline_svg(result: CampaignResult, links: Links) -> str:
    """The campaign as a Gantt chart: one bar per cell from its start to its finish, coloured by
    grade, packed onto as many lanes as ran at once; each bar links to its cell."""
    spans = []
    for c in result.cells:
        a, b = parse_time(c.started_at), parse_time(c.finished_at)
        if a and b and b >= a:
            spans.append((a, b, c))
    if not spans:
        return "<p class='muted'>No cell recorded its start and finish times.</p>"
    spans.sort(key=lambda x: (x[0], x[1]))
    lanes = _lanes(spans)
    t0 = min(s[0] for s in spans)
    total = max((s[1] - t0).total_seconds() for s in spans) or 1.0
    n_lanes = max(lanes) + 1
    lane_h = 14 if n_lanes <= 40 else 8
    label_w, plot_w = 60, 1100
    height = 24 + n_lanes * lane_h + 26
    width = label_w + plot_w + 20
    out = [
        f'<svg class="chart" id="chart-timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="campaign timeline">'
    ]
    step = next((s for s in _NICE_STEPS if total / s <= 10), _NICE_STEPS[-1])
    tick = 0.0
    while tick <= total + 1e-9:
        x = label_w + plot_w * tick / total
        out.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="18" y2="{height - 22}" stroke-dasharray="2,3"/>'
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{_tick_label(tick)}</text>'
        )
        tick += step
    out.append(f'<text x="0" y="12">slot</text><text x="{label_w}" y="12">from {_a(human_time(t0.isoformat()))}</text>')
    for lane in range(n_lanes):
        if n_lanes <= 40:
            out.append(
                f'<text x="{label_w - 8}" y="{24 + lane * lane_h + lane_h - 4}" text-anchor="end">{lane + 1}</text>'
            )
    for (a, b, c), lane in zip(spans, lanes):
        x = label_w + plot_w * (a - t0).total_seconds() / total
        w = max(plot_w * (b - a).total_seconds() / total, 1.5)
        y = 24 + lane * lane_h
        g = c.grade
        tip = f"{c.cell_id}: {g.value}, {human_duration((b - a).total_seconds())}" + (" (cached)" if c.cached else "")
        out.append(
            f'<a href="{_a(links.cell(c.cell_id))}"><rect class="b-{g.value}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{lane_h - 2}"><title>{_e(tip)}</title></rect></a>'
        )
    out.append("</svg>")
    return "".join(out)


def stage_timeline_html(cell: CellResult) -> str:
    """One cell's stages left to right, width by duration (gaps where the start times recorded
    one), coloured by status; a retried stage says how many attempts it took. Plain boxes, not
    SVG: a 2,000-cell report draws 22,000 of them."""
    if not cell.stages:
        return "<p class='muted small'>No stage records (result rebuilt from the campaign summary).</p>"
    starts = [parse_time(s.started_at) for s in cell.stages]
    t0 = min((t for t in starts if t), default=None)
    pos, cursor = [], 0.0
    for s, t in zip(cell.stages, starts):
        begin = (t - t0).total_seconds() if t and t0 else cursor
        pos.append((max(begin, cursor), s.duration_s))
        cursor = max(cursor, begin + s.duration_s)
    total = max(b + d for b, d in pos) or 1.0
    out = ["<div class='stagebar' role='img' aria-label='stage timeline'>"]
    at = 0.0
    for s, (begin, dur) in zip(cell.stages, pos):
        if begin - at > total / 500:  # idle time between stages (waiting for a slot or a lease)
            out.append(f"<i class='gap' style='flex:{begin - at:.3g}'></i>")
        at = begin + dur
        status = s.status if s.status in _STATUS_FILL else "other"
        tries = f" \u00d7{s.attempts}" if s.attempts > 1 else ""
        tip = f"{s.stage}: {s.status}, {human_duration(dur)}{tries}"
        label = s.stage + tries if dur / total > 0.06 else ""
        out.append(f"<i class='s-{status}' style='flex:{max(dur, total / 400):.3g}' title='{_e(tip)}'>{_a(label)}</i>")
    out.append(f"</div><div class='stageaxis'><span>0</span><span>{human_duration(total)}</span></div>")
    return "".join(out)


def charts_html(result: CampaignResult, links: Links) -> str:
    return (
        "<h2 id='charts'>Charts</h2><div class='charts'>"
        f"<figure>{heatmap_svg(result)}<figcaption>Pass rate (success among verdicts) per source &rarr; target pair "
        "and check, over the guest images; &sum; cell is the cell's overall grade.</figcaption></figure>"
        f"<figure>{stage_durations_svg(result)}<figcaption>Stage durations: median bar, slowest whisker, per platform "
        "(export side: the source platform; conversion onwards: the target).</figcaption></figure>"
        f"<figure class='wide'>{timeline_svg(result, links)}<figcaption>The campaign over time: one bar per cell, "
        "coloured by grade, on as many slots as ran at once. Click a bar for its cell.</figcaption></figure>"
        "</div>"
    )
