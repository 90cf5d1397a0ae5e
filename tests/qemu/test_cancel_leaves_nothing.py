"""A cancel that arrives while a stage is inside a host call leaves nothing on the real libvirtd.

A stage blocked in libvirt (a define, a volume upload: C code) sees the cancel only once the call
returns; what the call made is on the host by then. Before, the cell cleaned up at once, found
nothing, and the VM and its overlay volume appeared afterwards, removed by no one (issue 26).
Here the stage is held at the point of the call, swallowing the cancel the way a call in C does,
and let go only after the old path would have finished the whole campaign.

Real parts: Temporal's dev server, the campaign and cell workflows, the real stage activities,
qemu:///system with a pool of the test's own. No guest is started.
"""

from __future__ import annotations

import asyncio
import threading
import typing
import uuid
from pathlib import Path

import libvirt
import pytest
from temporalio import activity
from temporalio.exceptions import CancelledError

import tests.harness as harness
from activities.stages.base import vm_prefix
from domain.control import CancelRequest
from domain.model import GuestImage, Platform
from drivers.libvirt import storage as libvirt_storage
from inventory.file_source import FileInventory
from tests.harness import campaign_result, cancel_requested, make_worker, small_plan, start_campaign
from workflows.campaign import CampaignWorkflow

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(240)]

URI = "qemu:///system"
PREFIX = "cvg-test-fc"  # CROSSVISOR_VM_PREFIX: every domain and volume of these tests starts with it


@pytest.fixture
def lab(tmp_path, monkeypatch, libvirt_conn):
    """A lab of two platforms on the real libvirtd, in a pool of the test's own (removed after)."""
    monkeypatch.setenv("CROSSVISOR_VM_PREFIX", PREFIX)
    pool = f"{PREFIX}-{uuid.uuid4().hex[:6]}"
    pool_path = tmp_path / "pool"
    lab = tmp_path / "real-lab.yaml"  # not lab.yaml: small_plan writes that one
    custom = f"custom: {{pool: {pool}, pool_path: '{pool_path}'}}"
    lab.write_text(
        "hosts:\n"
        f"  - {{name: kvm-1, kind: kvm, endpoint: '{URI}', site: s, slots: 2, {custom}}}\n"
        f"  - {{name: xen-1, kind: xen, endpoint: '{URI}', site: s, slots: 2, {custom}}}\n"
    )
    yield lab, pool
    for dom in libvirt_conn.listAllDomains():
        if dom.name().startswith(PREFIX):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    try:
        p = libvirt_conn.storagePoolLookupByName(pool)
    except libvirt.libvirtError:
        return
    if p.isActive():
        for v in p.listAllVolumes(0):
            v.delete(0)
        p.destroy()
    p.undefine()


def _plan(tmp_path: Path, lab: Path):
    return small_plan(
        tmp_path,
        platforms=[
            Platform("kvm", "kvm", "libvirt", disk_format="qcow2"),
            Platform("xen", "xen", "libvirt", disk_format="qcow2", firmware=["bios"]),
        ],
        pairs=[["kvm", "xen"]],
        images=[GuestImage("img", disk_mib=8)],
        inventory=f"file:{lab}",
    )


def _hold_swallowing_cancel(entered: threading.Event, release: threading.Event, cancelled: threading.Event) -> None:
    """Stay here until ``release`` (heartbeating, so the cancel is delivered), ignoring the cancel
    the way a libvirt call blocked in C does: it is seen only when the call returns."""
    entered.set()
    while not release.is_set():
        try:
            while not release.wait(0.2):
                activity.heartbeat()
        except CancelledError:
            cancelled.set()


def _left_on_host(conn, pool: str, campaign_id: str) -> list[str]:
    prefix = vm_prefix(campaign_id)
    left = [f"domain {d.name()}" for d in conn.listAllDomains() if d.name().startswith(prefix)]
    try:
        vols = conn.storagePoolLookupByName(pool).listAllVolumes(0)
    except libvirt.libvirtError:
        vols = []
    return left + [f"volume {v.name()}" for v in vols if v.name().startswith(prefix)]


async def _cancel_while_held(dev_env, settings, plan, executor, entered, release, done) -> tuple:
    """Start the campaign, cancel it once the stage is held, keep holding for as long as the old
    path needed to finish the campaign, then let the stage go; the campaign's result, and what it
    swept."""
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    w, _ = make_worker(dev_env.client, settings, tq, executor, sabotage=True)
    async with w:
        h = await start_campaign(dev_env.client, plan, tq)
        try:
            assert await asyncio.to_thread(entered.wait, 120), "the stage was never reached"
            await h.execute_update(CampaignWorkflow.cancel, CancelRequest("c1"))
            cell_wf = f"{h.id}.cell.kvm--xen--img.1"
            await cancel_requested(dev_env.client, cell_wf)
            try:  # the old path: cleanup, release and the final sweep ran meanwhile, the campaign ended
                await asyncio.wait_for(asyncio.shield(h.result()), 8)
                ended_while_held = True
            except TimeoutError:
                ended_while_held = False
        finally:
            release.set()
        res = await campaign_result(h, settings.home)
        # what the stage made after the cancel is on the host by now, whichever path ran
        assert await asyncio.to_thread(done.wait, 60), "the held stage never ended"
    return res, ended_while_held, h.id


def _provision_held(monkeypatch, done: threading.Event, before=None) -> None:
    """The provision activity of the tests' worker: ``before`` first (a hold), ``done`` set when
    the activity body ended, however it ended."""
    orig = harness.Sabotage._wrap

    def wrap(self, name, fn):
        if name != "provision":
            return orig(self, name, fn)

        def body(call):
            try:
                if before is not None:
                    before()
                out = fn(call)
                return out
            finally:
                done.set()

        body.__annotations__ = typing.get_type_hints(fn)
        return orig(self, name, body)

    monkeypatch.setattr(harness.Sabotage, "_wrap", wrap)


async def test_a_cancel_during_a_define_leaves_no_vm(
    dev_env, settings, tmp_path, executor, lab, libvirt_conn, monkeypatch
):
    lab_file, pool = lab
    plan = _plan(tmp_path, lab_file)
    entered, release, cancelled, done = (threading.Event() for _ in range(4))
    # held just before its host calls: the upload and the define follow once it is let go
    _provision_held(monkeypatch, done, lambda: _hold_swallowing_cancel(entered, release, cancelled))
    res, ended_while_held, cid = await _cancel_while_held(dev_env, settings, plan, executor, entered, release, done)

    assert cancelled.is_set(), "the cancel never reached the held stage"
    assert not ended_while_held, "the cell cleaned up while its provision still ran"
    assert res.status == "cancelled"
    assert _left_on_host(libvirt_conn, pool, cid) == []
    assert FileInventory(str(lab_file), settings.home / "inventory").leases() == {}


async def test_a_cancel_during_an_upload_leaves_no_volume(
    dev_env, settings, tmp_path, executor, lab, libvirt_conn, monkeypatch
):
    # held inside the overlay's upload, after its bytes landed; the cancel is then seen and the
    # define never comes: the volume is one no VM stands on
    lab_file, pool = lab
    plan = _plan(tmp_path, lab_file)
    entered, release, cancelled, done = (threading.Event() for _ in range(4))
    upload = libvirt_storage.HostStorage.upload

    def held_upload(self, name, src, expect_sha=""):
        got = upload(self, name, src, expect_sha)
        if name.endswith("-src-disk0.qcow2") and not entered.is_set():
            _hold_swallowing_cancel(entered, release, cancelled)
            if cancelled.is_set():
                raise CancelledError("cancelled after the upload returned")
        return got

    monkeypatch.setattr(libvirt_storage.HostStorage, "upload", held_upload)
    _provision_held(monkeypatch, done)
    res, ended_while_held, cid = await _cancel_while_held(dev_env, settings, plan, executor, entered, release, done)

    assert cancelled.is_set(), "the cancel never reached the held upload"
    assert not ended_while_held, "the cell cleaned up while its upload still ran"
    assert res.status == "cancelled"
    assert _left_on_host(libvirt_conn, pool, cid) == []
    assert FileInventory(str(lab_file), settings.home / "inventory").leases() == {}
