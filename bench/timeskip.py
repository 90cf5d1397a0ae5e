"""A workaround for a time-skipping test server bug that campaigns re-attaching across
continue-as-new hit on every cell they hand over. Test harness only: production runs on a real
Temporal server, which has no such lock.

The bug (Temporal's Java test server, ``temporal-test-server`` as shipped with the Python SDK):
when a child workflow completes, the server takes a time-skipping lock "unlocked by the parent"
(``processCompleteWorkflowExecution``: ``ctx.lockTimer("... notify parent")``) and asks the
parent run to record the completion. If that run has closed, the call fails, the failure is
swallowed ("Parent might already close") and the lock is never released. From then on the
server's clock only moves with the wall clock: a simulated month never ends. A campaign that
continues as new leaves its running cells (ParentClosePolicy.ABANDON) to the next run, so each of
them completes after its parent run closed: one leaked lock per handed-over cell.

``HandOverWatcher`` releases exactly those locks: it follows the campaign's runs, reads the cells
each run inherited (``CampaignState.running`` in the run's start event), waits for each of those
child workflows to close (through a client without the time-skipping interceptor, whose
``result()`` would itself unlock and re-lock) and then calls ``UnlockTimeSkipping`` once for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from temporalio.api.testservice.v1 import UnlockTimeSkippingRequest
from temporalio.client import Client
from temporalio.service import RPCError


class HandOverWatcher:
    def __init__(self, env, campaign_id: str, poll_s: float = 0.05) -> None:
        self.env = env
        self.campaign_id = campaign_id
        self.poll_s = poll_s
        # the same connection, without the time-skipping client interceptor
        self.plain = Client(env.client.service_client, namespace=env.client.namespace)
        self.seen_runs: set[str] = set()
        self.watched: set[str] = set()
        self.released = 0
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> HandOverWatcher:
        self._tasks.append(asyncio.create_task(self._follow_runs()))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._sweep()  # the last run's inherited cells may have closed since the last poll
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _follow_runs(self) -> None:
        while True:
            with contextlib.suppress(RPCError):
                await self._sweep()
            await asyncio.sleep(self.poll_s)

    async def _sweep(self) -> None:
        desc = await self.plain.get_workflow_handle(self.campaign_id).describe()
        if desc.run_id in self.seen_runs:
            return
        self.seen_runs.add(desc.run_id)
        handle = self.plain.get_workflow_handle(self.campaign_id, run_id=desc.run_id)
        async for event in handle.fetch_history_events(page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            state = (json.loads(payloads[0].data) if payloads else {}).get("state") or {}
            for r in state.get("running") or []:
                child = f"{self.campaign_id}.cell.{r['cell_id']}.{r['attempt']}"
                if child not in self.watched:
                    self.watched.add(child)
                    self._tasks.append(asyncio.create_task(self._release_when_closed(child)))
            break

    async def _release_when_closed(self, workflow_id: str) -> None:
        with contextlib.suppress(Exception):  # failed / cancelled / terminated: closed all the same
            await self.plain.get_workflow_handle(workflow_id).result()
        await self.env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
        self.released += 1
