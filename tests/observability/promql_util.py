"""Helpers shared by the observability tests: dashboard queries and Grafana variable expansion."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "crossvisor.json"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules.yml"


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    title: str
    ref_id: str
    expr: str
    instant: bool

    @property
    def test_id(self) -> str:
        return f"panel{self.panel_id}{self.ref_id}"


def dashboard_queries(path: Path = DASHBOARD) -> list[PanelQuery]:
    dash = json.loads(path.read_text())
    found = []
    for panel in dash["panels"]:
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                found.append(
                    PanelQuery(
                        nested["id"],
                        nested["title"],
                        target["refId"],
                        target["expr"],
                        bool(target.get("instant")),
                    )
                )
    return found


def expand(expr: str, *, rate_interval: str, range_: str, window: str, campaign: str = ".*") -> str:
    """Grafana's variable expansion for the variables our dashboard uses; anything else is a bug."""
    out = (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
        .replace("$window", window)
        .replace("$campaign", campaign)
    )
    assert "$" not in out, f"unexpanded Grafana variable in {expr!r}"
    return out


def rules(path: Path = RULES) -> list[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


_METRIC = re.compile(r"\b((?:crossvisor|temporal)_[a-z0-9_]+)\b")


def metric_names(expr: str) -> set[str]:
    """crossvisor_*/temporal_* series names an expression selects (not recording-rule names)."""
    return set(_METRIC.findall(expr))
