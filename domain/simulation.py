"""A synthetic lab and a pure discrete-event simulation of scheduling policies on it.

The same duration model drives the simulation here and ``workflows.simulated.SimulatedCellWorkflow``
(the Temporal child that only sleeps), so the pure run and the real-workflow run of the benchmark
see identical cells. Durations are the static cost model of ``domain.scheduling`` times a
deterministic per-(cell, stage) jitter: a scheduler given the model's estimates is right on average
but not per cell, as in a real lab.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from domain import matrix, stages
from domain.model import STAGES, Cell, Concurrency, GuestImage, Host, Platform
from domain.plan import CampaignPlan
from domain.scheduling import (
    Assignment,
    LabState,
    PendingPool,
    estimate_cell_s,
    fifo_schedule,
    schedule_pool,
    stage_estimate_s,
)

JITTER = 0.35  # each stage takes (1 +- JITTER) x its modelled time, uniformly


def _unit(key: str) -> float:
    """A deterministic number in [0, 1) from a string (no ``random``: workflow code calls this)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def stage_durations(cell: Cell, image: GuestImage, source_kind: str, target_kind: str) -> dict[str, float]:
    """Seconds per stage for a simulated cell: deterministic in the cell id."""
    return {
        s: round(
            stage_estimate_s(s, image, source_kind, target_kind) * (1 + JITTER * (2 * _unit(f"{cell.id}/{s}") - 1))
        )
        for s in STAGES
        if not stages.BY_NAME[s].remedial  # a simulated cell models the unmodified move only
    }


def cell_duration_s(cell: Cell, image: GuestImage, source_kind: str, target_kind: str) -> float:
    return float(sum(stage_durations(cell, image, source_kind, target_kind).values()))


# -- the synthetic lab ---------------------------------------------------------------------------

# kind -> (platform versions, hosts per platform, slots per host): 40 hosts. Hyper-V and Xen are
# scarce single-slot hosts, vSphere has many hosts but a vCenter-wide cap (``per_kind``).
LAB_SHAPE = {
    "kvm": (("el8", "el9"), 6, 2),
    "vsphere": (("7.0", "8.0"), 6, 2),
    "hyperv": (("2019", "2022"), 4, 1),
    "xen": (("4.17", "4.19"), 4, 1),
}
LAB_LIMITS = Concurrency(max_cells=32, per_kind={"vsphere": 8})
DISK_GIB = (8, 12, 16, 20, 24, 32, 40, 48, 60, 80, 100, 120)  # guest images of many sizes


@dataclass
class Lab:
    hosts: list[Host]
    plan: CampaignPlan
    cells: list[Cell]
    duration_s: dict[str, float]  # true (simulated) duration per cell id
    estimate_s: dict[str, float]  # what the scheduler is told (static model, no jitter)

    @property
    def host_map(self) -> dict[str, Host]:
        return {h.name: h for h in self.hosts}

    @property
    def platform_hosts(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.plan.platforms:
            out[p.name] = sorted(h.name for h in self.hosts if h.kind == p.kind and h.version == p.select["version"])
        return out

    @property
    def platform_kind(self) -> dict[str, str]:
        return {p.name: p.kind for p in self.plan.platforms}

    def inventory_yaml(self) -> str:
        lines = ["hosts:"]
        for h in self.hosts:
            lines.append(
                f"  - {{name: {h.name}, kind: {h.kind}, driver: {h.driver}, endpoint: '{h.endpoint}',"
                f" site: sim, version: '{h.version}', slots: {h.slots}}}"
            )
        return "\n".join(lines) + "\n"


def lab_shape(scale: int = 1) -> dict[str, tuple[tuple[str, ...], int, int]]:
    """``LAB_SHAPE`` with ``scale`` x the platform versions (so scale x the platforms and hosts)."""
    out = {}
    for kind, (versions, n, slots) in LAB_SHAPE.items():
        more = tuple(f"{v}.{i}" for i in range(1, scale) for v in versions)
        out[kind] = (versions + more, n, slots)
    return out


def synthetic_lab(n_cells: int = 2000, seed: int = 7, inventory: str = "file:lab.yaml", scale: int = 1) -> Lab:
    """8 x ``scale`` platforms (2 x ``scale`` versions x 4 kinds) on 40 x ``scale`` hosts, with
    ``max_cells`` and the per-kind caps scaled alike; cells = some ordered platform pairs x images.

    n_cells = pairs x images exactly when it factors (2000 = 50 pairs x 40 images; at scale 5,
    10,000 = 250 pairs x 40 images), else just above.
    """
    rng = random.Random(seed)
    hosts: list[Host] = []
    platforms: list[Platform] = []
    for kind, (versions, n, slots) in lab_shape(scale).items():
        driver = "vsphere" if kind == "vsphere" else "libvirt"
        endpoint = "https://vcenter.sim/sdk" if kind == "vsphere" else "test:///default"
        for v in versions:
            name = f"{kind}-{v}".replace(".", "")
            platforms.append(Platform(name, kind, driver, select={"version": v}))
            for i in range(n):
                hosts.append(Host(f"{name}-{i:02d}", kind, driver, endpoint, site="sim", version=v, slots=slots))
    all_pairs = [[s.name, t.name] for s in platforms for t in platforms if s is not t]
    rng.shuffle(all_pairs)
    n_images = max(1, math.ceil(n_cells / (50 * scale)))
    pairs = all_pairs[: min(len(all_pairs), math.ceil(n_cells / n_images))]
    images = [
        GuestImage(f"img{i:02d}-{DISK_GIB[i % len(DISK_GIB)]}g", disk_mib=DISK_GIB[i % len(DISK_GIB)] * 1024)
        for i in range(n_images)
    ]
    plan = CampaignPlan(
        name=f"sim-{n_cells}" + (f"-x{scale}" if scale != 1 else ""),
        platforms=platforms,
        images=images,
        concurrency=Concurrency(LAB_LIMITS.max_cells * scale, {k: v * scale for k, v in LAB_LIMITS.per_kind.items()}),
        pairs=pairs,
        inventory=inventory,
    )
    cells = matrix.expand(plan)
    kinds = {p.name: p.kind for p in platforms}
    imgs = {i.name: i for i in images}
    dur = {c.id: cell_duration_s(c, imgs[c.image], kinds[c.source], kinds[c.target]) for c in cells}
    est = {c.id: estimate_cell_s(imgs[c.image], kinds[c.source], kinds[c.target]) for c in cells}
    return Lab(hosts, plan, cells, dur, est)


# -- discrete-event simulation -------------------------------------------------------------------

Policy = Callable[[PendingPool, LabState], list[Assignment]]


def policy_ours(lab: Lab) -> Policy:
    """The campaign's scheduler on the lab (give the pool the estimates it should see)."""
    H, PH, PK, L = lab.host_map, lab.platform_hosts, lab.platform_kind, lab.plan.concurrency
    return lambda pool, state: schedule_pool(pool, H, PH, PK, state, L)


def policy_fifo(lab: Lab) -> Policy:
    """The naive baseline: strict arrival order, head-of-line blocking."""
    H, PH, PK, L = lab.host_map, lab.platform_hosts, lab.platform_kind, lab.plan.concurrency
    return lambda pool, state: fifo_schedule(pool.iter_cells(), H, PH, PK, state, L)


@dataclass
class SimResult:
    makespan_s: float
    runs: dict[str, tuple[float, float, str, str]] = field(default_factory=dict)  # id -> start, end, hosts
    decisions: int = 0
    drains: int = 0


def simulate(
    cells: list[Cell],
    duration_s: dict[str, float],
    hosts: dict[str, Host],
    platform_kind: dict[str, str],
    limits: Concurrency,
    policy: Policy,
    drain_every: int = 0,
    estimate_s: dict[str, float] | None = None,
) -> SimResult:
    """Run ``policy`` as the campaign workflow does: on every completion, start what it picks.

    ``estimate_s``: what the scheduler is told per cell (none: every cell counts as 1 s).
    ``drain_every`` models the continue-as-new of campaigns before replay set v5: after that many
    completions the campaign starts nothing until every running cell has finished (it drains),
    then carries on. 0 = never (a v5 campaign hands its running cells over instead).
    Raises AssertionError if the policy breaks slots, caps, or picks a cell twice.
    """
    est = estimate_s or {}
    pool = PendingPool(platform_kind)
    for c in cells:
        pool.add(c, est.get(c.id, 1.0))
    by_id = {c.id: c for c in cells}
    running: list[tuple[float, str]] = []  # heap of (end, cell id)
    load: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    res = SimResult(0.0)
    now, since_can = 0.0, 0
    while len(pool) or running:
        draining = drain_every and since_can >= drain_every
        if draining and not running:
            res.drains += 1
            since_can, draining = 0, False
        if not draining and len(pool):
            res.decisions += 1
            picks = policy(pool, LabState(dict(load), dict(by_kind), len(running)))
            chosen = {a.cell_id for a in picks}
            assert len(chosen) == len(picks), "a cell picked twice"
            for a in picks:
                c = by_id[a.cell_id]
                assert a.source_host != a.target_host, a
                for h in (a.source_host, a.target_host):
                    load[h] += 1
                    assert load[h] <= hosts[h].slots, f"{h} over its slots"
                for k in {platform_kind[c.source], platform_kind[c.target]}:
                    by_kind[k] += 1
                    assert by_kind[k] <= limits.per_kind.get(k, 10**9), f"kind {k} over its cap"
                end = now + duration_s[c.id]
                heapq.heappush(running, (end, c.id))
                res.runs[c.id] = (now, end, a.source_host, a.target_host)
                pool.remove(c.id)
            assert len(running) <= limits.max_cells, "over max_cells"
        if not running:
            if len(pool):
                raise RuntimeError(f"deadlock: {len(pool)} cells can never start")
            break
        now, cid = heapq.heappop(running)
        done = [cid]
        while running and running[0][0] == now:  # simultaneous completions: one decision
            done.append(heapq.heappop(running)[1])
        for cid in done:
            c = by_id[cid]
            _, _, s, t = res.runs[cid]
            load[s] -= 1
            load[t] -= 1
            for k in {platform_kind[c.source], platform_kind[c.target]}:
                by_kind[k] -= 1
            since_can += 1
    res.makespan_s = now
    return res
