"""Prometheus metrics exported by the worker, beside the Temporal SDK's own.

Label sets stay bounded: campaign, platform/kind, stage, grade, state, reason class — never a VM
or cell id (a month-long campaign has thousands of cells).
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
    "Cells of a campaign by state (total, pending, running, done) and grade (pass, fail, error, skipped)",
    ["campaign", "state"],
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
    "Cells finished, by source kind, target kind and overall grade",
    ["source_kind", "target_kind", "grade"],
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "crossvisor_stage_duration_seconds",
    "Duration of one stage attempt by stage and hypervisor kind",
    ["stage", "kind", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
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
