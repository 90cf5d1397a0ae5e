"""The real local stack for end-to-end tests: a Temporal dev server and worker processes
(``bench.localstack``, shared with the chaos run)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.localstack import ROOT, LocalStack

__all__ = ["ROOT", "LocalStack", "wait_for"]


@pytest.fixture
def local_stack(tmp_path: Path):
    s = LocalStack(tmp_path / "home")
    s.start_server()
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
