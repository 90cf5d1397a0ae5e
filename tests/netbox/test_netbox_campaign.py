"""A campaign whose hosts come from a real NetBox: leases and health written back as journal
entries, custom fields, status and tags; two concurrent campaigns never double-book a host."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from domain.model import Concurrency, Grade, GuestImage, Platform, RetryPolicySpec
from domain.plan import CampaignPlan
from tests.harness import history_text, make_worker, run_campaign, time_skipping_env

pytestmark = pytest.mark.netbox


@pytest.fixture
def lab(netbox_server, tmp_path: Path, monkeypatch):
    """Three hypervisor hosts on a fresh site: two reachable (libvirt test driver), one dead."""
    from inventory.netbox_schema import ensure_schema

    nb = netbox_server.api()
    ensure_schema(nb)
    tag = "camp-" + uuid.uuid4().hex[:6]
    site = nb.dcim.sites.create(name=tag.upper(), slug=tag)
    mfr = nb.dcim.manufacturers.get(slug="cv-test") or nb.dcim.manufacturers.create(name="cv-test", slug="cv-test")
    dtype = nb.dcim.device_types.get(slug="cv-server") or nb.dcim.device_types.create(
        manufacturer=mfr.id, model="cv-server", slug="cv-server"
    )
    role = nb.dcim.device_roles.get(slug="hypervisor-host")
    types = {t.slug: t.id for t in nb.virtualization.cluster_types.all()}
    kvm_cl = nb.virtualization.clusters.create(name=f"{tag}-kvm", type=types["kvm"])
    xen_cl = nb.virtualization.clusters.create(name=f"{tag}-xen", type=types["xen"])
    devs = {}
    for name, cl, ep in (
        (f"{tag}-kvm-dead", kvm_cl, "qemu+unix:///system?socket=/nonexistent/s"),
        (f"{tag}-kvm-1", kvm_cl, "test:///default"),
        (f"{tag}-xen-1", xen_cl, "test:///default"),
    ):
        devs[name] = nb.dcim.devices.create(
            name=name,
            device_type=dtype.id,
            role=role.id,
            site=site.id,
            cluster=cl.id,
            status="active",
            custom_fields={"mgmt_endpoint": ep, "cell_slots": 1 if "dead" not in name else 4},
        ).id
    token_file = tmp_path / "token"
    token_file.write_text(netbox_server.token)
    token_file.chmod(0o600)
    monkeypatch.setenv("CROSSVISOR_NETBOX_URL", netbox_server.url)
    monkeypatch.setenv("CROSSVISOR_NETBOX_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("NETBOX_TOKEN", raising=False)
    yield nb, tag, devs
    # leave the shared NetBox as we found it: other tests count its devices
    for dev_id in devs.values():
        nb.dcim.devices.get(dev_id).delete()
    kvm_cl.delete()
    xen_cl.delete()
    site.delete()


def plan(tag: str, images: int = 1) -> CampaignPlan:
    return CampaignPlan(
        name=f"{tag}-{uuid.uuid4().hex[:4]}",
        platforms=[
            Platform("kvm", "kvm", "libvirt", select={"site": tag}),
            Platform("xen", "xen", "libvirt", select={"site": tag}, firmware=["bios"], nic_models=["netfront"]),
        ],
        images=[GuestImage(f"img{i}", disk_mib=8) for i in range(images)],
        pairs=[["kvm", "xen"]],
        concurrency=Concurrency(max_cells=4),
        retry=RetryPolicySpec(max_attempts=3, initial_interval_s=0.2, backoff=1.0, max_interval_s=0.5),
        inventory="netbox",
    )


async def test_campaign_on_netbox_hosts_writes_back(lab, settings, capfd, caplog) -> None:
    nb, tag, devs = lab
    env = await time_skipping_env()
    try:
        with ThreadPoolExecutor(max_workers=8) as ex:
            w, _ = make_worker(env.client, settings, f"tq-{uuid.uuid4().hex[:6]}", ex)
            async with w:
                first, second = await asyncio.gather(
                    run_campaign(env.client, plan(tag, images=2), w.task_queue, cid=f"{tag}-a", home=settings.home),
                    run_campaign(env.client, plan(tag, images=2), w.task_queue, cid=f"{tag}-b", home=settings.home),
                )
                history = history_text((await env.client.get_workflow_handle(f"{tag}-a").fetch_history()).to_json())
                cell_history = history_text(
                    (
                        await env.client.get_workflow_handle(f"{tag}-a.cell.{first.cells[0].cell_id}.1").fetch_history()
                    ).to_json()
                )
    finally:
        await env.shutdown()
    for res in (first, second):
        assert [c.grade for c in res.cells] == [Grade.PASS, Grade.PASS]
        assert {h.name for h in res.hosts} >= {f"{tag}-kvm-1", f"{tag}-xen-1"}  # snapshot of what NetBox said
        assert all(c.source_host == f"{tag}-kvm-1" for c in res.cells)

    # health written back: the dead host is failed + tagged + journaled, and skipped from now on
    dead = nb.dcim.devices.get(devs[f"{tag}-kvm-dead"])
    assert dead.status.value == "failed"
    assert "crossvisor-unhealthy" in [t.slug for t in dead.tags]
    # leases written back and all released; never two holders at once on a slot-1 host
    for name in (f"{tag}-kvm-1", f"{tag}-xen-1"):
        dev = nb.dcim.devices.get(devs[name])
        assert not dev.custom_fields.get("crossvisor_lease")
        entries = sorted(
            nb.extras.journal_entries.filter(assigned_object_type="dcim.device", assigned_object_id=devs[name]),
            key=lambda e: e.id,
        )
        held = 0
        acquired = 0
        for e in entries:
            if "lease acquired" in e.comments:
                held += 1
                acquired += 1
            elif "lease released" in e.comments:
                held -= 1
            assert held <= 1, f"{name} double-booked"
        # 2 campaigns x 2 cells at least; a reserve that got one host but not the other gives its
        # lease back and retries, which journals an extra acquire/release pair
        assert acquired >= 4 and held == 0
    dead_journal = list(
        nb.extras.journal_entries.filter(assigned_object_type="dcim.device", assigned_object_id=devs[f"{tag}-kvm-dead"])
    )
    assert any("health check failures, marked failed" in e.comments for e in dead_journal)
    # the NetBox token is nowhere: not in workflow history, logs or reports
    from crossvisor import report

    out = capfd.readouterr()
    secret = lab_token(nb)
    for where, text in (
        ("campaign history", history),
        ("cell history", cell_history),
        ("logs", out.out + out.err + caplog.text),
        ("html", report.render_html(first)),
        ("junit", report.render_junit(first)),
        ("json", report.render_json(first)),
    ):
        assert secret not in text, where
    assert "netbox" in history  # the inventory travels as a reference only


def lab_token(nb) -> str:
    return nb.token
