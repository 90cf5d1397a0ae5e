"""crossvisor on a NetBox as operators really have it (issue 19), end to end against the real NetBox.

The lab (``lab_dataset``) has no crossvisor role, fields or tag, an existing ``vmware`` cluster
type, unnamed devices, shared names and servers with only a primary IP. In order:
``netbox check`` names exactly what is missing and fails; ``netbox init`` creates it, reusing the
``vmware`` type, and is idempotent; ``check`` then points at the devices that almost match; after
the operator applies the fix it printed, ``check`` is ready, each skip reason printed once; a real
campaign runs on those hosts (keyed by device id) with leases and health written back.

Needs a NetBox nothing else has touched: ``conftest.py`` runs this module first, and it leaves a
fresh NetBox behind for the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crossvisor.spec import load_spec
from domain.model import Grade
from inventory.netbox_mapping import NetBoxMapping
from inventory.netbox_schema import CUSTOM_FIELDS
from inventory.netbox_source import NetBoxInventory
from tests.harness import make_worker, run_campaign, time_skipping_env
from tests.netbox.lab_dataset import Lab, load_lab

pytestmark = pytest.mark.netbox

REPO = Path(__file__).resolve().parents[2]

CHECK_SPEC = """\
name: lab-check
inventory: netbox
platforms:
  - {name: kvm, kind: kvm, select: {tag: alpha}}
  - {name: xen, kind: xen, firmware: [bios], nic_models: [netfront]}
  - {name: esx, kind: vsphere, disk_format: vmdk}
images:
  - {name: img0, disk_mib: 8}
pairs: [[kvm, xen]]
"""
# The campaign leaves the vSphere platform out: its hosts' endpoints (https://192.0.2.x/sdk) are
# data, and the campaign's sweeper opens every snapshot host.
CAMPAIGN_SPEC = """\
name: lab-run-{tag}
inventory: netbox
platforms:
  - {{name: kvm, kind: kvm, select: {{tag: alpha}}}}
  - {{name: xen, kind: xen, firmware: [bios], nic_models: [netfront]}}
images:
  - {{name: img0, disk_mib: 8}}
  - {{name: img1, disk_mib: 8}}
pairs: [[kvm, xen]]
concurrency: {{max_cells: 4}}
retry: {{max_attempts: 3, initial_interval_s: 0.2, backoff: 1.0, max_interval_s: 0.5}}
"""
# The operator's mapping file: libvirt's in-process test driver stands in for the hypervisors,
# still composed from each device's primary IP.
MAPPING_FILE = """\
endpoints:
  kvm: "test:///default?host={host}"
  xen: "test:///default?host={host}"
"""
HYPERVISOR_SERVERS = [
    "esx-akron",
    "esx-bing",
    "esx-02",
    "kvm-unnamed-dell",
    "kvm-unnamed-smc",
    "kvm-node-west",
    "kvm-node-camden",
    "kvm-dead",
    "kvm-old",
    "xcp-01",
    "xcp-unnamed",
    "xcp-noip",
]


class LabEnv:
    def __init__(self, nb, lab: Lab, tmp: Path, url: str, token: str):
        self.nb, self.lab, self.tmp, self.url, self.token = nb, lab, tmp, url, token
        self.spec = tmp / "lab.yaml"
        self.spec.write_text(CHECK_SPEC)
        self.token_file = tmp / "token"
        self.token_file.write_text(token)
        self.token_file.chmod(0o600)
        self.mapping_file = tmp / "netbox-mapping.yaml"
        self.mapping_file.write_text(MAPPING_FILE)

    def env(self, mapping: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NETBOX_", "CROSSVISOR_NETBOX_CONFIG"))}
        env.update(
            CROSSVISOR_NETBOX_URL=self.url,
            CROSSVISOR_NETBOX_TOKEN_FILE=str(self.token_file),
            CROSSVISOR_HOME=str(self.tmp / "home"),
        )
        if mapping:
            env["CROSSVISOR_NETBOX_CONFIG"] = str(self.mapping_file)
        return env

    def cli(self, *args: str, mapping: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "crossvisor.cli", *args],
            cwd=REPO,
            env=self.env(mapping),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        assert self.token not in proc.stdout + proc.stderr
        return proc

    def id(self, label: str) -> int:
        return self.lab.id(label)


@pytest.fixture(scope="module")
def lab(netbox_server, netbox_up, tmp_path_factory) -> LabEnv:
    nb = netbox_server.api()
    if nb.dcim.devices.count() or nb.extras.custom_fields.count():  # someone was here first
        proc = netbox_up(True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    env = LabEnv(nb, load_lab(nb), tmp_path_factory.mktemp("lab"), netbox_server.url, netbox_server.token)
    yield env
    proc = netbox_up(True)  # the other modules expect a NetBox without this lab
    assert proc.returncode == 0, proc.stderr[-2000:]


def errors(out: str) -> list[str]:
    return [line.removeprefix("ERROR  ") for line in out.splitlines() if line.startswith("ERROR  ")]


def test_check_on_the_pristine_lab_names_exactly_what_is_missing(lab: LabEnv) -> None:
    proc = lab.cli("netbox", "check", str(lab.spec))
    out = proc.stdout
    assert proc.returncode == 1, out
    assert errors(out) == [
        "device role hypervisor-host does not exist: no device can be a hypervisor host",
        "tag crossvisor-unhealthy does not exist: failed hosts cannot be taken out of service",
        "device custom field crossvisor_lease (json) does not exist: host leases (reserve/release)",
        "device custom field crossvisor_health_failures (integer) does not exist: host health",
    ]
    # the fix names the spec, the role to create, and the role the hosts already have
    assert f"fix: `crossvisor netbox init {lab.spec}` creates hypervisor-host" in out
    assert "roles in use: server (14 devices)" in out
    optional = [f.name for f in CUSTOM_FIELDS if not f.required]
    assert f"optional device custom fields missing: {', '.join(optional)}" in out
    # the existing types are read and mapped (vmware is vSphere), cloud types are not hypervisors
    assert "VMware (vmware) -> vsphere" in out and "KVM (kvm) -> kvm" in out and "XCP-ng (xcp-ng) -> xen" in out
    assert "AWS (aws) -> not a hypervisor" in out
    # the servers in hypervisor clusters almost match
    assert f"almost ({len(HYPERVISOR_SERVERS)}): in hypervisor clusters, but role 'server'" in out
    assert f"esx-01 (#{lab.id('esx-akron')}), esx-01 (#{lab.id('esx-bing')})" in out
    for name in ("kvm", "xen", "esx"):
        assert "ERROR no host selected: the device role hypervisor-host does not exist" in _platform_line(out, name)
    assert "result: NOT READY" in out

    # validate runs the same check: a spec that is fine, a NetBox that is not
    v = lab.cli("validate", str(lab.spec))
    assert v.returncode == 1
    # never "ok" first and "NOT READY" after: the spec is valid, the result line says if it can run
    assert v.stdout.startswith(f"{lab.spec}: spec valid, 1 cells; checking NetBox:") and "result: NOT READY" in v.stdout
    assert ": ok," not in v.stdout
    # listing hosts says why there are none instead of a raw HTTP 400, and fails
    h = lab.cli("inventory", "hosts", str(lab.spec))
    assert h.returncode == 1
    assert "kvm: no host selected: the device role hypervisor-host does not exist" in h.stderr
    assert "HTTP 400" not in h.stderr


def _platform_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"  {name} (kind "))


def test_init_creates_what_is_missing_reuses_vmware_and_is_idempotent(lab: LabEnv) -> None:
    types_before = sorted(t.slug for t in lab.nb.virtualization.cluster_types.all())
    proc = lab.cli("netbox", "init", str(lab.spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "created   device role hypervisor-host" in out
    assert "created   tag crossvisor-unhealthy" in out
    for f in CUSTOM_FIELDS:  # every field a driver or the inventory reads
        assert f"created   custom field {f.name} ({f.type})" in out
    assert "mapped    cluster type VMware (vmware): -> vsphere" in out
    assert "created   cluster type" not in out  # kvm, vmware and xcp-ng cover the spec's kinds: no twin
    assert sorted(t.slug for t in lab.nb.virtualization.cluster_types.all()) == types_before
    cfs = {c.name: c for c in lab.nb.extras.custom_fields.all()}
    for f in CUSTOM_FIELDS:
        assert "dcim.device" in cfs[f.name].object_types and cfs[f.name].type.value == f.type

    again = lab.cli("netbox", "init", str(lab.spec))
    assert again.returncode == 0
    assert "init: 0 created or extended" in again.stdout
    assert "created" not in again.stdout.replace("0 created", "")


def test_check_after_init_points_at_the_devices_that_almost_match(lab: LabEnv) -> None:
    proc = lab.cli("netbox", "check", str(lab.spec))
    out = proc.stdout
    assert proc.returncode == 1
    assert errors(out) == []  # nothing missing any more: only no host has the role yet
    assert "fix: give them role hypervisor-host if they are hypervisor hosts, or set netbox.roles: [server]" in out
    for name in ("kvm", "xen", "esx"):
        assert "no host selected: no device has role hypervisor-host" in _platform_line(out, name)
    # the other fix it offers works as well: map the role the lab already uses
    spec = lab.tmp / "by-role.yaml"
    spec.write_text(CHECK_SPEC + "netbox:\n  roles: [server]\n  filters: {hypervisor: 'yes'}\n")
    by_role = lab.cli("netbox", "check", str(spec))
    assert by_role.returncode == 0, by_role.stdout
    assert "hosts are devices with role server, hypervisor=yes, status active" in by_role.stdout
    # NetBox ignores a filter it does not know: said, not silently "all devices"
    assert "warn   filter hypervisor='yes' (netbox.filters) narrows nothing" in by_role.stdout


def test_after_the_operator_fix_check_is_ready_and_says_each_skip_once(lab: LabEnv) -> None:
    nb = lab.nb
    role = nb.dcim.device_roles.get(slug="hypervisor-host")
    for label in [*HYPERVISOR_SERVERS, "aws-gw", "backup-01"]:  # as check advised (and two that are not)
        nb.dcim.devices.get(lab.id(label)).update({"role": role.id})
    nb.dcim.devices.get(lab.id("kvm-dead")).update(
        {"custom_fields": {"mgmt_endpoint": "qemu+unix:///system?socket=/nonexistent/s", "cell_slots": 4}}
    )
    proc = lab.cli("netbox", "check", str(lab.spec), mapping=True)
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "result: ready" in out
    assert "devices: 14 candidates, 10 usable as hosts, 4 skipped:" in out
    skipped = {line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("  skipped (")}
    assert len(skipped) == 4
    expect = {
        "status 'offline'": "kvm-old",
        "cluster type 'AWS' (aws) is not a hypervisor type": "aws-gw",
        "no cluster and no platform": "backup-01",
        "no management address": "xcp-noip",
    }
    for reason, label in expect.items():
        assert out.count(reason) == 1, reason  # each reason once, not once per platform
        assert f"(#{lab.id(label)})" in out
    kvm_node = f"kvm-node-{lab.id('kvm-node-camden')}"
    dell = f"poweredge-r640-{lab.id('kvm-unnamed-dell')}"
    xcp = f"sys-1029p-{lab.id('xcp-unnamed')}"
    esx = f"esx-01-{lab.id('esx-akron')}, esx-01-{lab.id('esx-bing')}, esx-02"
    assert f"kvm (kind kvm, select {{'tag': 'alpha'}}): 3 hosts: kvm-dead, {kvm_node}, {dell}" in out
    assert f"xen (kind xen): 2 hosts: xcp-01, {xcp}" in out
    assert f"esx (kind vsphere): 3 hosts: {esx}" in out

    hosts = lab.cli("inventory", "hosts", str(lab.spec), mapping=True)
    assert hosts.returncode == 0, hosts.stderr
    assert f"{dell} (test:///default?host=192.0.2.21, slots 1)" in hosts.stdout
    assert hosts.stderr.count("status 'offline'") == 1

    # without the mapping file the default templates compose the endpoints from the primary IP
    inv = NetBoxInventory(lab.url, lab.token, mapping=NetBoxMapping())
    try:
        by_name = {h.name: h for h in inv.hosts()}
        # why a platform gets no host, for the campaign's skip reason
        assert inv.hosts({"kind": "hyperv"}) == []
        assert inv.no_host_reason({"kind": "hyperv"}) == (
            "none of the 10 usable hosts is of kind hyperv (kinds present: kvm x5, vsphere x3, xen x2)"
        )
        assert "matches none of the 5 kvm hosts" in inv.no_host_reason({"kind": "kvm", "site": "dm-akron"})
    finally:
        inv.close()
    assert by_name[dell].endpoint == "qemu+ssh://root@192.0.2.21/system"
    assert by_name[dell].inventory_id == str(lab.id("kvm-unnamed-dell"))
    assert by_name[f"esx-01-{lab.id('esx-akron')}"].endpoint == "https://192.0.2.11/sdk"
    assert by_name[f"esx-01-{lab.id('esx-akron')}"].driver == "vsphere"
    assert by_name[xcp].endpoint == "xen+ssh://root@192.0.2.32/system"
    assert len(by_name) == 10  # the duplicates are distinct hosts


async def test_campaign_runs_on_the_lab_hosts_by_device_id(lab: LabEnv, settings, monkeypatch) -> None:
    nb = lab.nb
    for k, v in lab.env(mapping=True).items():
        monkeypatch.setenv(k, v)
    for k in ("NETBOX_URL", "NETBOX_TOKEN", "NETBOX_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    spec = lab.tmp / "campaign.yaml"
    tag = uuid.uuid4().hex[:6]
    spec.write_text(CAMPAIGN_SPEC.format(tag=tag))
    plan = load_spec(spec)
    env = await time_skipping_env()
    try:
        with ThreadPoolExecutor(max_workers=8) as ex:
            w, _ = make_worker(env.client, settings, f"tq-{tag}", ex)
            async with w:
                res = await run_campaign(env.client, plan, w.task_queue, cid=f"lab-{tag}", home=settings.home)
    finally:
        await env.shutdown()
    assert [c.grade for c in res.cells] == [Grade.PASS, Grade.PASS], [c.checks for c in res.cells]
    names = [h.name for h in res.hosts]
    assert len(names) == len(set(names))
    kvm_node = f"kvm-node-{lab.id('kvm-node-camden')}"
    dell = f"poweredge-r640-{lab.id('kvm-unnamed-dell')}"
    xcp = f"sys-1029p-{lab.id('xcp-unnamed')}"
    assert {kvm_node, dell, xcp, "xcp-01", "kvm-dead"} <= set(names)
    by_name = {h.name: h for h in res.hosts}
    used = {c.source_host for c in res.cells} | {c.target_host for c in res.cells}
    assert {c.source_host for c in res.cells} <= {kvm_node, dell}  # never the dead host

    # health written back on the dead host, by device id
    dead = nb.dcim.devices.get(lab.id("kvm-dead"))
    assert dead.status.value == "failed"
    assert "crossvisor-unhealthy" in [t.slug for t in dead.tags]
    journal = list(nb.extras.journal_entries.filter(assigned_object_type="dcim.device", assigned_object_id=dead.id))
    assert any("health check failures, marked failed" in e.comments for e in journal)
    # leases written back on the hosts the cells used (unnamed and shared-name ones among them), all released
    for name in used:
        dev = nb.dcim.devices.get(int(by_name[name].inventory_id))
        assert not dev.custom_fields.get("crossvisor_lease"), name
        assert not dev.custom_fields.get("crossvisor_health_failures"), name
        comments = [
            e.comments
            for e in nb.extras.journal_entries.filter(assigned_object_type="dcim.device", assigned_object_id=dev.id)
        ]
        acquired = sum("lease acquired" in c for c in comments)
        assert acquired >= 1 and acquired == sum("lease released" in c for c in comments), name

    # the operator commands work on these hosts: leases listed by name and id, no crash on unnamed ones
    inv = NetBoxInventory(lab.url, lab.token)
    key = str(lab.id("kvm-unnamed-smc"))
    assert inv.acquire_lease(key, "op/held", note="by hand")
    try:
        leases = lab.cli("inventory", "leases", str(spec), mapping=True)
        assert leases.returncode == 0, leases.stderr
        assert f"sys-1029p-{key} (#{key}): op/held" in leases.stdout
    finally:
        inv.release_lease(key, "op/held")
        inv.close()
    cleared = lab.cli("inventory", "clear-health", str(spec), "kvm-dead", mapping=True)
    assert cleared.returncode == 0, cleared.stderr
    assert f"kvm-dead (#{lab.id('kvm-dead')}): back in service" in cleared.stdout
    assert nb.dcim.devices.get(lab.id("kvm-dead")).status.value == "active"
    shared = lab.cli("inventory", "clear-health", str(spec), "esx-01", mapping=True)
    assert shared.returncode == 2
    assert f"2 NetBox devices have that name (#{lab.id('esx-akron')}, #{lab.id('esx-bing')}); use the device id" in (
        shared.stderr
    )
