"""A ``template:`` image through the real campaign and cell workflows on Temporal's time-skipping
test server, on libvirt's in-process test driver: the source VM of each cell is a clone of the
template domain (overlays on its disk), which is never started nor changed; a template the source
host does not have ends its cell at provision as bad input naming the image, the template and the
host, after one attempt (never retried as a host fault)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from domain.model import Grade, GuestImage
from domain.vm import MARKER_OFFSET, DiskSpec, NicSpec, VmSpec
from tests.harness import leaked_vms, make_worker, run_campaign, small_plan
from toolbox import diskconv

pytestmark = pytest.mark.timeout(180)


async def test_template_images_are_cloned_per_cell_and_a_missing_one_is_bad_input(
    env, settings, tmp_path: Path, executor
) -> None:
    from drivers.libvirt.driver import LibvirtTestDriver

    # the operator's template on the source host (the test driver's in-process host is shared)
    disk = tmp_path / "golden.qcow2"
    diskconv.create(disk, "qcow2", 8 << 20)
    diskconv.write_marker(disk, "qcow2", MARKER_OFFSET, b"golden")
    tpl = f"tpl-{uuid.uuid4().hex[:6]}"
    host = LibvirtTestDriver("test:///default", state_dir=tmp_path / "operator")
    host.provision(VmSpec(tpl, 2, 320, [DiskSpec(str(disk), "qcow2", "virtio", 8 << 20)], [NicSpec("virtio")]))
    xml_before, sha_before = host._need(tpl).XMLDesc(0), hashlib.sha256(disk.read_bytes()).hexdigest()
    try:
        plan = small_plan(
            tmp_path,
            pairs=[["kvm", "xen"]],
            images=[
                GuestImage("golden", cpus=0, memory_mib=0, template=tpl),
                GuestImage("gone", cpus=0, memory_mib=0, template="tpl-nowhere"),
            ],
        )
        tq = f"tq-{uuid.uuid4().hex[:6]}"
        w, _ = make_worker(env.client, settings, tq, executor)
        async with w:
            res = await run_campaign(env.client, plan, tq, home=settings.home)
        by = {c.image: c for c in res.cells}

        golden = by["golden"]
        stages = {s.stage: s for s in golden.stages}
        assert stages["provision"].status == "ok" and stages["import"].status == "ok", golden.stages
        checks = {c.check: c for c in golden.checks}
        assert checks["metadata"].grade == Grade.PASS and checks["lifecycle"].grade == Grade.PASS
        # the clone had the template's vCPUs and memory (the target API reports what crossvisor moved)
        assert checks["boots"].grade == Grade.SKIPPED  # the test driver runs no guest

        gone = by["gone"]
        assert gone.grade == Grade.ERROR, gone
        reason = gone.checks[0].reason
        assert "image 'gone': template 'tpl-nowhere' does not exist on source host kvm-1" in reason, reason
        # refused once as bad input, and said so: not "infrastructure error after retries"
        assert "provision: bad input, not retried: BadInput:" in reason, reason
        prov = [s for s in gone.stages if s.stage == "provision"]
        assert prov and prov[0].attempts == 1, prov

        # the template: as it was, never started
        assert host._need(tpl).XMLDesc(0) == xml_before and not host._need(tpl).isActive()
        assert hashlib.sha256(disk.read_bytes()).hexdigest() == sha_before
        assert leaked_vms() == []
    finally:
        host.destroy(tpl)
        host.close()
