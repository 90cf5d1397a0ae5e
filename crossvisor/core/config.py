"""Settings from the environment (12-factor), with the embedded local default.

Secrets are never values here: only paths to secret files or env var names, resolved where used.

The Temporal connection follows the Temporal CLI's conventions too: ``TEMPORAL_ADDRESS`` and
``TEMPORAL_NAMESPACE`` apply when the ``CROSSVISOR_`` variables are not set (the CLI's
``--address`` / ``--namespace`` flags override both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TASK_QUEUE = "crossvisor"
VM_PREFIX = "cv"  # every VM, volume and pool crossvisor makes starts with it (CROSSVISOR_VM_PREFIX)
DEFAULT_ADDRESS = "127.0.0.1:17233"
DEFAULT_HOME = ".state"
# where `crossvisor up` / `demo` record the home they used, so the CLI finds the local stack from
# any directory (``find_home``)
HOME_POINTER = "crossvisor/home"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"CROSSVISOR_{name}", default)


def _temporal_env(name: str, default: str) -> str:
    return _env(f"TEMPORAL_{name}") or os.environ.get(f"TEMPORAL_{name}") or default


@dataclass
class Settings:
    home: Path = field(default_factory=lambda: Path(_env("HOME", DEFAULT_HOME)).resolve())
    temporal_address: str = field(default_factory=lambda: _temporal_env("ADDRESS", DEFAULT_ADDRESS))
    temporal_namespace: str = field(default_factory=lambda: _temporal_env("NAMESPACE", "default"))
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
    # json (one object a line, for collectors) | console (for people) | auto (console on a TTY)
    log_format: str = field(default_factory=lambda: _env("LOG_FORMAT", "json"))
    # where `crossvisor serve` links to: the Temporal Web UI and the Grafana dashboard; the local
    # stack serves the Web UI on this URL's port
    temporal_ui_url: str = field(default_factory=lambda: _env("TEMPORAL_UI_URL", "http://127.0.0.1:17280"))
    grafana_url: str = field(default_factory=lambda: _env("GRAFANA_URL", "http://127.0.0.1:3000"))
    # Multi-site: the site this worker serves (NetBox site / `site` of the file inventory): it
    # polls that site's task queue too, and refuses hosts of other sites. "" = no site.
    site: str = field(default_factory=lambda: _env("SITE"))
    # the sites that have workers of their own (comma separated, "*" = every site): stages that
    # touch a host of one of them run on its site queue; hosts elsewhere stay on ``task_queue``.
    # Every worker that runs workflows must agree on it (it decides routing when a cell starts).
    site_queues: str = field(default_factory=lambda: _env("SITE_QUEUES"))
    # where artifacts (packages, conversions) live and travel between sites: a directory on the
    # embedded default, a shared volume mounted at the same path on every worker in production
    artifact_store: str = field(default_factory=lambda: _env("ARTIFACT_STORE"))
    # what a libvirt host keeps of the image layers it was sent (converted disks, images, births)
    # once a campaign's sweep finds no VM on them: the rest is deleted, oldest first
    host_content_keep_gib: float = field(default_factory=lambda: float(_env("HOST_CONTENT_KEEP_GIB", "20")))

    @property
    def site_queue(self) -> str:
        """The task queue of this worker's site ("" when it serves none)."""
        return site_task_queue(self.task_queue, self.site) if self.site else ""

    def routes_site(self, site: str) -> bool:
        """Whether stages touching hosts of ``site`` go to that site's own queue."""
        wanted = {s.strip() for s in self.site_queues.split(",") if s.strip()}
        return bool(site) and ("*" in wanted or site in wanted)

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def cache(self) -> Path:
        """The artifact store: content-addressed packages and conversions (``ArtifactCache``)."""
        return Path(self.artifact_store).resolve() if self.artifact_store else self.home / "cache"


def site_task_queue(task_queue: str, site: str) -> str:
    """The task queue of ``site``'s workers, derived from the campaign's queue: a site's worker
    polls it beside the campaign queue; the cell workflow sends the stages of that site's hosts
    there."""
    return f"{task_queue}@{site}"


def guest_slots() -> int:
    """How many guests may boot at once on this machine: one per core (a TCG boot is CPU-bound
    from power-on to its evidence), unless CROSSVISOR_GUEST_SLOTS says otherwise. The worker's
    boot slots and the ETA's bound on a slot-bound lab both read it."""
    return max(1, int(os.environ.get("CROSSVISOR_GUEST_SLOTS") or os.cpu_count() or 1))


def vm_name_prefix() -> str:
    """Start of every name crossvisor gives a VM, a volume or a pool (``cv`` unless
    CROSSVISOR_VM_PREFIX says otherwise, e.g. for two deployments sharing hosts). Read when used,
    in activities only: every worker of a deployment must agree on it."""
    return _env("VM_PREFIX", VM_PREFIX)


def state_dir() -> Path:
    """The user's state directory (XDG): where the pointer to the local stack's home lives."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")


def is_home(path: Path) -> bool:
    """A directory a crossvisor stack or worker has used (not just any ``.state``)."""
    return path.is_dir() and any((path / p).exists() for p in ("run", "results", "temporal.db"))


def find_home(cwd: Path | None = None, recorded_ok: bool = True) -> tuple[Path, str]:
    """The home the CLI should use, and how it was found (said in errors and ``--verbose``):

    1. ``CROSSVISOR_HOME``;
    2. a ``.state`` that a stack used, in the working directory or one of its parents;
    3. the home the last ``crossvisor up`` / ``demo`` recorded (``$XDG_STATE_HOME/crossvisor/home``),
       unless ``recorded_ok`` is False: the commands that start a stack (``up``, ``demo``) start
       one of their own in a fresh checkout instead of reusing another checkout's;
    4. ``./.state`` (a new one)."""
    if _env("HOME"):
        return Path(_env("HOME")).resolve(), "CROSSVISOR_HOME"
    here = (cwd or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if is_home(d / DEFAULT_HOME):
            return d / DEFAULT_HOME, f"found at {d / DEFAULT_HOME}"
    pointer = state_dir() / HOME_POINTER
    try:
        recorded = Path(pointer.read_text().strip())
    except OSError:
        recorded = None
    if recorded_ok and recorded and recorded.is_absolute() and is_home(recorded):
        return recorded, f"recorded by the last `crossvisor up` in {pointer}"
    return here / DEFAULT_HOME, "default (./.state)"


def record_home(home: Path) -> None:
    """Remember the local stack's home for CLI calls from other directories (best effort)."""
    pointer = state_dir() / HOME_POINTER
    try:
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_name(f".home.{os.getpid()}")
        tmp.write_text(str(home.resolve()) + "\n")
        tmp.replace(pointer)
    except OSError:
        pass
