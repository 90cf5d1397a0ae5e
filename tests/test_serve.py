"""``crossvisor serve`` over real HTTP against a real Temporal dev server and real campaigns
(tests/web/served.py): listing from visibility, live progress, the report's pages, downloads,
read-only and loopback-only, no secrets."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from crossvisor.serve import ServeError, check_loopback
from tests.web import served as stack

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = stack.start(tmp_path_factory.mktemp("serve"))
    yield s
    stack.stop(s)


def test_lists_campaigns_from_temporal_with_live_progress(served) -> None:
    status, _, body = served.get("/api/campaigns")
    assert status == 200
    rows = {r["campaign_id"]: r for r in json.loads(body)}
    assert {served.first, served.second, served.running} <= set(rows)
    assert rows[served.first]["status"] == rows[served.second]["status"] == "completed"
    assert rows[served.first]["name"] == served.name  # from the run's input, no worker needed
    live = rows[served.running]
    assert live["status"] == "running" and live["progress"]["counts"]["total"] == 4
    assert live["progress"]["counts"]["running"] >= 1  # held in provision by the test stack
    page = served.text("/")
    for cid in (served.first, served.second, served.running):
        assert f"href='/campaigns/{cid}'" in page
    assert "data-progress-url='/api/campaigns/" + served.running + "/progress'" in page
    assert "<script src='/static/live.js' defer></script>" in page


def test_progress_endpoint(served) -> None:
    doc = json.loads(served.get(f"/api/campaigns/{served.running}/progress")[2])
    assert doc["workflow_status"] == "running" and doc["progress"]["name"] == served.name + "-live"
    assert json.loads(served.get(f"/api/campaigns/{served.first}/progress")[2])["workflow_status"] == "completed"
    status, _, body = served.get("/api/campaigns/no-such-campaign/progress")
    assert status == 404 and b"error" in body


def test_campaign_page_is_the_report_with_links(served) -> None:
    page = served.text(f"/campaigns/{served.second}")
    chips = re.findall(r'<a class="chip[^"]*" href="([^"]+)" data-cell="([^"]+)" data-grade="(\w+)"', page)
    assert len(chips) == 4
    for href, cell_id, grade in chips:  # every matrix entry is a route to its cell page
        assert href == f"/campaigns/{served.second}/cells/{cell_id}"
        cell_page = served.text(href)
        assert f"data-cell='{cell_id}' data-grade='{grade}'" in cell_page
    grades = {g for _, _, g in chips}
    assert {"pass", "fail", "skipped"} <= grades
    # compared with the earlier run of the same spec, found by name in Temporal
    assert f"Compared with <code>{served.first}</code>" in page
    assert "id='scorecard'" in page and 'id="chart-heatmap"' in page and "id='causes'" in page
    assert f"/namespaces/default/workflows/{served.second}" in page  # Temporal Web UI
    assert f"/d/crossvisor?var-campaign={served.name}" in page  # Grafana
    # every cell ran a cell workflow: its start and finish come from Temporal when the cell
    # recorded none, so the campaign's timeline has a bar per cell
    first = served.text(f"/campaigns/{served.first}")
    timeline = first[first.index('id="chart-timeline"') :]
    assert timeline[: timeline.index("</svg>")].count('<rect class="b-') == 4
    none = served.text(f"/campaigns/{served.second}?compare=none")
    assert "Compared with" not in none
    running = served.text(f"/campaigns/{served.running}")
    assert "data-progress-url" in running and "status <b data-status='running'>" in running


def test_downloads(served) -> None:
    status, headers, body = served.get(f"/campaigns/{served.second}/report.junit.xml")
    assert status == 200 and "attachment" in headers["content-disposition"]
    assert ET.fromstring(body).get("tests") == str(4 * 7)  # 4 cells x the default 7 checks
    doc = json.loads(served.get(f"/campaigns/{served.second}/report.json")[2])
    assert doc["campaign_id"] == served.second and len(doc["cells"]) == 4
    html = served.get(f"/campaigns/{served.second}/report.html")[2].decode()
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html
    # the console log artifact: downloadable, redacted like every page
    cell = served.artifact_cell
    status, headers, body = served.get(f"/campaigns/{served.second}/cells/{cell}/artifacts/console.log")
    assert status == 200 and b"CV-BOOT ok" in body and stack.SECRET.encode() not in body
    assert headers["content-disposition"] == f'attachment; filename="{cell}.log"'
    cell_page = served.text(f"/campaigns/{served.second}/cells/{cell}")
    assert f"href='/campaigns/{served.second}/cells/{cell}/artifacts/console.log'" in cell_page
    # an artifact path that leaves CROSSVISOR_HOME is neither linked nor served
    assert "artifacts/escape'" not in cell_page
    assert served.get(f"/campaigns/{served.second}/cells/{cell}/artifacts/escape")[0] == 404
    assert served.get(f"/campaigns/{served.second}/cells/{cell}/artifacts/..%2F..%2Fetc%2Fpasswd")[0] == 404
    assert served.get(f"/campaigns/{served.second}/cells/nope")[0] == 404
    assert served.get("/campaigns/no-such-campaign")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_read_only(served, method: str) -> None:
    for path in ("/", f"/campaigns/{served.running}", "/api/campaigns", "/nowhere"):
        status, headers, _ = served.get(path, method=method)
        assert status == 405 and headers["allow"] == "GET, HEAD", (method, path)


def test_head_and_security_headers(served) -> None:
    status, headers, body = served.get("/", method="HEAD")
    assert status == 200 and body == b""
    csp = served.get("/")[1]["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert served.get("/static/crossvisor.css")[0] == 200 and served.get("/static/live.js")[0] == 200


def test_loopback_only(served) -> None:
    # a page asked for under another name (DNS rebinding) is refused
    status, _, _ = served.get("/", headers={"Host": "evil.example:80"})
    assert status == 400
    assert served.get("/", headers={"Host": "localhost"})[0] == 200
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):
        with pytest.raises(ServeError, match="not a loopback address"):
            check_loopback(host)
    assert check_loopback("127.0.0.2") == "127.0.0.2" and check_loopback("::1") == "::1"


def test_no_secret_on_any_page(served) -> None:
    pages = ["/", "/api/campaigns", f"/campaigns/{served.second}", f"/campaigns/{served.running}"]
    pages += [f"/campaigns/{served.second}/cells/{served.artifact_cell}", f"/campaigns/{served.second}/report.json"]
    for path in pages:
        body = served.get(path)[2]
        assert stack.SECRET.encode() not in body, path


def _cli_env(served) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env |= {
        "CROSSVISOR_TEMPORAL_ADDRESS": served.settings.temporal_address,
        "CROSSVISOR_HOME": str(served.settings.home),
    }
    return env


def test_cli_report_compare_and_terminal_scorecard(served, tmp_path) -> None:
    import subprocess

    from tests.harness import tool

    env = _cli_env(served)
    out = tmp_path / "r"
    cmd = [tool("crossvisor"), "report", served.second, "--html", f"{out}.html", "--junit", f"{out}.xml"]
    run = subprocess.run(
        [*cmd, "--json", f"{out}.json", "--compare", served.first], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "scorecard: success" in run.stdout and "source rows x target columns" in run.stdout
    page = (tmp_path / "r.html").read_text()
    assert f"Compared with <code>{served.first}</code>" in page
    # the previous campaign as a JSON report file (what a CI job keeps)
    prev = tmp_path / "prev.json"
    prev.write_text(served.text(f"/campaigns/{served.first}/report.json"))
    run = subprocess.run([*cmd, "--compare", str(prev)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"Compared with <code>{served.first}</code>" in (tmp_path / "r.html").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    run = subprocess.run([*cmd, "--compare", str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and f"--compare {bad}: not a crossvisor JSON report" in run.stderr


def test_cli_serve_command(served) -> None:
    import os
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    from tests.harness import tool

    env = _cli_env(served)
    run = subprocess.run(
        [tool("crossvisor"), "serve", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "not a loopback address" in run.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [tool("crossvisor"), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline, page = time.monotonic() + 30, ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                    page = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert f"href='/campaigns/{served.second}'" in page
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(30)
    assert f"http://127.0.0.1:{port}/" in proc.stdout.read()  # type: ignore[union-attr]
