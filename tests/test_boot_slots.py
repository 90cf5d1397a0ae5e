"""The machine's guest slots (activities/stages/guest.py boot_slot): never more booting guests
than slots, and a free slot goes to the most urgent boot waiting: a birth (its whole cell behind
it) before a baseline before a target boot. Real threads and real flock'ed files; a waiter that
dies leaves no claim."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from activities.stages import guest
from domain.model import Host

HERE = Host("kvm-01", "kvm", "libvirt", "qemu:///system")


@pytest.fixture
def one_slot(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("CROSSVISOR_CACHE", str(tmp_path))
    monkeypatch.setenv("CROSSVISOR_GUEST_SLOTS", "1")
    return tmp_path


def _waiter(order: list[str], name: str, priority: int) -> threading.Thread:
    def run() -> None:
        with guest.boot_slot(HERE, priority):
            order.append(name)
            time.sleep(0.3)

    t = threading.Thread(target=run)
    t.start()
    return t


def _until_waiting(root: Path, n: int) -> None:
    deadline = time.monotonic() + 10
    while len([f for f in (root / "guest-slots" / "waiting").iterdir() if not f.name.startswith("new.")]) < n:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_birth_gets_the_free_slot_before_target_boots_that_waited_longer(one_slot: Path) -> None:
    order: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with guest.boot_slot(HERE, guest.TARGET):
            order.append("holder")
            release.wait(10)

    h = threading.Thread(target=holder)
    h.start()
    while not order:
        time.sleep(0.01)
    waiters = [_waiter(order, "target", guest.TARGET)]
    _until_waiting(one_slot, 1)
    waiters.append(_waiter(order, "baseline", guest.BASELINE))
    _until_waiting(one_slot, 2)
    waiters.append(_waiter(order, "birth", guest.BIRTH))
    _until_waiting(one_slot, 3)
    release.set()
    for t in [h, *waiters]:
        t.join(20)
    assert order == ["holder", "birth", "baseline", "target"]
    assert not list((one_slot / "guest-slots" / "waiting").iterdir())


def test_a_dead_waiter_does_not_hold_back_the_others(one_slot: Path) -> None:
    # a worker killed while its birth waited: its waiting file stays, its lock went with it
    code = (
        "import os, sys, time; from activities.stages import guest; from domain.model import Host;"
        "h = Host('kvm-01', 'kvm', 'libvirt', 'qemu:///system');"
        "cm = guest.boot_slot(h, guest.BIRTH); cm.__enter__(); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 20
        while not (one_slot / "guest-slots" / "slot0").exists() or not _locked(one_slot / "guest-slots" / "slot0"):
            assert time.monotonic() < deadline, "the subprocess never took the slot"
            time.sleep(0.05)
        dead = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
        _until_waiting(one_slot, 1)  # a birth waiting for the held slot
        dead.kill()
        dead.wait()
    finally:
        holder.kill()
        holder.wait()
    order: list[str] = []
    t = _waiter(order, "target", guest.TARGET)
    t.join(10)
    assert order == ["target"]  # the dead birth's file did not keep it waiting


def _locked(p: Path) -> bool:
    import fcntl

    with open(p, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
