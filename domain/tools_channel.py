"""The VMware Tools channel: what VMware Tools in a guest on vSphere report through vCenter
(``vm.guest``: tools running status, guest state, hostname, IP, NICs with addresses, disks), read by
``drivers.vsphere.driver.guest_tools`` and read here into an observation. Pure. An answer from the
vCenter simulator is labelled simulated: there no guest runs, the properties were set by whoever
drives the simulator.

The tools report the guest's state, its NICs (MAC, connected, addresses) and its filesystems (mount
point or drive letter, capacity). They report no vCPU or memory count and cannot read a disk's bytes.
"""

from __future__ import annotations

from domain.stage_io import GuestDisk, GuestNic, GuestObservation

CHANNEL = "vmware-tools"
RUNNING = "guestToolsRunning"


def running(report: dict) -> bool:
    return report.get("tools_running") == RUNNING


def summary(report: dict) -> str:
    """One line for the evidence, e.g. "tools guestToolsRunning, guest running, host web01,
    10.0.0.5; nics 00:50:56:..=10.0.0.5 (simulated)"."""
    if not report or "tools_running" not in report:
        return "no guest info from VMware Tools" + (" (simulated)" if report.get("simulated") else "")
    nics = ", ".join(f"{n['mac']}={'/'.join(n['ips']) or 'no-ip'}" for n in report.get("nics", [])) or "-"
    text = (
        f"tools {report.get('tools_running') or '?'}, guest {report.get('guest_state') or '?'}, "
        f"host {report.get('hostname') or '-'}, {report.get('ip') or 'no ip'}; nics {nics}"
    )
    return text + (" (simulated)" if report.get("simulated") else "")


def _ipv4(ips: list[str]) -> str:
    return next((a for a in ips if "." in a and ":" not in a), "")


def apply(report: dict | None, o: GuestObservation) -> GuestObservation:
    """Fill ``o`` with what the tools reported. Tools that do not run leave ``o`` as it was (no
    channel answered) with ``tools_note`` saying what vCenter reported instead; tools that run make
    the guest observed through this channel: it reached its init when the tools say the guest runs."""
    if not report:
        return o
    o.tools = summary(report)
    o.tools_simulated = bool(report.get("simulated"))
    if not running(report):
        o.tools_note = (
            f"vCenter reports tools {report.get('tools_running') or 'unknown'} "
            f"(status {report.get('tools_status') or '?'}, guest state {report.get('guest_state') or '?'})"
        )
        return o
    state = str(report.get("guest_state") or "")
    o.observed, o.note, o.tools_note = True, "", ""
    o.reached_init = o.complete = state == "running"
    if not o.reached_init:
        o.failure_kind = "tools-guest-not-running"
        o.failure = f"VMware Tools run but report the guest {state or 'in no state'}"
    o.hostname = str(report.get("hostname") or "") or o.hostname
    o.nics = [
        GuestNic(
            f"nic{i}",
            str(n.get("mac") or ""),
            "",
            "up" if n.get("connected") else "down",
            _ipv4([str(a) for a in n.get("ips") or []]),
        )
        for i, n in enumerate(report.get("nics") or [])
    ]
    o.filesystems = [
        GuestDisk(str(d.get("path") or ""), int(d.get("capacity") or 0)) for d in report.get("disks") or []
    ]
    if CHANNEL not in o.channels:
        o.channels = [*o.channels, CHANNEL]
    return o
