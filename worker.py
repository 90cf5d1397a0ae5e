"""crossvisor worker: runs campaign/cell workflows and stage activities, serves Prometheus metrics.

Usage: ``python worker.py`` or ``crossvisor worker`` (settings from CROSSVISOR_* env vars).
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

import structlog
from prometheus_client import start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.campaign import CampaignActivities
from activities.stages import StageEnv, stage_activities
from crossvisor.core import log as cvlog
from crossvisor.core.config import Settings
from crossvisor.core.metrics import REGISTRY
from crossvisor.core.temporal_client import connect
from workflows.campaign import CampaignWorkflow
from workflows.cell import CellWorkflow


def workflow_runner() -> SandboxedWorkflowRunner:
    # domain/ is pure and deterministic: share it with the sandbox instead of re-importing it per
    # workflow run (faster, and its dataclasses stay the same classes the converter resolves)
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("domain"))


def campaign_activities(camp: CampaignActivities) -> list:
    """Every campaign-level activity; the stage activity is added by whoever builds the worker."""
    return [
        camp.load_inventory,
        camp.refresh_inventory,
        camp.lookup_cached_result,
        camp.store_result,
        camp.publish_progress,
        camp.sweep_leaks,
    ]


def build_worker(client, settings: Settings, executor: ThreadPoolExecutor, max_activities: int = 8) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[CampaignWorkflow, CellWorkflow],
        activities=[*stage_activities(StageEnv(settings)), *campaign_activities(CampaignActivities(settings))],
        activity_executor=executor,
        workflow_runner=workflow_runner(),
        max_concurrent_activities=max_activities,
    )


async def run(settings: Settings, metrics_host: str = "127.0.0.1") -> None:
    cvlog.configure(settings.log_level)
    log = structlog.get_logger("crossvisor").bind(component="worker")
    settings.home.mkdir(parents=True, exist_ok=True)
    # SDK metrics on their own port so a second worker (other ports) never collides with the first
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{metrics_host}:{settings.sdk_metrics_port}"))
    )
    start_http_server(settings.metrics_port, addr=metrics_host, registry=REGISTRY)
    client = await connect(settings, runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=16) as executor:
        worker = build_worker(client, settings, executor)
        log.info(
            "worker.start",
            task_queue=settings.task_queue,
            temporal=settings.temporal_address,
            metrics_port=settings.metrics_port,
            sdk_metrics_port=settings.sdk_metrics_port,
        )
        async with worker:
            await stop.wait()
        log.info("worker.stop")


if __name__ == "__main__":
    import os

    asyncio.run(run(Settings(), os.environ.get("CROSSVISOR_METRICS_HOST", "127.0.0.1")))
    os._exit(0)  # sdk-python#300: the runtime can crash at interpreter exit
