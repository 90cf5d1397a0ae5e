"""Grading: turn what the target and the guest on it reported into a grade per check. Pure.

The target decides: every grade here comes from an observation — the guest's own console on the
target (what it booted from, which drivers bound, which addresses it got), the answer of its
service, the target API's report of the VM — compared with the same observation on the source.
Nothing declared in the spec enters a grade (predictions are recorded beside it, see
``domain.prediction``). A failing check names its observed cause in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain import console_channel, file_manifest, stages, tools_channel
from domain.model import CHECKS, CheckResult, Grade
from domain.observation import bus_pci_ids, pci_name
from domain.stage_io import AppProbe, GuestDisk, GuestObservation
from domain.vm import Hardware

SOURCE_SIDE_STAGES = stages.SOURCE_SIDE
MEMORY_TOLERANCE = 0.05  # MemTotal differs a little with firmware and machine type (reserved ranges)
STORAGE_CLASS, NETWORK_CLASS = "0x01", "0x02"


def after_stage_failure(checks: list[str], stage: str, reason: str, evidence: dict[str, str]) -> list[CheckResult]:
    """Grades when the pipeline stopped at ``stage`` with an interop failure."""
    if stage in SOURCE_SIDE_STAGES:
        return [
            CheckResult(c, Grade.SKIPPED, f"source cannot run the image ({stage}): {reason}", evidence) for c in checks
        ]
    return [CheckResult(c, Grade.FAIL, f"{stage} failed: {reason}", evidence) for c in checks]


def after_infra_error(checks: list[str], stage: str, reason: str, bad_input: bool = False) -> list[CheckResult]:
    """Grades when a stage kept failing for a reason that is not the guest's: a host fault retried
    to the end of the policy, or bad input (a package, an image, a record, a credential), refused
    at once and never retried, and said so."""
    said = "bad input, not retried" if bad_input else "infrastructure error after retries"
    return [CheckResult(c, Grade.ERROR, f"{stage}: {said}: {reason}") for c in checks]


def merge(checks: list[str], decided: list[CheckResult]) -> list[CheckResult]:
    """One result per requested check, in the campaign's check order; undecided -> SKIPPED."""
    by = {c.check: c for c in decided}
    return [by.get(c, CheckResult(c, Grade.SKIPPED, "not reached")) for c in checks]


def validate_checks(checks: list[str]) -> list[str]:
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {list(CHECKS)}")
    return checks


@dataclass
class Observed:
    """Everything a verdict may use: the source's and the target's reports, nothing declared."""

    source_hw: Hardware | None
    source_guest: GuestObservation
    source_app: AppProbe
    marker: str  # hex of the marker written into the source disk
    target_hw: Hardware | None
    target_guest: GuestObservation
    target_app: AppProbe
    target_power: str = ""
    marker_on_target: str = ""  # read from the target's storage when no guest could be observed
    import_evidence: dict[str, str] = field(default_factory=dict)
    # the guest's files on the target against the source's (SSH manifests), when both were taken
    files: file_manifest.ManifestDiff | None = None


# -- channels: which of the guest's channels decides which check ----------------------------------
CV = "cv-evidence"  # crossvisor's own images: CV-* lines on the console (domain.guest_evidence)
CONSOLE = console_channel.CHANNEL  # any Linux's own console output (domain.console_channel)
CV_APP = "cv-app"  # crossvisor's own images: GET /cv through the guest's network
TARGET_API = "target-api"  # the target hypervisor's own report of the VM
SSH = "ssh"  # read-only commands over SSH with the operator's key (domain.ssh_channel)
SERVICE = "service-probe"  # the service the operator declared on the image (app: {tcp|http})
AGENT = "guest-agent"  # the QEMU guest agent through libvirt (domain.agent_channel)
TOOLS = tools_channel.CHANNEL  # VMware Tools' guest info through vCenter (domain.tools_channel)


def channels_of(g: GuestObservation) -> list[str]:
    """The channels that answered for this guest. Observations recorded before channels were named
    (a reused baseline of crossvisor's own image) came from its evidence lines."""
    if g.channels:
        return list(g.channels)
    return [CV] if g.observed and (g.reached_init or g.failure_kind) else []


def _decider(check: str, o: Observed) -> str | None:
    """The channel that can decide ``check`` for this guest on this target, or None (unobservable).
    crossvisor's own evidence first, then SSH (the guest's own tools), then the console."""
    tgt = channels_of(o.target_guest)
    if check == "metadata":
        return TARGET_API
    if check == "boots":
        if CV in tgt:
            return CV
        if CONSOLE in tgt:
            return CONSOLE
        if SSH in tgt:
            return SSH
        return TOOLS if TOOLS in tgt else CONSOLE
    if check == "app":
        if o.target_app.attempted and o.target_app.channel == SERVICE:
            return SERVICE
        return CV_APP if CV in tgt else None
    if CV in tgt:
        return CV
    src = channels_of(o.source_guest)
    if SSH in tgt and SSH in src:
        return SSH  # the same commands on both sides
    if AGENT in tgt and AGENT in src and check in ("disks", "nics"):
        return AGENT
    if check == "cpu_memory" and AGENT in tgt and AGENT in src and o.target_guest.cpus:
        return AGENT  # vCPUs online from the agent; memory from the kernel's console line where shown
    if check == "cpu_memory" and CONSOLE in tgt and o.target_guest.cpus and o.source_guest.cpus:
        return CONSOLE  # the kernel's own CPU and memory lines, on both sides
    if check == "nics" and CONSOLE in tgt and "cloud-init" in o.target_guest.milestones:
        return CONSOLE  # cloud-init's table of interfaces and addresses
    if check == "disks" and TOOLS in tgt and TOOLS in src and o.source_guest.filesystems:
        return TOOLS  # the filesystems the tools list, on both sides (not comparable with block devices)
    if check == "nics" and TOOLS in tgt and (TOOLS in src or o.source_guest.nics):
        return TOOLS  # NICs with MACs and addresses; the source's NICs from whichever channel saw them
    return None


def _why_unobservable(check: str, o: Observed) -> str:
    tgt, src = channels_of(o.target_guest), channels_of(o.source_guest)
    has = ", ".join(tgt) or "none"
    lost = [c for c in src if c not in tgt]
    if lost:
        notes = {SSH: o.target_guest.ssh_note, AGENT: o.target_guest.agent_note, TOOLS: o.target_guest.tools_note}
        why = "".join(f": {notes[c]}" for c in lost if notes.get(c))
        return f"the {', '.join(lost)} channel answered on the source, not on the target{why} (this guest has: {has})"
    needs = {
        "disks": "its disks and their content (CV-* evidence, the guest agent, SSH, or VMware Tools on both sides)",
        "cpu_memory": "its vCPUs and memory (the kernel's own lines on the console, the guest agent or SSH; "
        "VMware Tools report neither)",
        "nics": "its interfaces' addresses (cloud-init's table on the console, the guest agent, SSH or VMware Tools)",
        "app": "a service (declare one: app: {tcp: PORT} or {http: {port, path, expect}})",
    }[check]
    if check == "disks" and TOOLS in tgt and TOOLS in src:
        return "VMware Tools listed no filesystem in the guest on the source: nothing to compare with"
    if check == "cpu_memory" and o.target_guest.cpus and not o.source_guest.cpus:
        return "the console showed the kernel's CPU count on the target, not on the source: nothing to compare"
    return f"no channel of this guest reports {needs}; it has: {has}"


def grade_observed(checks: list[str], o: Observed) -> list[CheckResult]:
    """Grades for the checks the verify stage decides (all but lifecycle), each from the channel that
    can see it; a check none of this guest's channels can see is UNOBSERVABLE (no verdict)."""
    graders = {
        "boots": _boots,
        "disks": _disks,
        "cpu_memory": _cpu_memory,
        "nics": _nics,
        "app": _app,
        "metadata": _metadata,
    }
    out = []
    for check in checks:
        if check not in graders:
            continue
        guest_side = check not in ("metadata",)
        if guest_side and not o.target_guest.observed and TOOLS in channels_of(o.source_guest):
            out.append(_tools_lost(check, o))
            continue
        if guest_side and not o.target_guest.observed:
            out.append(_unobserved(check, o))
            continue
        if guest_side and check != "boots" and not o.target_guest.reached_init:
            out.append(
                CheckResult(check, Grade.SKIPPED, "not reached: the guest did not boot on the target (see boots)")
            )
            continue
        channel = _decider(check, o)
        if channel is None:
            ev = {"channel": "none", "channels_target": ",".join(channels_of(o.target_guest)) or "-"}
            ev["channels_source"] = ",".join(channels_of(o.source_guest)) or "-"
            out.append(CheckResult(check, Grade.UNOBSERVABLE, _why_unobservable(check, o), ev))
            continue
        if (check, channel) in (("cpu_memory", CONSOLE), ("cpu_memory", AGENT)):
            r = _console_cpu_memory(o)
        elif (check, channel) == ("disks", AGENT):
            r = _agent_disks(o)
        elif (check, channel) == ("nics", AGENT):
            r = _agent_nics(o)
        elif (check, channel) == ("nics", CONSOLE):
            r = _agent_nics(o, "cloud-init's table on the console")  # it names no driver
        elif (check, channel) == ("app", SERVICE):
            r = _service_app(o)
        elif (check, channel) == ("disks", TOOLS):
            r = _tools_disks(o)
        elif (check, channel) == ("nics", TOOLS):
            r = _tools_nics(o)
        else:
            r = graders[check](o)
        r.evidence["channel"] = channel
        if channel == TOOLS:
            _tools_evidence(r.evidence, o.target_guest)
        out.append(r)
    return out


def _tools_evidence(ev: dict[str, str], g: GuestObservation) -> None:
    ev["vmware_tools"] = g.tools or "-"
    if g.tools_simulated:
        ev["simulated"] = "yes: the vCenter simulator answered (no guest runs there; its guest info was set)"


def _tools_lost(check: str, o: Observed) -> CheckResult:
    """VMware Tools ran in the guest on the source and vCenter reports them not running on the target.
    ``boots`` fails with that cause: the one channel that showed the guest up on the source says it
    is not up on the target (whether the guest or only its tools failed, the tools cannot tell: the
    cause names what vCenter reported). What only a running guest's tools could show (its disks,
    NICs) has no verdict: unobservable, with the same cause."""
    g = o.target_guest
    why = f"VMware Tools answered on the source, not on the target: {g.tools_note or 'no guest info'}"
    ev = {"power_state": o.target_power or "?", "channels_source": ",".join(channels_of(o.source_guest))}
    if check == "boots":
        ev["channel"] = TOOLS
        _tools_evidence(ev, g)
        return CheckResult(check, Grade.FAIL, why, ev)
    ev["channel"] = "none"
    _tools_evidence(ev, g)
    return CheckResult(check, Grade.UNOBSERVABLE, why, ev)


def _tools_disks(o: Observed) -> CheckResult:
    """The filesystems VMware Tools list on both sides: each one of the source's mounted on the target
    with its capacity. The tools cannot read a disk's bytes: the content marker is not compared."""
    g, s = o.target_guest, o.source_guest
    ev = {
        "filesystems_source": ",".join(f"{d.name}:{d.bytes}" for d in s.filesystems) or "-",
        "filesystems_target": ",".join(f"{d.name}:{d.bytes}" for d in g.filesystems) or "-",
        "marker": "not compared: VMware Tools cannot read a disk's bytes",
    }
    if not g.filesystems:
        return CheckResult("disks", Grade.FAIL, "VMware Tools report no filesystem in the guest", ev)
    on_target = {d.name: d.bytes for d in g.filesystems}
    for d in s.filesystems:
        if d.name not in on_target:
            return CheckResult(
                "disks", Grade.FAIL, f"filesystem {d.name}, mounted on the source, is not mounted on the target", ev
            )
        if d.bytes and on_target[d.name] and d.bytes != on_target[d.name]:
            return CheckResult(
                "disks",
                Grade.FAIL,
                f"filesystem {d.name} is {on_target[d.name] - d.bytes:+d} bytes off its size on the source",
                ev,
            )
    return CheckResult("disks", Grade.PASS, "", ev)


def _tools_nics(o: Observed) -> CheckResult:
    """The NICs VMware Tools list (MAC, connected, IPv4), against the source's NICs: as many, each
    with an address; MAC changes recorded."""
    g, s = o.target_guest, o.source_guest
    ev = {
        "source": " ".join(f"{n.name}/{n.mac}/{n.ipv4 or 'no-ip'}" for n in s.nics) or "-",
        "target": " ".join(f"{n.mac}/{n.link}/{n.ipv4 or 'no-ip'}" for n in g.nics) or "-",
    }
    if not g.nics:
        return CheckResult("nics", Grade.FAIL, "VMware Tools report no network interface in the guest", ev)
    if len(g.nics) < len(s.nics):
        return CheckResult("nics", Grade.FAIL, f"{len(g.nics)} interfaces where the source had {len(s.nics)}", ev)
    for n in g.nics:
        if not n.ipv4:
            why = "is disconnected" if n.link == "down" else "got no IPv4 address"
            return CheckResult("nics", Grade.FAIL, f"interface {n.mac or n.name} {why}", ev)
    changes = [
        f"MAC {a.mac} -> {b.mac}" for a, b in zip(s.nics, g.nics) if a.mac and b.mac and a.mac.lower() != b.mac.lower()
    ]
    ev["changes"] = "; ".join(changes) or "none"
    return CheckResult("nics", Grade.PASS, f"changed: {'; '.join(changes)}" if changes else "", ev)


def _unobserved(check: str, o: Observed) -> CheckResult:
    """A target that runs no guest crossvisor can see: what its API and storage say, no verdict."""
    ev = {"power_state": o.target_power or "?", "note": o.target_guest.note}
    if o.target_guest.tools:
        ev["vmware_tools"] = o.target_guest.tools
    if check == "disks" and o.marker_on_target:
        ev["marker_written"], ev["marker_on_target"] = o.marker, o.marker_on_target
        if not o.marker_on_target.startswith(o.marker[:64]):
            return CheckResult(check, Grade.FAIL, "the target stores different content at the marker offset", ev)
    return CheckResult(check, Grade.SKIPPED, f"no guest observed: {o.target_guest.note}", ev)


def _boot_cause(g: GuestObservation, hw: Hardware | None, source_firmware: str) -> str:
    """One line: why the guest did not reach its init, from the console and the target's report."""
    undriven = [p for p in g.pci if p.cls.startswith(STORAGE_CLASS) and p.driver in ("", "none")]
    if g.failure_kind == "root-device-not-found":
        head = f"root device {g.root_source or '(from root=)'} not found"
        # the controller the target attached the disk to, if the guest had no driver for it
        bus = hw.disks[0].bus if hw and hw.disks else ""
        ids = bus_pci_ids(bus)
        driven = [p for p in g.pci if p.id in ids and p.driver not in ("", "none")]
        # an idle controller without a driver (q35's built-in AHCI) is not the cause when the
        # disk's own controller is driven: then the root is named in a way this hardware is not
        ours = [p for p in undriven if p.id in ids] or ([] if driven else undriven)
        if ours:
            names = ", ".join(f"{p.id} ({pci_name(p.id)})" for p in ours)
            return f"{head}: the guest's initramfs has no driver for the disk controller {names}"
        if driven:
            d = driven[0]
            return (
                f"{head}: the disk controller {d.id} ({pci_name(d.id)}) is driven ({d.driver}) but the guest "
                f"names its root {g.root_source or 'by root='}, a device name this hardware does not give it"
            )
        return f"{head}: {g.failure}"
    if g.failure_kind == "no-bootable-device":
        fw = hw.firmware if hw else "?"
        why = ""
        if source_firmware and fw and source_firmware != fw:
            why = f"; the guest was installed for {source_firmware.upper()}, the target boots it with {fw.upper()}"
        return f"{g.failure}{why}"
    if g.failure:
        return g.failure
    return "the guest did not reach its init"


def _boots(o: Observed) -> CheckResult:
    g = o.target_guest
    ev = {
        "console": g.console_excerpt,
        "seconds": f"{g.seconds:.1f}",
        "firmware_target": o.target_hw.firmware if o.target_hw else "?",
    }
    if g.console_artifact:
        ev["console_log"] = g.console_artifact
    if g.screenshot_artifact:
        ev["screenshot"] = g.screenshot_artifact
    if g.milestones:
        ev["milestones"] = " > ".join(g.milestones)
    if g.reached_init:
        ev.update({"init": g.init, "kernel": g.kernel})
        if g.root_dev:
            ev["root"] = f"{g.root_dev} via {g.root_driver or '?'}"
        if g.hostname:
            ev["hostname"] = g.hostname
        src_key = o.source_guest.ssh_host_key
        if g.ssh_host_key:
            ev["ssh_host_key"] = g.ssh_host_key
        if src_key and g.ssh_host_key and src_key != g.ssh_host_key:
            return CheckResult(
                "boots",
                Grade.FAIL,
                f"another SSH host key answers on the target ({g.ssh_host_key[:40]}...; the source's was "
                f"{src_key[:40]}...): the guest regenerated its identity, or another system answered",
                ev,
            )
        return CheckResult("boots", Grade.PASS, "", ev)
    return CheckResult("boots", Grade.FAIL, _boot_cause(g, o.target_hw, o.source_guest.firmware), ev)


def _disks(o: Observed) -> CheckResult:
    g, s = o.target_guest, o.source_guest
    first = g.disks[0] if g.disks else None
    ev = {
        "root": f"{g.root_dev} ({g.root_source}) via {g.root_driver or '?'} {g.root_mode}",
        "disks_source": ",".join(f"{d.name}:{d.bytes}" for d in s.disks) or "-",
        "disks_target": ",".join(f"{d.name}:{d.bytes}" for d in g.disks) or "-",
        "marker_written": o.marker,
        "marker_in_guest": first.marker if first else "",
    }
    if not g.root_dev:
        return CheckResult("disks", Grade.FAIL, "the guest reported no root device", ev)
    if g.root_mode == "ro":
        return CheckResult("disks", Grade.FAIL, f"root {g.root_dev} is mounted read-only", ev)
    if g.mounts_failed:
        return CheckResult("disks", Grade.FAIL, f"fstab entries failed to mount: {'; '.join(g.mounts_failed)}", ev)
    if not s.observed:  # no guest ran on the source (a simulator): its API's disks are the baseline
        disks = o.source_hw.disks if o.source_hw else []
        s = GuestObservation(disks=[GuestDisk(f"disk{i}", d.capacity_bytes) for i, d in enumerate(disks)])
        ev["disks_source"] = ",".join(f"{d.name}:{d.bytes}" for d in s.disks) + " (the source API's)"
    if len(g.disks) != len(s.disks):
        return CheckResult(
            "disks", Grade.FAIL, f"the guest sees {len(g.disks)} disks, {len(s.disks)} on the source", ev
        )
    for a, b in zip(s.disks, g.disks):
        if a.bytes and b.bytes and a.bytes != b.bytes:
            return CheckResult(
                "disks", Grade.FAIL, f"disk {b.name} is {b.bytes - a.bytes:+d} bytes off its size on the source", ev
            )
    # the marker crossvisor wrote, or, on an operator's disk that uses those bytes (no marker written),
    # the content the source guest read there
    src_first = s.disks[0] if s.disks else None
    expected = o.marker[:64]
    if src_first is not None and src_first.marker and (not expected or not src_first.marker.startswith(expected)):
        expected = src_first.marker[:64]
        why = "the image uses those bytes" if o.marker else "a clone of a template: nothing written"
        ev["marker_written"] = f"none ({why}): compared with the source's content"
    if first is None or not first.marker.startswith(expected):
        return CheckResult(
            "disks", Grade.FAIL, "the guest reads different content at the marker offset of its disk", ev
        )
    if o.files is not None:
        why, files_ev = file_manifest.verdict(o.files)
        ev.update(files_ev)
        if why:
            return CheckResult("disks", Grade.FAIL, why, ev)
    elif s.manifest_note or g.manifest_note:
        ev["files"] = g.manifest_note or s.manifest_note
    return CheckResult("disks", Grade.PASS, "", ev)


def _console_cpu_memory(o: Observed) -> CheckResult:
    """vCPUs and memory as the kernel counted them at boot ("smp: Brought up", "Memory: a K/b K
    available"), the same lines on both sides; a source without them: the source API's."""
    g, s = o.target_guest, o.source_guest
    ev = {
        "guest_source": f"{s.cpus} vCPU/{s.mem_kib} KiB" if s.cpus else "-",
        "guest_target": f"{g.cpus} vCPU/{g.mem_kib} KiB",
        "api_target": f"{o.target_hw.cpus} vCPU/{o.target_hw.memory_mib} MiB" if o.target_hw else "-",
    }
    if g.cpus != s.cpus:
        return CheckResult(
            "cpu_memory", Grade.FAIL, f"the kernel brought up {g.cpus} vCPUs, {s.cpus} on the source", ev
        )
    if s.mem_kib and g.mem_kib and abs(g.mem_kib - s.mem_kib) > MEMORY_TOLERANCE * s.mem_kib:
        return CheckResult(
            "cpu_memory", Grade.FAIL, f"the kernel counts {g.mem_kib} KiB of memory, {s.mem_kib} KiB on the source", ev
        )
    return CheckResult("cpu_memory", Grade.PASS, "", ev)


def _cpu_memory(o: Observed) -> CheckResult:
    g, s = o.target_guest, o.source_guest
    if not s.observed and o.source_hw is not None:
        # no guest to ask on the source (a simulator): what its API reported is the baseline
        s = GuestObservation(cpus=o.source_hw.cpus, mem_kib=o.source_hw.memory_mib * 1024)
        tolerance = 0.15  # MemTotal is the configured memory minus what the kernel and firmware keep
    else:
        tolerance = MEMORY_TOLERANCE
    ev = {
        "guest_source": f"{s.cpus} vCPU/{s.mem_kib} KiB",
        "guest_target": f"{g.cpus} vCPU/{g.mem_kib} KiB",
        "api_source": f"{o.source_hw.cpus} vCPU/{o.source_hw.memory_mib} MiB" if o.source_hw else "-",
        "api_target": f"{o.target_hw.cpus} vCPU/{o.target_hw.memory_mib} MiB" if o.target_hw else "-",
    }
    if g.cpus != s.cpus:
        return CheckResult("cpu_memory", Grade.FAIL, f"the guest sees {g.cpus} vCPUs, {s.cpus} on the source", ev)
    if s.mem_kib and abs(g.mem_kib - s.mem_kib) > tolerance * s.mem_kib:
        return CheckResult(
            "cpu_memory", Grade.FAIL, f"the guest sees {g.mem_kib} KiB of memory, {s.mem_kib} KiB on the source", ev
        )
    return CheckResult("cpu_memory", Grade.PASS, "", ev)


def _nics(o: Observed) -> CheckResult:
    g, s = o.target_guest, o.source_guest
    ev = {
        "source": " ".join(f"{n.name}/{n.driver}/{n.mac}" for n in s.nics) or "-",
        "target": " ".join(f"{n.name}/{n.driver}/{n.link}/{n.ipv4 or 'no-ip'}" for n in g.nics) or "-",
        "netcfg": ",".join(g.netcfg_names) or "-",
    }
    nets = [p for p in g.pci if p.cls.startswith(NETWORK_CLASS)]
    driverless = [p for p in nets if p.driver in ("", "none")]
    if not g.nics:
        if driverless:
            names = ", ".join(f"{p.id} ({pci_name(p.id)})" for p in driverless)
            return CheckResult("nics", Grade.FAIL, f"the guest has no driver for the NIC {names}: no interface", ev)
        return CheckResult("nics", Grade.FAIL, "the guest sees no network interface", ev)
    if s.observed and len(g.nics) < len(s.nics):
        return CheckResult("nics", Grade.FAIL, f"{len(g.nics)} interfaces where the source had {len(s.nics)}", ev)
    for n in g.nics:
        if n.driver in ("", "none"):
            return CheckResult("nics", Grade.FAIL, f"interface {n.name} has no driver bound", ev)
        if n.ipv4:
            continue
        cfg = g.netcfg_names
        if cfg and "*" not in cfg and n.name not in cfg:
            # the NIC is there and driven, but the guest's own configuration names another one
            return CheckResult(
                "nics",
                Grade.FAIL,
                f"interface {n.name} ({n.driver}) is not configured: the guest's network config names "
                f"{', '.join(cfg)}, not {n.name}",
                ev,
            )
        if n.link == "down":
            return CheckResult("nics", Grade.FAIL, f"interface {n.name} ({n.driver}) has no link", ev)
        return CheckResult(
            "nics", Grade.FAIL, f"interface {n.name} ({n.driver}) got no address{_new_mac(s.nics, n)}", ev
        )
    return _nics_pass(s.nics, g.nics, ev, drivers=True)


def _nics_pass(source: list, target: list, ev: dict[str, str], drivers: bool) -> CheckResult:
    """Every NIC came up: a pass that records what changed on the way (MAC, name, and the driver
    where both sides' channel reports one: the guest agent and VMware Tools do not)."""
    changes = []
    for a, b in zip(source, target):
        if a.mac and b.mac and a.mac.lower() != b.mac.lower():
            changes.append(f"MAC {a.mac} -> {b.mac}")
        if a.name != b.name:
            changes.append(f"name {a.name} -> {b.name}")
        if drivers and a.driver != b.driver:
            changes.append(f"driver {a.driver} -> {b.driver}")
    ev["changes"] = "; ".join(changes) or "none"
    return CheckResult("nics", Grade.PASS, f"changed: {'; '.join(changes)}" if changes else "", ev)


def _app(o: Observed) -> CheckResult:
    a, g = o.target_app, o.target_guest
    ev = {"detail": a.detail, "body": a.body, "listening_in_guest": "yes" if g.app_listening else "no"}
    if a.ok:
        return CheckResult("app", Grade.PASS, "", ev)
    if not g.app_listening:
        return CheckResult("app", Grade.FAIL, "the guest's service did not start", ev)
    if not any(n.ipv4 for n in g.nics):
        # the service runs, but nothing can reach it: the network is the cause (the nics check says why)
        return CheckResult(
            "app",
            Grade.FAIL,
            "the guest's service runs but is unreachable: the guest has no network address (see nics)",
            ev,
        )
    return CheckResult(
        "app", Grade.FAIL, "the guest's service runs but does not answer through the guest's network", ev
    )


def _agent_disks(o: Observed) -> CheckResult:
    """The agent's filesystems and block devices: root mounted, as many disks as on the source.
    It cannot read a disk's bytes: the content marker is not compared (said in the evidence)."""
    g, s = o.target_guest, o.source_guest
    ev = {
        "root": f"{g.root_dev} ({g.root_source})",
        "disks_source": ",".join(d.name for d in s.disks) or "-",
        "disks_target": ",".join(d.name for d in g.disks) or "-",
        "marker": "not compared: the guest agent cannot read a disk's bytes",
    }
    if not g.root_dev:
        return CheckResult("disks", Grade.FAIL, "the guest agent reports no filesystem mounted on /", ev)
    if len(g.disks) != len(s.disks):
        return CheckResult(
            "disks", Grade.FAIL, f"the guest sees {len(g.disks)} disks, {len(s.disks)} on the source", ev
        )
    return CheckResult("disks", Grade.PASS, "", ev)


def _agent_nics(o: Observed, lister: str = "the guest agent") -> CheckResult:
    """The agent's interfaces and their IPv4 addresses, against the source's (also cloud-init's
    table on the console: names, MACs and addresses, no drivers either)."""
    g, s = o.target_guest, o.source_guest
    ev = {
        "source": " ".join(f"{n.name}/{n.mac}/{n.ipv4 or 'no-ip'}" for n in s.nics) or "-",
        "target": " ".join(f"{n.name}/{n.mac}/{n.ipv4 or 'no-ip'}" for n in g.nics) or "-",
    }
    if not g.nics:
        return CheckResult("nics", Grade.FAIL, f"{lister} reports no network interface but lo", ev)
    if len(g.nics) < len(s.nics):
        return CheckResult("nics", Grade.FAIL, f"{len(g.nics)} interfaces where the source had {len(s.nics)}", ev)
    bare = [n for n in g.nics if not n.ipv4]
    if bare:
        return CheckResult(
            "nics", Grade.FAIL, f"interface {bare[0].name} got no IPv4 address{_new_mac(s.nics, bare[0])}", ev
        )
    return _nics_pass(s.nics, g.nics, ev, drivers=False)


def _new_mac(source: list, nic) -> str:
    """Why a NIC that is there and driven got no address, when the channels show it: the source had
    its address on another MAC, and configuration bound to a MAC (a NetworkManager keyfile's
    mac-address, netplan's match: macaddress, ifcfg's HWADDR, a .link file) does not apply to a new one."""
    had = [n for n in source if n.ipv4 and n.mac]
    if not nic.mac or not had or any(n.mac.lower() == nic.mac.lower() for n in had):
        return ""
    a = had[0]
    return (
        f": its MAC changed ({a.mac} -> {nic.mac}) and the source's address {a.ipv4} was on {a.mac}; "
        "a network configuration bound to the old MAC does not apply to it"
    )


def _service_app(o: Observed) -> CheckResult:
    """The operator's declared service, asked through the guest's own network on both sides."""
    a, src = o.target_app, o.source_app
    ev = {"detail": a.detail, "answer": a.body, "source": src.detail or "-"}
    if a.ok:
        return CheckResult("app", Grade.PASS, "", ev)
    known = [n for n in o.target_guest.nics if n.ipv4] if o.target_guest.nics else None
    if known == []:
        return CheckResult("app", Grade.FAIL, f"{a.detail}: the guest has no network address (see nics)", ev)
    return CheckResult("app", Grade.FAIL, a.detail, ev)


def _metadata(o: Observed) -> CheckResult:
    before = o.source_hw.metadata if o.source_hw else {}
    after = o.target_hw.metadata if o.target_hw else {}
    lost = sorted(k for k, v in before.items() if after.get(k) != v)
    ev = {"source": ",".join(sorted(before)) or "-", "lost": ",".join(lost) or "-"}
    if lost:
        return CheckResult("metadata", Grade.FAIL, f"the target reports no {', '.join(lost)}", ev)
    return CheckResult("metadata", Grade.PASS, "", ev)
