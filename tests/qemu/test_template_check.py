"""A ``template:`` image's template is asked of the source hosts before a campaign starts
(``validate --hosts``, ``campaign start``): a name the host does not have is refused then, naming
the image, the template and the host, and nothing starts. Real libvirtd: the template is a
defined, never started domain on this machine's qemu:///system, as on a lab's KVM host."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from toolbox import diskconv

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name: tplcheck
inventory: file:{lab}
platforms:
  - {{name: kvm, kind: kvm, profile: kvm, select: {{site: lab-a}}, disk_format: qcow2}}
  - {{name: esxi, kind: vsphere, driver: libvirt, profile: esxi, select: {{site: lab-a}}, disk_format: vmdk}}
images:
  - {{name: golden, template: {template}, app: {{tcp: 22}}}}
pairs: [[kvm, esxi]]
checks: [boots]
"""


@pytest.fixture
def template(libvirt_conn, tmp_path: Path):
    name = f"cvg-tpl-{uuid.uuid4().hex[:6]}"
    disk = tmp_path / "golden.qcow2"
    diskconv.create(disk, "qcow2", 8 << 20)
    dom = libvirt_conn.defineXML(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/>"
        "</disk></devices></domain>"
    )
    yield name
    dom.undefine()


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        CROSSVISOR_HOME=str(tmp_path / "home"),
        CROSSVISOR_TEMPORAL_ADDRESS="127.0.0.1:1",  # no server: the check comes first
    )
    return subprocess.run(
        [sys.executable, "-m", "crossvisor.cli", *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
    )


def _spec(tmp_path: Path, template: str) -> Path:
    spec = tmp_path / f"{template}.yaml"
    spec.write_text(SPEC.format(lab=ROOT / "examples/lab.yaml", template=template))
    return spec


def test_a_template_the_source_host_has_is_found(template: str, tmp_path: Path) -> None:
    r = _cli(tmp_path, "validate", "--hosts", str(_spec(tmp_path, template)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"image golden: template '{template}' on host kvm-01 (source platform kvm): found" in r.stdout


def test_a_missing_template_is_refused_before_the_campaign_starts(libvirt_conn, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "cvg-tpl-no-such-vm")
    want = (
        "image golden: template 'cvg-tpl-no-such-vm' does not exist on host kvm-01 "
        "(source platform kvm, libvirt qemu:///system)"
    )
    r = _cli(tmp_path, "validate", "--hosts", str(spec))
    assert r.returncode == 2 and want in r.stderr, r.stdout + r.stderr
    # without --hosts, validate stays offline and cannot know
    assert _cli(tmp_path, "validate", str(spec)).returncode == 0
    # campaign start asks the host before it asks Temporal: refused as bad input, nothing started
    r = _cli(tmp_path, "campaign", "start", str(spec))
    assert r.returncode == 2 and want in r.stderr, r.stdout + r.stderr
