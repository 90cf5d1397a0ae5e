"""Workers near their hosts: one worker per site, each on its site's task queue, run one campaign
whose hosts span two sites; no worker opens the other site's hosts; the package crosses sites
through the artifact store and is verified by hash on arrival.

Real Temporal (the time-skipping test server), real stage activities on the libvirt test driver
(real qemu-img conversions and OVA packages); only the host API is the in-process test driver.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from activities.routing import route_hosts
from activities.stages import StageEnv
from crossvisor.core.config import Settings, site_task_queue
from crossvisor.core.errors import WrongSite
from domain.model import Grade, Host, Platform
from tests.harness import campaign_result, corrupt_package_disk, small_plan, start_campaign
from tests.remote.sites import site_workers

pytestmark = pytest.mark.timeout(240)

SITES = ["lab-a", "lab-b"]
SOURCE_SIDE = {"reserve:source", "provision", "baseline", "export", "cleanup:source", "release"}
TARGET_SIDE = {"reserve:target", "convert", "import", "boot", "verify", "lifecycle", "cleanup:target"}


def two_site_plan(tmp: Path, **kw):
    """kvm-1 at lab-a, xen-1 at lab-b; cells both ways."""
    plan = small_plan(tmp, pairs=[["kvm", "xen"], ["xen", "kvm"]], **kw)
    lab = tmp / "lab.yaml"
    lab.write_text(
        "hosts:\n"
        "  - {name: kvm-1, kind: kvm, endpoint: 'test:///default', site: lab-a, slots: 2}\n"
        "  - {name: xen-1, kind: xen, endpoint: 'test:///default', site: lab-b, slots: 2}\n"
    )
    plan.platforms = [
        Platform("kvm", "kvm", "libvirt", select={"site": "lab-a"}, disk_format="qcow2"),
        Platform(
            "xen",
            "xen",
            "libvirt",
            select={"site": "lab-b"},
            disk_format="raw",
            firmware=["bios"],
            nic_models=["netfront", "e1000"],
        ),
    ]
    return plan


async def test_two_site_workers_run_one_campaign(env, tmp_path: Path, executor) -> None:
    plan = two_site_plan(tmp_path)
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "state"
    arrivals: list[dict] = []
    async with site_workers(env.client, home, tq, SITES, executor) as sites:
        sites["lab-b"].sabotage.after["convert"] = lambda call, out: arrivals.append(
            (call.cell.source_host.site, out.evidence)
        )
        sites["lab-a"].sabotage.after["convert"] = lambda call, out: arrivals.append(
            (call.cell.source_host.site, out.evidence)
        )
        res = await campaign_result(await start_campaign(env.client, plan, tq), home)
    assert [c.grade for c in res.cells] == [Grade.PASS, Grade.PASS], [c.checks for c in res.cells]
    # no worker saw the other site's host
    assert set(sites["lab-a"].env.opened) == {"kvm-1"}
    assert set(sites["lab-b"].env.opened) == {"xen-1"}
    # the campaign's leak sweep ran at each site, over that site's host only
    assert sites["lab-a"].campaign.swept == {"kvm-1": 1} and sites["lab-b"].campaign.swept == {"xen-1": 1}
    for cell in res.cells:
        src_site, tgt_site = ("lab-a", "lab-b") if cell.source == "kvm" else ("lab-b", "lab-a")
        # every stage ran where its host is: the source's at the source's site, the target's (and
        # the conversion feeding it) at the target's; reserve and cleanup split, one call per host
        assert sites[src_site].stages_of(cell.cell_id) == SOURCE_SIDE, sites[src_site].calls
        assert sites[tgt_site].stages_of(cell.cell_id) == TARGET_SIDE, sites[tgt_site].calls
    # the package travelled lab-a -> lab-b (and back): verified by hash where it arrived
    verified = {src: ev.get("package_arrival", "") for src, ev in arrivals}
    assert verified["lab-a"].startswith("sha256 ") and "verified at site lab-b" in verified["lab-a"]
    assert "verified at site lab-a" in verified["lab-b"]


async def test_a_package_damaged_in_the_store_is_an_infrastructure_error(env, tmp_path: Path, executor) -> None:
    """The store's copy changes after the export recorded its hash: the target site refuses it
    (retried as infrastructure, then the cell is an error naming the cause), never a grade."""
    plan = two_site_plan(tmp_path)
    plan.pairs = [["kvm", "xen"]]
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "state"
    async with site_workers(env.client, home, tq, SITES, executor) as sites:
        sites["lab-a"].sabotage.after["export"] = lambda call, out: corrupt_package_disk(out.package)
        res = await campaign_result(await start_campaign(env.client, plan, tq), home)
    cell = res.cells[0]
    assert cell.grade == Grade.ERROR
    convert = [s for s in cell.stages if s.stage == "convert"]
    assert convert and convert[0].status == "error"
    assert "arrived at site lab-b" in convert[0].reason and "incomplete or corrupt" in convert[0].reason
    converts = [stage for _, stage in sites["lab-b"].calls if stage == "convert"]
    assert len(converts) == plan.retry.max_attempts  # retried as infrastructure
    assert set(sites["lab-b"].env.opened) == {"xen-1"}  # cleanup still ran at lab-b, on its own host


def test_a_site_worker_refuses_another_sites_host(tmp_path: Path) -> None:
    s = Settings()
    s.home, s.site, s.site_queues = tmp_path, "lab-a", "lab-a,lab-b"
    env = StageEnv(s)
    with pytest.raises(WrongSite, match=r"host xen-1 is at site 'lab-b'; this worker serves site 'lab-a'"):
        env.driver(Host("xen-1", "xen", "libvirt", "test:///default", site="lab-b"))
    assert not env.opened


def test_routing_follows_the_sites_that_have_workers() -> None:
    s = Settings()
    hosts = [Host(n, "kvm", "libvirt", "test:///default", site=site) for n, site in (("a", "lab-a"), ("b", "lab-b"))]
    hosts.append(Host("c", "kvm", "libvirt", "test:///default"))
    s.site_queues = "lab-b"
    assert [h.task_queue for h in route_hosts(hosts, s, "tq")] == ["", "tq@lab-b", ""]
    s.site_queues = "*"
    assert [h.task_queue for h in route_hosts(hosts, s, "tq")] == ["tq@lab-a", "tq@lab-b", ""]
    s.site_queues = ""
    assert [h.task_queue for h in route_hosts(hosts, s, "tq")] == ["", "", ""]
    assert site_task_queue("crossvisor", "lab-a") == "crossvisor@lab-a"


def test_the_compose_stack_runs_one_worker_per_site(root: Path) -> None:
    import yaml

    services = yaml.safe_load((root / "deploy" / "docker-compose.yml").read_text())["services"]
    workers = {n: svc for n, svc in services.items() if n.startswith("worker-")}
    sites = [svc["environment"].get("CROSSVISOR_SITE") for svc in workers.values()]
    assert len(workers) >= 2 and all(sites) and len(set(sites)) == len(sites)  # one worker per site
    for svc in workers.values():
        # every worker runs workflows: each one must know every site that has a worker
        assert set(svc["environment"]["CROSSVISOR_SITE_QUEUES"].split(",")) == set(sites)
    # one state volume for all: the artifact store packages cross sites through, and the results
    assert len({tuple(svc["volumes"]) for svc in workers.values()}) == 1
