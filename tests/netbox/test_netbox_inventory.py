"""NetBoxInventory against a real NetBox (see conftest.py): mapping, selection, leases, health,
faults, and that the token never leaks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

import pytest

from drivers.base import InfraFault
from inventory.netbox_source import (
    NetBoxAuthError,
    NetBoxInventory,
    NetBoxUnavailable,
)
from inventory.source import InventoryError

pytestmark = pytest.mark.netbox


@pytest.fixture
def inv(netbox_server, populated: dict[str, int]) -> NetBoxInventory:
    source = NetBoxInventory(netbox_server.url, netbox_server.token)
    yield source
    source.close()


def names(hosts) -> list[str]:
    return sorted(h.name for h in hosts)


GOOD = ["esx-01", "health-1", "hv-01", "kvm-01", "kvm-02", "lease-1", "lease-2"]


def test_hosts_mapping(inv: NetBoxInventory, populated: dict[str, int]) -> None:
    hosts = {h.name: h for h in inv.hosts()}
    assert sorted(hosts) == GOOD  # offline, other-role and malformed devices left out
    esx = hosts["esx-01"]
    assert (esx.kind, esx.driver, esx.endpoint) == (
        "vsphere",
        "vsphere",
        "http://vc.lab-a/sdk",
    )
    assert (esx.site, esx.version, esx.tags) == ("lab-a", "7.0.3", ["gpu"])
    assert (esx.cpus, esx.memory_mib, esx.slots) == (32, 262144, 1)
    assert esx.credentials_ref == "env:VC_PASSWORD"
    assert esx.inventory_id == str(populated["esx-01"])
    assert "crossvisor_lease" not in esx.custom
    assert hosts["kvm-01"].kind == "kvm" and hosts["kvm-01"].driver == "libvirt"
    assert hosts["hv-01"].kind == "hyperv" and hosts["hv-01"].driver == "libvirt"
    assert hosts["kvm-02"].endpoint == "qemu+ssh://root@10.0.0.2/system"  # template filled from the primary IP
    assert hosts["kvm-02"].slots == 2
    # Malformed records are reported by device and field, not silently lost.
    problems = " | ".join(inv.problems)
    assert "'bad-type'" in problems and "cluster type 'AWS' (aws) is not a hypervisor type" in problems
    assert "'bad-endpoint'" in problems and "mgmt_endpoint is empty and the device has no primary IP" in problems
    by_id = {s.device_id: s for s in inv.skipped}
    assert "netbox.kinds" in by_id[populated["bad-type"]].fix  # every skip says how to fix it


def test_strict_mode_raises_on_malformed(netbox_server, populated) -> None:
    strict = NetBoxInventory(netbox_server.url, netbox_server.token, strict=True)
    with pytest.raises(InventoryError, match="bad-"):
        strict.hosts()
    assert names(strict.hosts({"site": "lab-b"})) == [
        "health-1",
        "hv-01",
        "kvm-02",
        "lease-1",
        "lease-2",
    ]


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ({"site": "lab-a"}, ["esx-01", "kvm-01"]),
        ({"tag": "gpu"}, ["esx-01"]),
        ({"tag": "fast", "site": "lab-b"}, ["hv-01", "kvm-02"]),
        ({"kind": "kvm", "site": "lab-b"}, ["health-1", "kvm-02", "lease-1", "lease-2"]),
        ({"kind": "vsphere"}, ["esx-01"]),
        ({"kind": "xen"}, []),
        ({"version": "9.0"}, ["kvm-02"]),
        ({"cf_cpus": "32"}, ["esx-01"]),
        ({"cf_credentials_ref": "env:VC_PASSWORD", "kind": "vsphere"}, ["esx-01"]),
    ],
)
def test_selection(inv: NetBoxInventory, select, expected) -> None:
    assert names(inv.hosts(select)) == expected


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ({"stie": "lab-a"}, "unknown selection key 'stie'"),
        ({"site": "lab-z"}, "no such site"),
        ({"tag": "gpuu"}, "no such tag"),
        ({"kind": "vmware"}, "expected one of"),
        ({"cf_cpu": "32"}, "no device custom field 'cpu'"),
    ],
)
def test_bad_selection_is_an_error(inv: NetBoxInventory, select, message) -> None:
    with pytest.raises(InventoryError, match=message):
        inv.hosts(select)


def test_lease_basics(inv: NetBoxInventory, netbox_server, populated) -> None:
    key = str(populated["lease-1"])  # leases are keyed by device id (Host.inventory_id)
    assert inv.acquire_lease(key, "camp-a/cell-1", note="first")
    assert inv.acquire_lease(key, "camp-a/cell-1")  # idempotent per owner
    assert not inv.acquire_lease(key, "camp-b/cell-9")  # slots=1
    assert inv.leases()[key] == "camp-a/cell-1"
    assert inv.label(key) == "lease-1"
    inv.release_lease(key, "camp-b/cell-9")  # not held: no error
    assert inv.leases()[key] == "camp-a/cell-1"
    inv.release_lease(key, "camp-a/cell-1")
    assert key not in inv.leases()
    assert inv.acquire_lease("lease-1", "camp-b/cell-9")  # an operator may name a device with a unique name
    inv.release_lease(key, "camp-b/cell-9")
    # Every acquire/release that changed something left a journal entry on the device.
    nb = netbox_server.api()
    journal = [
        j.comments
        for j in nb.extras.journal_entries.filter(
            assigned_object_type="dcim.device",
            assigned_object_id=populated["lease-1"],
        )
    ]
    assert sum("acquired" in c for c in journal) == 2
    assert sum("released" in c for c in journal) == 2
    assert any("first" in c for c in journal)


def test_lease_unknown_host(inv: NetBoxInventory) -> None:
    with pytest.raises(InventoryError, match="no-such-host"):
        inv.acquire_lease("no-such-host", "c/1")
    with pytest.raises(InventoryError, match="no NetBox device #999999"):
        inv.acquire_lease("999999", "c/1")


def _race(server, host: str, racers: int) -> list[str]:
    """``racers`` threads, each with its own client/connection, start together."""
    barrier = threading.Barrier(racers)
    winners: list[str] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        source = NetBoxInventory(server.url, server.token)
        try:
            source._device_id(host)  # resolve before the barrier: race on the write itself
            barrier.wait()
            if source.acquire_lease(host, f"campaign-{i}/cell"):
                winners.append(f"campaign-{i}/cell")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            source.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return winners


@pytest.mark.parametrize(("name", "slots"), [("lease-1", 1), ("lease-2", 2)])
def test_lease_race_no_double_booking(inv, netbox_server, populated, name, slots) -> None:
    host = str(populated[name])
    for _ in range(2):
        winners = _race(netbox_server, host, racers=4)
        assert len(winners) == slots, winners
        held = inv.leases()[host].split(",")
        assert sorted(held) == sorted(winners)
        for w in winners:
            inv.release_lease(host, w)
        assert host not in inv.leases()


def test_health_marks_and_clears(inv: NetBoxInventory, netbox_server, populated) -> None:
    nb = netbox_server.api()
    key = str(populated["health-1"])
    inv.report_health(key, False, "ping timeout")
    inv.report_health(key, True)  # a success resets the streak
    inv.report_health(key, False, "ping timeout")
    inv.report_health(key, False, "ping timeout")
    assert "health-1" in names(inv.hosts())  # 2 consecutive < 3
    assert not inv.is_unhealthy(key)
    inv.report_health(key, False, "libvirt: connection refused")
    assert "health-1" not in names(inv.hosts())
    assert inv.is_unhealthy(key)
    dev = nb.dcim.devices.get(populated["health-1"])
    assert dev.status.value == "failed"
    assert "crossvisor-unhealthy" in [t.slug for t in dev.tags]
    journal = [
        j.comments
        for j in nb.extras.journal_entries.filter(
            assigned_object_type="dcim.device",
            assigned_object_id=populated["health-1"],
        )
    ]
    assert any("connection refused" in c for c in journal)
    inv.clear_health(key)
    assert "health-1" in names(inv.hosts())
    dev = nb.dcim.devices.get(populated["health-1"])
    assert dev.status.value == "active"
    assert dev.custom_fields["crossvisor_health_failures"] == 0


def test_snapshot_is_plain_copies(inv: NetBoxInventory) -> None:
    inv.hosts({"site": "lab-a"})
    inv.hosts({"kind": "hyperv"})
    snap = inv.snapshot()
    assert [h.name for h in snap] == ["esx-01", "hv-01", "kvm-01"]
    snap[0].tags.append("mutated")
    assert inv.snapshot()[0].tags == ["gpu"]


def test_bad_token_is_auth_error_without_the_token(netbox_server, populated) -> None:
    bad = "0123456789abcdef0123456789abcdef01234567"
    source = NetBoxInventory(netbox_server.url, bad)
    with pytest.raises(NetBoxAuthError) as info:
        source.hosts()
    assert not isinstance(info.value, InfraFault)  # not retryable
    assert "403" in str(info.value) or "401" in str(info.value)
    assert bad not in str(info.value) and bad not in repr(source)
    assert info.value.__suppress_context__  # no chained exception carrying request details


def test_token_from_file_and_missing(netbox_server, populated, tmp_path, monkeypatch):
    monkeypatch.delenv("NETBOX_TOKEN", raising=False)
    monkeypatch.delenv("NETBOX_TOKEN_FILE", raising=False)
    with pytest.raises(InventoryError, match="no NetBox API token"):
        NetBoxInventory(netbox_server.url)
    f = tmp_path / "token"
    f.write_text(netbox_server.token + "\n")
    monkeypatch.setenv("NETBOX_TOKEN_FILE", str(f))
    assert NetBoxInventory(netbox_server.url).hosts({"tag": "gpu"})


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("root@10.65.0.27", "qemu+ssh://root@10.65.0.27/system"),  # was qemu+ssh://root@root@10.65.0.27/system
        ("admin@kvm-02.lab", "qemu+ssh://admin@kvm-02.lab/system"),
        ("10.65.0.28", "qemu+ssh://root@10.65.0.28/system"),
    ],
)
def test_mgmt_endpoint_user_at_host(netbox_server, populated, given: str, endpoint: str) -> None:
    nb = netbox_server.api()
    dev = nb.dcim.devices.get(populated["kvm-02"])
    dev.update({"custom_fields": {"mgmt_endpoint": given}})
    try:
        source = NetBoxInventory(netbox_server.url, netbox_server.token)
        hosts = {h.name: h for h in source.hosts()}
        source.close()
    finally:
        dev.update({"custom_fields": {"mgmt_endpoint": None}})
    assert hosts["kvm-02"].endpoint == endpoint


def test_mgmt_endpoint_that_is_no_host_is_skipped_with_the_reason(netbox_server, populated) -> None:
    nb = netbox_server.api()
    dev = nb.dcim.devices.get(populated["kvm-02"])
    dev.update({"custom_fields": {"mgmt_endpoint": "evil/system?socket=/tmp/x"}})
    try:
        source = NetBoxInventory(netbox_server.url, netbox_server.token)
        hosts = {h.name for h in source.hosts()}
        skipped = {s.device_id: s for s in source.skipped}
        source.close()
    finally:
        dev.update({"custom_fields": {"mgmt_endpoint": None}})
    assert "kvm-02" not in hosts
    assert "mgmt_endpoint is neither a URI nor a host name" in skipped[populated["kvm-02"]].reason


def test_credential_file_outside_the_credentials_dir_is_skipped(
    netbox_server, populated, tmp_path, monkeypatch
) -> None:
    """Anyone who may edit a device in NetBox could name /etc/shadow as its credentials file, and
    every worker would read it and send it to a host as a password: a NetBox value may only name
    files under the credentials directory."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "kvm02.pw").write_text("secret\n")
    monkeypatch.setenv("CROSSVISOR_CREDENTIALS_DIR", str(creds))
    nb = netbox_server.api()
    dev = nb.dcim.devices.get(populated["kvm-02"])
    seen = {}
    try:
        for ref in (f"file:{creds}/kvm02.pw", "file:/etc/shadow", f"file:{creds}/../../etc/shadow", "env:KVM02_PW"):
            dev.update({"custom_fields": {"credentials_ref": ref}})
            source = NetBoxInventory(netbox_server.url, netbox_server.token)
            hosts = {h.name: h for h in source.hosts()}
            skipped = {s.device_id: s for s in source.skipped}
            source.close()
            seen[ref] = hosts.get("kvm-02") or skipped[populated["kvm-02"]]
    finally:
        dev.update({"custom_fields": {"credentials_ref": None}})
    assert seen[f"file:{creds}/kvm02.pw"].credentials_ref == f"file:{creds}/kvm02.pw"
    assert seen["env:KVM02_PW"].credentials_ref == "env:KVM02_PW"
    for ref in ("file:/etc/shadow", f"file:{creds}/../../etc/shadow"):
        reason = seen[ref].reason
        assert f"credentials_ref {ref[5:]!r}" in reason and f"under the credentials directory {creds}" in reason, reason


def test_url_given_with_api_suffix_works(netbox_server, populated) -> None:
    """NETBOX_URL=.../api/ (as NetBox's own API page shows it) used to answer with 300 characters
    of NetBox's HTML 404 page."""
    source = NetBoxInventory(netbox_server.url + "/api/", netbox_server.token)
    assert names(source.hosts({"tag": "gpu"})) == ["esx-01"]
    source.close()


def test_html_answer_is_described_not_printed(netbox_server, populated) -> None:
    # a path in front of /api/ that NetBox does not serve: its HTML 404 page answers
    source = NetBoxInventory(netbox_server.url + "/nothing-here", netbox_server.token)
    with pytest.raises(InventoryError) as info:
        source.hosts()
    source.close()
    text = str(info.value)
    assert "not NetBox's API" in text and "<" not in text and "html>" not in text.lower(), text


def test_url_without_scheme_says_how_to_write_it(netbox_server) -> None:
    bare = netbox_server.url.split("://", 1)[1]
    with pytest.raises(InventoryError, match=f"did you mean https://{bare}"):
        NetBoxInventory(bare, netbox_server.token)


def test_token_file_with_header_form(netbox_server, populated, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NETBOX_TOKEN", raising=False)
    f = tmp_path / "token"
    f.write_text(f"Token {netbox_server.token}\n")
    monkeypatch.setenv("NETBOX_TOKEN_FILE", str(f))
    source = NetBoxInventory(netbox_server.url)
    assert names(source.hosts({"tag": "gpu"})) == ["esx-01"]
    source.close()


def test_unreachable_is_transient(populated) -> None:
    # A loopback port nothing listens on: connection refused.
    source = NetBoxInventory("http://127.0.0.1:9", "x" * 40, timeout=3)
    with pytest.raises(NetBoxUnavailable, match="unreachable") as info:
        source.hosts()
    assert isinstance(info.value, InfraFault)


def test_server_error_is_transient(netbox_server, populated, netbox_up) -> None:
    """Redis down -> NetBox answers 500 -> NetBoxUnavailable; back up -> works again."""
    source = NetBoxInventory(netbox_server.url, netbox_server.token)
    pid = int(netbox_server.redis_pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        for _ in range(50):  # wait for redis to exit
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        with pytest.raises(NetBoxUnavailable, match="HTTP 5") as info:
            source.hosts()
        assert isinstance(info.value, InfraFault)
    finally:
        proc = netbox_up(False)  # idempotent: restarts only Redis
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert names(source.hosts({"tag": "gpu"})) == ["esx-01"]


def test_secrets_never_logged(netbox_server, populated, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    token = netbox_server.token
    source = NetBoxInventory(netbox_server.url, token)
    source.hosts()  # logs warnings for the malformed devices
    source.acquire_lease(str(populated["lease-2"]), "secret-check/cell")
    source.release_lease(str(populated["lease-2"]), "secret-check/cell")
    for select in ({"site": "nope"}, {"bogus": "1"}):
        with pytest.raises(InventoryError) as info:
            source.hosts(select)
        assert token not in str(info.value)
    assert caplog.records  # something was logged (urllib3 debug, our warnings)
    assert token not in caplog.text
    assert token not in repr(source) and token not in repr(source.http)
    env_text = netbox_server.env_file.read_text()
    assert token in env_text  # the one place it is written: a 0600 file
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert token not in out  # never passed on a command line
