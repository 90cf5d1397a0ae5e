"""The CLI's own logic without a server: help for every command and argument, --version, the one
cell form, spec differences, --fail-on, retry semantics on a finished campaign, ETA, shell
completion, connection conventions, home discovery, log formats, search attributes, metrics."""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossvisor import cli
from crossvisor.client import plandiff, rerun
from crossvisor.commands import common
from crossvisor.commands.common import EXIT_INPUT, CliError
from crossvisor.core import config
from domain.control import RetryRequest
from domain.model import CellOutcome, Grade

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "crossvisor.cli", *args],
        cwd=cwd or ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def walk(p: argparse.ArgumentParser, path: str = "crossvisor"):
    yield path, p
    for act in p._actions:
        if isinstance(act, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in act._choices_actions}
            for name, child in act.choices.items():
                assert helps.get(name), f"{path} {name}: no help line"
                yield from walk(child, f"{path} {name}")


def test_every_command_and_argument_has_help() -> None:
    parser = cli.build_parser()
    commands = list(walk(parser))
    assert len(commands) > 25
    for path, p in commands:
        for act in p._actions:
            if isinstance(act, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert act.help and act.help != argparse.SUPPRESS, f"{path}: {act.option_strings or act.dest} has no help"
    names = {path for path, _ in commands}
    for want in ("campaign list", "campaign show", "campaign retry", "completion", "report"):
        assert f"crossvisor {want}" in names


def test_version_and_help_list_exit_codes() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("crossvisor ") and "temporalio" in r.stdout
    r = run_cli("--help")
    assert r.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert f"  {code}" in r.stdout
    assert "--fail-on" in r.stdout


def test_cell_ids_one_human_form() -> None:
    assert common.to_cell_id("kvm:esxi-6.5:tiny-bios") == "kvm--esxi-6-5--tiny-bios"
    assert common.to_cell_id("kvm--esxi-6-5--tiny-bios") == "kvm--esxi-6-5--tiny-bios"  # older output still works
    for bad in ("nope", "kvm:esxi-8", "a:b:c:d", "kvm::tiny"):
        with pytest.raises(CliError) as e:
            common.to_cell_id(bad)
        assert e.value.code == EXIT_INPUT and "SOURCE:TARGET:IMAGE" in str(e.value)
    msg = common.humanise("skip: unknown cells ['nope--x--y']", {"nope--x--y": "nope:x:y"})
    assert msg == "skip: unknown cells ['nope:x:y']"


def test_spec_difference_is_named() -> None:
    from crossvisor.spec import load_spec

    spec = ROOT / "tests/fixtures/specs/testdriver.yaml"
    a, b = load_spec(spec), load_spec(spec)
    assert plandiff.differences(a, b) == []
    b.platforms[2].hardware_version = "vmx-21"
    b.concurrency.max_cells = 2
    b.images = b.images[:1]
    diffs = plandiff.differences(a, b)
    assert "platforms[esxi-8].hardware_version: 'vmx-20' -> 'vmx-21'" in diffs
    assert "concurrency.max_cells: 4 -> 2" in diffs
    assert "images[tiny-efi]: removed" in diffs
    assert "and 2 more" in plandiff.describe([f"x{i}" for i in range(plandiff.MAX_SHOWN + 2)])


def test_fail_on() -> None:
    assert common.parse_fail_on("fail, error") == {"fail", "error"}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown grade"):
        common.parse_fail_on("fail,oops")
    assert common.fail_on_code({"fail": 0, "error": 0, "pass": 5}, frozenset({"fail", "error"})) == 0
    assert common.fail_on_code({"fail": 1}, frozenset({"fail", "error"})) == common.EXIT_CELLS
    r = run_cli("report", "x", "--fail-on", "nope")
    assert r.returncode == 2 and "unknown grade" in r.stderr


def test_retry_on_a_finished_campaign_reruns_failed_and_errored_only() -> None:
    outcomes = {
        "a": CellOutcome(Grade.PASS),
        "b": CellOutcome(Grade.FAIL, reason="boots: no"),
        "c": CellOutcome(Grade.ERROR),
        "d": CellOutcome(Grade.SKIPPED, reason="skipped by operator"),
        "e": CellOutcome(Grade.WARN),
    }
    cells = set(outcomes)
    assert rerun.plan_rerun(outcomes, cells, RetryRequest(failed=True)) == ["b", "c"]
    # a cancelled campaign: cells that never ran run too
    assert rerun.plan_rerun(outcomes, cells | {"f"}, RetryRequest(failed=True)) == ["b", "c", "f"]
    assert rerun.plan_rerun(outcomes, cells, RetryRequest(["d", "a"])) == ["d", "a"]
    with pytest.raises(CliError, match="unknown cells"):
        rerun.plan_rerun(outcomes, cells, RetryRequest(["zz"]))
    with pytest.raises(CliError, match="no cell failed or errored"):
        rerun.plan_rerun({"a": CellOutcome(Grade.PASS)}, {"a"}, RetryRequest(failed=True))


def test_eta_from_the_schedulers_estimates() -> None:
    from crossvisor.client.reading import cells_of, estimate_eta
    from crossvisor.spec import load_spec
    from domain.messages import CampaignInput

    inp = CampaignInput(plan=load_spec(ROOT / "tests/fixtures/specs/testdriver.yaml"))
    ids = sorted(cells_of(inp))
    static = estimate_eta(inp, {}, 0.0, 4)
    assert static and static > 0
    half = {c: False for c in ids[:12]}
    paced = estimate_eta(inp, half, 60.0, 4)  # 12 of 24 done in a minute: about another minute
    assert paced is not None and 30 < paced < 120
    assert estimate_eta(inp, {c: False for c in ids}, 60.0, 4) == 0.0
    # cached cells cost nothing: they do not speed up the estimate of the rest
    assert estimate_eta(inp, {c: True for c in ids[:12]}, 60.0, 4) == pytest.approx(static / 2, rel=0.3)


def test_eta_says_when_it_is_only_the_model() -> None:
    from crossvisor.client.formats import eta_text as _eta_text

    running = {"workflow_status": "running", "eta_s": 23220.0}
    assert _eta_text({**running, "eta_basis": "model"}) == ", ETA ~6h27m (model: no cell finished yet)"
    assert _eta_text({**running, "eta_basis": "pace"}) == ", ETA ~6h27m"
    assert _eta_text({**running, "paused": True}) == ", ETA: paused"


def test_completion_script_is_valid_bash() -> None:
    r = run_cli("completion", "bash")
    assert r.returncode == 0
    assert '"campaign") words="start list status show watch cancel' in r.stdout
    assert "--fail-on" in r.stdout and "complete -F _crossvisor crossvisor" in r.stdout
    check = subprocess.run(["bash", "-n"], input=r.stdout, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    # completing "crossvisor campaign re" in a real bash offers resume and retry
    probe = r.stdout + '\nCOMP_WORDS=(crossvisor campaign re); COMP_CWORD=2; _crossvisor; echo "${COMPREPLY[@]}"\n'
    out = subprocess.run(["bash", "-c", probe], text=True, capture_output=True, timeout=30)
    assert out.stdout.split() == ["resume", "retry"], out.stdout + out.stderr
    assert run_cli("completion", "zsh").stdout.startswith("autoload -U +X bashcompinit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_line_naming_the_address(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CROSSVISOR_", "TEMPORAL_"))}
    env.update(TEMPORAL_ADDRESS=f"127.0.0.1:{port}", CROSSVISOR_HOME=str(tmp_path))
    t = time.monotonic()
    r = run_cli("campaign", "list", env=env)
    took = time.monotonic() - t
    assert r.returncode == common.EXIT_UNAVAILABLE, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "crossvisor up" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and took < 10
    # --address beats the environment
    other = free_port()
    r = run_cli("campaign", "status", "x", "--address", f"127.0.0.1:{other}", env=env)
    assert r.returncode == 4 and f"127.0.0.1:{other}" in r.stderr


def test_temporal_env_conventions(monkeypatch) -> None:
    for k in ("CROSSVISOR_TEMPORAL_ADDRESS", "CROSSVISOR_TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", "10.9.9.9:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "lab")
    s = config.Settings()
    assert (s.temporal_address, s.temporal_namespace) == ("10.9.9.9:7233", "lab")
    monkeypatch.setenv("CROSSVISOR_TEMPORAL_ADDRESS", "127.0.0.1:1")  # the project's own variable wins
    assert config.Settings().temporal_address == "127.0.0.1:1"
    a = cli.build_parser().parse_args(["--namespace", "top", "campaign", "list", "--address", "h:1"])
    s = common.apply_connection(a, config.Settings())
    assert (s.temporal_address, s.temporal_namespace) == ("h:1", "top")


def test_home_is_found_wherever_the_cli_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CROSSVISOR_HOME", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    project = tmp_path / "project"
    (project / ".state" / "results").mkdir(parents=True)
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    assert config.find_home(sub)[0] == project / ".state"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert config.find_home(elsewhere) == (elsewhere / ".state", "default (./.state)")
    config.record_home(project / ".state")  # what `crossvisor up` does
    home, how = config.find_home(elsewhere)
    assert home == (project / ".state").resolve() and "recorded" in how
    # an empty .state (not a stack's) is not taken for one
    (elsewhere / ".state").mkdir()
    assert config.find_home(elsewhere)[0] == (project / ".state").resolve()


def test_console_and_json_log_formats_both_redact() -> None:
    from crossvisor.core import log

    for fmt in ("console", "json"):
        buf = io.StringIO()
        log.configure("info", stream=buf, fmt=fmt)
        log.get(component="cli").info("operator.skip", workflow_id="w", run_id="r", password="hunter2-secret")
        out = buf.getvalue()
        assert "hunter2-secret" not in out and "operator.skip" in out and "run_id" in out
        if fmt == "json":
            assert json.loads(out)["workflow_id"] == "w"
        else:
            assert not out.lstrip().startswith("{")
    with pytest.raises(ValueError, match="CROSSVISOR_LOG_FORMAT"):
        log.resolve_format("xml")
    log.configure("info")


def test_json_output_keeps_counts_named_like_secrets() -> None:
    doc = common.scrub({"counts": {"pass": 3}, "password": "x" * 8, "endpoint": "esx://root:pw@h/"})
    assert doc["counts"]["pass"] == 3 and doc["password"] == "[REDACTED]" and "pw" not in doc["endpoint"]


def test_search_attributes_fit_sql_visibility() -> None:
    from collections import Counter

    from workflows import search

    kinds = Counter(search.DEFINITIONS.values())
    assert kinds["Int"] <= 3 and kinds["Keyword"] <= 10 and kinds["KeywordList"] <= 3  # SQL visibility limits
    attrs = search.search_attributes({"total": 24, "done": 20, "pass": 17, "fail": 2, "skipped": 1}, "running", "lab")
    back = search.read(attrs)
    assert back["name"] == "lab" and back["status"] == "running"
    assert back["counts"]["pass"] == 17 and back["counts"]["fail"] == 2 and back["counts"]["total"] == 24
    assert attrs.get(search.GRADES) == ["pass", "fail", "skipped"]
    assert search.registered(attrs) and not search.registered(type(attrs)([]))
    assert search.dev_server_args()[:2] == ["--search-attribute", "CrossvisorCampaign=Keyword"]
    assert len(search.updates({}, "starting", "x")) == len(search.KEYS)


def test_metrics_zero_series_paused_state_and_buckets() -> None:
    from activities.campaign import CampaignActivities
    from crossvisor.core import metrics as m
    from domain.messages import ProgressReport

    m.init_campaign({"esxi-8": "vsphere", "esxi-6.5": "vsphere", "kvm": "kvm"})
    samples = {
        (s.labels["source"], s.labels["target"], s.labels["grade"]): s.value
        for fam in m.REGISTRY.collect()
        if fam.name == "crossvisor_cells_finished"
        for s in fam.samples
        if s.name.endswith("_total")
    }
    assert samples[("esxi-6.5", "kvm", "fail")] == 0 and samples[("esxi-8", "esxi-6.5", "pass")] == 0
    assert m.STAGE_BUCKETS[0] <= 1 and m.STAGE_BUCKETS[-1] >= 4 * 3600  # seconds to hours
    acts = CampaignActivities.__new__(CampaignActivities)
    acts.settings = config.Settings()
    acts.publish_progress(ProgressReport("spec-name", {"total": 3, "pending": 3}, paused=True))
    assert m.REGISTRY.get_sample_value("crossvisor_campaign_paused", {"campaign": "spec-name"}) == 1
    acts.publish_progress(ProgressReport("spec-name", {"total": 3, "pending": 3}, paused=False, stalled="no host"))
    assert m.REGISTRY.get_sample_value("crossvisor_campaign_paused", {"campaign": "spec-name"}) == 0
    assert m.REGISTRY.get_sample_value("crossvisor_campaign_stalled", {"campaign": "spec-name"}) == 1
    m.remove_campaign("spec-name")
    assert m.REGISTRY.get_sample_value("crossvisor_campaign_cells", {"campaign": "spec-name", "state": "total"}) is None
