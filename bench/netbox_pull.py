"""Benchmark: pull 5,000 hypervisor devices from the NetBox started by deploy/netbox/netbox-up.sh.

    deploy/netbox/netbox-up.sh && .venv/bin/python bench/netbox_pull.py [--devices 5000] [--rounds 3]

Compares, in one process on the same 5,000 devices:

- full pull: ``NetBoxInventory.hosts()`` (one GraphQL query for every candidate's needed fields;
  and its REST path: ``?fields=`` projection, pages fetched in parallel) against the naive
  ``list(nb.dcim.devices.all())`` (full objects, pynetbox Records). Goal: >= 5 x naive.
- incremental refresh, steady state: ``NetBoxInventory.changes_since(selections, cursor)`` (what a
  campaign's refresh timer runs; the inventory object is kept by the worker, as the activity
  does) with nothing changed, and with a few devices changed (REST PATCHes, not timed, before
  each round; one of them set to failed). Goal: <= 0.2 s.
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
FULL = "ours: hosts() GraphQL"
NAIVE = "naive: pynetbox devices.all()"
STEADY = "refresh, nothing changed"
FEW = "refresh, 3 devices changed"

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
    results[FULL] = timed(lambda: len(ours.hosts(select)), args.rounds)
    rest = NetBoxInventory(url, token)
    rest._graphql_filter = lambda: None  # type: ignore[method-assign]  # the REST path, for comparison
    results["ours: hosts() REST fields=, workers=4"] = timed(lambda: len(rest.hosts(select)), args.rounds)
    results[NAIVE] = timed(lambda: len(list(nb.dcim.devices.all())), args.rounds)
    nbt = pynetbox.api(url, token=token, threading=True)
    results["pynetbox devices.all() threading"] = timed(lambda: len(list(nbt.dcim.devices.all())), args.rounds)

    # incremental refresh: a cursor after everything above (wait out the overlap, see CHANGE_OVERLAP_S)
    selections = {"kvm": {"kind": "kvm"}, "esx": {"kind": "vsphere"}}
    refresher = NetBoxInventory(url, token)
    refresher.ensure_ready()  # once per worker, as the activity keeps its inventory
    time.sleep(refresher.change_overlap_s + 1.1)
    cursor = refresher.cursor_now()
    results[STEADY] = timed(lambda: len(refresher.changes_since(selections, cursor).hosts), args.rounds * 3)
    few = [
        r["id"]
        for r in refresher.http.get("dcim/devices/", {"name__isw": PREFIX, "fields": "id", "limit": 3})["results"]
    ]
    flip = iter(range(1_000_000))

    def few_changes() -> int:
        n = next(flip)
        time.sleep(refresher.change_overlap_s + 1.1)  # earlier rounds' changes out of the window
        since = refresher.cursor_now()
        for i, dev_id in enumerate(few):
            patch = {"custom_fields": {"cpus": 64 + n % 2}}
            if i == 0:
                patch["status"] = "failed" if n % 2 == 0 else "active"
            refresher.http.request("PATCH", f"dcim/devices/{dev_id}/", json=patch)
        t0 = time.perf_counter()
        delta = refresher.changes_since(selections, since)
        few_changes.elapsed.append(time.perf_counter() - t0)  # type: ignore[attr-defined]
        return len(delta.hosts) + len(delta.gone)

    few_changes.elapsed = []  # type: ignore[attr-defined]
    counts = [few_changes() for _ in range(args.rounds + 1)][1:]
    results[FEW] = (statistics.median(few_changes.elapsed[1:]), counts[-1])  # type: ignore[attr-defined]
    for dev_id in few:  # leave them as populate made them
        refresher.http.request(
            "PATCH", f"dcim/devices/{dev_id}/", json={"status": "active", "custom_fields": {"cpus": 64}}
        )

    width = max(map(len, results))
    for name, (secs, n) in results.items():
        print(f"{name:<{width}}  {secs:7.3f}s  {n:6d} items")
    full, naive = results[FULL][0], results[NAIVE][0]
    ratio = naive / full
    print(f"full pull: naive/ours {ratio:.1f}x (goal >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    for name in (STEADY, FEW):
        secs = results[name][0]
        print(
            f"{name}: {secs:.3f}s = 1/{full / secs:.0f} of our full pull, 1/{naive / secs:.0f} of naive "
            f"(goal <= 0.2 s: {'met' if secs <= 0.2 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
