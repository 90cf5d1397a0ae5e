"""Helpers to run real campaigns in-process against Temporal's test servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import typing
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

from activities.campaign import CampaignActivities
from activities.stages import STAGE_ACTIVITIES, StageEnv, stage_activities
from crossvisor.core import result_store
from crossvisor.core.config import Settings
from domain.messages import CampaignInput
from domain.model import CampaignResult, Concurrency, GuestImage, Platform, RetryPolicySpec
from domain.plan import CampaignPlan
from domain.stage_io import StageCall, StageResult
from worker import campaign_activities, workflow_runner
from workflows.campaign import CampaignWorkflow
from workflows.cell import CellWorkflow

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    p = Path(ROOT / ".venv/bin" / name)
    return str(p) if p.exists() else shutil.which(name) or name


# The SDK gives a server 5 s to answer after it is spawned; on two cores with TCG guests booting
# beside it, the time-skipping server has missed that (3 modules errored at setup, nothing wrong).
SERVER_STARTUP = timedelta(seconds=60)


async def time_skipping_env():
    """Temporal's time-skipping test server (the project's binary)."""
    from temporalio.testing import WorkflowEnvironment

    return await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=tool("temporal-test-server"), test_server_startup_timeout=SERVER_STARTUP
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    """Temporal's dev server as this process's own child: ``client`` and ``shutdown()``, like the
    SDK's ``WorkflowEnvironment``. Not the SDK's launcher: when that server did not come up (CI,
    2026-12-01: 'did not start within 60s', connection refused throughout, no output kept), two
    modules errored with nothing to say why. Here the server's output goes to a log whose tail is
    in the error, a server that exits (a port taken between choosing it and binding it) is
    started again on fresh ports, and every port is chosen, not left to the server."""

    ATTEMPTS = 3

    def __init__(self, proc: subprocess.Popen, client, log: Path):
        self.proc, self.client, self.log = proc, client, log

    @classmethod
    async def start(cls, *extra: str) -> DevServer:
        failures = []
        for _ in range(cls.ATTEMPTS):
            server, why = await cls._start_once(extra)
            if server is not None:
                return server
            failures.append(why)
        raise RuntimeError("Temporal dev server did not start:\n" + "\n".join(failures))

    @classmethod
    async def _start_once(cls, extra: tuple[str, ...]) -> tuple[DevServer | None, str]:
        from temporalio.client import Client

        port, http, metrics = _free_port(), _free_port(), _free_port()
        fd, name = tempfile.mkstemp(prefix="cv-temporal-", suffix=".log")
        log = Path(name)
        cmd = [tool("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
        cmd += ["--http-port", str(http), "--metrics-port", str(metrics), "--headless", "--log-level", "warn"]
        for value in (
            "frontend.enableServerVersionCheck=false",
            "frontend.enableUpdateWorkflowExecution=true",
            "frontend.enableUpdateWorkflowExecutionAsyncAccepted=true",
        ):
            cmd += ["--dynamic-config-value", value]
        try:
            with os.fdopen(fd, "wb") as out:
                proc = subprocess.Popen([*cmd, *extra], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        except OSError:  # no temporal binary (make setup not run): nothing to retry
            log.unlink(missing_ok=True)
            raise
        deadline = time.monotonic() + SERVER_STARTUP.total_seconds()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                log.unlink(missing_ok=True)
                return None, f"port {port}: exited {proc.returncode}: {tail.strip()}"
            try:
                client = await Client.connect(f"127.0.0.1:{port}", namespace="default")
                await client.service_client.check_health()
                return cls(proc, client, log), ""
            except Exception:  # not listening yet
                await asyncio.sleep(0.2)
        await cls(proc, None, log).shutdown()
        return None, f"port {port}: not serving after {SERVER_STARTUP.total_seconds():.0f} s"

    async def shutdown(self) -> None:
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 15)
        self.log.unlink(missing_ok=True)


async def cancel_requested(client, workflow_id: str, tries: int = 300, every_s: float = 0.1) -> list:
    """Poll ``workflow_id``'s history until it holds a cancel request (at most ``tries`` reads);
    returns the event types last read, for the caller's own assertions."""
    from temporalio.api.enums.v1 import EventType

    kinds: list = []
    for _ in range(tries):
        kinds = [e.event_type for e in (await client.get_workflow_handle(workflow_id).fetch_history()).events]
        if EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in kinds:
            break
        await asyncio.sleep(every_s)
    return kinds


async def dev_server_env(*extra: str) -> DevServer:
    """Temporal's real dev server (in-memory unless ``extra`` says otherwise), headless."""
    return await DevServer.start(*extra)


def small_plan(tmp: Path, **kw) -> CampaignPlan:
    """Two libvirt test-driver platforms and one image: four stages of real qemu-img work per cell."""
    lab = tmp / "lab.yaml"
    lab.write_text(
        "hosts:\n"
        "  - {name: kvm-1, kind: kvm, endpoint: 'test:///default', site: s, slots: 2}\n"
        "  - {name: xen-1, kind: xen, endpoint: 'test:///default', site: s, slots: 2}\n"
    )
    base = dict(
        name="t" + uuid.uuid4().hex[:6],
        platforms=[
            Platform("kvm", "kvm", "libvirt", disk_format="qcow2"),
            Platform("xen", "xen", "libvirt", disk_format="raw", firmware=["bios"], nic_models=["netfront", "e1000"]),
        ],
        images=[GuestImage("img", disk_mib=8)],
        concurrency=Concurrency(max_cells=2),
        retry=RetryPolicySpec(max_attempts=3, initial_interval_s=0.1, backoff=1.0, max_interval_s=0.2),
        inventory=f"file:{lab}",
    )
    base.update(kw)
    return CampaignPlan(**base)


def demo_run(home: Path, name: str) -> tuple[CampaignPlan, Settings]:
    """examples/demo.yaml under a fresh campaign name, and settings whose home is ``home`` (made)."""
    from crossvisor.spec import load_spec

    settings = Settings()
    settings.home = home
    settings.home.mkdir(parents=True)
    plan = load_spec(Path(__file__).resolve().parents[1] / "examples/demo.yaml")
    plan.name = f"{name}-{uuid.uuid4().hex[:6]}"
    return plan, settings


async def run_on_own_server(plan: CampaignPlan, settings: Settings, max_workers: int = 4) -> CampaignResult:
    """The plan on a time-skipping server of its own, with one worker of the real activities: what
    the real-guest tests each wrote out (server, executor, worker, run, shutdown)."""
    env = await time_skipping_env()
    try:
        with ThreadPoolExecutor(max_workers=max_workers) as ex:
            w, _ = make_worker(env.client, settings, f"tq-{uuid.uuid4().hex[:6]}", ex)
            async with w:
                return await run_campaign(env.client, plan, w.task_queue, home=settings.home)
    finally:
        await env.shutdown()


class Sabotage:
    """Fault injection around the real stage activities (the activities themselves are untouched):
    ``before[stage](call)`` may raise (an infrastructure fault, retried), ``after[stage](call, out)``
    may change the output (e.g. turn it into an interop failure the target reported)."""

    def __init__(self, env: StageEnv):
        self.env = env
        self.before: dict[str, Callable[[StageCall], None]] = {}
        self.after: dict[str, Callable[[StageCall, StageResult], StageResult | None]] = {}

    def activities(self) -> list:
        return [self._wrap(name, cls(self.env).run) for name, cls in STAGE_ACTIVITIES.items()]

    def hold_first(
        self, stage: str, release: threading.Event, limit_s: float = 200
    ) -> tuple[list[str], threading.Event]:
        """The first cell to reach ``stage`` stays there (heartbeating) until ``release`` is set;
        the others pass through. Returns the held cell's id (once held) and an event set then. A
        test that must act while a cell is in a stage holds it instead of racing a fixed sleep:
        with every cell held 2 s, a loaded CI machine let them finish first (2026-12-01)."""
        held: list[str] = []
        entered = threading.Event()
        lock = threading.Lock()

        def hold(call: StageCall) -> None:
            with lock:
                first = not held
                if first:
                    held.append(call.cell.cell.id)
            if first:
                entered.set()
                deadline = time.monotonic() + limit_s
                while not release.wait(0.2) and time.monotonic() < deadline:
                    activity.heartbeat()  # a silent activity would time out and be retried

        self.before[stage] = hold
        return held, entered

    def _wrap(self, name: str, fn: Callable):
        def run(call: StageCall):
            if name in self.before:
                self.before[name](call)
            out = fn(call)
            if name in self.after:
                out = self.after[name](call, out) or out
            return out

        run.__annotations__ = {"call": StageCall, "return": typing.get_type_hints(fn)["return"]}
        return activity.defn(name=name)(run)


def corrupt_package_disk(package: str | Path) -> None:
    """Storage corruption between export and conversion: flip one byte inside the OVA's disk data
    (not a header), so the manifest check of the convert stage must catch it."""
    import tarfile

    pkg = Path(package)
    with tarfile.open(pkg) as tar:
        disk = next(m for m in tar.getmembers() if m.name.endswith(".vmdk"))
    data = bytearray(pkg.read_bytes())
    data[disk.offset_data + disk.size // 2] ^= 0xFF
    pkg.write_bytes(bytes(data))


def make_worker(
    client,
    settings: Settings,
    task_queue: str,
    executor: ThreadPoolExecutor,
    sabotage: bool = False,
):
    env = StageEnv(settings)
    camp = CampaignActivities(settings)
    sab = Sabotage(env)
    stage_acts = sab.activities() + stage_activities(env)[-1:] if sabotage else stage_activities(env)
    w = Worker(
        client,
        task_queue=task_queue,
        workflows=[CampaignWorkflow, CellWorkflow],
        activities=[*stage_acts, *campaign_activities(camp)],
        activity_executor=executor,
        workflow_runner=workflow_runner(),
    )
    return w, sab


async def start_campaign(client, plan: CampaignPlan, task_queue: str, cid: str | None = None, **kw) -> WorkflowHandle:
    return await client.start_workflow(
        CampaignWorkflow.run,
        CampaignInput(plan=plan, **kw),
        id=cid or f"c-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=CampaignResult,
    )


async def campaign_result(handle: WorkflowHandle, home: Path) -> CampaignResult:
    """Wait for the campaign and read its full results the way the CLI does (summary from the
    workflow, stages and evidence from the worker's result store under ``home``)."""
    return result_store.attach(await handle.result(), home)


async def run_campaign(
    client, plan: CampaignPlan, task_queue: str, cid: str | None = None, *, home: Path, **kw
) -> CampaignResult:
    return await campaign_result(await start_campaign(client, plan, task_queue, cid, **kw), home)


def history_text(history_json: str) -> str:
    """A history's JSON with every payload decoded: secrets would hide in base64 otherwise."""
    import base64
    import json

    parts = [history_json]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, str) and "metadata" in node:
                try:
                    parts.append(base64.b64decode(data).decode("utf-8", "replace"))
                except ValueError:
                    pass
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(history_json))
    return "\n".join(parts)


def leaked_vms(prefix: str = "cv-") -> list[str]:
    """VMs the test driver still holds under crossvisor's prefix (a cell that did not clean up)."""
    import libvirt

    conn = libvirt.open("test:///default")
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
    finally:
        conn.close()
