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

``HandOverWatcher`` releases exactly those locks: it follows the campaign's runs (one long poll
per run for its close event), reads the cells each run inherited (``CampaignState.running`` in the
run's start event), waits for each of those child workflows to close and then calls
``UnlockTimeSkipping`` once for it. It polls through a client without the time-skipping
interceptor (whose ``result()`` would itself unlock and re-lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from temporalio.api.testservice.v1 import UnlockTimeSkippingRequest
from temporalio.client import Client, WorkflowContinuedAsNewError, WorkflowExecutionStatus

LEAKS = (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.CANCELED)


class HandOverWatcher:
    def __init__(self, env, campaign_id: str, first_run_id: str | None = None) -> None:
        self.env = env
        self.campaign_id = campaign_id
        self.first_run_id = first_run_id  # None: the run current when the watcher starts
        # the same connection, without the time-skipping client interceptor
        self.plain = Client(env.client.service_client, namespace=env.client.namespace)
        self.watched: set[str] = set()
        self.released = 0
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> HandOverWatcher:
        self._tasks.append(asyncio.create_task(self._follow_runs()))
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _follow_runs(self) -> None:
        run_id = self.first_run_id
        while True:
            try:
                await self.plain.get_workflow_handle(self.campaign_id, run_id=run_id).result(follow_runs=False)
                return  # the campaign closed
            except WorkflowContinuedAsNewError as e:
                run_id = e.new_execution_run_id
                await self._watch_inherited(run_id)
            except Exception:  # noqa: BLE001 - failed, cancelled, terminated: nothing more to follow
                return

    async def _watch_inherited(self, run_id: str) -> None:
        handle = self.plain.get_workflow_handle(self.campaign_id, run_id=run_id)
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
        handle = self.plain.get_workflow_handle(workflow_id)
        with contextlib.suppress(Exception):  # failed / cancelled: closed all the same
            await handle.result()
        # only a close the workflow itself reported takes the lock (processComplete-, -Fail-,
        # -CancelWorkflowExecution); a termination or a timeout does not, and releasing a lock
        # nobody leaked would let time skip under a running workflow task
        if (await handle.describe()).status in LEAKS:
            await self.env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
            self.released += 1
