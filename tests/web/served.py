"""``crossvisor serve`` against real parts, for the serve tests and the browser tests.

A background thread with its own event loop runs a Temporal dev server, a worker (libvirt test
driver, real qemu-img stages), three real campaigns and the web UI on an ephemeral loopback port:

- ``first`` and ``second``: the same spec run twice (so the second compares with the first, and
  reuses its passed cells from the cache), both completed;
- ``running``: the same platforms and images under another name: its passed cells come from the
  cache at once, the others are held in their provision stage until the tests end, so it stays
  running (with done and running cells) and answers the progress query.

Tests are plain synchronous code (urllib, the DevTools protocol) against ``base_url``, like a
person's browser; nothing here shares an event loop with them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from crossvisor.core import result_store
from crossvisor.core.config import Settings
from domain.model import GuestImage

SECRET = "pw-9f8e7d6c5b4a"  # planted in a console artifact: must never be served


@dataclass
class Served:
    base_url: str
    settings: Settings
    first: str
    second: str
    running: str
    name: str
    artifact_cell: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def get(self, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.base_url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            with e:  # an unclosed error response keeps its connection open (and the server's shutdown waiting)
                return e.code, dict(e.headers), e.read()

    def text(self, path: str) -> str:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return body.decode()


def _plan(tmp: Path, name: str):
    from tests.harness import small_plan

    return small_plan(
        tmp,
        name=name,
        images=[GuestImage("bios", disk_mib=8), GuestImage("efi", disk_mib=8, firmware="efi", nic_model="e1000")],
    )


async def _main(served: Served, tmp: Path, ready: threading.Event) -> None:
    import uvicorn

    from crossvisor import serve
    from tests.harness import corrupt_package_disk, dev_server_env, make_worker, start_campaign
    from workflows.campaign import CampaignWorkflow, SteerRequest

    env = await dev_server_env("--sqlite-pragma", "journal_mode=wal")
    server = None
    try:
        settings = served.settings
        settings.temporal_address = env.client.service_client.config.target_host
        tq = f"serve-{uuid.uuid4().hex[:6]}"
        with ThreadPoolExecutor(max_workers=4) as ex:
            worker, sabotage = make_worker(env.client, settings, tq, ex, sabotage=True)

            def hold(call) -> None:  # the live campaign's cells that must really run stay in provision
                if call.cell.campaign_id == served.running:
                    served.stop.wait(600)

            sabotage.before["provision"] = hold

            def corrupt_efi_package(call, out) -> None:
                """Storage corruption between export and conversion: a real failing cell (convert
                refuses the package with the manifest's evidence), as a lab would see one."""
                if call.cell.image.name == "efi" and out.status != "reused":
                    corrupt_package_disk(out.package)

            sabotage.after["export"] = corrupt_efi_package
            async with worker:
                for cid in (served.first, served.second):
                    h = await start_campaign(env.client, _plan(tmp, served.name), tq, cid)
                    await h.result()
                # a console log artifact on one stored cell, as the pipeline records them: a file under
                # CROSSVISOR_HOME and its relative path in CellResult.artifacts (plus one that escapes)
                cells = sorted(result_store.campaign_dir(settings.home, served.second).glob("*.json"))
                cell = result_store.read(cells[0])
                assert cell is not None
                log = settings.home / "artifacts" / "consoles" / f"{cell.cell_id}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(f"[    0.1] Linux version 6.1\nlogin: root password={SECRET}\nCV-BOOT ok\n")
                cell.artifacts = {"console.log": str(log.relative_to(settings.home)), "escape": "../../etc/passwd"}
                result_store.save(settings.home, served.second, cell)
                served.artifact_cell = cell.cell_id

                live = await start_campaign(env.client, _plan(tmp, served.name + "-live"), tq, served.running)
                for _ in range(300):  # ready once cells are held running, not merely scheduled
                    if (await live.query(CampaignWorkflow.progress)).counts.get("running", 0) >= 1:
                        break
                    await asyncio.sleep(0.1)

                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                config = uvicorn.Config(
                    serve.create_app(settings),
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=5,  # Chromium's keep-alive connections must not hold teardown
                )
                server = uvicorn.Server(config)
                task = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started:
                    await asyncio.sleep(0.02)
                served.base_url = f"http://127.0.0.1:{port}"
                ready.set()
                while not served.stop.is_set():
                    await asyncio.sleep(0.1)  # the worker keeps answering progress queries meanwhile
                server.should_exit = True
                await task
                sock.close()
                # cancel (not terminate) so the held cells clean up: test:///default is one libvirt
                # instance per process, and other tests count the domains left in it
                h = env.client.get_workflow_handle(served.running)
                try:
                    await h.execute_update(CampaignWorkflow.steer, SteerRequest("cancel", request_id="serve-done"))
                except Exception:  # noqa: BLE001 - it may have finished once its cells were released
                    pass
                await asyncio.wait_for(h.result(), 120)
    finally:
        await env.shutdown()


def start(tmp: Path) -> Served:
    settings = Settings()
    settings.home = tmp / "state"
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.temporal_ui_url = "http://127.0.0.1:17280"
    settings.grafana_url = "http://127.0.0.1:3000"
    tag = uuid.uuid4().hex[:6]
    served = Served("", settings, f"srv-{tag}-1", f"srv-{tag}-2", f"srv-{tag}-live", f"srv{tag}")
    ready = threading.Event()

    def run() -> None:
        try:
            asyncio.run(_main(served, tmp, ready))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            served.error = e
            ready.set()

    served.thread = threading.Thread(target=run, name="crossvisor-serve-test", daemon=True)
    served.thread.start()
    ready.wait(180)
    if served.error is not None:
        raise served.error
    if not served.base_url:
        raise TimeoutError("serve stack not ready in 180 s")
    return served


def stop(served: Served) -> None:
    served.stop.set()
    if served.thread is not None:
        served.thread.join(60)
    if served.error is not None:
        raise served.error


def as_json(body: bytes):
    return json.loads(body)
