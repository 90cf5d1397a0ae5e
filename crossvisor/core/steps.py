"""Where a stage's time goes: named sub-steps (upload, define, start, console wait, ...) timed
inside whatever runs the stage, drivers included, without passing a recorder through every call.

A stage opens ``recording()`` around its body; code anywhere below it wraps its work in
``step("upload", bytes=n)``. Times are *exclusive*: a step nested in another is not counted again
in its parent, so the steps of a stage add up to at most the stage's own time and the rest is
what no step covered ("other"). A step may also carry CPU seconds spent outside the worker
(``add_cpu``): a subprocess's rusage (``run``), a guest's CPU time as its hypervisor reports it.
Those are what the demo's CPU floor adds up. Outside ``recording()`` every call is a no-op.
"""

from __future__ import annotations

import contextvars
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class StepTotal:
    seconds: float = 0.0  # exclusive wall seconds
    cpu_s: float = 0.0  # CPU seconds of work outside the worker (subprocesses, guests)
    count: int = 0
    bytes: int = 0
    # the single instance that moved the most bytes: a transfer rate not diluted by tiny files
    big_bytes: int = 0
    big_s: float = 0.0
    big_copy_s: float = 0.0  # a local copy of that instance's file, timed right after it (a yardstick)


@dataclass
class Recorder:
    totals: dict[str, StepTotal] = field(default_factory=dict)
    _stack: list[list[float]] = field(default_factory=list)  # per open step: [child seconds]

    def add(self, name: str, seconds: float, cpu_s: float = 0.0, nbytes: int = 0) -> None:
        t = self.totals.setdefault(name, StepTotal())
        t.seconds += seconds
        t.cpu_s += cpu_s
        t.bytes += nbytes
        t.count += 1
        if nbytes > t.big_bytes:
            t.big_bytes, t.big_s = nbytes, seconds

    def as_dict(self) -> dict[str, dict[str, float]]:
        """name -> {seconds, cpu_s, count, bytes}, rounded: what the execution log and the cell's
        result keep."""
        out: dict[str, dict[str, float]] = {}
        for k, v in self.totals.items():
            out[k] = {"seconds": round(v.seconds, 3), "cpu_s": round(v.cpu_s, 3), "count": v.count, "bytes": v.bytes}
            if v.big_bytes:
                out[k] |= {"big_bytes": v.big_bytes, "big_s": round(v.big_s, 4)}
            if v.big_copy_s:
                out[k]["big_copy_s"] = round(v.big_copy_s, 4)
        return out


_current: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("crossvisor_steps", default=None)
_open_step: contextvars.ContextVar[str] = contextvars.ContextVar("crossvisor_open_step", default="")


@contextmanager
def recording(rec: Recorder | None = None) -> Iterator[Recorder]:
    rec = rec if rec is not None else Recorder()
    token = _current.set(rec)
    try:
        yield rec
    finally:
        _current.reset(token)


@contextmanager
def step(name: str, nbytes: int = 0) -> Iterator[None]:
    rec = _current.get()
    if rec is None:
        yield
        return
    token = _open_step.set(name)
    rec._stack.append([0.0])
    t0 = time.monotonic()
    try:
        yield
    finally:
        dt = time.monotonic() - t0
        (children,) = rec._stack.pop()
        if rec._stack:
            rec._stack[-1][0] += dt
        _open_step.reset(token)
        rec.add(name, max(0.0, dt - children), nbytes=nbytes)


def add_cpu(cpu_s: float, name: str = "") -> None:
    """CPU seconds spent outside the worker on behalf of the open step (or of step ``name``)."""
    rec = _current.get()
    if rec is None or cpu_s <= 0:
        return
    t = rec.totals.setdefault(name or _open_step.get() or "other", StepTotal())
    t.cpu_s += cpu_s


def add_bytes(n: int) -> None:
    """Bytes moved by the open step (known only once it ends, e.g. a download)."""
    rec = _current.get()
    if rec is not None and n > 0:
        rec.totals.setdefault(_open_step.get() or "other", StepTotal()).bytes += n


def add_yardstick(name: str, nbytes: int, copy_s: float) -> None:
    """The seconds a local copy of the ``nbytes`` file step ``name`` just moved took: kept when
    it is the step's largest instance, so its rate can be read against the same file's copy."""
    rec = _current.get()
    t = rec.totals.get(name) if rec is not None else None
    if t is not None and t.big_bytes == nbytes:
        t.big_copy_s = copy_s


class _Measured(subprocess.Popen):
    """A Popen that keeps its child's rusage (wait4 instead of waitpid): the CPU of the whole
    process tree it waited for, exactly, whatever else the worker runs at the same time."""

    rusage = None

    def _try_wait(self, wait_flags):  # CPython's one place that reaps the child
        try:
            pid, sts, ru = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return self.pid, 0
        if pid == self.pid:
            self.rusage = ru
        return pid, sts


def popen(args: list[str], **kw) -> _Measured:
    return _Measured(args, **kw)


def charge(proc: subprocess.Popen) -> None:
    """Count a finished process's CPU (from ``popen``) to the open step."""
    ru = getattr(proc, "rusage", None)
    if ru is not None:
        add_cpu(ru.ru_utime + ru.ru_stime)


def run(args: list[str], timeout: float | None = None, input: str | None = None, **kw) -> subprocess.CompletedProcess:  # noqa: A002 - subprocess.run's name
    """``subprocess.run(args, capture_output=True, text=True)`` whose CPU is charged to the open step."""
    if input is not None:
        kw["stdin"] = subprocess.PIPE
    with popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw) as proc:
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        except BaseException:
            proc.kill()
            raise
    charge(proc)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
