"""A throwaway local stack for chaos runs and end-to-end tests: a Temporal dev server (SQLite in
``home``, crossvisor's search attributes registered, Web UI on its own port) and worker processes,
each in its own process group, on free ports of their own so that two stacks (or a developer's
``make demo``) never collide."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from crossvisor import stack
from crossvisor.core.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def bindable(port: int) -> bool:
    """Whether this process could listen on the port now (nothing bound to it, listening or not)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of client sockets and of binds to port 0."""
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_base() -> int:
    # the dev server uses base, base+1 (metrics), base+10 (http), base+11 (Web UI); the worker
    # base+2, base+3. Below the kernel's ephemeral range: in it, any client socket (the NetBox
    # tests leave hundreds of connections) or a server's bind to port 0 can take one of these
    # between this check and the dev server's bind, which a connect-only check does not see (CI
    # once failed so: "can't set frontend HTTP port 42090: bind: address already in use").
    lo, _hi = _ephemeral_ports()
    top = max(lo - 40, 12000)
    for _ in range(200):
        base = random.SystemRandom().randrange(10000, top, 20)
        if all(bindable(base + d) and port_free(base + d) for d in (0, 1, 2, 3, 10, 11)):
            return base
    raise RuntimeError("no free ports")


class LocalStack:
    def __init__(self, home: Path, **env: str):
        home.mkdir(parents=True, exist_ok=True)
        base = free_base()
        self.home = home
        self.settings = Settings()
        self.settings.home = home
        self.settings.temporal_address = f"127.0.0.1:{base}"
        self.settings.metrics_port = base + 2
        self.settings.sdk_metrics_port = base + 3
        self.settings.temporal_ui_url = f"http://127.0.0.1:{base + 11}"
        self.env = dict(
            os.environ,
            CROSSVISOR_HOME=str(home),
            CROSSVISOR_TEMPORAL_ADDRESS=self.settings.temporal_address,
            CROSSVISOR_TEMPORAL_UI_URL=self.settings.temporal_ui_url,
            CROSSVISOR_METRICS_PORT=str(base + 2),
            CROSSVISOR_SDK_METRICS_PORT=str(base + 3),
            **env,
        )
        self.workers: list[subprocess.Popen] = []

    # -- server ------------------------------------------------------------------------------------
    def server_pid(self) -> int:
        return int((self.home / "run" / "temporal.pid").read_text())

    def start_server(self) -> None:
        stack.temporal_up(self.settings, timeout_s=60)

    def kill_server(self) -> None:
        pid = self.server_pid()
        os.killpg(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)  # temporal_up's Popen is our child: reap it
        except ChildProcessError:
            pass
        port = int(self.settings.temporal_address.rsplit(":", 1)[1])
        deadline = time.monotonic() + 10
        while not port_free(port) and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- workers -----------------------------------------------------------------------------------
    @property
    def worker(self) -> subprocess.Popen | None:
        """The newest worker, if one was started."""
        return self.workers[-1] if self.workers else None

    def _metrics_ports_free(self) -> None:
        """The worker's metrics ports, re-picked if something took them since the stack chose
        them (the dev server binds its internal services to random free ports: on a busy
        machine one of them once landed on the worker's, and the worker died at start)."""
        for attr, var in (
            ("metrics_port", "CROSSVISOR_METRICS_PORT"),
            ("sdk_metrics_port", "CROSSVISOR_SDK_METRICS_PORT"),
        ):
            if not bindable(getattr(self.settings, attr)):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                setattr(self.settings, attr, port)
                self.env[var] = str(port)

    def start_worker(self, **env: str) -> subprocess.Popen:
        self._metrics_ports_free()
        log = open(self.home / f"worker-{len(self.workers)}.log", "ab")
        p = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.workers.append(p)
        return p

    def kill_worker(self) -> None:
        """kill -9 every live worker (with its process group)."""
        for p in self.workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def cli(self, *args: str, timeout: float = 300, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "crossvisor.cli", *args],
            cwd=cwd or ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        self.kill_worker()
        try:
            self.kill_server()
        except (OSError, ValueError):
            pass
        (self.home / "run" / "temporal.pid").unlink(missing_ok=True)
