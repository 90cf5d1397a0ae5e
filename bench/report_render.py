"""How fast a 2,000-cell campaign's pages render: in Python, and in real headless Chromium.

    .venv/bin/python bench/report_render.py [--runs 5]

A generated campaign (tests/web/fixture_campaign.large_campaign: 9 platforms x 8 targets x 28
images = 2,016 cells, every grade, consoles, remediations) is rendered to

- the one-file report (``render_html``: overview + one detail section per cell), and
- the campaign overview page ``crossvisor serve`` shows (the same overview; cells on their own pages),

and each is opened in headless Chromium over the DevTools protocol: the figure is the time from
navigation to the load event plus two animation frames (the page laid out and painted), median of
``--runs``. Baseline in the same process: the report renderer before this rewrite (git history,
six tables per check, no per-cell detail) on the same data, when git has it.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crossvisor import report  # noqa: E402
from tests.web.cdp import Chromium  # noqa: E402
from tests.web.fixture_campaign import large_campaign  # noqa: E402

BASELINE_COMMIT = "b0b874d"  # crossvisor/report.py as it was before the report rewrite
TARGET_S = 2.0


def _timed(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _baseline_module():
    try:
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:crossvisor/report.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "report_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("report_before", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    res = large_campaign()
    out = Path(tempfile.mkdtemp(prefix="cv-bench-report-"))
    print(f"campaign: {len(res.cells)} cells, {len({(c.source, c.target) for c in res.cells})} pairs")

    pages: dict[str, Path] = {}
    py_s, html = _timed(lambda: report.render_html(res), 3)
    pages["report (one file)"] = out / "report.html"
    pages["report (one file)"].write_text(html)  # type: ignore[arg-type]
    print(f"python render_html: {py_s:.2f} s, {len(html) / 1e6:.1f} MB")  # type: ignore[arg-type]
    ov_s, body = _timed(lambda: report.campaign_body(res, report.Links(cell=lambda cid: f"/cells/{cid}")), 3)
    overview = report.html_page("overview", f"<main>{body}</main>", head=f"<style>{report.stylesheet()}</style>")
    pages["serve campaign page"] = out / "overview.html"
    pages["serve campaign page"].write_text(overview)
    print(f"python campaign overview: {ov_s:.2f} s, {len(overview) / 1e6:.1f} MB")
    for name, fn in (("render_junit", report.render_junit), ("render_json", report.render_json)):
        s, text = _timed(lambda fn=fn: fn(res), 1)
        print(f"python {name}: {s:.2f} s, {len(text) / 1e6:.1f} MB")  # type: ignore[arg-type]
    before = _baseline_module()
    if before is not None:
        b_s, b_html = _timed(lambda: before.render_html(res), 1)
        pages["baseline: report before the rewrite"] = out / "before.html"
        pages["baseline: report before the rewrite"].write_text(b_html)
        print(f"python baseline render_html: {b_s:.2f} s, {len(b_html) / 1e6:.1f} MB")

    loads: dict[str, list[float]] = {}
    with Chromium(width=1400, height=900, timeout=120) as browser:
        page = browser.page()
        page.goto(pages["report (one file)"].as_uri())  # warm the browser once
        for _ in range(a.runs):
            for name, path in pages.items():
                loads.setdefault(name, []).append(page.goto(path.as_uri()))
        problems = page.problems()
    print(f"chromium load + paint, median of {a.runs} (min..max):")
    for name, times in loads.items():
        med = statistics.median(times)
        flag = "" if name.startswith("baseline") else ("  under 2 s" if med < TARGET_S else "  OVER 2 s")
        print(f"  {name}: {med:.2f} s ({min(times):.2f}..{max(times):.2f}){flag}")
    if "baseline: report before the rewrite" in loads:
        base = statistics.median(loads["baseline: report before the rewrite"])
        for name in ("report (one file)", "serve campaign page"):
            print(f"  ratio {name} / baseline: {statistics.median(loads[name]) / base:.2f}")
    if problems:
        print("browser problems:", problems[:5])


if __name__ == "__main__":
    main()
