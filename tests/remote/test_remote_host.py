"""A libvirt host across the network (tests/remote/conftest.py): credentials that work and ones
that do not, disks that move only as storage volumes through libvirt's streams, and a whole cell
from this machine's libvirtd to the remote one, with real QEMU boots on both.

The remote host's pool, domain state and logs are on tmpfs mounts of its own mount namespace: a
path that exists there does not exist here, so anything the worker read or wrote directly on the
host would fail. Each test checks that it never did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest

from crossvisor.core.credentials import CredentialError
from domain.guest_evidence import parse
from domain.model import Concurrency, Grade, GuestImage, Platform, RetryPolicySpec
from domain.plan import CampaignPlan
from domain.vm import MARKER_OFFSET, DiskSpec, NicSpec, VmSpec
from drivers.libvirt.driver import LibvirtDriver
from tests.harness import campaign_result, history_text, start_campaign
from tests.remote.conftest import PREFIX, REPO, RemoteHost
from tests.remote.sites import site_workers
from toolbox import diskconv

# needs this machine's libvirtd + QEMU as well as the remote host the fixture starts
pytestmark = [pytest.mark.remote, pytest.mark.qemu, pytest.mark.timeout(900)]


def remote_driver(rh: RemoteHost, state: Path, **kw) -> LibvirtDriver:
    args = dict(
        username=rh.user,
        credentials_ref=f"env:{rh.password_env}",
        state_dir=state,
        host="kvm-remote-1",
        pool=rh.pool,
        pool_path=rh.pool_path,
    )
    args.update(kw)
    return LibvirtDriver(rh.tcp_uri, **args)


def test_sasl_password_connects_and_a_wrong_one_is_refused_naming_the_host(remote_host, tmp_path, monkeypatch):
    rh = remote_host
    drv = remote_driver(rh, tmp_path)
    try:
        assert drv.conn.getURI().startswith("qemu+tcp://") and isinstance(drv.list_vms(PREFIX), list)
    finally:
        drv.close()
    monkeypatch.setenv("CVR_WRONG_PW", "not-the-password-42")
    with pytest.raises(CredentialError) as wrong:
        remote_driver(rh, tmp_path, credentials_ref="env:CVR_WRONG_PW")
    msg = str(wrong.value)
    assert "kvm-remote-1" in msg and rh.addr in msg and "rejected the credentials of 'cvr-worker'" in msg
    assert "env:CVR_WRONG_PW" in msg and "not-the-password-42" not in msg
    with pytest.raises(CredentialError, match=r"kvm-remote-1 .* rejected .*no credentials_ref configured"):
        remote_driver(rh, tmp_path, credentials_ref="")


def test_a_client_certificate_connects_without_a_password(remote_host, tmp_path):
    rh = remote_host
    drv = LibvirtDriver(rh.tls_uri, state_dir=tmp_path, host="kvm-remote-1", pki_path=str(rh.pki_client))
    try:
        assert "pkipath=" in drv.conn.getURI() and isinstance(drv.list_vms(PREFIX), list)
    finally:
        drv.close()
    partial = tmp_path / "pki-partial"
    partial.mkdir()
    shutil.copy(rh.pki_client / "cacert.pem", partial)
    with pytest.raises(CredentialError, match=r"kvm-remote-1 .*pki_path .* lacks clientcert.pem, clientkey.pem"):
        LibvirtDriver(rh.tls_uri, state_dir=tmp_path, host="kvm-remote-1", pki_path=str(partial))


def test_an_ssh_key_connects_and_an_unauthorized_one_is_refused_naming_the_host(remote_host, remote_ssh, tmp_path):
    """qemu+libssh://: the worker's key and its known_hosts (the host key is checked, never
    trusted on first use); libvirt runs its helper on the remote host, which reaches that host's
    own libvirtd socket (one this machine does not have: its /run/libvirt is the remote's tmpfs)."""
    rs, rh = remote_ssh, remote_host
    drv = LibvirtDriver(
        rs.uri,
        state_dir=tmp_path,
        host="kvm-remote-1",
        ssh_key=str(rs.key),
        known_hosts=str(rs.known_hosts),
        pool=rh.pool,
        pool_path=rh.pool_path,
    )
    try:
        assert drv.conn.getURI().startswith("qemu+libssh://") and isinstance(drv.list_vms(PREFIX), list)
        # the same libvirtd as over TCP: a pool made through one is seen through the other
        drv.storage.pool()
        assert not Path(rh.pool_path).exists() and rh.sees(rh.pool_path)
    finally:
        drv.close()
    with pytest.raises(CredentialError) as refused:
        LibvirtDriver(
            rs.uri, state_dir=tmp_path, host="kvm-remote-1", ssh_key=str(rs.other_key), known_hosts=str(rs.known_hosts)
        )
    msg = str(refused.value)
    assert (
        "kvm-remote-1" in msg
        and rh.addr in msg
        and f"rejected the credentials of 'root' (ssh key {rs.other_key})" in msg
    )
    stranger = tmp_path / "known_hosts"
    stranger.write_text("")  # a host key the worker has never seen: refused, not learned
    with pytest.raises(CredentialError, match=r"kvm-remote-1 .*ssh host key could not be verified against known_hosts"):
        LibvirtDriver(rs.uri, state_dir=tmp_path, host="kvm-remote-1", ssh_key=str(rs.key), known_hosts=str(stranger))
    assert stranger.read_text() == ""
    with pytest.raises(CredentialError, match=r"known_hosts needs qemu\+libssh"):
        LibvirtDriver(
            rs.uri.replace("qemu+libssh://", "qemu+ssh://"),
            state_dir=tmp_path,
            host="kvm-remote-1",
            ssh_key=str(rs.key),
            known_hosts=str(rs.known_hosts),
        )


def _volumes(drv: LibvirtDriver) -> dict[str, str]:
    return {v.name(): v.path() for v in drv.storage.pool().listAllVolumes(0)}


def test_disks_move_only_as_volumes(remote_host, vm_prefix, tmp_path):
    """A two-layer local disk reaches the host as content volumes plus the VM's own overlay; it
    comes back (flattened) through a download stream; nothing the host stores exists here."""
    rh = remote_host
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    diskconv.create(base, "qcow2", 16 << 20)
    diskconv.write_marker(base, "qcow2", MARKER_OFFSET, b"base-layer-marker".ljust(32, b"\0"))
    diskconv.create_overlay(top, base, "qcow2")
    marker = uuid.uuid4().bytes * 2
    diskconv.write_marker(top, "qcow2", MARKER_OFFSET, marker)
    drv = remote_driver(rh, tmp_path / "drv")
    names = [f"{vm_prefix}vol-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    try:
        spec = VmSpec(names[0], 1, 128, [DiskSpec(str(top), "qcow2", "virtio", 0)], [NicSpec("virtio")])
        hw = drv.provision(spec)
        assert hw.disks[0].path == f"{rh.pool}/{names[0]}-disk0.qcow2" and hw.disks[0].capacity_bytes == 16 << 20
        vols = _volumes(drv)
        content = sorted(n for n in vols if n.startswith(f"{vm_prefix}base-") and not n.endswith(".ok"))
        assert len(content) == 2 and all(f"{n}.ok" in vols for n in content)
        # the host's files exist on the host, not here: the worker can only have used the API
        assert not Path(rh.pool_path).exists() and rh.sees(rh.pool_path)
        for path in vols.values():
            assert path.startswith(rh.pool_path + "/") and not Path(path).exists() and rh.sees(path)
        assert drv.read_disk(names[0], 0, MARKER_OFFSET, len(marker)) == marker
        back = tmp_path / "back.qcow2"
        drv.download_disk(names[0], 0, back)
        assert diskconv.compare(back, "qcow2", top, "qcow2") and not diskconv.info(back, "qcow2").backing_file
        # a second VM on the same disk: its layers are on the host already, only its overlay is new
        drv.provision(VmSpec(names[1], 1, 128, [DiskSpec(str(top), "qcow2", "virtio", 0)], [NicSpec("virtio")]))
        assert set(_volumes(drv)) - set(vols) == {f"{names[1]}-disk0.qcow2"}
        drv.destroy(names[0])
        drv.destroy(names[1])
        left = _volumes(drv)
        assert not [n for n in left if n.startswith(tuple(names))]  # the VMs' own volumes are gone
        assert set(content) <= set(left)  # the content stays for the next VM of this disk
    finally:
        for n in names:
            drv.destroy(n)
        drv.close()


# -- a whole cell: this machine's libvirtd (site lab-a) -> the remote host (site lab-b) --------------


@pytest.fixture
def local_pool():
    """A pool of our own on this machine's libvirtd (shared with others): removed with all it holds."""
    if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode != 0:
        subprocess.run(["bash", str(REPO / "deploy" / "libvirt" / "libvirtd-up.sh")], check=True, timeout=60)
    name = f"{PREFIX}local-{uuid.uuid4().hex[:6]}"
    path = f"/var/lib/libvirt/{name}"
    yield name, path
    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        try:
            pool = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            pool = None
        if pool is not None:
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            if pool.isActive():
                pool.destroy()
            pool.undefine()
    finally:
        conn.close()
        shutil.rmtree(path, ignore_errors=True)


def _lab(tmp: Path, rh: RemoteHost, local_pool: tuple[str, str], password_ref: str) -> Path:
    lab = tmp / "lab.yaml"
    hosts = [
        {
            "name": f"{PREFIX}here",
            "kind": "kvm",
            "endpoint": "qemu:///system",
            "site": "lab-a",
            "slots": 1,
            "custom": {"pool": local_pool[0], "pool_path": local_pool[1]},
        },
        {
            "name": f"{PREFIX}there",
            "kind": "kvm",
            "endpoint": rh.tcp_uri,
            "site": "lab-b",
            "slots": 1,
            "credentials_ref": password_ref,
            "custom": {"username": rh.user, "pool": rh.pool, "pool_path": rh.pool_path},
        },
    ]
    lab.write_text(json.dumps({"hosts": hosts}))  # YAML is a superset of JSON
    return lab


async def _histories(client, campaign_id: str, cell_id: str) -> str:
    """The campaign's and the cell's histories, payloads decoded (secrets would hide in base64)."""
    texts = []
    for wid in (campaign_id, f"{campaign_id}.cell.{cell_id}.1"):
        texts.append(history_text((await client.get_workflow_handle(wid).fetch_history()).to_json()))
    return "\n".join(texts)


async def _run_on_both_sites(client, plan: CampaignPlan, home: Path, executor):
    """The plan with a worker per site (lab-a: this host, lab-b: the remote one): its result, the
    histories of the campaign and its first cell, and the site workers (what each one opened)."""
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    async with site_workers(client, home, tq, ["lab-a", "lab-b"], executor) as sites:
        handle = await start_campaign(client, plan, tq)
        res = await campaign_result(handle, home)
        history = await _histories(client, handle.id, res.cells[0].cell_id)
    return res, history, sites


def _plan(lab: Path, image: GuestImage, checks: list[str]) -> CampaignPlan:
    return CampaignPlan(
        name=f"remote-{uuid.uuid4().hex[:6]}",
        platforms=[
            Platform("here", "kvm", "libvirt", select={"site": "lab-a"}, profile="kvm", disk_format="qcow2"),
            Platform("there", "kvm", "libvirt", select={"site": "lab-b"}, profile="kvm", disk_format="qcow2"),
        ],
        images=[image],
        checks=checks,
        pairs=[["here", "there"]],
        concurrency=Concurrency(max_cells=1),
        retry=RetryPolicySpec(max_attempts=2, initial_interval_s=1, backoff=2.0, max_interval_s=5),
        inventory=f"file:{lab}",
    )


async def test_a_cell_moves_from_this_host_to_the_remote_host(
    dev_env, remote_host, vm_prefix, local_pool, tmp_path, executor
):
    """portable-bios born here (baseline boot on this machine's libvirtd), exported through a
    download stream, converted, uploaded into the remote pool and booted there; the guest's own
    report graded the move. Two site workers; neither opened the other's host."""
    rh = remote_host
    lab = _lab(tmp_path, rh, local_pool, f"env:{rh.password_env}")
    checks = ["boots", "disks", "cpu_memory", "nics", "app", "metadata", "lifecycle"]
    plan = _plan(lab, GuestImage("portable", cpus=1, memory_mib=512, builtin="portable-bios"), checks)
    home = tmp_path / "state"
    res, history, sites = await _run_on_both_sites(dev_env.client, plan, home, executor)
    cell = res.cells[0]
    assert cell.grade == Grade.PASS, [(c.check, c.grade, c.reason) for c in cell.checks]
    assert {c.check for c in cell.checks if c.grade == Grade.PASS} == set(checks)
    assert set(sites["lab-a"].env.opened) == {f"{PREFIX}here"}
    assert set(sites["lab-b"].env.opened) == {f"{PREFIX}there"}
    # the campaign's leak sweep too: each site's worker swept its own host only
    assert sites["lab-a"].campaign.swept == {f"{PREFIX}here": 1}
    assert sites["lab-b"].campaign.swept == {f"{PREFIX}there": 1}
    assert {"boot", "import", "verify"} <= sites["lab-b"].stages_of(cell.cell_id)
    assert {"provision", "baseline", "export"} <= sites["lab-a"].stages_of(cell.cell_id)
    # the guest booted on the remote host read its own disk there: the console came over the stream
    target = parse((home / cell.artifacts["target console"]).read_text())
    source = parse((home / cell.artifacts["source console"]).read_text())
    assert target.ready and target.image == "portable-bios" and source.ready
    assert target.disks[0].marker == source.disks[0].marker and target.boot_id != source.boot_id
    # everything the remote host keeps is in its own namespace, none of it visible here
    assert not Path(rh.pool_path).exists() and rh.sees(rh.pool_path)
    drv = remote_driver(rh, tmp_path / "check")
    try:
        vols = _volumes(drv)
        assert vols and all(not Path(p).exists() and rh.sees(p) for p in vols.values())
        assert not drv.list_vms(vm_prefix)  # cleaned up on the remote host by its site's worker
    finally:
        drv.close()
    assert os.environ[rh.password_env] not in history  # the password never entered history


async def test_a_rejected_password_ends_the_cell_at_once_naming_the_host(
    dev_env, remote_host, vm_prefix, local_pool, tmp_path, executor, monkeypatch
):
    rh = remote_host
    monkeypatch.setenv("CVR_STALE_PW", "an-old-password-7")
    lab = _lab(tmp_path, rh, local_pool, "env:CVR_STALE_PW")
    plan = _plan(lab, GuestImage("blank", disk_mib=8), ["boots"])
    plan.retry = RetryPolicySpec(max_attempts=5, initial_interval_s=0.2, backoff=1.0, max_interval_s=0.2)
    home = tmp_path / "state"
    res, history, sites = await _run_on_both_sites(dev_env.client, plan, home, executor)
    cell = res.cells[0]
    assert cell.grade == Grade.ERROR
    reserve = next(s for s in cell.stages if s.stage == "reserve")
    assert reserve.status == "error"
    assert f"{PREFIX}there" in reserve.reason and "rejected the credentials of 'cvr-worker'" in reserve.reason
    attempts = [s for c, s in sites["lab-b"].calls if c == cell.cell_id and s == "reserve:target"]
    assert attempts == ["reserve:target"]  # a wrong password is never retried
    assert "an-old-password-7" not in history and "an-old-password-7" not in json.dumps(
        res.cells[0].__dict__, default=str
    )
