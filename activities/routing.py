"""Which task queue serves each host: its site's, when the deployment gives that site workers.

The deployment says which sites have workers of their own (``CROSSVISOR_SITE_QUEUES``). The
campaign's inventory snapshot records the answer in each host (``Host.task_queue``), so a cell's
stages go where its hosts are, a replay sees the same routing, and changing the setting moves no
running campaign.
"""

from __future__ import annotations

from crossvisor.core.config import Settings, site_task_queue
from domain.model import Host


def route_hosts(hosts: list[Host], settings: Settings, task_queue: str) -> list[Host]:
    """Set ``task_queue`` of every host at a routed site to that site's queue (derived from the
    campaign's queue ``task_queue``); hosts elsewhere keep "" (the campaign's queue)."""
    for h in hosts:
        h.task_queue = site_task_queue(task_queue, h.site) if settings.routes_site(h.site) else ""
    return hosts
