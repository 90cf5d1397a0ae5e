"""Session fixtures: a real NetBox (deploy/netbox/netbox-up.sh --fresh) populated through pynetbox.

First run on a machine: ~65 s venv install + ~4 min migrate (both cached under
$CROSSVISOR_CACHE/netbox). Later sessions: ~10 s to a fresh, empty NetBox.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pynetbox
import pytest

from inventory.netbox_schema import ensure_schema

REPO = Path(__file__).resolve().parents[2]
UP = REPO / "deploy" / "netbox" / "netbox-up.sh"
DOWN = REPO / "deploy" / "netbox" / "netbox-down.sh"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The lab module (test_netbox_lab.py) needs a NetBox nothing else has touched and leaves a
    fresh one behind: run it first. A stable sort: every other test keeps its order."""
    items.sort(key=lambda item: 0 if item.path.name == "test_netbox_lab.py" else 1)


@dataclass
class NetBoxServer:
    url: str
    token: str
    env_file: Path
    redis_pidfile: Path

    def api(self) -> pynetbox.api:
        return pynetbox.api(self.url, token=self.token)


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def run_up(fresh: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(UP), *(["--fresh"] if fresh else [])],
        capture_output=True,
        text=True,
        timeout=900,  # first run: install + migrate
        check=False,
    )


@pytest.fixture(scope="session")
def netbox_server() -> Iterator[NetBoxServer]:
    # If a NetBox was already up (someone is using it), leave it running afterwards.
    was_running = _running(_env_path().parent / "netbox.pid")
    proc = run_up(fresh=True)
    if proc.returncode != 0:
        pytest.fail(f"netbox-up.sh failed:\n{proc.stderr[-3000:]}")
    env_file = Path(proc.stdout.strip().splitlines()[-1])
    env = _read_env(env_file)
    assert (env_file.stat().st_mode & 0o777) == 0o600
    # The script must never print the token.
    assert env["NETBOX_TOKEN"] not in proc.stdout + proc.stderr
    server = NetBoxServer(
        url=env["NETBOX_URL"],
        token=env["NETBOX_TOKEN"],
        env_file=env_file,
        redis_pidfile=env_file.parent / "redis.pid",
    )
    try:
        yield server
    finally:
        if not was_running:
            subprocess.run([str(DOWN)], capture_output=True, timeout=120, check=False)


def _running(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def _env_path() -> Path:
    """Where netbox-up.sh keeps its run state for the ports in the environment (same rule as the
    script: one run dir per NetBox port, ``run`` for the default port 58001)."""
    cache = Path(os.environ.get("CROSSVISOR_CACHE", str(Path.home() / ".cache" / "crossvisor")))
    port = os.environ.get("CROSSVISOR_NETBOX_PORT", "58001")
    default = cache / "netbox" / ("run" if port == "58001" else f"run-{port}")
    return Path(os.environ.get("CROSSVISOR_NETBOX_RUN", str(default))) / "netbox.env"


@pytest.fixture(scope="session")
def netbox_up() -> Callable[[bool], subprocess.CompletedProcess]:
    """Re-run netbox-up.sh (e.g. to restart Redis after a fault test)."""
    return run_up


@pytest.fixture(scope="session")
def populated(netbox_server: NetBoxServer) -> dict[str, int]:
    """A small lab: 2 sites, 4 hypervisor kinds, malformed and excluded devices.

    Returns device name -> id.
    """
    nb = netbox_server.api()
    ensure_schema(nb)
    ensure_schema(nb)  # idempotent
    mfr = nb.dcim.manufacturers.create(name="Generic", slug="generic")
    dtype = nb.dcim.device_types.create(manufacturer=mfr.id, model="Server", slug="server")
    role = nb.dcim.device_roles.get(slug="hypervisor-host")
    switch = nb.dcim.device_roles.create(name="Switch", slug="switch", color="000000")
    sites = {s: nb.dcim.sites.create(name=s.upper(), slug=s).id for s in ("lab-a", "lab-b")}
    nb.extras.tags.create(name="gpu", slug="gpu")
    nb.extras.tags.create(name="fast", slug="fast")
    cloud = nb.virtualization.cluster_types.create(name="AWS", slug="aws")  # not a hypervisor type
    types = {t.slug: t.id for t in nb.virtualization.cluster_types.all()}
    clusters = {
        name: nb.virtualization.clusters.create(name=name, type=types[t]).id
        for name, t in (
            ("esx-a", "vmware-esxi"),
            ("kvm-a", "kvm"),
            ("kvm-b", "kvm"),
            ("hv-b", "hyper-v"),
            ("aws-a", cloud.slug),
        )
    }

    def dev(name, site, cluster, cf=None, tags=(), status="active", role_id=None):
        return {
            "name": name,
            "device_type": dtype.id,
            "role": role_id or role.id,
            "site": sites[site],
            "cluster": clusters[cluster],
            "status": status,
            "tags": [{"slug": t} for t in tags],
            "custom_fields": cf or {},
        }

    kvm = lambda v, ep, **kw: {  # noqa: E731
        "hypervisor_version": v,
        "mgmt_endpoint": ep,
        **kw,
    }
    created = nb.dcim.devices.create(
        [
            dev(
                "esx-01",
                "lab-a",
                "esx-a",
                kvm(
                    "7.0.3",
                    "http://vc.lab-a/sdk",
                    cpus=32,
                    memory_mib=262144,
                    credentials_ref="env:VC_PASSWORD",
                ),
                tags=["gpu"],
            ),
            dev("kvm-01", "lab-a", "kvm-a", kvm("8.0", "qemu+ssh://kvm-01/system")),
            dev(
                "kvm-02",
                "lab-b",
                "kvm-b",
                {"hypervisor_version": "9.0", "cell_slots": 2},
                tags=["fast"],
            ),
            dev("hv-01", "lab-b", "hv-b", kvm("2022", "hyperv://hv-01/?transport=http"), tags=["fast"]),
            dev("bad-type", "lab-a", "aws-a", kvm("8.1", "https://aws")),
            dev("bad-endpoint", "lab-a", "kvm-a", {"hypervisor_version": "8.0"}),
            dev("off-01", "lab-a", "kvm-a", kvm("8.0", "qemu:///x"), status="offline"),
            dev("sw-01", "lab-a", "kvm-a", kvm("8.0", "x"), role_id=switch.id),
            dev("lease-1", "lab-b", "kvm-b", kvm("8.0", "qemu:///l1")),
            dev("lease-2", "lab-b", "kvm-b", kvm("8.0", "qemu:///l2", cell_slots=2)),
            dev("health-1", "lab-b", "kvm-b", kvm("8.0", "qemu:///h1")),
        ]
    )
    ids = {d.name: d.id for d in created}
    # kvm-02 has no mgmt_endpoint: its endpoint is the primary IP.
    iface = nb.dcim.interfaces.create(device=ids["kvm-02"], name="eth0", type="virtual")
    ip = nb.ipam.ip_addresses.create(
        address="10.0.0.2/24",
        assigned_object_type="dcim.interface",
        assigned_object_id=iface.id,
    )
    nb.dcim.devices.get(ids["kvm-02"]).update({"primary_ip4": ip.id})
    return ids
