"""Prometheus metrics exported by the worker, beside the Temporal SDK's own.

Label sets stay bounded: campaign (the campaign id, for campaigns in flight and those finished
within ``FINISHED_KEPT_S``), platform/kind, stage, grade, state, reason class — never a VM or cell
id (a month-long campaign has thousands of cells). Series whose labels are known ahead (grades of
a campaign's platform pairs, per-kind counters) are created at 0 (``init_*``) so panels show 0, not
"No data".
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CAMPAIGNS_RUNNING = Gauge(
    "crossvisor_campaigns_running",
    "Campaigns whose workflow is running",
    registry=REGISTRY,
)
CAMPAIGN_CELLS = Gauge(
    "crossvisor_campaign_cells",
    "Cells of a campaign (label: campaign id) by state (total, pending, running, done) and grade "
    "(pass, warn, fail, error, skipped)",
    ["campaign", "state"],
    registry=REGISTRY,
)
CAMPAIGN_PAUSED = Gauge(
    "crossvisor_campaign_paused",
    "1 while an operator has paused the campaign (no new cells start), else 0",
    ["campaign"],
    registry=REGISTRY,
)
CAMPAIGN_STALLED = Gauge(
    "crossvisor_campaign_stalled",
    "1 while the campaign's watchdog finds pending cells that nothing can start, else 0",
    ["campaign"],
    registry=REGISTRY,
)
CAMPAIGN_LAST_PROGRESS = Gauge(
    "crossvisor_campaign_last_progress_timestamp_seconds",
    "Unix time a campaign last reported progress (a cell finished or started)",
    ["campaign"],
    registry=REGISTRY,
)
CELLS_FINISHED = Counter(
    "crossvisor_cells_finished_total",
    "Cells finished, by source and target platform (spec names: esxi-8 and esxi-6.5 are distinct), "
    "their kinds, and overall grade",
    ["source", "target", "source_kind", "target_kind", "grade"],
    registry=REGISTRY,
)
# real stages take from a second (reserve) over minutes (boot, convert, virt-v2v ~3.5 min) to hours
# (a large disk over a slow link); sub-second buckets only for the test driver's instant stages
STAGE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
STAGE_DURATION = Histogram(
    "crossvisor_stage_duration_seconds",
    "Duration of one stage attempt by stage and hypervisor kind",
    ["stage", "kind", "outcome"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
STAGE_RETRIES = Counter(
    "crossvisor_stage_retries_total",
    "Stage attempts beyond the first, by stage and cause (exception class)",
    ["stage", "cause"],
    registry=REGISTRY,
)
HOST_LEASES = Gauge(
    "crossvisor_host_leases",
    "Host leases currently held by this worker's campaigns, by kind",
    ["kind"],
    registry=REGISTRY,
)
HOSTS_AVAILABLE = Gauge(
    "crossvisor_hosts",
    "Hosts in the inventory by kind and health (healthy, unhealthy)",
    ["kind", "health"],
    registry=REGISTRY,
)
HOST_BUSY_SECONDS = Counter(
    "crossvisor_host_busy_seconds_total",
    "Seconds hosts spent serving stages, by kind (rate() / hosts = utilisation)",
    ["kind"],
    registry=REGISTRY,
)
CONVERSION_BYTES = Counter(
    "crossvisor_conversion_bytes_total",
    "Disk bytes converted, by source and target format",
    ["src_format", "dst_format"],
    registry=REGISTRY,
)
CONVERSION_SECONDS = Counter(
    "crossvisor_conversion_seconds_total",
    "Seconds spent converting disks (bytes/seconds = throughput)",
    ["src_format", "dst_format"],
    registry=REGISTRY,
)
HEALTH_FAILURES = Counter(
    "crossvisor_host_health_failures_total",
    "Failed host health checks by kind",
    ["kind"],
    registry=REGISTRY,
)


GRADES = ("pass", "warn", "fail", "error", "skipped")
CELL_STATES = ("total", "pending", "running", "done", *GRADES, "cached")
KINDS = ("kvm", "vsphere", "xen", "hyperv")
FINISHED_KEPT_S = 3600.0  # a finished campaign's series stay this long (the last panels), then go


def init_worker(kinds: tuple[str, ...] = KINDS) -> None:
    """Per-kind series at 0 when a worker starts."""
    CAMPAIGNS_RUNNING.set(0)
    for k in kinds:
        HOST_BUSY_SECONDS.labels(k)
        HEALTH_FAILURES.labels(k)
        HOST_LEASES.labels(k)


def init_campaign(platforms: dict[str, str], pairs: list[tuple[str, str]] | None = None) -> None:
    """A campaign's cell counters at 0 for each platform pair (every ordered pair when ``pairs``
    is not given) and grade. ``platforms``: name -> kind."""
    names = sorted(platforms)
    for s, t in pairs if pairs is not None else [(s, t) for s in names for t in names if s != t]:
        for g in GRADES:
            CELLS_FINISHED.labels(s, t, platforms[s], platforms[t], g)
    init_worker(tuple(sorted(set(platforms.values()))))


def remove_campaign(campaign: str) -> None:
    """Drop a campaign's series (bounded label set: campaigns in flight)."""
    for state in CELL_STATES:
        try:
            CAMPAIGN_CELLS.remove(campaign, state)
        except KeyError:
            pass
    for g in (CAMPAIGN_LAST_PROGRESS, CAMPAIGN_PAUSED, CAMPAIGN_STALLED):
        try:
            g.remove(campaign)
        except KeyError:
            pass
