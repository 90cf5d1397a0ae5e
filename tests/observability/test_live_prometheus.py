"""A real Prometheus server scrapes a crossvisor metrics endpoint; every dashboard query and every
alert/recording rule is then evaluated through Prometheus' HTTP API.

Two sources for the scraped endpoint:
  * default: the real ``crossvisor.core.metrics.REGISTRY`` served over HTTP in-process by
    prometheus_client, with a background "campaign" moving the metrics (real scrape path, real
    PromQL, real rule evaluation);
  * ``CROSSVISOR_LIVE_WORKER=1``: the real worker running a real campaign (see LEAD HOOK below).

Runtime ~15 s (Prometheus start ~1 s, 1 s scrape/evaluation intervals).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from promql_util import PROM_CONFIG, RULES, PanelQuery, dashboard_queries, expand, rules

from crossvisor.core import metrics as m

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="apt prometheus not installed"),
]

# Grafana would pick these for a short range at 1 s scrapes; windows span many samples.
RATE_INTERVAL = "15s"
RANGE = "2m"
WINDOW = "2m"
STALLED_CAMPAIGN = "c-stalled"
LIVE_CAMPAIGN = "c-live"
PAUSED_CAMPAIGN = "c-paused"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveTarget:
    """What Prometheus scrapes and what the alerts must show once it has."""

    metrics: str  # host:port of crossvisor metrics
    temporal_metrics: str | None  # host:port of the Temporal SDK metrics, None if not running
    # alertname -> label subsets that must be firing; every other alert must stay inactive.
    expect_firing: dict[str, list[dict[str, str]]]
    stop: Callable[[], None] = lambda: None
    campaigns: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------- in-process exporter


class _FakeCampaign(threading.Thread):
    """Moves every crossvisor metric like a small campaign would, until stopped.

    Values are chosen so the alerts have a known answer: one unhealthy kvm host (fires), one
    campaign stuck for 2 h with pending cells (fires), one progressing campaign (quiet), and a
    stage error ratio of ~9% (quiet: threshold 20%).
    """

    def __init__(self) -> None:
        super().__init__(daemon=True, name="fake-campaign")
        self.halt = threading.Event()
        self.ticks = 0

    def baseline(self) -> None:
        m.CAMPAIGNS_RUNNING.set(2)
        for campaign, total in ((LIVE_CAMPAIGN, 12), (STALLED_CAMPAIGN, 4)):
            m.CAMPAIGN_CELLS.labels(campaign, "total").set(total)
        m.CAMPAIGN_CELLS.labels(STALLED_CAMPAIGN, "pending").set(2)
        m.CAMPAIGN_CELLS.labels(STALLED_CAMPAIGN, "running").set(0)
        m.CAMPAIGN_CELLS.labels(STALLED_CAMPAIGN, "done").set(2)
        m.CAMPAIGN_CELLS.labels(STALLED_CAMPAIGN, "pass").set(2)
        m.CAMPAIGN_LAST_PROGRESS.labels(STALLED_CAMPAIGN).set(time.time() - 7200)
        # as stale, with cells pending, but paused by an operator: must not alert
        m.CAMPAIGN_CELLS.labels(PAUSED_CAMPAIGN, "total").set(3)
        m.CAMPAIGN_CELLS.labels(PAUSED_CAMPAIGN, "pending").set(3)
        m.CAMPAIGN_LAST_PROGRESS.labels(PAUSED_CAMPAIGN).set(time.time() - 7200)
        m.CAMPAIGN_PAUSED.labels(PAUSED_CAMPAIGN).set(1)
        m.CAMPAIGN_PAUSED.labels(STALLED_CAMPAIGN).set(0)
        m.CAMPAIGN_STALLED.labels(STALLED_CAMPAIGN).set(1)
        m.HOSTS_AVAILABLE.labels("kvm", "healthy").set(2)
        m.HOSTS_AVAILABLE.labels("kvm", "unhealthy").set(1)
        m.HOSTS_AVAILABLE.labels("vsphere", "healthy").set(1)
        m.HOSTS_AVAILABLE.labels("vsphere", "unhealthy").set(0)
        self.step()

    def step(self) -> None:
        i = self.ticks
        self.ticks += 1
        done = min(i, 10)
        for state, value in (("pending", 10 - done), ("running", 2), ("done", done)):
            m.CAMPAIGN_CELLS.labels(LIVE_CAMPAIGN, state).set(value)
        m.CAMPAIGN_CELLS.labels(LIVE_CAMPAIGN, "pass").set(done - done // 4)
        m.CAMPAIGN_CELLS.labels(LIVE_CAMPAIGN, "fail").set(done // 4)
        m.CAMPAIGN_LAST_PROGRESS.labels(LIVE_CAMPAIGN).set(time.time())
        for src, tgt in (("kvm", "esxi-8"), ("esxi-8", "kvm"), ("esxi-6.5", "kvm")):
            kinds = ("kvm" if src == "kvm" else "vsphere", "kvm" if tgt == "kvm" else "vsphere")
            m.CELLS_FINISHED.labels(src, tgt, *kinds, "pass").inc(3)
            m.CELLS_FINISHED.labels(src, tgt, *kinds, "fail").inc(1 if i % 2 else 0)
            m.CELLS_FINISHED.labels(src, tgt, *kinds, "error").inc(1 if i % 3 == 0 else 0)
        for stage, secs in (("convert", 3.0), ("boot", 6.0), ("export", 0.4)):
            for kind in ("kvm", "vsphere"):
                for _ in range(5):
                    m.STAGE_DURATION.labels(stage, kind, "ok").observe(secs * (0.5 + (i % 4) / 4))
                m.STAGE_DURATION.labels(stage, kind, "error" if i % 2 else "fail").observe(secs)
        m.STAGE_RETRIES.labels("convert", "TimeoutError").inc()
        m.STAGE_RETRIES.labels("boot", "libvirtError").inc(2)
        m.HOST_LEASES.labels("kvm").set(2)
        m.HOST_LEASES.labels("vsphere").set(1)
        m.HOST_BUSY_SECONDS.labels("kvm").inc(1.5)
        m.HOST_BUSY_SECONDS.labels("vsphere").inc(0.8)
        m.CONVERSION_BYTES.labels("vmdk", "qcow2").inc(64 * 2**20)
        m.CONVERSION_SECONDS.labels("vmdk", "qcow2").inc(0.5)
        m.HEALTH_FAILURES.labels("kvm").inc()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            self.step()


def _clear_registry() -> None:
    """The registry is process-global: leave nothing behind for other tests."""
    for collector in list(m.REGISTRY._collector_to_names):  # noqa: SLF001 - no public iterator
        if hasattr(collector, "clear") and getattr(collector, "_labelnames", ()):
            collector.clear()
    m.CAMPAIGNS_RUNNING.set(0)


def start_in_process_exporter() -> LiveTarget:
    from prometheus_client import start_http_server

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=m.REGISTRY)
    campaign = _FakeCampaign()
    campaign.baseline()
    campaign.start()

    def stop() -> None:
        campaign.halt.set()
        campaign.join(5)
        server.shutdown()
        server.server_close()
        thread.join(5)
        _clear_registry()

    return LiveTarget(
        metrics=f"127.0.0.1:{port}",
        temporal_metrics=None,
        expect_firing={
            "CrossvisorHostUnhealthy": [{"kind": "kvm"}],
            "CrossvisorCampaignStalled": [{"campaign": STALLED_CAMPAIGN}],
        },
        stop=stop,
        campaigns=[LIVE_CAMPAIGN, STALLED_CAMPAIGN, PAUSED_CAMPAIGN],
    )


# ========================================================================================
# Real worker + campaign (default; CROSSVISOR_LIVE_WORKER=0 skips it).
# Replace the body with the real stack, keeping the LiveTarget contract:
#   1. `crossvisor up` (Temporal dev server on pinned loopback ports, private db file in tmp_path);
#   2. `crossvisor worker --metrics-port P --temporal-metrics-port Q` (Popen, own session; record
#      the PIDs so stop() can SIGTERM then SIGKILL exactly those);
#   3. an inventory with one unreachable kvm host (e.g. a libvirt URI to a socket that does not
#      exist) so the health check marks it unhealthy -> CrossvisorHostUnhealthy must fire;
#   4. `crossvisor campaign start <small spec>` and wait until a cell finished (crossvisor status),
#      so counters and histograms have moved before the queries run;
#   5. return LiveTarget(metrics="127.0.0.1:P", temporal_metrics="127.0.0.1:Q",
#      expect_firing={"CrossvisorHostUnhealthy": [{"kind": "kvm"}]}, stop=..., campaigns=[id]).
# A stalled campaign needs an hour of silence, so it is covered by rules_test.yml, not here.
# ========================================================================================
def start_real_worker(tmp_path: Path) -> LiveTarget:
    from tests.e2e.conftest import ROOT, LocalStack, wait_for

    stack = LocalStack(tmp_path / "home")
    try:
        stack.start_server()
        stack.start_worker()
        lab = tmp_path / "lab.yaml"
        lab.write_text(
            (ROOT / "tests/fixtures/specs/testdriver-lab.yaml").read_text()
            # sorts first among kvm hosts with the most slots, so the scheduler tries it: its
            # endpoint is dead, three failed health checks mark it unhealthy
            + "  - {name: kvm-00, kind: kvm, endpoint: 'qemu+unix:///system?socket=/nonexistent/s', site: lab-a, slots: 4}\n"
        )
        spec = tmp_path / "live.yaml"
        spec.write_text(
            (ROOT / "tests/fixtures/specs/testdriver.yaml")
            .read_text()
            .replace("name: testdriver", "name: live-spec")  # the metrics label is the id, not this
            .replace("file:testdriver-lab.yaml", f"file:{lab}")
        )
        r = stack.cli("campaign", "start", str(spec), "--id", LIVE_CAMPAIGN)
        assert r.returncode == 0, r.stderr
        wait_for(
            lambda: (stack.settings.home / "results").exists() and any((stack.settings.home / "results").iterdir()),
            120,
            "a finished cell",
        )
    except BaseException:
        stack.stop()
        raise
    return LiveTarget(
        metrics=f"127.0.0.1:{stack.settings.metrics_port}",
        temporal_metrics=f"127.0.0.1:{stack.settings.sdk_metrics_port}",
        expect_firing={"CrossvisorHostUnhealthy": [{"kind": "kvm"}]},
        stop=stack.stop,
        campaigns=[LIVE_CAMPAIGN],
    )


# ---------------------------------------------------------------------------------- Prometheus


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            doc = json.load(resp)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}")
            if check():
                return
            time.sleep(0.5)
        pytest.fail(f"timed out after {timeout}s waiting for {what}")


def write_config(tmp: Path, target: LiveTarget) -> Path:
    """deploy/prometheus/prometheus.yml with loopback targets and 1 s intervals.

    Job names and relabelling stay as deployed (rules and dashboard select on them). Alerts get
    ``for: 0s`` so their state is visible within seconds; ``for`` itself is covered by
    rules_test.yml.
    """
    config = yaml.safe_load(PROM_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "crossvisor-worker":
            job["static_configs"] = [{"targets": [target.metrics]}]
        elif job["job_name"] == "crossvisor-temporal-sdk" and target.temporal_metrics:
            job["static_configs"] = [{"targets": [target.temporal_metrics]}]
        else:
            continue  # no Temporal server / self-scrape here
        jobs.append(job)
    config["scrape_configs"] = jobs
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    (tmp / "rules.yml").write_text(yaml.safe_dump(groups))
    config["rule_files"] = [str(tmp / "rules.yml")]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module", params=["real-worker", "exporter"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTarget]:
    # the real worker running a real campaign; the in-process exporter additionally drives the
    # alerts a short test cannot reach live (an hour-stalled campaign)
    if request.param == "real-worker" and os.environ.get("CROSSVISOR_LIVE_WORKER", "1") == "1":
        live = start_real_worker(tmp_path_factory.mktemp("worker"))
    else:
        live = start_in_process_exporter()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def prom(target: LiveTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={write_config(tmp, target)}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", proc)
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        server.wait_for("/-/ready", ready, timeout=20)
        server.wait_for(
            "first scrape of the crossvisor job",
            lambda: bool(server.query('up{job="crossvisor-worker"} == 1')),
        )
        # Rates need several samples of moving counters; the slowest window below is 15 s.
        server.wait_for(
            "histogram rates over the rate interval",
            lambda: bool(
                server.query(
                    f"rate(crossvisor_stage_duration_seconds_count[{RATE_INTERVAL}]) > 0"
                    f" and on () (count_over_time(up[{RATE_INTERVAL}]) >= 8)"
                )
            ),
            timeout=40,
        )
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if proc.returncode not in (0, -signal.SIGKILL):
            print((tmp / "prometheus.log").read_text()[-3000:])


# ---------------------------------------------------------------------------------- the tests

QUERIES = dashboard_queries()


@pytest.mark.parametrize("panel", QUERIES, ids=[q.test_id for q in QUERIES])
def test_dashboard_query_returns_data(prom: Prometheus, target: LiveTarget, panel: PanelQuery) -> None:
    if "temporal_" in panel.expr and target.temporal_metrics is None:
        pytest.skip("Temporal SDK metrics come from the real-worker variant")
    expr = expand(panel.expr, rate_interval=RATE_INTERVAL, range_=RANGE, window=WINDOW)
    result = prom.query(expr)
    assert result, f"{panel.title!r}: no data for {expr}"
    values = [float(r["value"][1]) for r in result]
    # NaN-only answers (0/0, quantile of nothing) would draw an empty panel.
    assert any(math.isfinite(v) for v in values), f"{panel.title!r}: {values}"


def test_campaign_variable_lists_campaigns(prom: Prometheus, target: LiveTarget) -> None:
    values = prom.api("label/campaign/values", **{"match[]": "crossvisor_campaign_cells"})
    assert set(target.campaigns) <= set(values)


def test_task_slot_usage_is_measured(prom: Prometheus, target: LiveTarget) -> None:
    """The worker's activity slots were really in use while the campaign ran (not a constant 0)."""
    if target.temporal_metrics is None:
        pytest.skip("Temporal SDK metrics come from the real-worker variant")
    used = prom.query(
        'max_over_time(temporal_worker_task_slots_used{job="crossvisor-temporal-sdk",worker_type="ActivityWorker"}[5m])'
    )
    assert used and max(float(r["value"][1]) for r in used) > 0, used


def test_platform_pairs_and_zero_counters(prom: Prometheus, target: LiveTarget) -> None:
    """Cell counters are labelled by platform (esxi-8 and esxi-6.5 apart) and exist from the start."""
    pairs = {(r["metric"]["source"], r["metric"]["target"]) for r in prom.query("crossvisor_cells_finished_total")}
    assert ("esxi-8", "kvm") in pairs and ("esxi-6.5", "kvm") in pairs, pairs
    grades = {r["metric"]["grade"] for r in prom.query('crossvisor_cells_finished_total{source="esxi-6.5"}')}
    if target.temporal_metrics is not None:  # the real worker made every grade's series at 0
        assert grades >= {"pass", "warn", "fail", "error", "skipped"}, grades


def test_recording_rules_evaluate(prom: Prometheus) -> None:
    records = [r["record"] for r in rules() if "record" in r]
    prom.wait_for("every recording rule", lambda: all(prom.query(r) for r in records))
    groups = prom.api("rules", type="record")["groups"]
    health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
    assert health == {r: "ok" for r in records}


def _alerts(prom: Prometheus) -> dict[str, dict]:
    groups = prom.api("rules", type="alert")["groups"]
    return {r["name"]: r for g in groups for r in g["rules"]}


def test_alerts_fire_exactly_as_expected(prom: Prometheus, target: LiveTarget) -> None:
    expected = target.expect_firing

    def settled() -> bool:
        alerts = _alerts(prom)
        return all(alerts[name]["state"] == "firing" for name in expected) and all(
            a["lastEvaluation"] != "0001-01-01T00:00:00Z" for a in alerts.values()
        )

    prom.wait_for("expected alerts firing", settled)
    alerts = _alerts(prom)
    assert set(alerts) == {r["alert"] for r in rules() if "alert" in r}
    for name, rule in alerts.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        firing = [a["labels"] for a in rule["alerts"] if a["state"] == "firing"]
        if name not in expected:
            assert rule["state"] == "inactive" and not firing, (name, firing)
            continue
        for want in expected[name]:
            assert any(want.items() <= got.items() for got in firing), (name, want, firing)
        # Nothing else fires: e.g. the progressing campaign or the healthy vsphere hosts.
        assert len(firing) == len(expected[name]), (name, firing)
        assert all(a["labels"]["severity"] for a in rule["alerts"])


def test_alert_expressions_through_query_api(prom: Prometheus, target: LiveTarget) -> None:
    """The same expressions the rules evaluate, run as plain queries (what an operator pastes)."""
    for rule in (r for r in rules() if "alert" in r):
        result = prom.query(rule["expr"])
        if rule["alert"] in target.expect_firing:
            assert len(result) == len(target.expect_firing[rule["alert"]]), rule["alert"]
        else:
            assert result == [], (rule["alert"], result)
    # The stalled campaign is > 1 h behind; the live one is seconds behind.
    if STALLED_CAMPAIGN in target.campaigns:
        since = {
            r["metric"]["campaign"]: float(r["value"][1])
            for r in prom.query("crossvisor:campaign_seconds_since_progress")
        }
        assert since[STALLED_CAMPAIGN] > 3600
        assert since[LIVE_CAMPAIGN] < 60
