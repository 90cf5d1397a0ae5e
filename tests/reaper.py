"""Stops what a test session started when the session dies without its teardown.

pytest-timeout's ``thread`` method ends a hung session with ``os._exit``: no fixture finalizer runs,
and the Temporal servers, NetBox, Prometheus and workers the fixtures started live on, holding
ports and CPU (a timed-out run on this machine left two Temporal dev servers behind). A ``kill -9``
of pytest does the same. This watcher runs beside the session in its own process group: while the
session lives it notes the session's descendants (pid and start time, read from /proc) every half
second; once the session is gone it sends SIGTERM to every noted process that is still the same
process, then SIGKILL to what is left after a grace period. A session that ends normally stops the
watcher first (``stop``), so it touches nothing then.

Daemons that detached before a snapshot (libvirtd ``-d``, PostgreSQL via ``pg_ctl``) are not the
session's descendants; their own down scripts stop them, and the qemu fixtures purge ``cvg-test-*``
domains at the next session's start.

    python -m tests.reaper <pid>
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5
GRACE_S = 5.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None (gone, or a zombie: a
    session that called os._exit stays one until its parent reaps it)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time (so a reused pid is never mistaken)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
                starts[int(entry.name)] = st[1]
    out: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in out and pid in starts:
            out[pid] = starts[pid]
            todo.extend(children.get(pid, []))
    return out


def _same(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def reap(noted: dict[int, int], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, to each noted process still alive as itself."""
    hit = [pid for pid, start in noted.items() if _same(pid, start)]
    for pid in hit:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_same(p, noted[p]) for p in hit):
        time.sleep(0.1)
    for pid in hit:
        if _same(pid, noted[pid]):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return hit


def watch(session: int) -> None:
    me = os.getpid()
    session_start = _stat(session)
    noted: dict[int, int] = {}
    while session_start is not None and _same(session, session_start[1]):
        noted = {p: s for p, s in descendants(session).items() if p != me}
        time.sleep(POLL_S)
    hit = reap(noted)
    if hit:
        print(f"tests.reaper: session {session} died without teardown; stopped {sorted(hit)}", file=sys.stderr)


def start() -> subprocess.Popen:
    """The watcher of this process, in its own session: a signal to pytest's group spares it."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reaper", str(os.getpid())],
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # stderr stays: the one line saying what it stopped
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


# pytest hooks (tests/conftest.py imports them; ``-p tests.reaper`` loads them in another session)
_watcher: subprocess.Popen | None = None


def pytest_configure(config) -> None:
    global _watcher
    if _watcher is None:
        _watcher = start()


def pytest_unconfigure(config) -> None:
    global _watcher
    if _watcher is not None:
        stop(_watcher)
        _watcher = None


if __name__ == "__main__":
    watch(int(sys.argv[1]))
