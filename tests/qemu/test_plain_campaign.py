"""The issue's "done when", as an operator meets it: a plain image with no crossvisor part, given as
``source:`` in a spec, moved kvm -> esxi by a real campaign (Temporal dev server, worker, libvirtd,
export, conversion to VMDK, import, boot): every check that one of its channels can observe is
graded, with that channel named; before, the cell was SKIPPED at baseline ("never reported")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.localstack import LocalStack
from toolbox.guest_images import build_plain_image

pytestmark = [pytest.mark.qemu, pytest.mark.demo, pytest.mark.timeout(3600)]  # a campaign on real guests (~24 min here)
ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name: own-image
inventory: file:{lab}
platforms:
  - {{name: kvm, kind: kvm, profile: kvm, select: {{site: lab-a}}, disk_format: qcow2}}
  - {{name: esxi, kind: vsphere, driver: libvirt, profile: esxi, select: {{site: lab-a}}, disk_format: vmdk}}
images:
  - name: golden
    source: {disk}
    cpus: 1
    memory_mib: 512
    app: {{tcp: 22}}
    ssh: {{credentials_ref: "file:{key}"}}
  - name: bare
    source: {disk}
    cpus: 1
    memory_mib: 512
pairs: [[kvm, esxi]]
checks: [boots, disks, cpu_memory, nics, app]
concurrency: {{max_cells: 1}}
retry: {{max_attempts: 2, initial_interval_s: 1, backoff: 2.0, max_interval_s: 10}}
"""


def test_an_operators_plain_image_given_as_source_is_graded_from_its_own_channels(libvirt_conn, tmp_path: Path) -> None:
    img = build_plain_image("plain-sshd")
    spec = tmp_path / "own.yaml"
    spec.write_text(SPEC.format(lab=ROOT / "examples/lab.yaml", disk=img.disk, key=img.ssh_key))
    s = LocalStack(tmp_path / "home")
    try:
        s.start_server()
        s.start_worker()
        r = s.cli("campaign", "start", str(spec), "--id", "own-image")
        assert r.returncode == 0, r.stderr
        out = tmp_path / "r.json"
        r = s.cli("report", "own-image", "--json", str(out), timeout=3000)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        s.stop()
    cells = {c["cell_id"]: c for c in json.loads(out.read_text())["cells"]}
    got = {
        cid: {ch["check"]: (ch["grade"], ch["evidence"].get("channel", "")) for ch in c["checks"]}
        for cid, c in cells.items()
    }
    assert got == {
        "kvm--esxi--golden": {
            "boots": ("pass", "console"),
            "disks": ("pass", "ssh"),
            "cpu_memory": ("pass", "ssh"),
            "nics": ("pass", "ssh"),
            "app": ("pass", "service-probe"),
        },
        "kvm--esxi--bare": {
            "boots": ("pass", "console"),
            "disks": ("unobservable", "none"),
            "cpu_memory": ("pass", "console"),
            "nics": ("unobservable", "none"),
            "app": ("unobservable", "none"),
        },
    }, got
    assert cells["kvm--esxi--golden"]["grade"] == "pass" and cells["kvm--esxi--bare"]["grade"] == "pass"
