"""Static checks of deploy/: Prometheus config and rules (real promtool), the Grafana dashboard's
PromQL (parsed by promtool), and the compose stack's structure (no Docker engine here)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crossvisor.core import metrics

_spec = importlib.util.spec_from_file_location(
    "promql_util", Path(__file__).parent / "observability" / "promql_util.py"
)
assert _spec and _spec.loader
pq = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("promql_util", pq)  # dataclasses look their module up there
_spec.loader.exec_module(pq)

DEPLOY: Path = pq.DEPLOY
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt prometheus)")


def promtool(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run([PROMTOOL or "promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def exported_series() -> set[str]:
    """Series names crossvisor.core.metrics can produce (counter -> _total, histogram -> _bucket...)."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


# ------------------------------------------------------------------------------- Prometheus


@needs_promtool
def test_prometheus_config_valid() -> None:
    out = promtool("check", "config", str(pq.PROM_CONFIG))
    assert "1 rule files found" in out


@needs_promtool
def test_rules_valid_and_unit_tests_pass() -> None:
    promtool("check", "rules", str(pq.RULES))
    out = promtool("test", "rules", "rules_test.yml", cwd=pq.RULES.parent)
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for r in pq.rules() if "alert" in r}
    records = {r["record"] for r in pq.rules() if "record" in r}
    tests = yaml.safe_load((pq.RULES.parent / "rules_test.yml").read_text())["tests"]
    tested_alerts = {a["alertname"] for t in tests for a in t.get("alert_rule_test", [])}
    tested_exprs = " ".join(e["expr"] for t in tests for e in t.get("promql_expr_test", []))
    assert alerts == {
        "CrossvisorCampaignStalled",
        "CrossvisorHostUnhealthy",
        "CrossvisorStageErrorRateHigh",
        "CrossvisorWorkerDown",
    }
    assert alerts <= tested_alerts
    assert {r for r in records if r not in tested_exprs} == set()
    # Each alert is tested both quiet and firing, so a rule that always (or never) fires fails.
    for name in alerts:
        cases = [a for t in tests for a in t.get("alert_rule_test", []) if a["alertname"] == name]
        assert any(c["exp_alerts"] == [] for c in cases), name
        assert any(c["exp_alerts"] for c in cases), name


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_series()
    used = {n for r in pq.rules() for n in pq.metric_names(r["expr"])}
    used |= {
        n
        for q in pq.dashboard_queries()
        for n in pq.metric_names(q.expr)
        if not n.startswith("temporal_")  # Temporal SDK's own names (seen live in the live test)
    }
    assert used - exported == set(), "not in crossvisor/core/metrics.py"


def test_scrape_targets_match_compose_workers() -> None:
    config = yaml.safe_load(pq.PROM_CONFIG.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    workers = sorted(s for s in compose["services"] if s.startswith("worker-"))
    assert len(workers) == 2
    for job, port in (("crossvisor-worker", 9464), ("crossvisor-temporal-sdk", 9465)):
        targets = [t for sc in jobs[job]["static_configs"] for t in sc["targets"]]
        assert sorted(targets) == [f"{w}:{port}" for w in workers]
    # Alerts select on the job name.
    assert any('job="crossvisor-worker"' in r["expr"] for r in pq.rules())


# -------------------------------------------------------------------------------- dashboard


def test_dashboard_structure() -> None:
    dash = json.loads(pq.DASHBOARD.read_text())
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "crossvisor"
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == ds["uid"], panel["title"]
            assert panel["targets"], panel["title"]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("progress", "pass rate", "p50", "p95", "utilisation", "retries", "failures"):
        assert topic in titles, topic
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"campaign", "window"}
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/crossvisor.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


@needs_promtool
def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool check rules parses each expression with the server's own PromQL parser."""
    queries = pq.dashboard_queries()
    assert len(queries) >= 15
    group = [
        {
            "record": f"dashboard:{q.test_id}",
            "expr": pq.expand(q.expr, rate_interval="1m", range_="1h", window="6h"),
        }
        for q in queries
    ]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": group}]}))
    out = promtool("check", "rules", str(path))
    assert f"{len(queries)} rules found" in out


@needs_promtool
def test_promql_parse_check_can_fail(tmp_path: Path) -> None:
    # Guards the previous test: a broken expression must make promtool fail.
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "x:y", "expr": "sum by (("}]}]}))
    proc = subprocess.run([PROMTOOL or "promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode != 0


# ---------------------------------------------------------------------------------- compose

COMPOSE = DEPLOY / "docker-compose.yml"
EXPECTED_SERVICES = {
    "temporal-postgresql",
    "temporal",
    "temporal-ui",
    "netbox-postgres",
    "netbox-redis",
    "netbox",
    "netbox-worker",
    "prometheus",
    "grafana",
    "worker-1",
    "worker-2",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # merges <<: anchors like compose does


def test_compose_services_and_images(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == EXPECTED_SERVICES
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "image" in svc and "build" not in svc:
            # Pinned tags: a moving "latest" makes the stack unreproducible.
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", svc["image"]), svc["image"]
            assert not svc["image"].endswith(":latest"), name
    assert services["temporal"]["environment"]["DB"].startswith("postgres")
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "temporal-postgresql"
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert services["netbox"]["environment"]["DB_HOST"] == "netbox-postgres"
    assert services["netbox"]["environment"]["REDIS_HOST"] == "netbox-redis"


def test_compose_depends_on_and_healthchecks(compose: dict) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep, cond in deps.items() if isinstance(deps, dict) else ((d, None) for d in deps):
            assert dep in services and dep != name, (name, dep)
            if cond and cond.get("condition") == "service_healthy":
                hc = services[dep].get("healthcheck", {})
                assert hc.get("test") and not hc.get("disable"), (name, dep)
    assert set(services["prometheus"]["depends_on"]) >= {"worker-1", "worker-2"}
    assert "prometheus" in services["grafana"]["depends_on"]
    for worker in ("worker-1", "worker-2"):
        assert {"temporal", "netbox"} <= set(services[worker]["depends_on"])


def test_compose_volumes_reference_existing_files(compose: dict) -> None:
    named = set(compose.get("volumes") or {})
    mounted = []
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src, dst = vol.split(":")[:2]
            if src.startswith((".", "/")):
                assert (DEPLOY / src).resolve().exists(), (name, src)
                mounted.append((name, (DEPLOY / src).resolve(), dst))
            else:
                assert src in named, (name, src)
    targets = {(n, p) for n, p, _ in mounted}
    assert ("prometheus", pq.PROM_CONFIG) in targets and ("prometheus", pq.RULES) in targets
    assert ("grafana", pq.DASHBOARD) in targets
    # prometheus.yml names rules.yml relative to itself: both must land in the same directory.
    dirs = {Path(d).parent for n, p, d in mounted if n == "prometheus" and p.suffix == ".yml"}
    assert dirs == {Path("/etc/prometheus")}
    build = compose["services"]["worker-1"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / build["dockerfile"]).is_file()
    assert (context / "deploy/Dockerfile.dockerignore").is_file()


def test_compose_has_no_literal_secrets(compose: dict) -> None:
    secretish = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY", re.I)
    for name, svc in compose["services"].items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), name
        for key, value in env.items():
            if secretish.search(key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), (name, key)
    assert compose["secrets"]["netbox_token"] == {"environment": "NETBOX_API_TOKEN"}
    worker_env = compose["services"]["worker-1"]["environment"]
    assert worker_env["CROSSVISOR_NETBOX_TOKEN_FILE"] == "/run/secrets/netbox_token"
    required = re.findall(r"\$\{(\w+):\?", COMPOSE.read_text())
    example = (DEPLOY / "stack.env.example").read_text()
    for var in set(required):
        assert re.search(rf"^{var}=$", example, re.M), var  # listed, and empty in the example


def test_dockerfile_and_worker_env() -> None:
    docker = (DEPLOY / "Dockerfile").read_text()
    # both stages on a Python with CVE-2024-6232 fixed (3.11.10+), pinned, not a moving tag
    versions = re.findall(r"^FROM python:3\.11\.(\d+)-slim\b", docker, re.M)
    assert len(versions) == 2 and all(int(v) >= 10 for v in versions), versions
    for pkg in ("libvirt0", "libvirt-clients", "qemu-utils"):
        assert pkg in docker
    assert 'ENTRYPOINT ["crossvisor"]' in docker and '"worker"' in docker
    assert re.search(r"^USER (?!root)\w+", docker, re.M)
    env = dict(
        line.lstrip("# ").split("=", 1)
        for line in (DEPLOY / "worker.env.example").read_text().splitlines()
        if re.match(r"^#? ?CROSSVISOR_\w+=", line)
    )
    for key in (
        "CROSSVISOR_TEMPORAL_ADDRESS",
        "CROSSVISOR_TEMPORAL_NAMESPACE",
        "CROSSVISOR_TEMPORAL_TLS_CERT",
        "CROSSVISOR_TEMPORAL_TLS_KEY",
        "CROSSVISOR_TEMPORAL_TLS_CA",
        "CROSSVISOR_TEMPORAL_API_KEY_FILE",
        "CROSSVISOR_NETBOX_URL",
        "CROSSVISOR_NETBOX_TOKEN_FILE",
    ):
        assert key in env, key
    # Only file references for secrets, never inline tokens.
    assert not any(k.endswith(("_TOKEN", "_API_KEY", "_PASSWORD")) for k in env)
    assert env["CROSSVISOR_NETBOX_TOKEN_FILE"].startswith("/")
