"""Issue 14 item 6: ``crossvisor up`` counted a zombie worker as alive (``kill(pid, 0)`` succeeds on
a zombie), so run right after a worker died it started none and the campaign stalled. These use
real processes: a real zombie child, a real recycled-pid situation, a real (stand-in) worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossvisor import stack
from crossvisor.core.config import Settings


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _zombie() -> subprocess.Popen:
    """A child that has exited and is not reaped yet: a real zombie."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _state(proc.pid) != "Z":
        assert time.monotonic() < deadline, "child did not exit"
        time.sleep(0.01)
    return proc


def _pidfile(tmp_path: Path, pid: int) -> Path:
    p = tmp_path / "worker.pid"
    p.write_text(str(pid))
    return p


def test_zombie_is_not_alive(tmp_path: Path) -> None:
    proc = _zombie()
    try:
        os.kill(proc.pid, 0)  # the trap: signal 0 reaches a zombie
        assert stack._alive(_pidfile(tmp_path, proc.pid)) == 0
        assert stack._alive(_pidfile(tmp_path, proc.pid), "python") == 0
    finally:
        proc.wait()


def test_running_process_is_alive_and_checked_by_command_line(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "cvi-liveness-mark"])
    try:
        pidfile = _pidfile(tmp_path, proc.pid)
        assert stack._alive(pidfile) == proc.pid
        assert stack._alive(pidfile, "cvi-liveness-mark") == proc.pid
        assert stack._alive(pidfile, "worker.py") == 0  # same pid, another program
    finally:
        proc.kill()
        proc.wait()


def test_recycled_pid_is_not_alive(tmp_path: Path) -> None:
    """A pid file older than the process that now has its pid: the pid was recycled."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile = _pidfile(tmp_path, proc.pid)
        old = time.time() - 3600
        os.utime(pidfile, (old, old))
        assert stack._alive(pidfile) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("content", ["", "abc", "0", "1", "-5", str(2**22 + 12345)])
def test_junk_pid_files(tmp_path: Path, content: str) -> None:
    p = tmp_path / "junk.pid"
    p.write_text(content)
    assert stack._alive(p) == 0
    assert stack._alive(tmp_path / "missing.pid") == 0


def test_worker_up_replaces_a_zombie_worker(tmp_path: Path, monkeypatch) -> None:
    """The issue's scenario end to end: the pid file names a dead (zombie) worker; ``worker_up``
    must start a new one instead of reporting the zombie. A stand-in worker program (it only
    sleeps) runs instead of the real one, so that no Temporal server is needed."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "worker.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(stack, "WORKER_CMD", [sys.executable, str(project / "worker.py")])
    settings = Settings()
    settings.home = tmp_path / "home"
    (settings.home / "run").mkdir(parents=True)
    dead = _zombie()
    pid = 0
    try:
        (settings.home / "run" / "worker.pid").write_text(str(dead.pid))
        pid = stack.worker_up(settings)
        assert pid != dead.pid
        assert b"worker.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert stack.worker_up(settings) == pid  # idempotent: the live one is found
        assert stack.down(settings) == ["worker"]
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        dead.wait()
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)  # worker_up's Popen is our child: reap it
            except ChildProcessError:
                pass


def test_a_process_just_started_is_alive_by_its_command_line(tmp_path: Path) -> None:
    """Right after ``Popen`` returns, the child may still be inside ``execve`` with an empty
    command line (measured: 288 of 300 reads). CI once judged a just-started process dead that way."""
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "cvi-fresh-mark"])
        try:
            assert stack._alive(_pidfile(tmp_path, proc.pid), "cvi-fresh-mark") == proc.pid
        finally:
            proc.kill()
            proc.wait()
