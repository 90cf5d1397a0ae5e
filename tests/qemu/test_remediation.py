"""The remediation ladder for real, with ODCA's three tiers in one campaign: a move that works
unmodified (pass), one that works only after a remediation crossvisor applied (warn, naming the
remedy and the failure it cured), one that no remediation on the ladder cures (fail). The worker is
killed with SIGKILL once a remediation has finished: the resumed campaign does not repeat it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from activities.execlog import ExecutionLog
from activities.stages.base import vm_prefix
from bench.localstack import LocalStack
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.qemu, pytest.mark.demo, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name: ladder
inventory: file:{lab}
platforms:
  - {{name: kvm, kind: kvm, profile: kvm, select: {{site: lab-a}}, disk_format: qcow2}}
  - {{name: esxi, kind: vsphere, driver: libvirt, profile: esxi, select: {{site: lab-a}}, disk_format: vmdk}}
  - {{name: hyperv, kind: hyperv, profile: hyperv-gen1, select: {{site: lab-a}}, disk_format: vpc, firmware: [bios]}}
  - {{name: xen, kind: xen, profile: xen-hvm, select: {{site: lab-a}}, disk_format: raw, firmware: [bios]}}
images:
  - {{name: legacy, builtin: legacy-bios, cpus: 1, memory_mib: 512}}
  - {{name: portable, builtin: portable-bios, cpus: 1, memory_mib: 512}}
pairs: [[hyperv, xen], [kvm, esxi]]
remediate: [nic-config]
concurrency: {{max_cells: 2}}
retry: {{max_attempts: 3, initial_interval_s: 1, backoff: 2.0, max_interval_s: 10}}
"""


def test_three_tiers_and_a_killed_worker_repeats_no_finished_remediation(libvirt_conn, tmp_path: Path) -> None:
    spec = tmp_path / "ladder.yaml"
    spec.write_text(SPEC.format(lab=ROOT / "examples/lab.yaml"))
    s = LocalStack(tmp_path / "home")
    try:
        s.start_server()
        first = s.start_worker()
        r = s.cli("campaign", "start", str(spec), "--id", "ladder")
        assert r.returncode == 0, r.stderr
        log = ExecutionLog(s.settings.home / "executions.jsonl")

        def remediated() -> list[dict]:
            return [e for e in log.read() if e["stage"] == "remediate" and e["event"] == "end"]

        wait_for(remediated, 1800, "a finished remediation", poll=1.0)
        os.killpg(first.pid, signal.SIGKILL)  # mid-cell: the round after the rung is under way
        first.wait()
        s.start_worker()
        out = tmp_path / "r.json"
        r = s.cli("report", "ladder", "--json", str(out), timeout=2400)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        s.stop()
    cells = {c["cell_id"]: c for c in json.loads(out.read_text())["cells"]}
    grades = {cid: c["grade"] for cid, c in cells.items()}
    assert grades == {
        "kvm--esxi--portable": "pass",  # works unmodified
        "kvm--esxi--legacy": "fail",  # its initramfs has no PVSCSI driver: nic-config is not tried
        "hyperv--xen--legacy": "warn",  # the NIC config bound to the old name: nic-config cures it
        "hyperv--xen--portable": "fail",  # no RTL8139 driver in the cloud kernel: nic-config is not tried
    }, grades
    warn = cells["hyperv--xen--legacy"]
    assert warn["remedy"] == "nic-config"
    nics = next(c for c in warn["checks"] if c["check"] == "nics")
    assert nics["grade"] == "warn" and nics["reason"].startswith("works after nic-config; unmodified: interface ens4")
    assert "not configured: the guest's network config names ens10" in nics["evidence"]["failed_unmodified"]
    [rung] = warn["remediations"]
    assert rung["name"] == "nic-config" and rung["status"] == "cured"
    assert "replaced: /etc/systemd/network/10-cv.network" in rung["evidence"]["report"]
    # the round after the rung ran on its own VM, in the cell's history
    assert [(x["stage"], x["round"]) for x in warn["stages"] if x["round"]] == [
        ("remediate", 1),
        ("import", 1),
        ("boot", 1),
        ("verify", 1),
    ]
    # a rung runs only for a failure it can change: no configuration adds a missing NIC driver or
    # finds a root disk, so those moves skip it (no appliance, no import, no boot) and say why
    still = cells["hyperv--xen--portable"]
    [skipped] = still["remediations"]
    assert skipped["status"] == "skipped", skipped
    assert "this move failed on nics: the guest has no driver for the NIC 10ec:8139" in skipped["changed"]
    assert not [x for x in still["stages"] if x["round"] and x["stage"] != "remediate"]
    [no_disk] = cells["kvm--esxi--legacy"]["remediations"]
    assert no_disk["status"] == "skipped" and "boots: root device /dev/vda1 not found" in no_disk["changed"]
    # no remediation that finished ran again after the kill: one end per rung and input, and the
    # only repeated starts are of the attempt the kill interrupted
    events = ExecutionLog(tmp_path / "home" / "executions.jsonl").read()
    ends = [(e["cell"]) for e in events if e["stage"] == "remediate" and e["event"] == "end"]
    assert sorted(ends) == sorted(set(ends)), ends
    # none of this campaign's VMs is left (other runs on the same libvirtd are theirs to clean)
    mine = vm_prefix("ladder")
    assert not [d.name() for d in libvirt_conn.listAllDomains() if d.name().startswith(mine)]
