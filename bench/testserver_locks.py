"""Why the time-skipping test server gets slower per cell as a campaign goes on: a causal check.

    .venv/bin/python bench/testserver_locks.py [--cells 500] [--pad 0,5000,20000]

Temporal's Java test server (``SelfAdvancingTimerImpl``) keeps a debugging ``LinkedList`` of
time-skipping lock events (``lockEvents``). Every lock change made through ``updateLocks`` (a
workflow task scheduled or completed, a child started or completed, a signal sent) and every
external ``LockTimeSkipping``/``UnlockTimeSkipping`` call appends an entry that is never removed,
and every workflow state update and every fired timer removes its own lock entry with
``lockEvents.remove(event)``: a scan from the head of the whole list. So a campaign's N-th cell
costs the server O(N).

This bench isolates that: for each ``--pad`` value it starts a fresh test server, grows the list by
``pad`` balanced external lock/unlock pairs (2 entries each, no workflow, no history), then runs the
same real ``CampaignWorkflow`` with ``--cells`` simulated cells on the scale-5 lab
(``bench/scheduler.py``'s ``run_real``) and prints the server's and the worker's CPU per cell,
against the unpadded run in the same process. A longer list alone, with nothing else stored, makes
every cell dearer for the server: the cause, not a correlation with the workflows it keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from bench.scheduler import _children_cpu_s, run_real  # noqa: E402
from domain import simulation  # noqa: E402


async def one(lab: simulation.Lab, pad: int) -> dict:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(ROOT / ".venv/bin/temporal-test-server")
    )
    try:
        t0, s0 = time.perf_counter(), _children_cpu_s()
        for _ in range(pad):  # sequential: the pairs stay balanced, time skipping stays as it was
            await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())
            await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
        pad_s, pad_cpu = time.perf_counter() - t0, _children_cpu_s() - s0
        with tempfile.TemporaryDirectory() as td:
            r = await run_real(lab, Path(td), env=env)
    finally:
        await env.shutdown()
    return {**r, "pad_s": pad_s, "pad_cpu": pad_cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--scale", type=int, default=5)
    ap.add_argument("--pad", default="0,5000,20000", help="lock/unlock pairs added before each run")
    a = ap.parse_args()
    lab = simulation.synthetic_lab(a.cells, 7, scale=a.scale)
    pads = [int(x) for x in a.pad.split(",") if x]
    print(f"{a.cells} cells on the scale-{a.scale} lab, a fresh test server per row")
    print(f"  {'pad pairs':>9} {'entries':>8} {'wall s':>7} {'server cpu ms/cell':>19} {'worker cpu ms/cell':>19}")
    base = None
    for pad in pads:
        r = asyncio.run(one(lab, pad))
        srv = r["server_cpu_s"] / r["cells"] * 1000
        base = base if base is not None else srv
        print(
            f"  {pad:>9} {2 * pad:>8} {r['wall_s']:>7.1f} {srv:>12.1f} (x{srv / base:.2f}) "
            f"{r['worker_cpu_s'] / r['cells'] * 1000:>19.1f}   (padding: {r['pad_s']:.1f} s)"
        )


if __name__ == "__main__":
    main()
