"""``crossvisor serve`` in real headless Chromium, against real Temporal and real campaigns: pages
render without console errors, the matrix links lead to the right cell page, charts are drawn,
live progress updates from the script, and screenshots are kept under tests/web/artifacts/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.web import served as stack
from tests.web.cdp import CHROMIUM, Chromium

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (deploy/install-system.sh)"),
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = stack.start(tmp_path_factory.mktemp("serve-browser"))
    yield s
    stack.stop(s)


@pytest.fixture(scope="module")
def browser():
    with Chromium(width=1400, height=900) as b:
        yield b


def test_index_lists_campaigns_and_polls_progress(browser, served) -> None:
    page = browser.page()
    page.goto(served.base_url + "/")
    rows = page.eval("[...document.querySelectorAll('#campaigns tr[data-campaign]')].map(r => r.dataset.campaign)")
    assert {served.first, served.second, served.running} <= set(rows)
    # the page's script asks for the running campaign's progress (same origin, JSON)
    deadline = time.monotonic() + 10
    progress_url = f"{served.base_url}/api/campaigns/{served.running}/progress"
    while progress_url not in page.requests() and time.monotonic() < deadline:
        page.eval("new Promise(r => setTimeout(r, 250))", await_promise=True)
    assert progress_url in page.requests()
    running = page.eval(
        f"document.querySelector(\"tr[data-campaign='{served.running}'] b[data-count='running']\").textContent"
    )
    assert int(running) >= 1
    assert all(u.startswith((served.base_url, "data:")) for u in page.requests())  # nothing from elsewhere
    assert page.problems() == []
    page.screenshot(ARTIFACTS / "serve-index.png", full_page=False)


def test_campaign_page_matrix_links_and_charts(browser, served) -> None:
    page = browser.page()
    page.goto(f"{served.base_url}/campaigns/{served.second}")
    assert page.problems() == []
    for chart in ("chart-heatmap", "chart-stages"):
        shapes = page.eval(f"[...document.querySelectorAll('#{chart} rect')].filter(r => r.getBBox().width > 0).length")
        assert shapes >= 4, chart
    page.screenshot(ARTIFACTS / "serve-campaign.png")
    chip = page.eval(
        "(() => { const c = document.querySelector('a.chip.g-fail'); return [c.dataset.cell, c.href]; })()"
    )
    cell_id, href = chip
    page.click_and_wait("a.chip.g-fail")
    assert page.eval("location.href") == href
    landed = page.eval(
        "(() => { const s = document.querySelector('section.cell'); return [s.dataset.cell, s.dataset.grade]; })()"
    )
    assert landed == [cell_id, "fail"]
    assert page.eval("document.querySelector('h1').textContent").count(cell_id.split("--")[2]) >= 1
    assert page.eval("document.querySelectorAll('.stagebar i').length") > 3  # its stage timeline
    assert page.problems() == []
    page.screenshot(ARTIFACTS / "serve-cell.png")
    # back to the matrix by its link, like a person
    page.click_and_wait("p.back a")
    assert page.eval("location.pathname") == f"/campaigns/{served.second}"


def test_running_campaign_page(browser, served) -> None:
    page = browser.page()
    page.goto(f"{served.base_url}/campaigns/{served.running}")
    assert page.eval("document.querySelector('[data-progress-url]').dataset.status") == "running"
    assert page.eval("document.querySelectorAll('.progress i').length") == 6
    assert page.problems() == []
    page.screenshot(ARTIFACTS / "serve-running.png", full_page=False)
