"""The remediation ladder for real, and a worker killed with SIGKILL once a remediation has
finished: the resumed campaign does not repeat it, and the cell still ends as ODCA's middle tier
(warn, naming the remedy and the failure it cured). The demo campaign (test_demo_campaign.py)
pins the ladder's outcomes across all three tiers; this test is about the kill."""

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
pairs: [[hyperv, xen]]
remediate: [nic-config]
concurrency: {{max_cells: 2}}
retry: {{max_attempts: 3, initial_interval_s: 1, backoff: 2.0, max_interval_s: 10}}
"""


def test_a_killed_worker_repeats_no_finished_remediation(libvirt_conn, tmp_path: Path) -> None:
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
    warn = cells["hyperv--xen--legacy"]
    assert warn["grade"] == "warn" and warn["remedy"] == "nic-config", warn["grade"]
    [rung] = warn["remediations"]
    assert rung["name"] == "nic-config" and rung["status"] == "cured"
    # the round after the rung ran on its own VM, in the cell's history
    assert [(x["stage"], x["round"]) for x in warn["stages"] if x["round"]] == [
        ("remediate", 1),
        ("import", 1),
        ("boot", 1),
        ("verify", 1),
    ]
    # no remediation that finished ran again after the kill: one end per rung and input, and the
    # only repeated starts are of the attempt the kill interrupted
    events = ExecutionLog(tmp_path / "home" / "executions.jsonl").read()
    ends = [(e["cell"]) for e in events if e["stage"] == "remediate" and e["event"] == "end"]
    assert sorted(ends) == sorted(set(ends)), ends
    # none of this campaign's VMs is left (other runs on the same libvirtd are theirs to clean)
    mine = vm_prefix("ladder")
    assert not [d.name() for d in libvirt_conn.listAllDomains() if d.name().startswith(mine)]
