"""The test harness's own promises, on real processes: a session that dies without its teardown
(pytest-timeout's thread method calls os._exit) leaves nothing running (tests.reaper), and a
Temporal dev server that does not come up says why (tests.harness.DevServer)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import DevServer
from tests.reaper import _stat

ROOT = Path(__file__).resolve().parent.parent

HANGING = """
import subprocess, time
from pathlib import Path

def test_hangs():
    child = subprocess.Popen(["sleep", "300"])  # a server a fixture started, say
    Path({pidfile!r}).write_text(str(child.pid))
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    return _stat(pid) is not None


def _timed_out_session(tmp_path: Path, *plugin: str) -> int:
    pidfile = tmp_path / "child.pid"
    (tmp_path / "test_hang.py").write_text(HANGING.format(pidfile=str(pidfile)))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin]
    cmd += ["--timeout", "3", "--timeout-method", "thread", str(tmp_path / "test_hang.py")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Timeout" in out.stdout + out.stderr, out.stdout[-2000:]
    return int(pidfile.read_text())


def test_a_timed_out_session_leaves_nothing_running(tmp_path: Path) -> None:
    pid = _timed_out_session(tmp_path, "-p", "tests.reaper")
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), f"pid {pid} outlived its session"


def test_without_the_reaper_the_child_outlives_its_session(tmp_path: Path) -> None:
    # the control: what the reaper is for (os._exit runs no finalizer)
    pid = _timed_out_session(tmp_path)
    try:
        time.sleep(2)
        assert _alive(pid)
    finally:
        if _alive(pid):
            subprocess.run(["kill", str(pid)], check=False)


async def test_a_dev_server_that_cannot_start_says_why() -> None:
    with pytest.raises(RuntimeError) as e:
        await DevServer.start("--no-such-flag")
    text = str(e.value)
    assert text.count("exited") == DevServer.ATTEMPTS and "no-such-flag" in text, text


async def test_the_dev_server_serves_and_stops() -> None:
    server = await DevServer.start()
    assert (await server.client.service_client.check_health()) is not None
    await server.shutdown()
    assert server.proc.returncode is not None and not server.log.exists()
