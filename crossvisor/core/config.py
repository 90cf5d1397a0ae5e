"""Settings from the environment (12-factor), with the embedded local default.

Secrets are never values here: only paths to secret files or env var names, resolved where used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TASK_QUEUE = "crossvisor"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"CROSSVISOR_{name}", default)


@dataclass
class Settings:
    home: Path = field(default_factory=lambda: Path(_env("HOME", ".state")).resolve())
    temporal_address: str = field(default_factory=lambda: _env("TEMPORAL_ADDRESS", "127.0.0.1:17233"))
    temporal_namespace: str = field(default_factory=lambda: _env("TEMPORAL_NAMESPACE", "default"))
    temporal_tls_cert: str = field(default_factory=lambda: _env("TEMPORAL_TLS_CERT"))
    temporal_tls_key: str = field(default_factory=lambda: _env("TEMPORAL_TLS_KEY"))
    temporal_tls_ca: str = field(default_factory=lambda: _env("TEMPORAL_TLS_CA"))
    temporal_api_key_file: str = field(default_factory=lambda: _env("TEMPORAL_API_KEY_FILE"))
    task_queue: str = field(default_factory=lambda: _env("TASK_QUEUE", TASK_QUEUE))
    metrics_port: int = field(default_factory=lambda: int(_env("METRICS_PORT", "9464")))
    sdk_metrics_port: int = field(default_factory=lambda: int(_env("SDK_METRICS_PORT", "9465")))
    netbox_url: str = field(default_factory=lambda: _env("NETBOX_URL"))
    netbox_token_file: str = field(default_factory=lambda: _env("NETBOX_TOKEN_FILE"))
    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "info"))
    # where `crossvisor serve` links to: the Temporal Web UI and the Grafana dashboard
    temporal_ui_url: str = field(default_factory=lambda: _env("TEMPORAL_UI_URL", "http://127.0.0.1:17280"))
    grafana_url: str = field(default_factory=lambda: _env("GRAFANA_URL", "http://127.0.0.1:3000"))

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def cache(self) -> Path:
        return self.home / "cache"
