"""Which pending cells to start now, and on which hosts. Pure: the workflow calls it on every change.

A cell needs one source host and one target host at once. Hosts have slots; kinds and the campaign
have concurrency caps. The policy is greedy list scheduling with two refinements that matter for
makespan on a shared lab:
- most constrained first: cells whose platforms have the fewest hosts per pending cell go first,
  so scarce kinds never idle at the end while plentiful ones finish early;
- longest first within that (LPT), using per-cell duration estimates when known;
- least-loaded host, so that work spreads and slots free up evenly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from domain.model import Cell, Concurrency, Host


@dataclass
class Assignment:
    cell_id: str
    source_host: str
    target_host: str


@dataclass
class LabState:
    """What is busy right now. ``host_load`` counts running cells per host (source or target)."""

    host_load: dict[str, int]
    running_by_kind: dict[str, int]
    running_total: int


def platform_kinds(cell: Cell, kinds: dict[str, str]) -> tuple[str, str]:
    return kinds[cell.source], kinds[cell.target]


def schedule(
    pending: list[Cell],
    hosts: dict[str, Host],
    platform_hosts: dict[str, list[str]],
    platform_kind: dict[str, str],
    state: LabState,
    limits: Concurrency,
    estimate_s: dict[str, float] | None = None,
    unavailable: frozenset[str] = frozenset(),
) -> list[Assignment]:
    """Assignments to start now. Never exceeds host slots, per-kind caps or ``max_cells``."""
    load = dict(state.host_load)
    by_kind = Counter(state.running_by_kind)
    total = state.running_total
    est = estimate_s or {}

    demand: Counter[str] = Counter()
    for c in pending:
        demand[c.source] += 1
        demand[c.target] += 1

    def scarcity(c: Cell) -> float:
        # capacity per unit of demand on the tighter of the two platforms
        def cap(p: str) -> float:
            slots = sum(
                hosts[h].slots
                for h in platform_hosts.get(p, [])
                if h not in unavailable
            )
            return slots / max(demand[p], 1)

        return min(cap(c.source), cap(c.target))

    order = sorted(pending, key=lambda c: (scarcity(c), -est.get(c.id, 0.0), c.id))
    out: list[Assignment] = []
    for cell in order:
        if total >= limits.max_cells:
            break
        sk, tk = platform_kind[cell.source], platform_kind[cell.target]
        kinds_used = Counter([sk, tk]) if sk != tk else Counter([sk])
        if any(
            k in limits.per_kind and by_kind[k] + n > limits.per_kind[k]
            for k, n in kinds_used.items()
        ):
            continue
        src = _least_loaded(
            platform_hosts.get(cell.source, []), hosts, load, unavailable, exclude=""
        )
        if not src:
            continue
        tgt = _least_loaded(
            platform_hosts.get(cell.target, []), hosts, load, unavailable, exclude=src
        )
        if not tgt:
            continue
        load[src] = load.get(src, 0) + 1
        load[tgt] = load.get(tgt, 0) + 1
        for k, n in kinds_used.items():
            by_kind[k] += n
        total += 1
        out.append(Assignment(cell.id, src, tgt))
    return out


def _least_loaded(
    names: list[str],
    hosts: dict[str, Host],
    load: dict[str, int],
    unavailable: frozenset[str],
    exclude: str,
) -> str:
    best, best_free = "", 0
    for n in names:
        if n == exclude or n in unavailable or n not in hosts:
            continue
        free = hosts[n].slots - load.get(n, 0)
        if free > best_free:
            best, best_free = n, free
    return best


def fifo_schedule(
    pending: list[Cell],
    hosts: dict[str, Host],
    platform_hosts: dict[str, list[str]],
    platform_kind: dict[str, str],
    state: LabState,
    limits: Concurrency,
) -> list[Assignment]:
    """Naive baseline for the benchmark: strict arrival order, first free host, head-of-line blocking."""
    load = dict(state.host_load)
    total = state.running_total
    out: list[Assignment] = []
    for cell in pending:
        if total >= limits.max_cells:
            break
        src = next(
            (
                h
                for h in platform_hosts.get(cell.source, [])
                if load.get(h, 0) < hosts[h].slots
            ),
            "",
        )
        tgt = next(
            (
                h
                for h in platform_hosts.get(cell.target, [])
                if h != src and load.get(h, 0) < hosts[h].slots
            ),
            "",
        )
        if not src or not tgt:
            break  # FIFO: the head blocks everything behind it
        load[src] = load.get(src, 0) + 1
        load[tgt] = load.get(tgt, 0) + 1
        total += 1
        out.append(Assignment(cell.id, src, tgt))
    return out
