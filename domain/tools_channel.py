"""The VMware Tools channel: what VMware Tools in a guest on vSphere report through vCenter
(``vm.guest``: tools running status, guest state, hostname, IP, NICs with addresses, disks), read by
``drivers.vsphere.driver.guest_tools``. Pure. An answer from the vCenter simulator is labelled
simulated: there no guest runs, the properties were set by whoever drives the simulator."""

from __future__ import annotations

CHANNEL = "vmware-tools"


def running(report: dict) -> bool:
    return report.get("tools_running") == "guestToolsRunning"


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
