"""The SSH channel: log in with the operator's key (given by reference), run read-only commands
(domain.ssh_channel.SCRIPT), and record the host key the guest's sshd answered with. Uses the
worker's OpenSSH client; the key is written to a private temporary file for the
client and removed after."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from crossvisor.core.credentials import CredentialError, resolve_secret
from domain import file_manifest, ssh_channel
from domain.model import SshAccess
from domain.stage_io import GuestObservation
from drivers.base import Driver, GuestExec

# Under TCG with other guests on the cores, a login and the commands take seconds (key exchange,
# a shell, lsblk, dd): generous bounds, the stage heartbeats from its side thread meanwhile.
SSH_RUN_S = 45.0
# Reading every file of the guest under TCG: ~20-60 s for a minimal Debian; a manifest that takes
# longer is left out (said in the evidence), never a failure of the guest
MANIFEST_RUN_S = 240.0
# What the guest may print for it: a guest's output is input, and a manifest of ~400,000 files fits
MANIFEST_MAX_BYTES = 64 << 20
SCRIPT_MAX_BYTES = 1 << 20  # what a script run in the guest (a remediation rung) may print for its report
OPTS = [
    "-o", "BatchMode=yes",
    # the first key seen is accepted and written to a known_hosts of this login only: it is the
    # host key recorded (the same client picks the same key type on source and target)
    "-o", "StrictHostKeyChecking=accept-new",
    "-o", "HashKnownHosts=no",
    "-o", "ConnectTimeout=20",
    "-o", "LogLevel=ERROR",
]  # fmt: skip


def _host_key(known_hosts: Path) -> str:
    """``type base64`` of the host key the client accepted at login (it wrote it to known_hosts)."""
    try:
        lines = known_hosts.read_text().splitlines()
    except OSError:
        return ""
    keys = [" ".join(x.split()[1:3]) for x in lines if len(x.split()) >= 3]
    return keys[0] if keys else ""


def _run_bounded(cmd: list[str], script: str, limit: int, timeout_s: float, merge_stderr: bool) -> tuple[int, bytes]:
    """``script`` fed to ``cmd`` (an SSH login), its output read through ``head -c limit``: a
    guest that prints without end fills neither the worker's memory nor more than ``timeout_s``
    (``subprocess.TimeoutExpired``). Returns the login's exit code and at most ``limit`` bytes."""
    login = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.DEVNULL,
    )
    head = subprocess.Popen(["head", "-c", str(limit)], stdin=login.stdout, stdout=subprocess.PIPE)
    assert login.stdin is not None and login.stdout is not None
    login.stdout.close()  # head's alone: at the bound the login gets SIGPIPE, not a full pipe
    try:
        with contextlib.suppress(BrokenPipeError):  # a login that reads no commands still answers
            login.stdin.write(script.encode())
            login.stdin.close()
        out, _ = head.communicate(timeout=timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):  # at its output's end the login exits: its own code
            login.wait(timeout=10)
    finally:
        for p in (head, login):
            p.kill()
            p.wait()
    return login.returncode, out


def take_manifest(cmd: list[str], out: Path, seen: GuestObservation, script: str = file_manifest.SCRIPT) -> None:
    """Run the manifest's commands through ``cmd`` (the login), write the manifest to ``out``."""
    try:
        rc, raw = _run_bounded(cmd, script, MANIFEST_MAX_BYTES, MANIFEST_RUN_S, merge_stderr=False)
    except subprocess.TimeoutExpired:
        seen.manifest_note = f"the manifest of the guest's files took longer than {MANIFEST_RUN_S:.0f} s: not taken"
        return
    text = raw.decode(errors="surrogateescape")
    got = file_manifest.parse(text) if len(raw) < MANIFEST_MAX_BYTES else None
    if got is None:
        big = f"more than {MANIFEST_MAX_BYTES >> 20} MiB" if len(raw) >= MANIFEST_MAX_BYTES else ""
        why = big or next((x for x in text.splitlines() if x.startswith("MANIFEST-NONE")), "") or f"exit {rc}"
        seen.manifest_note = f"no manifest of the guest's files: {why}"
        return
    out.write_bytes(got.render())
    seen.manifest_files = len(got.files)
    seen.manifest_artifact = str(out)


@contextlib.contextmanager
def _key_file(key) -> Iterator[Path]:
    """The operator's key (a resolved secret) in a private temporary file for the client; the
    file and its directory (where the login's known_hosts goes too) are removed after."""
    with tempfile.TemporaryDirectory(prefix="cv-ssh-") as d:
        keyfile = Path(d) / "id"
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.reveal().rstrip("\n") + "\n")
        yield keyfile


def _ssh(keyfile: Path, port: int, known: Path, login: str, *remote: str) -> list[str]:
    return ["ssh", "-i", str(keyfile), "-p", str(port), *OPTS, "-o", f"UserKnownHostsFile={known}", login, *remote]


def observe(
    drv: Driver,
    name: str,
    access: SshAccess,
    seen: GuestObservation,
    beat: Callable[[str], None],
    timeout_s: float = 120.0,
    manifest: Path | None = None,
) -> None:
    """Add what SSH shows to ``seen`` (or why it showed nothing, in ``seen.ssh_note``); with
    ``manifest``, also the manifest of the guest's files, written there (gzip)."""
    addr = drv.guest_port(name, access.port)
    if addr is None:
        seen.ssh_note = f"{type(drv).__name__} offers no path to a guest port"
        return
    host, port = addr
    try:
        key = resolve_secret(access.credentials_ref)
    except CredentialError as e:
        seen.ssh_note = f"the SSH key {access.credentials_ref!r} cannot be read: {e}"
        return
    deadline = time.monotonic() + timeout_s
    with _key_file(key) as keyfile:
        known = keyfile.parent / "known_hosts"
        login = _ssh(keyfile, port, known, f"{access.user}@{host}", "sh", "-s")
        last = ""
        while True:
            beat("ssh")
            known.unlink(missing_ok=True)
            try:
                proc = subprocess.run(
                    login,
                    input=ssh_channel.SCRIPT,
                    capture_output=True,
                    text=True,
                    timeout=SSH_RUN_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                proc = subprocess.CompletedProcess([], 124, "", f"the commands did not finish within {SSH_RUN_S:.0f} s")
            if proc.returncode == 0 and "SSH-CPU" in proc.stdout:
                seen.ssh_host_key = _host_key(known)
                ssh_channel.apply(proc.stdout, seen)
                seen.ssh_note = ""
                if manifest is not None:
                    beat("ssh manifest")
                    take_manifest(login, manifest, seen)
                return
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
            if time.monotonic() >= deadline:
                break
            time.sleep(2.0)
    seen.ssh_note = f"no SSH login as {access.user} via {host}:{port}: {last}"


def run_script(
    drv: Driver,
    name: str,
    access: SshAccess,
    script: str,
    args: list[str],
    beat: Callable[[str], None],
    timeout_s: float,
    login_wait_s: float = 120.0,
) -> GuestExec:
    """``script`` run by the guest's /bin/sh (on stdin, with ``args``) in an SSH login with the
    operator's key: what an operator does by hand. Waits up to ``login_wait_s`` for a login (sshd
    starts late under TCG); no login is said in ``GuestExec.refused``: nothing ran."""
    addr = drv.guest_port(name, access.port)
    if addr is None:
        return GuestExec(refused=f"{type(drv).__name__} offers no path to the guest's SSH port")
    host, port = addr
    try:
        key = resolve_secret(access.credentials_ref)
    except CredentialError as e:
        return GuestExec(refused=f"the SSH key {access.credentials_ref!r} cannot be read: {e}")
    deadline = time.monotonic() + login_wait_s
    with _key_file(key) as keyfile:
        known = keyfile.parent / "known_hosts"
        target = f"{access.user}@{host}"
        last = ""
        while True:  # a login first (sshd may not be up yet), then the script once
            beat("ssh")
            probe = subprocess.run(
                _ssh(keyfile, port, known, target, "true"),
                capture_output=True,
                text=True,
                timeout=SSH_RUN_S,
                check=False,
            )
            if probe.returncode == 0:
                break
            last = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1][:200]
            if time.monotonic() >= deadline:
                return GuestExec(refused=f"no SSH login as {access.user} via {host}:{port}: {last}")
            time.sleep(2.0)
        beat("ssh script")
        try:
            rc, raw = _run_bounded(
                _ssh(keyfile, port, known, target, "sh", "-s", "--", *args), script, SCRIPT_MAX_BYTES, timeout_s, True
            )
        except subprocess.TimeoutExpired:
            return GuestExec(exit_code=124, output=f"the script did not finish within {timeout_s:.0f} s over SSH")
    out = raw.decode(errors="replace")
    if len(raw) >= SCRIPT_MAX_BYTES:
        out += f"\n(cut: more than {SCRIPT_MAX_BYTES >> 10} KiB)"
    return GuestExec(exit_code=rc, output=out[-20000:])
