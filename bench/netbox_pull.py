"""Benchmark: pull 5,000 hypervisor devices from the NetBox started by deploy/netbox/netbox-up.sh.

    deploy/netbox/netbox-up.sh && .venv/bin/python bench/netbox_pull.py [--devices 5000] [--rounds 3]

Compares ``NetBoxInventory.hosts()`` (``?fields=`` projection, raw JSON, pages fetched in
parallel) with the naive ``list(nb.dcim.devices.all())`` (full objects, pynetbox Records).
Setup creates the devices once with a Django ORM bulk_create inside NetBox's own venv (REST bulk
create costs ~50 ms per device); they stay until the next `netbox-up.sh --fresh`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pynetbox  # noqa: E402

from inventory.netbox_schema import ensure_schema  # noqa: E402
from inventory.netbox_source import NetBoxInventory  # noqa: E402

PREFIX = "bench-"

# Runs inside `netbox shell` (NetBox's venv, Django configured). bulk_create skips save() hooks and
# signals: fine here (a device type without component templates; no search index or counters
# needed), and ~100x cheaper than save() per device (~40 ms each) or REST (~50 ms each).
POPULATE = r"""
import os
from dcim.models import Device, DeviceRole, DeviceType, Manufacturer, Site
from virtualization.models import Cluster, ClusterType

want = int(os.environ["BENCH_COUNT"])
have = Device.objects.filter(name__startswith="bench-").count()
if have < want:
    mfr, _ = Manufacturer.objects.get_or_create(name="BenchCo", slug="benchco")
    dtype, _ = DeviceType.objects.get_or_create(manufacturer=mfr, model="Bench", slug="bench")
    role = DeviceRole.objects.get(slug=os.environ["BENCH_ROLE"])
    sites = [Site.objects.get_or_create(name=f"Bench {i}", slug=f"bench-{i}")[0] for i in range(4)]
    # init maps existing cluster types instead of creating its own: take whatever is there
    clusters = [
        Cluster.objects.get_or_create(
            name=f"bench-{t}", type=ClusterType.objects.get_or_create(slug=t, defaults={"name": t})[0]
        )[0]
        for t in ("kvm", "vmware-esxi")
    ]
    Device.objects.bulk_create(
        [
            Device(
                name=f"bench-{i:05d}",
                device_type=dtype,
                role=role,
                site=sites[i % 4],
                cluster=clusters[i % 2],
                status="active",
                custom_field_data={
                    "hypervisor_version": "8.0",
                    "mgmt_endpoint": f"qemu+ssh://bench-{i:05d}/system",
                    "cpus": 64,
                    "memory_mib": 524288,
                    "cell_slots": 2,
                    "credentials_ref": "env:BENCH",
                },
            )
            for i in range(have, want)
        ],
        batch_size=1000,
    )
print(Device.objects.filter(name__startswith="bench-").count())
"""


def default_env_file() -> Path:
    """netbox-up.sh's env file for the ports in the environment (one run dir per NetBox port)."""
    cache = Path(os.environ.get("CROSSVISOR_CACHE", Path.home() / ".cache" / "crossvisor"))
    port = os.environ.get("CROSSVISOR_NETBOX_PORT", "58001")
    default = cache / "netbox" / ("run" if port == "58001" else f"run-{port}")
    return Path(os.environ.get("CROSSVISOR_NETBOX_RUN", default)) / "netbox.env"


def load_env(path: Path) -> dict[str, str]:
    if not path.exists():
        sys.exit(f"{path} not found: run deploy/netbox/netbox-up.sh first")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def populate(env: dict[str, str], count: int, role: str) -> int:
    proc = subprocess.run(
        [f"{env['NETBOX_VENV']}/bin/netbox", "shell"],
        input=POPULATE,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NETBOX_ROOT": env["NETBOX_ROOT"], "BENCH_COUNT": str(count), "BENCH_ROLE": role},
    )
    if proc.returncode != 0:
        sys.exit(f"populate failed:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def timed(fn: Callable[[], int], rounds: int) -> tuple[float, int]:
    """Median wall time over ``rounds`` (after one warm-up), and the item count."""
    n = fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--env-file", type=Path, default=default_env_file())
    args = ap.parse_args()

    env = load_env(args.env_file)
    url, token = env["NETBOX_URL"], env["NETBOX_TOKEN"]
    nb = pynetbox.api(url, token=token)
    ensure_schema(nb)
    t0 = time.perf_counter()
    have = populate(env, args.devices, "hypervisor-host")
    print(f"setup: {have} bench devices ready in {time.perf_counter() - t0:.1f}s")

    select: dict[str, str] = {}  # every hypervisor host, like devices.all()
    results: dict[str, tuple[float, int]] = {}
    ours = NetBoxInventory(url, token)
    results["ours: hosts() workers=4"] = timed(lambda: len(ours.hosts(select)), args.rounds)
    single = NetBoxInventory(url, token, workers=1)
    results["ours: hosts() workers=1"] = timed(lambda: len(single.hosts(select)), args.rounds)
    results["naive: pynetbox devices.all()"] = timed(lambda: len(list(nb.dcim.devices.all())), args.rounds)
    nbt = pynetbox.api(url, token=token, threading=True)
    results["pynetbox devices.all() threading"] = timed(lambda: len(list(nbt.dcim.devices.all())), args.rounds)

    width = max(map(len, results))
    for name, (secs, n) in results.items():
        print(f"{name:<{width}}  {secs:7.2f}s  {n:6d} items  {n / secs:8.0f}/s")
    ratio = results["naive: pynetbox devices.all()"][0] / results["ours: hosts() workers=4"][0]
    print(f"ratio naive/ours: {ratio:.1f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
