"""The SSH channel's read-only script and its parser (domain/ssh_channel.py). The script is run here
by this machine's own /bin/sh, as a guest's shell would run it after login: every line it prints
must parse (its values are this machine's, so only their shape is asserted)."""

from __future__ import annotations

import os
import subprocess

from domain import ssh_channel
from domain.stage_io import GuestObservation

# what the script printed in plain-sshd on the ESXi stand-in (PVSCSI, VMXNET3), one line per kind
GUEST_OUTPUT = """SSH-CPU n=1
SSH-MEM kib=478720
SSH-ROOT dev=/dev/sda1 mode=rw
SSH-DISK name=sda bytes=2147483648 driver=sd marker=63726f7373766973
SSH-NIC name=ens192 mac=52:54:00:12:34:56 driver=vmxnet3 link=up ipv4=10.0.2.15/24
SSH-STATE state=running
SSH-HOST name=plain-sshd
"""


def test_the_guests_report_fills_the_observation_and_names_the_channel() -> None:
    o = ssh_channel.apply(GUEST_OUTPUT, GuestObservation(channels=["console"], cpus=2))
    assert o.channels == ["console", "ssh"]
    assert (o.cpus, o.mem_kib, o.root_dev, o.root_mode, o.system_state, o.hostname) == (
        1,
        478720,
        "/dev/sda1",
        "rw",
        "running",
        "plain-sshd",
    )
    assert [(d.name, d.bytes, d.marker) for d in o.disks] == [("sda", 2147483648, "63726f7373766973")]
    assert [(n.name, n.driver, n.link, n.ipv4) for n in o.nics] == [("ens192", "vmxnet3", "up", "10.0.2.15/24")]


def test_nothing_parsable_leaves_the_observation_alone() -> None:
    o = ssh_channel.apply("Permission denied (publickey).\n", GuestObservation(channels=["console"], cpus=2))
    assert o.channels == ["console"] and o.cpus == 2


def test_the_script_runs_in_a_posix_shell_and_every_line_parses() -> None:
    proc = subprocess.run(
        ["sh", "-s"], input=ssh_channel.SCRIPT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    o = ssh_channel.apply(proc.stdout, GuestObservation())
    assert o.channels == ["ssh"]
    assert o.cpus == os.cpu_count() or o.cpus >= 1  # nproc counts the CPUs this process may use
    assert o.mem_kib > 0 and o.root_mode in ("rw", "ro") and o.system_state
    lines = [x for x in proc.stdout.splitlines() if x]
    assert all(x.startswith("SSH-") for x in lines), lines


def test_a_guest_script_keeps_its_exit_code_and_cannot_print_without_end() -> None:
    from activities.channels import ssh

    # the login (here a local shell) reads the script on stdin; its own exit code comes back
    assert ssh._run_bounded(["sh", "-s"], "echo fixed; echo oops >&2; exit 3", 1000, 30, True) == (3, b"fixed\noops\n")
    # a guest that prints without end: read up to the bound, in bounded time, and stopped
    rc, out = ssh._run_bounded(["sh", "-c", "cat >/dev/null; yes x"], "", 4096, 30, True)
    assert len(out) == 4096 and rc != 0
