"""Workers of several sites in one test process: each one as a site's worker process has them
(``worker.build_workers``: the campaign queue for workflows, its site's queue for stages), with
every stage call recorded per site and, optionally, the stages wrapped for fault injection."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from activities.campaign import CampaignActivities
from activities.stages import StageEnv, stage_activities
from crossvisor.core.config import Settings
from tests.harness import Sabotage
from worker import build_workers


@dataclass
class SiteWorker:
    site: str
    settings: Settings
    env: StageEnv
    sabotage: Sabotage
    campaign: CampaignActivities  # its campaign activities (``swept``: the hosts its sweeps opened)
    # (cell id, "stage" or "stage:side") of every stage attempt that ran here, in order
    calls: list[tuple[str, str]] = field(default_factory=list)

    def stages_of(self, cell_id: str) -> set[str]:
        return {stage for c, stage in self.calls if c == cell_id}


def site_settings(home: Path, task_queue: str, site: str, sites: list[str]) -> Settings:
    s = Settings()
    s.home = home
    s.task_queue = task_queue
    s.site = site
    s.site_queues = ",".join(sites)
    return s


@asynccontextmanager
async def site_workers(client, home: Path, task_queue: str, sites: list[str], executor: ThreadPoolExecutor):
    """One worker per site, all sharing ``home`` (the artifact store and result store, as a shared
    volume would be); yields {site: SiteWorker} while they run. Each site has its own client (as
    its own process would): the SDK refuses two workers on one queue through one client."""
    out: dict[str, SiteWorker] = {}
    async with AsyncExitStack() as stack:
        for site in sites:
            site_client = await Client.connect(client.service_client.config.target_host, namespace=client.namespace)
            s = site_settings(home, task_queue, site, sites)
            env = StageEnv(s)
            sab = Sabotage(env)
            sw = SiteWorker(site, s, env, sab, CampaignActivities(s))
            _record_calls(sw)
            acts = sab.activities() + stage_activities(env)[-1:]  # + the legacy run_stage adapter
            for w in build_workers(site_client, s, executor, env=env, stages=acts, campaign=sw.campaign):
                await stack.enter_async_context(w)
            out[site] = sw
        yield out


def _record_calls(sw: SiteWorker) -> None:
    from activities.stages import STAGE_ACTIVITIES

    for stage in STAGE_ACTIVITIES:

        def before(call, stage=stage):
            sw.calls.append((call.cell.cell.id, f"{stage}:{call.side}" if call.side else stage))

        sw.sabotage.before[stage] = before


def chain_before(sw: SiteWorker, stage: str, fn) -> None:
    """Run ``fn(call)`` after the call recorder of ``stage``."""
    first = sw.sabotage.before[stage]

    def both(call):
        first(call)
        fn(call)

    sw.sabotage.before[stage] = both
