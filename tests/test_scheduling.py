"""The scheduler, pure: capacity invariants, the matching case greedy gets wrong, makespan vs FIFO
and vs the capacity lower bound on seeded labs."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from domain import matrix, simulation
from domain.model import Cell, Concurrency, GuestImage, Host, Platform
from domain.plan import CampaignPlan
from domain.scheduling import (
    Assignment,
    LabState,
    PendingPool,
    estimate_cell_s,
    fifo_schedule,
    lower_bound_s,
    schedule,
    schedule_pool,
    schedule_v4,
)

KINDS = ("kvm", "vsphere", "hyperv", "xen")


def three_platforms(n_per: int = 2, slots: int = 1) -> tuple[list[Cell], dict, dict, dict]:
    plan = CampaignPlan(
        name="p",
        platforms=[
            Platform("a", "kvm", "libvirt"),
            Platform("b", "xen", "libvirt"),
            Platform("c", "vsphere", "vsphere"),
        ],
        images=[GuestImage("i1"), GuestImage("i2")],
    )
    hosts, ph = {}, {}
    for p in plan.platforms:
        ph[p.name] = [f"{p.name}{i}" for i in range(n_per)]
        for h in ph[p.name]:
            hosts[h] = Host(h, p.kind, p.driver, "test:///default", slots=slots)
    return matrix.expand(plan), hosts, ph, {p.name: p.kind for p in plan.platforms}


def random_lab(seed: int) -> tuple[list[Cell], dict[str, float], dict, dict, dict, Concurrency]:
    """Random platforms (some sharing a kind), hosts with 1-3 slots, optional kind caps, 60-150 cells."""
    rng = random.Random(seed)
    n_plat = rng.randint(3, 6)
    kinds = {f"p{i}": rng.choice(KINDS) for i in range(n_plat)}
    hosts, ph = {}, {}
    for p, k in kinds.items():
        ph[p] = []
        for j in range(rng.randint(1, 4)):
            h = Host(f"{p}-h{j}", k, "libvirt", "test:///default", slots=rng.randint(1, 3))
            hosts[h.name] = h
            ph[p].append(h.name)
    names = list(kinds)
    cells, dur = [], {}
    for i in range(rng.randint(60, 150)):
        s = rng.choice(names)
        t = rng.choice([n for n in names if n != s])
        c = Cell(f"c{i:03d}", s, t, "img", [], "")
        cells.append(c)
        dur[c.id] = rng.choice([600, 3600, 4 * 3600, 9 * 3600]) * rng.uniform(0.8, 1.2)
    per_kind = {k: rng.randint(1, 4) for k in set(kinds.values()) if rng.random() < 0.3}
    return cells, dur, hosts, ph, kinds, Concurrency(max_cells=rng.randint(3, 12), per_kind=per_kind)


def check_caps(
    picks: list[Assignment], cells: dict[str, Cell], hosts, ph, kinds, state: LabState, limits, unavailable=frozenset()
) -> None:
    load = Counter(state.host_load)
    by_kind = Counter(state.running_by_kind)
    assert len({a.cell_id for a in picks}) == len(picks), "a cell picked twice"
    assert state.running_total + len(picks) <= limits.max_cells
    for a in picks:
        c = cells[a.cell_id]
        assert a.source_host != a.target_host
        assert a.source_host in ph[c.source] and a.target_host in ph[c.target], "host outside its platform"
        assert a.source_host not in unavailable and a.target_host not in unavailable
        load[a.source_host] += 1
        load[a.target_host] += 1
        for k in {kinds[c.source], kinds[c.target]}:
            by_kind[k] += 1
    for h, n in load.items():
        assert n <= hosts[h].slots, f"{h}: {n} cells on {hosts[h].slots} slots"
    for k, cap in limits.per_kind.items():
        assert by_kind[k] <= max(cap, state.running_by_kind.get(k, 0))


def test_three_cells_fit_on_six_single_slot_hosts() -> None:
    # a->b and b->a would block c; a perfect matching a->b, b->c, c->a (or similar) uses every host
    cells, hosts, ph, kinds = three_platforms()
    picks = schedule(cells, hosts, ph, kinds, LabState({}, {}, 0), Concurrency(max_cells=10))
    assert len(picks) == 3
    check_caps(picks, {c.id: c for c in cells}, hosts, ph, kinds, LabState({}, {}, 0), Concurrency(max_cells=10))


@pytest.mark.parametrize("seed", range(40))
def test_one_decision_never_exceeds_caps(seed: int) -> None:
    cells, dur, hosts, ph, kinds, limits = random_lab(seed)
    rng = random.Random(seed)
    # some cells already running, some hosts taken away by the operator
    load = {h: rng.randint(0, hosts[h].slots) for h in hosts if rng.random() < 0.3}
    running_kind = {k: rng.randint(0, limits.per_kind.get(k, 2)) for k in set(kinds.values()) if rng.random() < 0.3}
    state = LabState(load, running_kind, min(sum(load.values()) // 2, limits.max_cells))
    unavailable = frozenset(h for h in hosts if rng.random() < 0.1)
    picks = schedule(cells, hosts, ph, kinds, state, limits, dur, unavailable)
    check_caps(picks, {c.id: c for c in cells}, hosts, ph, kinds, state, limits, unavailable)


def test_nothing_to_do_when_full_or_empty() -> None:
    cells, hosts, ph, kinds = three_platforms()
    assert schedule([], hosts, ph, kinds, LabState({}, {}, 0), Concurrency()) == []
    assert schedule(cells, hosts, ph, kinds, LabState({}, {}, 4), Concurrency(max_cells=4)) == []
    full = LabState({h: 1 for h in hosts}, {}, 3)
    assert schedule(cells, hosts, ph, kinds, full, Concurrency(max_cells=10)) == []


def test_longest_first_on_the_critical_platform() -> None:
    cells, hosts, ph, kinds = three_platforms(n_per=1)
    est = {c.id: float(i) for i, c in enumerate(cells)}
    picks = schedule(cells, hosts, ph, kinds, LabState({}, {}, 0), Concurrency(max_cells=1), est)
    # one slot: all platforms are equally loaded, so the longest cell goes first
    assert [a.cell_id for a in picks] == [max(est, key=est.get)]


@pytest.mark.parametrize("seed", range(12))
def test_ours_never_slower_than_fifo_and_above_the_bound(seed: int) -> None:
    cells, dur, hosts, ph, kinds, limits = random_lab(seed)
    bound = lower_bound_s(cells, dur, hosts, ph, kinds, limits)

    def run(policy, est=None) -> float:  # simulate() asserts slots/caps/max_cells on every decision
        return simulation.simulate(cells, dur, hosts, kinds, limits, policy, estimate_s=est).makespan_s

    ours = run(lambda pool, s: schedule_pool(pool, hosts, ph, kinds, s, limits), dur)
    fifo = run(lambda pool, s: fifo_schedule(pool.iter_cells(), hosts, ph, kinds, s, limits))
    assert bound.seconds <= ours + 1e-6
    assert ours <= fifo * 1.0001, (ours / bound.seconds, fifo / bound.seconds)


def test_synthetic_lab_within_5_percent_of_the_bound() -> None:
    lab = simulation.synthetic_lab(400)
    H, PH, PK, L = lab.host_map, lab.platform_hosts, lab.platform_kind, lab.plan.concurrency
    bound = lower_bound_s(lab.cells, lab.duration_s, H, PH, PK, L)
    ours = simulation.simulate(
        lab.cells, lab.duration_s, H, PK, L, simulation.policy_ours(lab), estimate_s=lab.estimate_s
    )
    fifo = simulation.simulate(lab.cells, lab.duration_s, H, PK, L, simulation.policy_fifo(lab))
    assert ours.makespan_s <= 1.05 * bound.seconds
    assert fifo.makespan_s > 1.5 * bound.seconds


def test_scaled_lab_has_scale_times_the_hosts_platforms_and_caps() -> None:
    base, big = simulation.synthetic_lab(2000), simulation.synthetic_lab(10000, scale=5)
    assert (len(base.hosts), len(base.platform_hosts), len(base.cells)) == (40, 8, 2000)
    assert (len(big.hosts), len(big.platform_hosts), len(big.cells)) == (200, 40, 10000)
    assert big.plan.concurrency.max_cells == 5 * base.plan.concurrency.max_cells
    assert big.plan.concurrency.per_kind == {"vsphere": 5 * base.plan.concurrency.per_kind["vsphere"]}
    assert {h.name for h in base.hosts} <= {h.name for h in big.hosts}  # scale 1 is the same lab


@pytest.mark.parametrize("seed", range(60))
def test_the_pool_decides_exactly_as_the_full_pass(seed: int) -> None:
    """``schedule_pool`` (incremental) makes the decisions ``schedule_v4`` (every pending cell on
    every pass) made, on random labs and random mid-campaign states, with and without estimates."""
    cells, dur, hosts, ph, kinds, limits = random_lab(seed)
    rng = random.Random(seed)
    pool = PendingPool(kinds)
    for c in cells:
        pool.add(c, dur[c.id])
    load, by_kind, total = Counter(), Counter(), 0
    for _ in range(rng.randint(0, 4)):  # start some cells, then compare on what is left
        state = LabState(dict(load), dict(by_kind), total)
        want = schedule_v4(pool.cells(), hosts, ph, kinds, state, limits, dur)
        assert schedule_pool(pool, hosts, ph, kinds, state, limits) == want
        for a in want[: rng.randint(0, len(want))]:
            c = pool.remove(a.cell_id)
            load[a.source_host] += 1
            load[a.target_host] += 1
            total += 1
            for k in {kinds[c.source], kinds[c.target]}:
                by_kind[k] += 1
    state = LabState(dict(load), dict(by_kind), total)
    left = pool.cells()
    assert schedule(left, hosts, ph, kinds, state, limits) == schedule_v4(left, hosts, ph, kinds, state, limits)
    unavailable = frozenset(h for h in hosts if rng.random() < 0.2)
    assert schedule(left, hosts, ph, kinds, state, limits, dur, unavailable) == schedule_v4(
        left, hosts, ph, kinds, state, limits, dur, unavailable
    )


def test_lower_bound_names_the_bottleneck() -> None:
    cells, hosts, ph, kinds = three_platforms(n_per=2)
    dur = {c.id: 3600.0 for c in cells}
    b = lower_bound_s(cells, dur, hosts, ph, kinds, Concurrency(max_cells=1))
    assert b.constraint == "max_cells" and b.seconds == 12 * 3600
    b = lower_bound_s(cells, dur, hosts, ph, kinds, Concurrency(max_cells=100, per_kind={"xen": 1}))
    assert b.constraint == "kind-cap xen" and b.seconds == 8 * 3600  # 8 of 12 cells touch b (xen)


def test_simulated_durations_are_deterministic_and_near_the_estimate() -> None:
    lab = simulation.synthetic_lab(200)
    again = simulation.synthetic_lab(200)
    assert lab.duration_s == again.duration_s
    ratio = sum(lab.duration_s.values()) / sum(lab.estimate_s.values())
    assert 0.95 < ratio < 1.05
    c = lab.cells[0]
    est = estimate_cell_s(lab.plan.image(c.image), lab.platform_kind[c.source], lab.platform_kind[c.target])
    assert lab.estimate_s[c.id] == pytest.approx(est)
