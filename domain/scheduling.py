"""Which pending cells to start now, and on which hosts. Pure: the workflow calls it on every change.

A cell needs one source host and one target host at once. Hosts have slots; kinds and the campaign
have concurrency caps (a cell counts once against each kind it touches). The policy is greedy list
scheduling driven by *pressure*, then a small matching repair:

- pressure of a resource (a platform's host pool, a capped kind) = pending work that can only run
  there / its capacity, i.e. how long it must stay busy at least. The resource with the highest
  pressure decides the makespan, so it must never idle and must finish its work last;
- a cell is ranked by the pressure of its tightest resource, then of its second one (a cell that
  needs two busy resources at once is the hardest to place later: start it while partners exist),
  then longest first (LPT, using ``estimate_s``), so the tail of each critical pool is short cells;
- hosts: the one with most free slots, so multi-slot hosts fill evenly;
- repair: a pure greedy can block itself (6 single-slot hosts on 3 platforms: a->b and b->a leave
  c idle, although a->b, b->c, c->a all fit). So we try to drop one pick and place two others
  instead, keeping the swap only when it occupies more pressure-weighted slots.

``lower_bound_s`` gives the capacity bound the benchmark compares makespans with.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from domain import stages
from domain.model import Cell, Concurrency, GuestImage, Host

# The static cost model (seconds) of a cell lives in the stage table (``domain.stages``): fixed
# per-stage overheads plus work per GiB of guest disk. It is used when no measured estimate is
# known; the simulated lab draws its real durations around the same model, so estimates are right
# on average.


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


@dataclass
class Bound:
    seconds: float
    constraint: str  # which resource sets the bound, e.g. "platform xen-a" / "kind-cap vsphere"


def platform_kinds(cell: Cell, kinds: dict[str, str]) -> tuple[str, str]:
    return kinds[cell.source], kinds[cell.target]


def stage_estimate_s(stage: str, image: GuestImage, source_kind: str, target_kind: str) -> float:
    return stages.estimate_s(stage, image.disk_mib / 1024, source_kind, target_kind)


def estimate_cell_s(image: GuestImage, source_kind: str, target_kind: str) -> float:
    """Expected wall time of one cell from the static model (every stage of an unmodified move)."""
    return sum(stage_estimate_s(s.name, image, source_kind, target_kind) for s in stages.PIPELINE if not s.remedial)


def _usable(
    p: str, platform_hosts: dict[str, list[str]], hosts: dict[str, Host], unavailable: frozenset[str]
) -> list[str]:
    return [h for h in platform_hosts.get(p, []) if h in hosts and h not in unavailable]


def _pressures(
    cells: Iterable[Cell],
    est: dict[str, float],
    hosts: dict[str, Host],
    platform_hosts: dict[str, list[str]],
    platform_kind: dict[str, str],
    limits: Concurrency,
    unavailable: frozenset[str],
) -> tuple[dict[str, float], dict[str, float]]:
    """Work per unit of capacity that only a platform's pool (resp. a capped kind) can serve."""
    plat_work: Counter[str] = Counter()
    kind_work: Counter[str] = Counter()
    for c in cells:
        d = est.get(c.id, 1.0)
        plat_work[c.source] += d
        plat_work[c.target] += d  # a same-platform cell needs two hosts of the pool
        for k in {platform_kind[c.source], platform_kind[c.target]}:
            kind_work[k] += d
    plat = {}
    for p, w in plat_work.items():
        slots = sum(hosts[h].slots for h in _usable(p, platform_hosts, hosts, unavailable))
        plat[p] = w / slots if slots else 0.0
    kind = {k: w / cap for k, w in kind_work.items() if (cap := limits.per_kind.get(k)) and cap > 0}
    return plat, kind


def schedule_v4(
    pending: list[Cell],
    hosts: dict[str, Host],
    platform_hosts: dict[str, list[str]],
    platform_kind: dict[str, str],
    state: LabState,
    limits: Concurrency,
    estimate_s: dict[str, float] | None = None,
    unavailable: frozenset[str] = frozenset(),
) -> list[Assignment]:
    """The scheduler as campaigns recorded before replay set v5 ran it: a full pass over every
    pending cell (O(pending) per decision). Kept verbatim for those runs, whose replay must make
    the same decisions down to float rounding; everything else calls ``schedule``/``schedule_pool``.
    """
    if not pending or state.running_total >= limits.max_cells:
        return []
    est = estimate_s or {}
    usable = {p: _usable(p, platform_hosts, hosts, unavailable) for p in platform_hosts}
    free = {h: hosts[h].slots - state.host_load.get(h, 0) for hs in usable.values() for h in hs}
    if not any(v > 0 for v in free.values()):
        return []
    plat_p, kind_p = _pressures(pending, est, hosts, platform_hosts, platform_kind, limits, unavailable)

    # cells of one (source, target) class are interchangeable but for duration: rank classes, and
    # keep each class's cells longest-first; only as many as could possibly start are looked at
    classes: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in pending:
        classes[(c.source, c.target)].append(c)
    room = min(limits.max_cells - state.running_total, sum(v for v in free.values() if v > 0))
    ranked: list[tuple[tuple, Cell]] = []
    for (s, t), cs in classes.items():
        ks = {platform_kind[s], platform_kind[t]}
        press = sorted([plat_p.get(s, 0.0), plat_p.get(t, 0.0), *(kind_p.get(k, 0.0) for k in ks)], reverse=True)
        for c in heapq.nlargest(room, cs, key=lambda c: (est.get(c.id, 1.0), c.id)):
            ranked.append(((-press[0], -press[1], -est.get(c.id, 1.0), c.id), c))
    ranked.sort(key=lambda x: x[0])
    order = [c for _, c in ranked]

    ctx = _Ctx(free, Counter(state.running_by_kind), state.running_total, limits, usable, platform_kind)
    picks = ctx.greedy(order)
    weight = {p: 1.0 + v for p, v in plat_p.items()}
    _repair(ctx, picks, order, weight)
    return [Assignment(c.id, s, t) for c, s, t in picks]


class PendingPool:
    """The pending cells of a campaign, kept ready for scheduling as cells come and go.

    ``schedule_v4`` regrouped, re-summed and re-sorted every pending cell on every decision: at
    10,000 cells that is most of a campaign's CPU. The pool keeps each (source, target) class
    sorted by estimate and the work sums the pressures need, so a pass costs O(classes x room)
    and adding/removing a cell O(class size) at worst. Estimates are held in integer
    milliseconds so the incremental sums are exact (a fresh sum and a running one agree).
    """

    def __init__(self, platform_kind: dict[str, str]) -> None:
        self.kind = platform_kind
        self._cells: dict[str, tuple[Cell, int]] = {}  # id -> (cell, estimate ms), arrival order
        # class -> [(-estimate ms, id)] ascending: longest first, ties by id (the ranking order)
        self._classes: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self.plat_work_ms: Counter[str] = Counter()
        self.kind_work_ms: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._cells)

    def __contains__(self, cell_id: object) -> bool:
        return cell_id in self._cells

    def __iter__(self):
        return iter(self._cells)

    def cell(self, cell_id: str) -> Cell:
        return self._cells[cell_id][0]

    def cells(self) -> list[Cell]:
        """Every pending cell, in arrival order."""
        return [c for c, _ in self._cells.values()]

    def ids(self) -> list[str]:
        return list(self._cells)

    def iter_cells(self):
        """Pending cells in arrival order, lazily (a FIFO pass stops at the first it cannot start)."""
        return (c for c, _ in self._cells.values())

    def add(self, cell: Cell, estimate_s: float = 1.0) -> None:
        if cell.id in self._cells:
            return
        ms = max(1, round(estimate_s * 1000))
        self._cells[cell.id] = (cell, ms)
        bisect.insort(self._classes.setdefault((cell.source, cell.target), []), (-ms, cell.id))
        self._account(cell, ms)

    def remove(self, cell_id: str) -> Cell:
        cell, ms = self._cells.pop(cell_id)
        key = (cell.source, cell.target)
        cs = self._classes[key]
        i = bisect.bisect_left(cs, (-ms, cell_id))
        del cs[i]
        if not cs:
            del self._classes[key]
        self._account(cell, -ms)
        return cell

    def _account(self, cell: Cell, ms: int) -> None:
        self.plat_work_ms[cell.source] += ms
        self.plat_work_ms[cell.target] += ms  # a same-platform cell needs two hosts of the pool
        for k in {self.kind[cell.source], self.kind[cell.target]}:
            self.kind_work_ms[k] += ms

    def classes(self) -> dict[tuple[str, str], list[tuple[int, str]]]:
        return self._classes

    @staticmethod
    def candidates(cs: list[tuple[int, str]], room: int, need: int) -> list[tuple[int, str]]:
        """The first ``need`` of a class's ``room`` candidates, in ranking order.

        ``schedule_v4`` took the ``room`` longest cells of a class (ties: the largest ids) and
        ranked them longest first (ties: the smallest ids). ``cs`` is in ranking order, so that
        is every cell before the group of equal estimates the window ends in, then the last
        (largest-id) cells of that group: found by bisection, without sorting anything."""
        w = min(room, len(cs))
        if w <= 0 or need <= 0:
            return []
        m = cs[w - 1][0]
        start = bisect.bisect_left(cs, (m,))  # first cell of the boundary group
        if need <= start:
            return cs[:need]
        end = bisect.bisect_left(cs, (m + 1,))
        tail = cs[end - (w - start) : end]
        return cs[:start] + tail[: need - start]


def schedule_pool(
    pool: PendingPool,
    hosts: dict[str, Host],
    platform_hosts: dict[str, list[str]],
    platform_kind: dict[str, str],
    state: LabState,
    limits: Concurrency,
    unavailable: frozenset[str] = frozenset(),
) -> list[Assignment]:
    """``schedule`` over a ``PendingPool``: the same ranking, greedy and repair, without touching
    every pending cell. Never exceeds host slots, per-kind caps or ``max_cells``."""
    if not len(pool) or state.running_total >= limits.max_cells:
        return []
    usable = {p: _usable(p, platform_hosts, hosts, unavailable) for p in platform_hosts}
    free = {h: hosts[h].slots - state.host_load.get(h, 0) for hs in usable.values() for h in hs}
    if not any(v > 0 for v in free.values()):
        return []
    plat_p: dict[str, float] = {}
    for p, w in pool.plat_work_ms.items():
        if w:
            slots = sum(hosts[h].slots for h in usable.get(p, []))
            plat_p[p] = w / 1000 / slots if slots else 0.0
    kind_p = {
        k: w / 1000 / cap for k, w in pool.kind_work_ms.items() if w and (cap := limits.per_kind.get(k)) and cap > 0
    }
    room = min(limits.max_cells - state.running_total, sum(v for v in free.values() if v > 0))
    pool_free = {p: sum(max(free[h], 0) for h in hs) for p, hs in usable.items()}
    kind_room = {k: cap - state.running_by_kind.get(k, 0) for k, cap in limits.per_kind.items()}
    ranked: list[tuple[tuple, Cell]] = []
    for (s, t), cs in pool.classes().items():
        # at most as many of a class as could start at once, plus two: the repair step looks at
        # the first two a pass did not start (all ``schedule_v4`` looked at beyond the placeable)
        fit = pool_free.get(s, 0) // 2 if s == t else min(pool_free.get(s, 0), pool_free.get(t, 0))
        if fit <= 0:
            # No free slot on one side now. Nothing in this pass frees a slot that was not free
            # when it began (the repair step only gives back what a pick took), so no cell of
            # the class can start: leaving it out changes no decision, and saves most of a pass.
            continue
        ks = {platform_kind[s], platform_kind[t]}
        fit = min([fit, *(kind_room[k] for k in ks if k in kind_room)])
        if fit <= 0:  # a kind cap already reached: the same argument
            continue
        # The candidates are the ``room`` longest (ties: largest id), ranked longest first (ties:
        # smallest id), as ``schedule_v4`` did; the pass keeps the first ``fit + 2`` of them.
        press = sorted([plat_p.get(s, 0.0), plat_p.get(t, 0.0), *(kind_p.get(k, 0.0) for k in ks)], reverse=True)
        for neg_ms, cid in PendingPool.candidates(cs, room, max(fit, 0) + 2):
            ranked.append(((-press[0], -press[1], neg_ms, cid), pool.cell(cid)))
    ranked.sort(key=lambda x: x[0])
    order = [c for _, c in ranked]

    ctx = _Ctx(free, Counter(state.running_by_kind), state.running_total, limits, usable, platform_kind)
    picks = ctx.greedy(order)
    weight = {p: 1.0 + v for p, v in plat_p.items()}
    _repair(ctx, picks, order, weight)
    return [Assignment(c.id, s, t) for c, s, t in picks]


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
    """Assignments to start now. Never exceeds host slots, per-kind caps or ``max_cells``.

    ``estimate_s``: expected duration per cell id (missing ids count as 1 s, i.e. all equal).
    A one-off call; a campaign keeps a ``PendingPool`` and calls ``schedule_pool``.
    """
    est = estimate_s or {}
    pool = PendingPool(platform_kind)
    for c in pending:
        pool.add(c, est.get(c.id, 1.0))
    return schedule_pool(pool, hosts, platform_hosts, platform_kind, state, limits, unavailable)


class _Ctx:
    """Mutable capacity bookkeeping for one scheduling pass."""

    def __init__(
        self,
        free: dict[str, int],
        by_kind: Counter[str],
        total: int,
        limits: Concurrency,
        usable: dict[str, list[str]],
        platform_kind: dict[str, str],
    ):
        self.free, self.by_kind, self.total = free, by_kind, total
        self.limits, self.usable, self.kind = limits, usable, platform_kind

    def _kinds(self, c: Cell) -> set[str]:
        return {self.kind[c.source], self.kind[c.target]}

    def _best(self, p: str, exclude: str) -> str:
        best, best_free = "", 0
        for h in self.usable.get(p, []):
            if h != exclude and self.free[h] > best_free:
                best, best_free = h, self.free[h]
        return best

    def place(self, c: Cell) -> tuple[Cell, str, str] | None:
        if self.total >= self.limits.max_cells:
            return None
        ks = self._kinds(c)
        if any(k in self.limits.per_kind and self.by_kind[k] + 1 > self.limits.per_kind[k] for k in ks):
            return None
        src = self._best(c.source, "")
        tgt = self._best(c.target, src) if src else ""
        if not tgt:
            return None
        self.free[src] -= 1
        self.free[tgt] -= 1
        for k in ks:
            self.by_kind[k] += 1
        self.total += 1
        return c, src, tgt

    def unplace(self, pick: tuple[Cell, str, str]) -> None:
        c, src, tgt = pick
        self.free[src] += 1
        self.free[tgt] += 1
        for k in self._kinds(c):
            self.by_kind[k] -= 1
        self.total -= 1

    def greedy(self, order: list[Cell]) -> list[tuple[Cell, str, str]]:
        out = []
        dead: set[tuple[str, str]] = set()  # capacity only shrinks in a pass: a class that failed stays failed
        for c in order:
            if self.total >= self.limits.max_cells:
                break
            if (c.source, c.target) in dead:
                continue
            if (p := self.place(c)) is not None:
                out.append(p)
            else:
                dead.add((c.source, c.target))
        return out


def _repair(ctx: _Ctx, picks: list[tuple[Cell, str, str]], order: list[Cell], weight: dict[str, float]) -> None:
    """1-for-2 swaps while they occupy more pressure-weighted slots (a bounded local search)."""
    if not picks or sum(v for v in ctx.free.values() if v > 0) < 2:
        return  # dropping one cell frees 2 slots; placing two needs 4

    def value(ps: list[tuple[Cell, str, str]]) -> float:
        return sum(weight.get(c.source, 1.0) + weight.get(c.target, 1.0) for c, _, _ in ps)

    for _ in range(len(picks) + 1):
        if ctx.total >= ctx.limits.max_cells:
            return
        improved = False
        taken = {c.id for c, _, _ in picks}
        # cells of a class are alike for feasibility: two candidates per class keep this cheap
        per_class: Counter[tuple[str, str]] = Counter()
        cands = []
        for c in order:
            if c.id not in taken and per_class[(c.source, c.target)] < 2:
                per_class[(c.source, c.target)] += 1
                cands.append(c)
        for i in range(len(picks) - 1, -1, -1):  # cheapest-to-drop picks are the last ones
            old = picks[i]
            ctx.unplace(old)
            new = ctx.greedy(cands)
            if len(new) >= 2 and value(new) > value([old]) + 1e-9:
                picks[i : i + 1] = new
                improved = True
                break
            for p in new:
                ctx.unplace(p)
            _restore(ctx, old)
        if not improved:
            return


def _restore(ctx: _Ctx, pick: tuple[Cell, str, str]) -> None:
    c, src, tgt = pick
    ctx.free[src] -= 1
    ctx.free[tgt] -= 1
    for k in ctx._kinds(c):
        ctx.by_kind[k] += 1
    ctx.total += 1


def lower_bound_s(
    cells: list[Cell],
    duration_s: dict[str, float],
    hosts: dict[str, Host],
    platform_hosts: dict[str, list[str]],
    platform_kind: dict[str, str],
    limits: Concurrency,
    unavailable: frozenset[str] = frozenset(),
) -> Bound:
    """A makespan no schedule can beat: the most loaded resource, or the longest cell.

    Resources: each platform's host pool (cells touching it, twice for same-platform cells, over
    its slots), all hosts of a kind together, each per-kind cap, ``max_cells`` and the whole lab.
    """
    if not cells:
        return Bound(0.0, "empty")
    d = {c.id: duration_s[c.id] for c in cells}
    cands = [Bound(max(d.values()), "longest cell")]
    plat_p, kind_p = _pressures(cells, d, hosts, platform_hosts, platform_kind, limits, unavailable)
    cands += [Bound(v, f"platform {p}") for p, v in plat_p.items()]
    cands += [Bound(v, f"kind-cap {k}") for k, v in kind_p.items()]
    # every host of a kind: cells touching kind k need 1 (or 2, if both ends are k) of its slots
    kind_slots: Counter[str] = Counter()
    for h in {h for p in platform_hosts for h in _usable(p, platform_hosts, hosts, unavailable)}:
        kind_slots[hosts[h].kind] += hosts[h].slots
    kind_work: Counter[str] = Counter()
    for c in cells:
        kind_work[platform_kind[c.source]] += d[c.id]
        kind_work[platform_kind[c.target]] += d[c.id]
    cands += [Bound(w / kind_slots[k], f"kind {k}") for k, w in kind_work.items() if kind_slots[k]]
    total = sum(d.values())
    cands.append(Bound(total / max(limits.max_cells, 1), "max_cells"))
    if (all_slots := sum(kind_slots.values())) > 0:
        cands.append(Bound(2 * total / all_slots, "all slots"))
    return max(cands, key=lambda b: b.seconds)


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
    by_kind = Counter(state.running_by_kind)
    total = state.running_total
    out: list[Assignment] = []
    for cell in pending:
        if total >= limits.max_cells:
            break
        ks = {platform_kind[cell.source], platform_kind[cell.target]}
        if any(k in limits.per_kind and by_kind[k] >= limits.per_kind[k] for k in ks):
            break  # the baseline honours the same caps, it just never looks past the head
        src = next(
            (h for h in platform_hosts.get(cell.source, []) if h in hosts and load.get(h, 0) < hosts[h].slots),
            "",
        )
        tgt = next(
            (
                h
                for h in platform_hosts.get(cell.target, [])
                if h != src and h in hosts and load.get(h, 0) < hosts[h].slots
            ),
            "",
        )
        if not src or not tgt:
            break  # FIFO: the head blocks everything behind it
        load[src] = load.get(src, 0) + 1
        load[tgt] = load.get(tgt, 0) + 1
        for k in ks:
            by_kind[k] += 1
        total += 1
        out.append(Assignment(cell.id, src, tgt))
    return out


def why_unschedulable(
    pending: list[Cell],
    hosts: dict[str, Host],
    platform_hosts: dict[str, list[str]],
    platform_kind: dict[str, str],
    limits: Concurrency,
    unavailable: frozenset[str] = frozenset(),
) -> str:
    """Why none of ``pending`` can start on an idle lab ("" when one can): the campaign watchdog's
    reason, naming the constraint and how many cells it holds."""
    if not pending:
        return ""
    if schedule(pending, hosts, platform_hosts, platform_kind, LabState({}, {}, 0), limits, unavailable=unavailable):
        return ""
    if limits.max_cells < 1:
        return f"max_cells is {limits.max_cells}: no cell may run"
    reasons: Counter[str] = Counter()
    for c in pending:
        ks = {platform_kind[c.source], platform_kind[c.target]}
        capped = sorted(k for k in ks if k in limits.per_kind and limits.per_kind[k] < 1)
        usable = {p: _usable(p, platform_hosts, hosts, unavailable) for p in (c.source, c.target)}
        slotted = {p: [h for h in hs if hosts[h].slots > 0] for p, hs in usable.items()}
        if capped:
            reasons[f"concurrency.per_kind caps {', '.join(capped)} at 0"] += 1
        elif not slotted[c.source] or not slotted[c.target]:
            missing = sorted(p for p, hs in slotted.items() if not hs)
            reasons[f"no host in service with a free slot for platform(s) {', '.join(missing)}"] += 1
        elif c.source == c.target and len(slotted[c.source]) < 2:
            reasons[
                f"a {c.source} -> {c.source} cell needs two hosts of {c.source}, it has {len(slotted[c.source])}"
            ] += 1
        elif len(set(slotted[c.source]) | set(slotted[c.target])) < 2:
            reasons[f"{c.source} and {c.target} share their only host: a cell needs two"] += 1
        else:
            reasons["no combination of free host slots fits"] += 1
    return "; ".join(f"{n} pending cell{'s' * (n != 1)}: {why}" for why, n in reasons.most_common(3))
