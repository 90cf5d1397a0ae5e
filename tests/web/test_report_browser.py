"""The one-file HTML report in real headless Chromium (Debian ``chromium``, DevTools protocol):
no console errors and no network, charts drawn, matrix links landing on the right cell, and
screenshots kept under tests/web/artifacts/ to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossvisor.report import render_html
from tests.web.cdp import CHROMIUM, Chromium
from tests.web.fixture_campaign import generated_campaign, previous_campaign

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.timeout(180),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (deploy/install-system.sh)"),
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SECRET = "hunter2-in-console"


@pytest.fixture(scope="module")
def report_url(tmp_path_factory) -> str:
    res = generated_campaign()
    cell = next(c for c in res.cells if c.cell_id == "kvm--xen--rhel9-pvscsi")
    cell.checks[0].evidence["console"] += f"\nlogin: root password={SECRET}\n<script>alert(1)</script>"
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(res, previous_campaign()), encoding="utf-8")
    return path.as_uri()


@pytest.fixture(scope="module")
def browser():
    with Chromium(width=1400, height=900) as b:
        yield b


def test_report_renders_cleanly_and_offline(browser, report_url: str) -> None:
    page = browser.page()
    page.goto(report_url)
    assert page.problems() == []
    assert all(u.startswith(("file:", "data:")) for u in page.requests()), page.requests()
    # the browser's own DOM: no script element survived, the planted secret is not on the page
    assert page.eval("document.scripts.length") == 0
    assert SECRET not in page.eval("document.documentElement.outerHTML")
    assert page.eval("document.querySelectorAll('a.chip').length") == 36
    page.eval("window.scrollTo(0, 0)")
    page.screenshot(ARTIFACTS / "report-top.png", full_page=False)
    page.screenshot_element("#causes", ARTIFACTS / "report-causes.png")
    page.screenshot_element("#compare", ARTIFACTS / "report-compare.png")


def test_scorecard_shows_the_three_tiers_and_what_fixed_them(browser, report_url: str) -> None:
    """What the browser lays out in the scorecard equals the campaign's own tally: ODCA's tiers
    per source -> target pair, and the remedy named where warnings came from."""
    from collections import Counter

    from domain.model import Grade

    res = generated_campaign()
    page = browser.page()
    page.goto(report_url)
    tiles = page.eval(
        "Object.fromEntries([...document.querySelectorAll('#scorecard .tile')]"
        ".filter(t => t.getBoundingClientRect().width > 0)"
        ".map(t => [t.dataset.tile, +t.querySelector('.n').textContent]))"
    )
    want = Counter(c.grade.value for c in res.cells)
    assert {g: tiles[g] for g in ("pass", "warn", "fail")} == {g: want[g] for g in ("pass", "warn", "fail")}
    assert min(want["pass"], want["warn"], want["fail"]) > 0  # the fixture has all three tiers
    rows = page.eval(
        "[...document.querySelectorAll('#scorecard-pairs tr')].slice(1).map(r => ["
        " r.querySelector('th').textContent,"
        " Object.fromEntries([...r.querySelectorAll('td[data-count]')].map(d => [d.dataset.count, d.textContent])),"
        " r.children[r.children.length - 2].textContent])"
    )
    by_pair: dict[str, Counter] = {}
    fixers: dict[str, set[str]] = {}
    for c in res.cells:
        key = f"{c.source} \u2192 {c.target}"
        by_pair.setdefault(key, Counter())[c.grade.value] += 1
        if c.grade == Grade.WARN:
            fixers.setdefault(key, set()).add(c.remedy)
    assert len(rows) == len(by_pair)
    for label, counts, fixed in rows:
        for g in ("pass", "warn", "fail"):
            shown = counts[g].strip()
            assert (int(shown) if shown.isdigit() else 0) == by_pair[label][g], (label, g, counts)
        for remedy in fixers.get(label, ()):
            assert remedy in fixed, (label, fixed)
    page.screenshot_element("#scorecard", ARTIFACTS / "report-scorecard.png")


def test_report_charts_are_drawn(browser, report_url: str) -> None:
    page = browser.page()
    page.goto(report_url)
    for chart in ("chart-heatmap", "chart-stages", "chart-timeline"):
        drawn = page.eval(
            f"(() => {{ const s = document.getElementById('{chart}'); const b = s.getBoundingClientRect();"
            " const shapes = [...s.querySelectorAll('rect')].filter(r => r.getBBox().width > 0 && r.getBBox().height > 0);"
            " return [b.width, b.height, shapes.length]; })()"
        )
        width, height, shapes = drawn
        assert width > 300 and height > 50 and shapes > 10, (chart, drawn)
    page.screenshot_element(".charts", ARTIFACTS / "report-charts.png")


@pytest.mark.parametrize(
    "selector", ["a.chip[data-cell='vsphere-8--kvm--rhel9-pvscsi']", "a.chip[data-cell='kvm--xen--deb12-efi']"]
)
def test_matrix_links_lead_to_the_cell(browser, report_url: str, selector: str) -> None:
    page = browser.page()
    page.goto(report_url)
    cell_id = page.eval(f"document.querySelector({selector!r}).dataset.cell")
    page.click_and_wait(selector, "Page.navigatedWithinDocument")
    landed = page.eval(
        "(() => { const t = document.querySelector('section.cell:target'); if (!t) return null;"
        " return [location.hash, t.dataset.cell, Math.round(t.getBoundingClientRect().top),"
        " t.querySelector('h3').textContent]; })()"
    )
    assert landed is not None, "no section is the :target"
    hash_, target_cell, top, heading = landed
    assert hash_ == f"#cell-{cell_id}" and target_cell == cell_id
    assert abs(top) < 50  # scrolled to it
    src, tgt, image = cell_id.split("--")
    assert src in heading and tgt in heading and image in heading
    page.screenshot(ARTIFACTS / f"report-cell-{cell_id}.png", full_page=False)
    assert page.problems() == []


def test_timeline_bars_link_to_cells(browser, report_url: str) -> None:
    page = browser.page()
    page.goto(report_url)
    # the longest bar: a person clicks what they can see
    href = page.eval(
        "[...document.querySelectorAll('#chart-timeline a')].map(a => [a.querySelector('rect').getBBox().width,"
        " a.getAttribute('href')]).sort((x, y) => y[0] - x[0])[0][1]"
    )
    page.click_and_wait(f"#chart-timeline a[href='{href}'] rect", "Page.navigatedWithinDocument")
    assert page.eval("location.hash") == href
    assert page.eval("document.querySelector('section.cell:target') !== null")
