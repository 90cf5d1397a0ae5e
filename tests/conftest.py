"""Shared fixtures: project paths and the embedded default's settings in a temp state dir."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossvisor.core.config import Settings  # noqa: E402
from tests.reaper import pytest_configure, pytest_unconfigure  # noqa: E402, F401  (a dead session's leftovers)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings()
    s.home = tmp_path / "state"
    s.home.mkdir()
    return s


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest_asyncio.fixture(scope="module")
async def env():
    """Temporal's time-skipping test server, one per test module."""

    from tests.harness import time_skipping_env

    e = await time_skipping_env()
    yield e
    await e.shutdown()


@pytest_asyncio.fixture(scope="module")
async def dev_env():
    """The real dev server, for tests that cancel activities: the time-skipping test server can
    wedge a workflow that cancels an activity in the task where it completes (ACTIVITY_UNKNOWN,
    temporalio/sdk-java#2391); the real server handles it."""

    from tests.harness import dev_server_env

    e = await dev_server_env("--sqlite-pragma", "journal_mode=wal")
    yield e
    await e.shutdown()


@pytest.fixture
def executor():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as ex:
        yield ex
