"""The real local stack for end-to-end tests: a Temporal dev server and worker processes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossvisor import stack
from crossvisor.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_base(span: tuple[int, ...]) -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000, 20)
        if all(free(base + d) for d in span):
            return base
    raise RuntimeError("no free ports")


class Stack:
    def __init__(self, home: Path):
        base = free_base((0, 1, 10, 2, 3))
        self.settings = Settings()
        self.settings.home = home
        self.settings.temporal_address = f"127.0.0.1:{base}"
        self.settings.metrics_port = base + 2
        self.settings.sdk_metrics_port = base + 3
        self.env = dict(
            os.environ,
            CROSSVISOR_HOME=str(home),
            CROSSVISOR_TEMPORAL_ADDRESS=self.settings.temporal_address,
            CROSSVISOR_METRICS_PORT=str(base + 2),
            CROSSVISOR_SDK_METRICS_PORT=str(base + 3),
        )
        self.workers: list[subprocess.Popen] = []

    def start_temporal(self) -> None:
        stack.temporal_up(self.settings)

    def start_worker(self, **env: str) -> subprocess.Popen:
        log = open(self.settings.home / f"worker-{len(self.workers)}.log", "ab")
        p = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.workers.append(p)
        return p

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "crossvisor.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        stack.down(self.settings)


@pytest.fixture
def local_stack(tmp_path: Path):
    s = Stack(tmp_path / "home")
    s.settings.home.mkdir()
    s.start_temporal()
    yield s
    s.stop()


def wait_for(pred, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
