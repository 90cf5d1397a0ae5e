"""The inventory stays fresh: incremental pulls from a real NetBox (changed, failed, moved, new and
deleted devices; nothing when nothing changed), and a campaign on NetBox hosts that stops giving
new cells to a host marked failed in NetBox mid-campaign, within one refresh interval."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from domain.inventory_delta import apply_delta
from domain.model import Concurrency, Grade, GuestImage, Platform, RetryPolicySpec
from domain.plan import CampaignPlan
from inventory.netbox_schema import ensure_schema
from inventory.netbox_source import NetBoxInventory
from tests.harness import campaign_result, dev_server_env, make_worker, start_campaign
from workflows.campaign import CampaignWorkflow

pytestmark = pytest.mark.netbox


@pytest.fixture
def site_lab(netbox_server, tmp_path: Path, monkeypatch):
    """A fresh site with a kvm cluster (two hosts) and a xen cluster (one host, two slots); every
    endpoint is libvirt's test driver, so cells really run."""
    nb = netbox_server.api()
    ensure_schema(nb)
    tag = "fresh-" + uuid.uuid4().hex[:6]
    site = nb.dcim.sites.create(name=tag.upper(), slug=tag)
    mfr = nb.dcim.manufacturers.get(slug="cv-test") or nb.dcim.manufacturers.create(name="cv-test", slug="cv-test")
    dtype = nb.dcim.device_types.get(slug="cv-server") or nb.dcim.device_types.create(
        manufacturer=mfr.id, model="cv-server", slug="cv-server"
    )
    role = nb.dcim.device_roles.get(slug="hypervisor-host")
    ctypes = {t.slug: t.id for t in nb.virtualization.cluster_types.all()}
    clusters = {k: nb.virtualization.clusters.create(name=f"{tag}-{k}", type=ctypes[k]) for k in ("kvm", "xen")}

    def create(name: str, kind: str, slots: int = 1):
        return nb.dcim.devices.create(
            name=name,
            device_type=dtype.id,
            role=role.id,
            site=site.id,
            cluster=clusters[kind].id,
            status="active",
            custom_fields={"mgmt_endpoint": "test:///default", "cell_slots": slots},
        ).id

    devs = {
        f"{tag}-kvm-1": create(f"{tag}-kvm-1", "kvm"),
        f"{tag}-kvm-2": create(f"{tag}-kvm-2", "kvm"),
        f"{tag}-xen-1": create(f"{tag}-xen-1", "xen", slots=2),
    }
    token_file = tmp_path / "token"
    token_file.write_text(netbox_server.token)
    token_file.chmod(0o600)
    monkeypatch.setenv("CROSSVISOR_NETBOX_URL", netbox_server.url)
    monkeypatch.setenv("CROSSVISOR_NETBOX_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("NETBOX_TOKEN", raising=False)
    lab = {"nb": nb, "tag": tag, "devs": devs, "create": create, "clusters": clusters, "ctypes": ctypes}
    yield lab
    for dev_id in lab["devs"].values():  # leave the shared NetBox as we found it
        if dev := nb.dcim.devices.get(dev_id):
            dev.delete()
    for cl in clusters.values():
        cl.delete()
    site.delete()


def _fresh_cursor(inv: NetBoxInventory) -> str:
    """A cursor after everything done so far: wait out the overlap (re-reading recent changes is
    by design), then take NetBox's clock."""
    time.sleep(inv.change_overlap_s + 1.1)
    return inv.cursor_now()


def test_incremental_pull_sees_changes_and_deletions(netbox_server, site_lab) -> None:
    nb, tag, devs = site_lab["nb"], site_lab["tag"], site_lab["devs"]
    inv = NetBoxInventory(netbox_server.url, netbox_server.token)
    inv.change_overlap_s = 1  # the default (10 s) works the same, it only makes this test slower
    sel = {"kvm": {"site": tag, "kind": "kvm"}, "xen": {"site": tag, "kind": "xen"}}

    full = inv.changes_since(sel, "")
    assert full.full and full.cursor
    assert full.platform_hosts == {"kvm": [f"{tag}-kvm-1", f"{tag}-kvm-2"], "xen": [f"{tag}-xen-1"]}
    hosts, platforms = full.hosts, full.platform_hosts

    # nothing changed: nothing comes back, and the cursor moves on (NetBox's clock, not ours)
    cursor = _fresh_cursor(inv)
    quiet = inv.changes_since(sel, cursor)
    assert not quiet.full and quiet.hosts == [] and quiet.gone == {}
    assert datetime.fromisoformat(quiet.cursor) >= datetime.fromisoformat(cursor)

    # a host marked failed leaves service; the untouched one is not re-read
    cursor = _fresh_cursor(inv)
    dev = nb.dcim.devices.get(devs[f"{tag}-kvm-1"])
    dev.status = "failed"
    dev.save()
    failed = inv.changes_since(sel, cursor)
    assert failed.gone == {str(devs[f"{tag}-kvm-1"]): "status 'failed' in NetBox"}
    assert failed.hosts == []
    applied = apply_delta(hosts, platforms, failed)
    assert applied.platform_hosts["kvm"] == [f"{tag}-kvm-2"] and applied.removed == [f"{tag}-kvm-1"]
    hosts, platforms = applied.hosts, applied.platform_hosts

    # the xen cluster's type changes to kvm: its host is seen (through the cluster, not the device row)
    cursor = _fresh_cursor(inv)
    site_lab["clusters"]["xen"].type = site_lab["ctypes"]["kvm"]
    site_lab["clusters"]["xen"].save()
    moved = inv.changes_since(sel, cursor)
    assert [(h.name, h.kind) for h in moved.hosts] == [(f"{tag}-xen-1", "kvm")]
    assert moved.platform_hosts == {"kvm": [f"{tag}-xen-1"], "xen": []}
    applied = apply_delta(hosts, platforms, moved)
    assert applied.platform_hosts == {"kvm": [f"{tag}-kvm-2", f"{tag}-xen-1"], "xen": []}
    hosts, platforms = applied.hosts, applied.platform_hosts

    # a new device, a repaired one and a deleted one, in one pull
    cursor = _fresh_cursor(inv)
    devs[f"{tag}-kvm-3"] = site_lab["create"](f"{tag}-kvm-3", "kvm")
    dev.status = "active"
    dev.save()
    gone_id = devs.pop(f"{tag}-kvm-2")
    nb.dcim.devices.get(gone_id).delete()
    mixed = inv.changes_since(sel, cursor)
    assert sorted(h.name for h in mixed.hosts) == [f"{tag}-kvm-1", f"{tag}-kvm-3"]
    assert mixed.gone == {str(gone_id): "deleted from NetBox"}
    applied = apply_delta(hosts, platforms, mixed)
    assert applied.platform_hosts == {"kvm": [f"{tag}-kvm-1", f"{tag}-kvm-3", f"{tag}-xen-1"], "xen": []}
    assert applied.added == [f"{tag}-kvm-1", f"{tag}-kvm-3"] and applied.removed == [f"{tag}-kvm-2"]

    # a full pull agrees with the sum of the increments
    again = inv.changes_since(sel, "")
    assert again.platform_hosts == applied.platform_hosts


def _refresh_plan(tag: str, images: int, refresh_s: int) -> CampaignPlan:
    return CampaignPlan(
        name=f"{tag}-{uuid.uuid4().hex[:4]}",
        platforms=[
            Platform("kvm", "kvm", "libvirt", select={"site": tag}),
            Platform("xen", "xen", "libvirt", select={"site": tag}, firmware=["bios"], nic_models=["netfront"]),
        ],
        images=[GuestImage(f"img{i}", disk_mib=8) for i in range(images)],
        pairs=[["kvm", "xen"]],
        concurrency=Concurrency(max_cells=2),
        retry=RetryPolicySpec(max_attempts=3, initial_interval_s=0.2, backoff=1.0, max_interval_s=0.5),
        inventory="netbox",
        inventory_refresh_s=refresh_s,
    )


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def test_host_failed_in_netbox_mid_campaign_gets_no_new_cells(netbox_server, site_lab, settings) -> None:
    """Real Temporal dev server (real time: the refresh timer fires on the wall clock), real NetBox,
    real cells on libvirt's test driver. After the first cell is done, kvm-1 is set to failed
    through NetBox's API; every cell that starts later than one refresh interval (+ the refresh's
    own run time) after that runs on kvm-2, and the campaign completes."""
    nb, tag, devs = site_lab["nb"], site_lab["tag"], site_lab["devs"]
    refresh_s, images = 2, 8
    env = await dev_server_env()
    try:
        with ThreadPoolExecutor(max_workers=8) as ex:
            w, _ = make_worker(env.client, settings, f"tq-{uuid.uuid4().hex[:6]}", ex)
            async with w:
                handle = await start_campaign(env.client, _refresh_plan(tag, images, refresh_s), w.task_queue)
                while True:  # the first cell done (both kvm hosts have had the chance to get cells)
                    prog = await handle.query(CampaignWorkflow.progress)
                    if prog.counts.get("done", 0) >= 1:
                        break
                    assert prog.status not in ("finished", "stalled"), prog
                    await asyncio.sleep(0.1)
                failed_at = time.time()
                dev = nb.dcim.devices.get(devs[f"{tag}-kvm-1"])
                dev.status = "failed"
                dev.save()
                result = await campaign_result(handle, settings.home)
                history = (await handle.fetch_history()).to_json()
    finally:
        await env.shutdown()
    assert len(result.cells) == images
    assert all(c.grade == Grade.PASS for c in result.cells), [(c.cell_id, c.grade, c.reason) for c in result.cells]
    assert "refresh_inventory" in history
    deadline = failed_at + refresh_s + 3.0  # one interval, plus the refresh activity and a workflow task
    starts = sorted((_ts(c.started_at), c.source_host) for c in result.cells)
    late = [(t - failed_at, h) for t, h in starts if t > deadline]
    assert late, f"no cell started after the deadline (cells too fast to prove anything): {starts}"
    assert all(h == f"{tag}-kvm-2" for _, h in late), late
    early = [h for t, h in starts if t <= failed_at]
    assert f"{tag}-kvm-1" in early, f"kvm-1 never got a cell before it failed: {starts}"


def test_graphql_pull_equals_the_rest_pull(netbox_server, populated) -> None:
    """The full pull's GraphQL path (what ``hosts()`` uses) yields exactly what the REST path does,
    on the lab with tags, clusters of several types, a primary-IP endpoint and skipped devices."""
    graphql = NetBoxInventory(netbox_server.url, netbox_server.token)
    graphql.ensure_ready()
    assert graphql._graphql_candidates(graphql._device_tags()) is not None, "GraphQL path not taken"
    rest = NetBoxInventory(netbox_server.url, netbox_server.token)
    rest._graphql_filter = lambda: None  # type: ignore[method-assign]
    # NetBox caps every GraphQL list at MAX_PAGE_SIZE without saying so: pages of 2 must page through
    paged = NetBoxInventory(netbox_server.url, netbox_server.token, page_size=2)
    for select in ({}, {"kind": "kvm"}, {"tag": "fast"}):
        want = rest.hosts(select)
        assert graphql.hosts(select) == want, select
        assert paged.hosts(select) == want, select
        assert sorted(map(str, graphql.skipped)) == sorted(map(str, rest.skipped)), select
    assert {h.name for h in graphql.hosts({})} >= {"esx-01", "kvm-01", "kvm-02", "hv-01"}
    assert next(h for h in graphql.hosts({}) if h.name == "esx-01").tags == ["gpu"]
