"""The guest agent's guest-exec as the libvirt driver speaks it, on libvirt's in-process test
driver, against an agent the test plays: the guest's agent is input, and one that stops answering
mid-command or replies with something else is what the guest did (an interop result for the rung
that ran it), never a host fault to retry."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest

from crossvisor.core.errors import InteropFailure
from domain.vm import DiskSpec, NicSpec, VmSpec
from toolbox import diskconv


def _vm(tmp_path: Path):
    from drivers.libvirt.driver import LibvirtTestDriver

    disk = tmp_path / "d.qcow2"
    diskconv.create(disk, "qcow2", 8 << 20)
    drv = LibvirtTestDriver("test:///default", state_dir=tmp_path / "state")
    name = f"ga-{uuid.uuid4().hex[:6]}"
    drv.provision(
        VmSpec(name, 1, 128, [DiskSpec(str(disk), "qcow2", "virtio", 8 << 20)], [NicSpec("virtio")], guest_agent=True)
    )
    return drv, name


def _agent(status):
    """An agent that answers ping and guest-exec, then ``status(n)`` for the n-th status poll."""
    polls = []

    def command(_dom, cmd, _timeout, _flags):
        what = json.loads(cmd)["execute"]
        if what == "guest-ping":
            return '{"return": {}}'
        if what == "guest-exec":
            return '{"return": {"pid": 42}}'
        polls.append(1)
        return status(len(polls))

    return command


def test_a_command_s_exit_code_and_output_come_back(tmp_path: Path, monkeypatch) -> None:
    drv, name = _vm(tmp_path)
    out = base64.b64encode(b"dracut: rc=0\n").decode()
    monkeypatch.setattr(
        libvirt_qemu,
        "qemuAgentCommand",
        _agent(
            lambda n: (
                '{"return": {"exited": false}}'
                if n < 2
                else json.dumps({"return": {"exited": True, "exitcode": 0, "out-data": out}})
            )
        ),
    )
    ran = drv.guest_exec(name, ["/bin/sh", "-c", "x"], 30, lambda _w: None)
    assert (ran.exit_code, ran.output, ran.refused) == (0, "dracut: rc=0\n", "")


def test_an_agent_that_goes_silent_mid_command_is_the_guests_result(tmp_path: Path, monkeypatch) -> None:
    drv, name = _vm(tmp_path)

    def gone(_n):
        raise libvirt.libvirtError("Guest agent is not responding: QEMU guest agent is not connected")

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", _agent(gone))
    with pytest.raises(InteropFailure, match="the guest agent stopped answering while /bin/sh ran: Guest agent is not"):
        drv.guest_exec(name, ["/bin/sh", "-c", "x"], 30, lambda _w: None)


@pytest.mark.parametrize("reply", ['{"nothing": 1}', "not json", '{"return": {"exited": true, "out-data": "a"}}'])
def test_a_reply_that_is_not_guest_exec_status_is_the_guests_result(tmp_path: Path, monkeypatch, reply: str) -> None:
    drv, name = _vm(tmp_path)
    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", _agent(lambda _n: reply))
    with pytest.raises(InteropFailure, match="guest-exec-status reply is not one"):
        drv.guest_exec(name, ["/bin/sh", "-c", "x"], 30, lambda _w: None)
