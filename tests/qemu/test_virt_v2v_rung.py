"""The virt-v2v rung for real: legacy-bios born on the ESXi stand-in (PVSCSI, root by kernel device
name, MODULES=dep) cannot boot on KVM (no virtio driver in its initramfs). virt-v2v -i disk converts
it and the cell's next round boots on KVM again; what that boot shows is the verdict.

Observed (Debian 12's virt-v2v 2.2): the initramfs now has virtio_blk (the target's console shows
the disk controller driven), but the kernel command line still says root=/dev/sda1 and the disk is
vda, so the guest still does not find its root: the rung is "not cured", with virt-v2v's own report
as evidence, and the cell stays a failure with the new cause. Minutes: virt-v2v runs its own
appliance under TCG."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from crossvisor.spec import load_spec
from domain.model import Grade
from tests.harness import run_on_own_server

pytestmark = [pytest.mark.qemu, pytest.mark.v2v, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[2]


async def test_virt_v2v_makes_a_vm_born_on_esxi_boot_on_kvm(libvirt_conn, settings, tmp_path: Path) -> None:
    spec = tmp_path / "v2v.yaml"
    spec.write_text(
        (ROOT / "examples/demo.yaml")
        .read_text()
        .replace("name: demo", "name: v2v-" + uuid.uuid4().hex[:6])
        .replace("file:lab.yaml", f"file:{ROOT / 'examples/lab.yaml'}")
        .replace("pairs: [[kvm, esxi], [esxi, kvm], [esxi, hyperv], [hyperv, xen]]", "pairs: [[esxi, kvm]]")
        .replace("remediate: [nic-config]", "remediate: [virt-v2v]")
        .replace("  - {name: portable, builtin: portable-bios, cpus: 1, memory_mib: 512}\n", "")
    )
    plan = load_spec(spec)
    res = await run_on_own_server(plan, settings)
    [cell] = res.cells
    checks = {c.check: c for c in cell.checks}
    boots = checks["boots"]
    assert cell.grade == Grade.FAIL and boots.grade == Grade.FAIL, [(c.check, c.grade, c.reason) for c in cell.checks]
    # unmodified: no driver for the disk; after virt-v2v: the driver is there, the root's name is not
    assert boots.reason.startswith("root device /dev/sda1 not found: the guest's initramfs has no driver"), boots.reason
    after = boots.evidence["after_remedies"]
    # virt-v2v rewrites the name to another SCSI-style one (seen: /dev/sda1 and /dev/sdb1), never vda
    assert "1af4:1042 (virtio-blk) is driven (virtio_blk)" in after, after
    assert re.search(r"names its root /dev/sd[a-z]1, a device name this hardware does not give it", after), after
    [v2v] = cell.remediations
    assert v2v.name == "virt-v2v" and v2v.status == "not-cured" and "virt-v2v" in v2v.changed
    assert "virt-v2v:" in v2v.evidence["report"]  # virt-v2v's own output is the rung's report
    assert not cell.remedy
    assert not [d.name() for d in libvirt_conn.listAllDomains() if d.name().startswith("cv-")]
