"""The operator's CLI against a real Temporal dev server and a real worker (the fast test-driver
campaign): refusals say why, one cell form, retry semantics, report on a paused campaign and from
another directory, JSON on stdout, --fail-on exit codes, list/show, search attributes in Temporal
visibility, cancel ends as Canceled, watch lines in CI, the Web UI, and `crossvisor up`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from activities.execlog import ExecutionLog
from bench.localstack import LocalStack, free_base
from crossvisor.stack import venv_tool
from tests.e2e.conftest import ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
SPEC = ROOT / "tests/fixtures/specs/testdriver.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    s = LocalStack(tmp_path_factory.mktemp("cli") / "home")
    s.start_server()
    s.start_worker()
    r = s.cli("campaign", "start", str(SPEC), "--id", "done-1", "--wait")
    assert r.returncode == 0, r.stderr
    yield s
    s.stop()


_SALT = iter(range(1, 1000))


def slow_spec(tmp: Path, name: str = "testdriver", max_cells: int = 1) -> Path:
    """The fast campaign with images no earlier campaign cached (a fresh fingerprint: cells really
    run), ``max_cells`` at a time (one: cells stay pending long enough to steer)."""
    salt = next(_SALT)
    text = (
        SPEC.read_text()
        .replace("max_cells: 4", f"max_cells: {max_cells}")
        .replace("name: testdriver", f"name: {name}")
        .replace("memory_mib: 256", f"memory_mib: {256 + salt}")
        .replace("memory_mib: 512", f"memory_mib: {512 + salt}")
    )
    text = text.replace("file:testdriver-lab.yaml", f"file:{SPEC.parent / 'testdriver-lab.yaml'}")
    p = tmp / f"{name}.yaml"
    p.write_text(text)
    return p


def paused_campaign(stack: LocalStack, tmp: Path, cid: str) -> None:
    r = stack.cli("campaign", "start", str(slow_spec(tmp)), "--id", cid)
    assert r.returncode == 0, r.stderr
    r = stack.cli("campaign", "pause", cid)
    assert r.returncode == 0, r.stderr


def pending_cells(stack: LocalStack, cid: str) -> list[str]:
    """Cells of a paused campaign that neither finished nor run (human form)."""
    from crossvisor.spec import load_spec
    from domain.matrix import expand

    shown = json.loads(stack.cli("campaign", "show", cid, "-o", "json").stdout)["cells"]
    st = json.loads(stack.cli("campaign", "status", cid, "-o", "json").stdout)
    busy = {c["cell"] for c in shown} | {r["cell"] for r in st["running"]}
    every = [f"{c.source}:{c.target}:{c.image}" for c in expand(load_spec(SPEC))]
    return [c for c in every if c not in busy]


def test_refused_steering_says_why(stack: LocalStack, tmp_path: Path) -> None:
    paused_campaign(stack, tmp_path, "steer-1")
    cases = {
        ("skip", "steer-1", "nope:x:y"): "skip: unknown cells ['nope:x:y']",
        ("concurrency", "steer-1", "0"): "concurrency: max_cells must be >= 1 (got 0)",
        ("add-cells", "steer-1", "kvm:hyperv:tiny-bios"): "unknown platform 'hyperv'",
        ("swap-host", "steer-1", "nohost"): "swap-host: unknown host 'nohost'",
    }
    for args, reason in cases.items():
        r = stack.cli("campaign", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert reason in r.stderr and "Workflow update failed" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # the one cell form works everywhere: skip takes SOURCE:TARGET:IMAGE, with dots in names
    pending = pending_cells(stack, "steer-1")
    target = next(c for c in pending if "esxi-6.5" in c)
    r = stack.cli("campaign", "skip", "steer-1", target, "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["applied"] and doc["cells"] == [target]
    assert "operator.skip" in r.stderr and "run_id" in r.stderr  # the audit line, with workflow and run ids
    r = stack.cli("campaign", "add-cells", "steer-1", "kvm:kvm:tiny-bios")
    assert r.returncode == 0 and "kvm:kvm:tiny-bios" in r.stdout, r.stderr
    # retry --failed does not re-run what the operator skipped
    r = stack.cli("campaign", "retry", "steer-1", "--failed")
    assert r.returncode == 2 and "no cell failed or errored" in r.stderr, r.stderr
    # the campaign shows the ids in the same form
    r = stack.cli("campaign", "show", "steer-1")
    assert target in r.stdout and "SKIPPED" in r.stdout
    # report on a paused campaign returns, says so, and reports what is there
    r = stack.cli("report", "steer-1", "--json", "-", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "paused" in r.stderr and json.loads(r.stdout)["campaign_id"] == "steer-1"
    st = json.loads(stack.cli("campaign", "status", "steer-1", "--json").stdout)
    assert st["paused"] and st["counts"]["pending"] > 0 and st["eta_s"] is None
    # cancel: a Temporal cancellation, the campaign ends as Canceled (not "Completed")
    r = stack.cli("campaign", "cancel", "steer-1")
    assert r.returncode == 0, r.stderr
    wait_for(
        lambda: (
            json.loads(stack.cli("campaign", "status", "steer-1", "-o", "json").stdout)["workflow_status"] == "canceled"
        ),
        60,
        "steer-1 canceled",
        poll=0.5,
    )
    described = subprocess.run(
        [venv_tool("temporal"), "workflow", "describe", "-w", "steer-1", "--address", stack.settings.temporal_address],
        capture_output=True,
        text=True,
    )
    assert "Canceled" in described.stdout or "CANCELED" in described.stdout
    r = stack.cli("campaign", "pause", "steer-1")
    assert r.returncode == 2 and "has ended" in r.stderr


def test_json_outputs_and_exit_codes(stack: LocalStack, tmp_path: Path) -> None:
    for args in (("campaign", "list"), ("campaign", "status", "done-1"), ("campaign", "show", "done-1")):
        r = stack.cli(*args, "--json")
        assert r.returncode == 0, r.stderr
        json.loads(r.stdout)  # nothing else on stdout
    cell = json.loads(stack.cli("campaign", "show", "done-1", "kvm:esxi-6.5:tiny-bios", "-o", "json").stdout)
    assert cell["cell"] == "kvm:esxi-6.5:tiny-bios" and [s["stage"] for s in cell["stages"]][:2] == [
        "reserve",
        "provision",
    ]
    assert cell["checks"] and all("path" in a for a in cell["artifacts"].values())
    text = stack.cli("campaign", "show", "done-1", "kvm:esxi-6.5:tiny-bios").stdout
    assert "stages:" in text and "checks:" in text
    hist = stack.cli("campaign", "history", "done-1")
    assert hist.returncode == 0 and json.loads(hist.stdout)["events"]
    r = stack.cli("report", "done-1", "--json", "-")
    assert r.returncode == 0 and json.loads(r.stdout)["summary"]["cells"] == 24 and not (ROOT / "-").exists()
    # --fail-on: the fast campaign has 3 skipped cells and nothing failed
    assert stack.cli("report", "done-1", "--fail-on", "fail,error").returncode == 0
    r = stack.cli("report", "done-1", "--fail-on", "skipped")
    assert r.returncode == 3 and "3 skipped" in r.stderr
    r = stack.cli("campaign", "watch", "done-1", "--fail-on", "skipped")
    assert r.returncode == 3
    r = stack.cli("campaign", "status", "no-such")
    assert r.returncode == 1 and "no campaign 'no-such'" in r.stderr and "campaign list" in r.stderr


def test_list_and_search_attributes(stack: LocalStack) -> None:
    rows = json.loads(stack.cli("campaign", "list", "-o", "json").stdout)
    done = next(r for r in rows if r["campaign_id"] == "done-1")
    assert done["name"] == "testdriver" and done["status"] == "completed"
    assert done["counts"]["pass"] == 21 and done["counts"]["skipped"] == 3 and done["counts"]["total"] == 24
    text = stack.cli("campaign", "list").stdout
    assert "done-1" in text and "completed" in text and "24/24" in text
    # the dev server of the local stack knows crossvisor's search attributes: Temporal's own CLI filters on them
    r = subprocess.run(
        [
            venv_tool("temporal"),
            "workflow",
            "list",
            "--address",
            stack.settings.temporal_address,
            "-q",
            # the campaign keeps its attributes current: started as 'starting', it ends 'completed'
            "CrossvisorCampaign = 'testdriver' AND CrossvisorStatus = 'completed' AND CrossvisorPass = 21",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and '"done-1"' in r.stdout, r.stderr
    assert stack.cli("campaign", "list", "--status", "running", "-o", "json").stdout.strip() in ("[]", "")


def test_retry_after_completion_is_a_rerun_and_other_specs_are_refused(stack: LocalStack, tmp_path: Path) -> None:
    log = ExecutionLog(stack.settings.home / "executions.jsonl")
    n = len(log.read())
    r = stack.cli("campaign", "retry", "done-1", "kvm:xen:tiny-bios", "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rerun"] and doc["cells"] == ["kvm--xen--tiny-bios"] and "23 keep their results" in doc["message"]
    r = stack.cli("campaign", "watch", "done-1")
    assert r.returncode == 0, r.stderr
    ran = {e["cell"] for e in log.read()[n:] if e["event"] == "start"}
    assert ran <= {"kvm--xen--tiny-bios"}  # nothing else ran again (a pass may even come from the cache)
    rows = json.loads(stack.cli("campaign", "show", "done-1", "-o", "json").stdout)["cells"]
    assert len(rows) == 24
    # a different spec under an existing id is refused, naming the difference
    other = tmp_path / "other.yaml"
    other.write_text(
        SPEC.read_text()
        .replace("vmx-20", "vmx-21")
        .replace("file:testdriver-lab.yaml", f"file:{SPEC.parent / 'testdriver-lab.yaml'}")
    )
    r = stack.cli("campaign", "start", str(other), "--id", "done-1")
    assert r.returncode == 2 and "platforms[esxi-8].hardware_version: 'vmx-20' -> 'vmx-21'" in r.stderr, r.stderr
    r = stack.cli("campaign", "start", str(SPEC), "--id", "done-1")
    assert r.returncode == 0 and "already finished" in r.stdout


def test_report_finds_the_store_from_another_directory(stack: LocalStack, tmp_path: Path) -> None:
    env = {k: v for k, v in stack.env.items() if k != "CROSSVISOR_HOME"}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def report_from(cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "crossvisor.cli", "report", "done-1", "--json", "-"],
            cwd=cwd,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    # without a home to find: loud
    r = report_from(elsewhere)
    assert r.returncode == 0 and "WARNING: no result store" in r.stderr, r.stderr
    # the home the last `crossvisor up` recorded is found from any directory
    from crossvisor.core import config

    os.environ["XDG_STATE_HOME"] = env["XDG_STATE_HOME"]
    try:
        config.record_home(stack.settings.home)
    finally:
        del os.environ["XDG_STATE_HOME"]
    r = report_from(elsewhere)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr
    cells = json.loads(r.stdout)["cells"]
    assert any(c["stages"] for c in cells)


def test_watch_prints_one_line_per_change_with_running_cells(stack: LocalStack, tmp_path: Path) -> None:
    r = stack.cli("campaign", "start", str(slow_spec(tmp_path, "watched", 2)), "--id", "watch-1")
    assert r.returncode == 0, r.stderr
    r = stack.cli("campaign", "watch", "watch-1", "--interval", "0.3", timeout=200)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x[:2].isdigit() and " watch-1 " in x]
    assert len(lines) >= 3 and len(set(lines)) == len(lines)
    assert any("running " in x and "[" in x for x in lines) and all(" age " in x for x in lines)  # cells and stages
    assert lines[-1].split()[2] == "completed"
    r = stack.cli("campaign", "start", str(slow_spec(tmp_path, "watched", 4)), "--id", "watch-2", "--wait", "--json")
    events = [json.loads(x) for x in r.stdout.splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["counts"]["total"] == 24
    assert any(e.get("running") for e in events if e["event"] == "progress")


def test_local_stack_serves_the_web_ui(stack: LocalStack) -> None:
    with urllib.request.urlopen(stack.settings.temporal_ui_url, timeout=10) as resp:
        assert resp.status == 200


def test_up_prints_the_web_ui_and_down_stops(tmp_path: Path) -> None:
    base = free_base()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CROSSVISOR_", "TEMPORAL_"))}
    env.update(
        CROSSVISOR_HOME=str(tmp_path / "home"),
        CROSSVISOR_TEMPORAL_ADDRESS=f"127.0.0.1:{base}",
        CROSSVISOR_TEMPORAL_UI_URL=f"http://127.0.0.1:{base + 11}",
        CROSSVISOR_METRICS_PORT=str(base + 2),
        CROSSVISOR_SDK_METRICS_PORT=str(base + 3),
        XDG_STATE_HOME=str(tmp_path / "xdg"),
    )
    cli = [sys.executable, "-m", "crossvisor.cli"]
    try:
        r = subprocess.run([*cli, "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"web ui   http://127.0.0.1:{base + 11}/namespaces/default/workflows" in r.stdout
        assert (tmp_path / "xdg/crossvisor/home").read_text().strip() == str(tmp_path / "home")
        attrs = subprocess.run(
            [venv_tool("temporal"), "operator", "search-attribute", "list", "--address", f"127.0.0.1:{base}"],
            capture_output=True,
            text=True,
        )
        assert "CrossvisorStatus" in attrs.stdout and "CrossvisorFail" in attrs.stdout
    finally:
        d = subprocess.run([*cli, "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "temporal" in d.stdout and "worker" in d.stdout, d.stdout + d.stderr
