"""Booting a VM and reading what its guest reports: shared by baseline (source) and boot (target).

The guest's own init prints structured evidence on its serial console (``domain.observation``
parses it); crossvisor then asks the guest's service for a page through the guest's own network,
reached from the worker through a loopback port the host forwards to the guest.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from activities.channels import service, ssh
from activities.stages.base import StageEnv
from crossvisor.core import steps
from crossvisor.core.config import guest_slots
from domain import agent_channel, console_channel, observation, tools_channel
from domain.model import GuestImage, Host, SshAccess
from domain.stage_io import AppProbe, GuestObservation
from drivers.base import ConsoleWatch, Driver, InfraFault
from drivers.libvirt.uri import is_remote
from toolbox import guest_images

TIMER_PANIC = "IO-APIC + timer doesn't work"  # the kernel's panic when timer interrupts never came
APP_PORT = 8080  # the service every project image runs (GET /cv)
BOOT_TIMEOUT_S = 150.0  # power-on to the guest's last line, under TCG with two boots per core
# An operator's image boots its stock way (no unit masked, a stock initrd of tens of MB): a Debian 12
# reached its login prompt in ~80 s of guest time under TCG with other boots on the cores.
OWN_IMAGE_BOOT_TIMEOUT_S = 300.0
APP_TIMEOUT_S = 10.0
# The guest said none of its NICs has an address: the request is still made (what crossvisor saw,
# not what it inferred), but it can only fail, so it is not given the full wait.
APP_TIMEOUT_NO_ADDRESS_S = 3.0
AGENT_TIMEOUT_S = 45.0  # the guest agent starts with the system; under TCG a little after the login prompt
EXCERPT_TAIL = 40  # console lines kept after the evidence lines


SILENT_S = 45.0  # no console output that long before the kernel started: the firmware jumped into nothing


def boots_here(host: Host | None) -> bool:
    """Whether the host's guests run on this machine's own QEMU (its cores are the workers')."""
    if host is None or host.driver != "libvirt" or is_remote(host.endpoint):
        return False
    return host.endpoint.split(":", 1)[0].split("+", 1)[0] == "qemu"


# Who boots first when guests wait for a core: the boot with the most of its cell still behind
# it. A birth comes before its cell's baseline, export, conversion, import and target boot, a
# baseline before the rest of its cell, a target boot last. (In the fresh demo the hyperv source's
# birth waited 149 s behind target boots of cells nearly done, and its cell was the run's tail.)
BIRTH, BASELINE, TARGET = 0, 1, 2


def _waiting_before(waiting: Path, priority: int) -> bool:
    """Whether a live waiter of a more urgent kind is waiting (its file is locked while it waits;
    a file whose lock can be taken belongs to a dead waiter and goes)."""
    for f in waiting.iterdir():
        p = f.name.split("-", 1)[0]
        if not p.isdigit() or int(p) >= priority:
            continue
        try:
            probe = open(f, "a")  # noqa: SIM115 - closed below
        except OSError:
            continue
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            probe.close()
        f.unlink(missing_ok=True)
    return False


@contextmanager
def boot_slot(host: Host | None, priority: int = TARGET) -> Iterator[None]:
    """Hold one of this machine's guest slots while a guest boots here (power-on to its ready
    line): more cells may run than there are cores (their exports, conversions and uploads fill
    the gaps), never more booting guests than cores; a free slot goes to the most urgent kind of
    boot waiting (``BIRTH`` < ``BASELINE`` < ``TARGET``). Slots and waiters are flock'ed files
    beside the image cache, so every worker and state dir of the machine shares them; a dead
    holder's or waiter's lock goes with its process."""
    if not boots_here(host):
        yield
        return
    d = guest_images.cache_dir() / "guest-slots"
    waiting = d / "waiting"
    waiting.mkdir(parents=True, exist_ok=True)
    me = waiting / f"{priority}-{os.getpid()}-{threading.get_ident()}"
    tmp = waiting / f"new.{me.name}"  # locked before it shows under a name others probe
    mark = open(tmp, "a")  # noqa: SIM115 - held (locked) while this boot waits
    fcntl.flock(mark, fcntl.LOCK_EX)
    tmp.rename(me)
    held = None
    with steps.step("wait for a core"):
        try:
            while held is None:
                held = None if _waiting_before(waiting, priority) else _free_slot(d)
                if held is None:
                    time.sleep(0.25)
        finally:
            me.unlink(missing_ok=True)
            mark.close()
    try:
        yield
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        held.close()


def _free_slot(d: Path):
    """One of the machine's guest slots, locked, or None when every one is held."""
    for i in range(guest_slots()):
        f = open(d / f"slot{i}", "a")  # noqa: SIM115 - kept open while the slot is held
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return f
    return None


def stopped(_text: str) -> bool:
    """Watch until the domain stops (a birth boot powers itself off)."""
    return False


def excerpt(text: str) -> str:
    return observation.excerpt(text, EXCERPT_TAIL)


def observe(watch: ConsoleWatch, artifact: Path, env: StageEnv) -> GuestObservation:
    """Parse a console and keep the whole text as an artifact beside the cell's results."""
    artifact.write_text(watch.text)
    seen = observation.from_console(watch.text)
    seen.console_artifact = env.relative(artifact)
    seen.seconds = round(watch.seconds, 1)
    if not seen.reached_init and not seen.failure:
        seen.failure_kind = "no-init"
        seen.failure = f"no output from the guest's init within {watch.seconds:.0f} s" + (
            " (the domain stopped)" if watch.stopped else " (still running)"
        )
    return seen


def probe_app(drv: Driver, name: str, timeout_s: float = APP_TIMEOUT_S) -> AppProbe:
    """GET /cv from the guest's service through the port the host forwards to it."""
    with steps.step("probe"):
        return _probe_app(drv, name, timeout_s)


def _probe_app(drv: Driver, name: str, timeout_s: float) -> AppProbe:
    addr = drv.guest_port(name, APP_PORT)
    if addr is None:
        return AppProbe(attempted=False, detail=f"{type(drv).__name__} offers no path to a guest port")
    host, port = addr
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, port, timeout=3)
        try:
            conn.request("GET", "/cv")
            resp = conn.getresponse()
            body = resp.read(2048).decode(errors="replace").strip()
            if resp.status == 200 and body.startswith("cv-app"):
                return AppProbe(attempted=True, ok=True, detail=f"HTTP 200 from guest port {APP_PORT}", body=body)
            last = f"HTTP {resp.status}: {body[:120]}"
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        time.sleep(0.5)
    return AppProbe(attempted=True, ok=False, detail=f"no answer from guest port {APP_PORT} via {host}:{port} ({last})")


# boots that died where nothing follows: no channel will answer
DEAD = ("root-device-not-found", "kernel-panic", "grub-error", "no-bootable-device", "emergency-mode", "loader-error")


def forward_ports(image: GuestImage | None) -> list[int]:
    """The guest ports the host forwards to the worker: crossvisor's app, and the operator's
    declared service and SSH port."""
    ports = [APP_PORT]
    if image is not None and image.app is not None:
        ports.append(image.app.port)
    if image is not None and image.ssh is not None:
        ports.append(image.ssh.port)
    elif image is not None and image.builtin in guest_images.FAMILIES:
        ports.append(SshAccess("").port)  # the family's own key logs in (see ssh_access)
    return list(dict.fromkeys(ports))


def ssh_access(image: GuestImage | None) -> SshAccess | None:
    """The SSH access the spec gave, or a boot family's own (the key made for its build: an operator
    logs in to such a VM with the key it was built with)."""
    if image is None:
        return None
    if image.ssh is None and image.builtin in guest_images.FAMILIES:
        return SshAccess(f"file:{guest_images.build_plain_image(image.builtin).ssh_key}")
    return image.ssh


def boot_timeout_s(image: GuestImage | None) -> float:
    """How long a boot of ``image`` may take to its ready line: the project's images print their
    evidence quickly, an operator's boots its stock way."""
    return BOOT_TIMEOUT_S if image is None or guest_images.instrumented(image.builtin) else OWN_IMAGE_BOOT_TIMEOUT_S


def boot_and_observe(
    drv: Driver,
    name: str,
    artifact: Path,
    env: StageEnv,
    heartbeat: Callable[[str], None],
    image: GuestImage | None = None,
    host: Host | None = None,
    priority: int = TARGET,
) -> tuple[GuestObservation, AppProbe, str]:
    """Power on, watch the console until the guest is ready (or its boot died), then ask it through
    every channel it has: crossvisor's app, the operator's declared service, SSH."""
    if not drv.runs_guests:
        drv.power_on(name)
        state = drv.inspect(name).power_state
        seen = GuestObservation(observed=False, note=f"{drv.describe()} runs no guest crossvisor can observe")
        # VMware Tools, where the guest has them, observe it through vCenter (the simulator's answer
        # is labelled simulated); without them nothing is observed and guest-side checks are skipped
        with steps.step("vmware tools"):
            tools_channel.apply(drv.guest_tools(name), seen)
        return seen, AppProbe(detail="no guest runs here" if not seen.observed else "no service probed"), state
    with boot_slot(host, priority):
        drv.power_on(name)
        watch = drv.watch_console(
            name,
            observation.ready,
            boot_timeout_s(image),
            heartbeat=heartbeat,
            idle_s=SILENT_S,
            idle_counts=observation.silence_means_dead,
        )
    seen = observe(watch, artifact, env)
    silent_on_serial = not seen.reached_init
    if seen.failure_kind == "kernel-panic" and TIMER_PANIC in seen.failure and watch.starved_s > watch.seconds / 2:
        # Linux's boot-time check that timer interrupts arrive fails when the host does not run
        # the vCPU for long stretches: the host's load, not the guest's; retried, never graded
        raise InfraFault(
            f"{name}: the kernel's timer check failed while the host starved the guest (its vCPU waited "
            f"{watch.starved_s:.0f} s for a core in {watch.seconds:.0f} s): {seen.failure}"
        )
    declared = image.app if image is not None else None
    if seen.reached_init:  # the agent first: SSH, where the operator gave a key, sees more and wins
        with steps.step("guest agent"):
            agent_channel.apply(drv.guest_agent(name, AGENT_TIMEOUT_S, heartbeat), seen)
    access = ssh_access(image)
    if access is not None and (seen.reached_init or not seen.failure_kind.startswith(DEAD)):
        with steps.step("ssh"):
            ssh.observe(drv, name, access, seen, heartbeat, manifest=artifact.with_suffix(".files.gz"))
        if seen.manifest_artifact:
            seen.manifest_artifact = env.relative(Path(seen.manifest_artifact))
        if not seen.reached_init and "ssh" in seen.channels:
            # silent on serial, but logged in: the system is up (its console is not on ttyS0)
            seen.reached_init, seen.failure_kind, seen.failure = True, "", ""
    if declared is not None and seen.reached_init:
        with steps.step("probe"):
            app = service.probe(drv, name, declared, heartbeat)
    elif observation.READY in watch.text:
        addressed = any(n.ipv4 for n in seen.nics)
        app = probe_app(drv, name, APP_TIMEOUT_S if addressed else APP_TIMEOUT_NO_ADDRESS_S)
        app.channel = "cv-app"
    else:
        app = AppProbe(detail="the guest never got ready")
    if silent_on_serial:  # the serial console did not show the init: keep what the screen shows
        with steps.step("screenshot"):
            png = drv.screenshot(name)
        if png:
            shot = artifact.with_suffix(".png")
            shot.write_bytes(png)
            seen.screenshot_artifact = env.relative(shot)
            if seen.failure.startswith(console_channel.HANDOFF_SILENCE):
                # with a screen, serial silence after the hand-over is no proof that nothing booted
                seen.failure_kind = "init-not-reached"
                seen.failure = (
                    f"{console_channel.HANDOFF_SILENCE} on the serial console: a disk without BIOS boot code, or a "
                    "boot loader and system that write to the screen only (as Windows does); see the screenshot"
                )
    return seen, app, drv.inspect(name).power_state
