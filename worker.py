"""crossvisor worker: runs campaign/cell workflows and stage activities, serves Prometheus metrics.

Usage: ``python worker.py [--site SITE]`` or ``crossvisor worker`` (settings from CROSSVISOR_* env
vars; ``--site`` sets CROSSVISOR_SITE).

Without a site a worker runs everything on the campaign task queue (``CROSSVISOR_TASK_QUEUE``).
A site's worker (``CROSSVISOR_SITE``) polls two queues: the campaign queue for workflows and the
campaign-level activities, and its site's queue (``<task queue>@<site>``) for the stages that touch
that site's hosts, which cells send there for the sites listed in ``CROSSVISOR_SITE_QUEUES``. It
never opens a host of another site.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    """Every campaign-level activity; the stage activities are added by whoever builds the worker."""
    return [
        camp.load_inventory,
        camp.refresh_inventory,
        camp.lookup_cached_result,
        camp.store_result,
        camp.publish_progress,
        camp.sweep_leaks,
    ]


def build_workers(
    client,
    settings: Settings,
    executor: ThreadPoolExecutor,
    max_activities: int = 8,
    env: StageEnv | None = None,
    stages: list | None = None,
    campaign: CampaignActivities | None = None,
) -> list[Worker]:
    """The Temporal workers of one process: one on the campaign queue, plus one on the site's
    queue for a site's worker (its stage activities live only there). ``stages``: the stage
    activities to register (default: every stage bound to ``env``); ``campaign``: the campaign
    activities' instance (default: a new one)."""
    env = env or StageEnv(settings)
    camp_obj = campaign or CampaignActivities(settings)
    camp = campaign_activities(camp_obj)
    stages = stages if stages is not None else stage_activities(env)
    common = dict(activity_executor=executor, max_concurrent_activities=max_activities)
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[CampaignWorkflow, CellWorkflow],
        activities=camp if settings.site else [*stages, *camp],
        workflow_runner=workflow_runner(),
        **common,
    )
    if not settings.site:
        return [main]
    # the site's queue: its hosts' stages, and the leak sweep over its hosts at a campaign's end
    return [main, Worker(client, task_queue=settings.site_queue, activities=[*stages, camp_obj.sweep_leaks], **common)]


def build_worker(client, settings: Settings, executor: ThreadPoolExecutor, max_activities: int = 8) -> Worker:
    """The campaign-queue worker (the only one of a worker without a site)."""
    return build_workers(client, settings, executor, max_activities)[0]


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
        workers = build_workers(client, settings, executor)
        log.info(
            "worker.start",
            task_queue=settings.task_queue,
            site=settings.site,
            site_queue=settings.site_queue,
            temporal=settings.temporal_address,
            metrics_port=settings.metrics_port,
            sdk_metrics_port=settings.sdk_metrics_port,
        )
        async with contextlib.AsyncExitStack() as stack:
            for w in workers:
                await stack.enter_async_context(w)
            await stop.wait()
        log.info("worker.stop")


if __name__ == "__main__":
    import os

    parser = argparse.ArgumentParser(prog="worker", description="crossvisor worker (settings: CROSSVISOR_* env vars)")
    parser.add_argument("--site", help="the site this worker serves (default CROSSVISOR_SITE; none: every host)")
    args = parser.parse_args()
    if args.site is not None:
        os.environ["CROSSVISOR_SITE"] = args.site
    asyncio.run(run(Settings(), os.environ.get("CROSSVISOR_METRICS_HOST", "127.0.0.1")))
    os._exit(0)  # sdk-python#300: the runtime can crash at interpreter exit
