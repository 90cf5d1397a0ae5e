"""Where a campaign's time went, from its execution log (``executions.jsonl``): per cell and
stage the seconds, the sub-steps (``crossvisor.core.steps``) and their CPU, measured against the
cell's own boot; the campaign's wall time against its CPU floor.

Pure: takes the log's records (dicts), returns numbers. ``bench/cell_time.py`` prints them and
the demo prints the floor at its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# goals of issue 24, as ratios (stage seconds / the cell's boot seconds; wall / CPU floor)
IMPORT_MAX_BOOTS = 1 / 3
PROVISION_CACHED_MAX_BOOTS = 1 / 3
LIFECYCLE_MAX_BOOTS = 1.0
UPLOAD_MIN_OF_LOCAL_COPY = 0.5
FIRST_DEMO_MAX_FLOOR = 1.3
WARM_DEMO_MAX_FLOOR = 1.2


@dataclass
class StageTime:
    cell: str
    stage: str
    seconds: float
    outcome: str
    steps: dict[str, dict[str, float]] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0

    @property
    def cpu_s(self) -> float:
        return sum(float(s.get("cpu_s", 0.0)) for s in self.steps.values())

    def largest_step(self) -> tuple[str, float]:
        """The sub-step with the most (exclusive) seconds, or "other" when nothing named covers
        more than what no step covered."""
        named = max(self.steps.items(), key=lambda kv: kv[1].get("seconds", 0.0), default=None)
        other = max(0.0, self.seconds - sum(s.get("seconds", 0.0) for s in self.steps.values()))
        if named is None or named[1].get("seconds", 0.0) < other:
            return "other", other
        return named[0], float(named[1].get("seconds", 0.0))


def stage_times(records: list[dict], campaign: str | None = None) -> list[StageTime]:
    """The last finished attempt of every (cell, stage) of ``campaign`` (default: the campaign of
    the log's last record), in the order they ended."""
    if campaign is None:
        campaign = records[-1]["campaign"] if records else ""
    starts: dict[tuple[str, str, int], float] = {}
    out: dict[tuple[str, str], StageTime] = {}
    for r in records:
        if r.get("campaign") != campaign:
            continue
        k = (r["cell"], r["stage"], r.get("attempt", 1))
        if r["event"] == "start":
            starts[k] = r["t"]
        elif r["event"] == "end":
            t0 = starts.get(k, r["t"])
            out[(r["cell"], r["stage"])] = StageTime(
                r["cell"],
                r["stage"],
                float(r.get("seconds", r["t"] - t0)),
                r.get("outcome", ""),
                dict(r.get("steps") or {}),
                t0,
                r["t"],
            )
    return sorted(out.values(), key=lambda s: s.end)


def campaigns(records: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.setdefault(r.get("campaign", ""), None)
    return list(seen)


@dataclass
class Floor:
    wall_s: float  # first stage start to last stage end
    cpu_s: float  # CPU of builds, births, boots (guest CPU) and conversions, every cell
    cores: int

    @property
    def floor_s(self) -> float:
        return self.cpu_s / max(1, self.cores)

    @property
    def ratio(self) -> float:
        return self.wall_s / self.floor_s if self.floor_s > 0 else float("inf")


def floor(times: list[StageTime], cores: int) -> Floor:
    if not times:
        return Floor(0.0, 0.0, cores)
    wall = max(t.end for t in times) - min(t.start for t in times)
    return Floor(wall, sum(t.cpu_s for t in times), cores)


def boot_seconds(times: list[StageTime]) -> dict[str, float]:
    """cell -> its target boot's seconds (the unit every other stage is measured in)."""
    return {t.cell: t.seconds for t in times if t.stage == "boot" and t.outcome in ("ok", "reused") and t.seconds > 0}


def upload_rate(times: list[StageTime]) -> tuple[int, float]:
    """The largest single upload of the campaign that was timed against a local copy of its
    file (dense files: a sparse one crosses as its data only): (bytes, seconds)."""
    best = (0, 0.0)
    for t in times:
        up = t.steps.get("upload") or {}
        if up.get("big_copy_s") and int(up.get("big_bytes", 0)) > best[0]:
            best = (int(up["big_bytes"]), float(up.get("big_s", 0.0)))
    return best


def image_was_cached(t: StageTime, build_max_s: float = 5.0) -> bool:
    """A provision that found its image (and birth) cached: no build, no birth boot."""
    build = t.steps.get("image build")
    if build is None:  # no image was asked for (or a log from before sub-steps): not this case
        return False
    return "birth" not in t.steps and float(build.get("seconds", 0.0)) < build_max_s


# -- the ETA from this lab's measured stage times ------------------------------------------------

SOURCE_SIDE = ("provision", "baseline", "export")  # once per (source platform, image): later cells reuse it
ONCE_PER_IMAGE = ("image build",)  # a build serves every later cell of that image: not a per-cell cost
# Time a stage spent waiting on other cells: for a guest slot, for the cell that makes the shared
# source side, for another activity's upload of the same layer. Not the stage's own work: the
# wait is what the ETA's bounds model (a slot-bound demo's boot waited 70 s for 27 s of boot, and
# the ETA of its last cell, counting that wait again after the others were done, said +85 %).
WAITS = ("wait for a core", "wait for source side", "wait for upload")
SLOT_STEPS = ("start", "console wait", "birth")  # what a boot does while it holds a guest slot
MIN_MEASURED_CELLS = 2  # below this the ETA is the static model, printed as such, without hours


@dataclass
class LabModel:
    """Stage seconds measured in this lab (the result store's cells), by (stage, platform of the
    stage's side, image); a missing key falls back to the stage's mean for the image, then for
    the platform, then overall. ``samples``: a stage's own work (its waits left out); ``slot``:
    the part of it a guest held one of the machine's guest slots."""

    samples: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    slot: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    cells: int = 0  # cells that contributed (not cached, ran their stages here)
    slot_bound: bool = False  # boots here waited for guest slots (guests run on the worker's cores)

    @staticmethod
    def _keys(stage: str, platform: str, image: str):
        return ((stage, platform, image), (stage, "*", image), (stage, platform, "*"), (stage, "*", "*"))

    def add(self, stage: str, platform: str, image: str, seconds: float, slot_s: float = 0.0) -> None:
        for k in self._keys(stage, platform, image):
            self.samples.setdefault(k, []).append(seconds)
            self.slot.setdefault(k, []).append(slot_s)

    def _mean(self, table: dict[tuple[str, str, str], list[float]], stage: str, platform: str, image: str):
        for k in self._keys(stage, platform, image):
            got = table.get(k)
            if got:
                return sum(got) / len(got)
        return None

    def stage_s(self, stage: str, platform: str, image: str) -> float | None:
        return self._mean(self.samples, stage, platform, image)

    def slot_s(self, stage: str, platform: str, image: str) -> float:
        return self._mean(self.slot, stage, platform, image) or 0.0


def lab_model(results) -> LabModel:
    """From stored cell results (``CellResult``): every stage that did its work here ("ok",
    round 0), its seconds less its waits and what it spent once per image (a build)."""
    model = LabModel()
    for r in results:
        if getattr(r, "cached", False):
            continue
        used = False
        for s in r.stages:
            if s.status != "ok" or s.round:
                continue
            timing = s.timing or {}

            def secs(names: tuple[str, ...], timing: dict = timing) -> float:
                return sum(float((timing.get(k) or {}).get("seconds", 0.0)) for k in names)

            platform = r.source if s.stage in SOURCE_SIDE else r.target
            model.add(
                s.stage,
                platform,
                r.image,
                max(0.0, s.duration_s - secs(ONCE_PER_IMAGE) - secs(WAITS)),
                secs(SLOT_STEPS),
            )
            model.slot_bound = model.slot_bound or "wait for a core" in timing
            used = True
        model.cells += used
    return model


def _stage_of(running: str) -> str:
    """The pipeline stage a running cell is in: a round of the remediation ladder ("boot (after
    nic-config)", "remediate") is read as its re-import onwards, not as a cell at its start (the
    fresh demo's ETA said +270 % for its one remediated cell)."""
    stage = running.split(" (after ", 1)[0]
    return "import" if stage == "remediate" else stage


def _left(
    model: LabModel,
    c,
    running_at: dict[str, str],
    pipeline: list[str],
    slots_only: bool = False,
    under_way: bool = True,
) -> list[tuple[str, float]] | None:
    """The stages cell ``c`` has left with their measured seconds (or guest-slot seconds), from
    the stage it is in (half of that one counted as left when it is ``under_way``, all of it when
    it still waits); None when one was never measured here."""
    names = list(pipeline)
    at = _stage_of(running_at.get(c.id, ""))
    if at in names:
        names = names[names.index(at) :]
    out = []
    for i, stage in enumerate(names):
        platform = c.source if stage in SOURCE_SIDE else c.target
        s = model.stage_s(stage, platform, c.image)
        if s is None:
            return None
        if slots_only:
            s = model.slot_s(stage, platform, c.image)
        out.append((stage, s / 2 if (i == 0 and at and under_way) else s))
    return out


def remaining_s(
    model: LabModel,
    cells: list,
    done: set[str],
    running_at: dict[str, str],
    pipeline: list[str],
    sources_done: set[tuple[str, str]],
    slots_only: bool = False,
    slots: int = 0,
) -> float | None:
    """Stage-seconds of work left: every stage of each cell not done, from the stage a running
    cell is in (half of that one counted as left); the source side of a (source, image) once.
    ``slots_only``: only the seconds its boots will hold a guest slot; of the cells in a stage
    that boots, only ``slots`` can be holding one (0: any number), the others still wait for
    theirs and have all of it left (six cells "in boot" on two slots: four have not started).
    None when a stage has no measurement at all."""
    total = 0.0
    claimed = set(sources_done)
    booting = 0
    for c in cells:
        if c.id in done:
            continue
        at = _stage_of(running_at.get(c.id, ""))
        under_way = True
        if slots_only and slots and at in pipeline:
            platform = c.source if at in SOURCE_SIDE else c.target
            if model.slot_s(at, platform, c.image) > 0:
                booting += 1
                under_way = booting <= slots
        left = _left(model, c, running_at, pipeline, slots_only, under_way)
        if left is None:
            return None
        src = (c.source, c.image)
        for stage, s in left:
            if not (stage in SOURCE_SIDE and src in claimed and not (at and at in SOURCE_SIDE)):
                total += s
        claimed.add(src)
    return total


def longest_remaining_s(
    model: LabModel,
    cells: list,
    done: set[str],
    running_at: dict[str, str],
    pipeline: list[str],
    sources_done: set[tuple[str, str]],
) -> float | None:
    """The longest chain of stages one unfinished cell still has to go through: its source side
    (the least left of it among the cells sharing it, unless it is done or the cell is past it),
    then its own stages. However many lanes there are, the campaign lasts at least this long."""
    side_left: dict[tuple[str, str], float] = {}
    own: dict[str, float] = {}
    for c in cells:
        if c.id in done:
            continue
        left = _left(model, c, running_at, pipeline)
        if left is None:
            return None
        side = (c.source, c.image)
        src_part = sum(s for stage, s in left if stage in SOURCE_SIDE)
        if side not in sources_done and src_part:
            side_left[side] = min(side_left.get(side, src_part), src_part)
        own[c.id] = sum(s for stage, s in left if stage not in SOURCE_SIDE)
    return max((side_left.get((c.source, c.image), 0.0) + own[c.id] for c in cells if c.id in own), default=0.0)


def eta_s(remaining: float, lanes: int, longest: float = 0.0, slot_work: float = 0.0, slots: int = 0) -> float:
    """Seconds left: the work left spread over the lanes, but never less than the longest chain
    one cell still has (with as many lanes as cells, the campaign waits for its slowest cell),
    nor than the boots left spread over the machine's guest slots where guests run on the
    worker's cores (a demo's eight lanes share two)."""
    bound = slot_work / slots if slots > 0 else 0.0
    return max(remaining / max(1, lanes), longest, bound)
