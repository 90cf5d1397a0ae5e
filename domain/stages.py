"""The stage table: every stage of a cell, declared once.

The cell workflow reads it for order, timeouts, heartbeats and retries; the scheduler for cost
estimates; the activities for which host a stage touches (metrics labels, site routing). A stage's
body is an activity class in ``activities/stages/`` (one module per stage or small group of stages,
listed in that package's docstring; ``STAGE_ACTIVITIES`` there maps each name to its class);
nothing else needs to know about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE = "source"  # touches the source host
TARGET = "target"  # touches the target host
BOTH = "both"  # touches both (reserve, cleanup, release)
NONE = "none"  # touches no host (conversion on the worker)


@dataclass(frozen=True)
class StageDef:
    name: str
    side: str  # SOURCE | TARGET | BOTH | NONE
    timeout_s: float  # start-to-close of one attempt: generous for real labs
    heartbeat_s: float = 10.0  # every stage heartbeats from a side thread: a dead worker shows in seconds
    cost_s: float = 0.0  # fixed part of the scheduler's cost model
    per_gib_s: float = 0.0  # disk-size part (the stages that move the whole disk)
    # (kind) -> factor on the disk part: vSphere exports go through NFC, Hyper-V imports rewrite VHDX
    kind_factor: dict[str, float] = field(default_factory=dict)
    always: bool = False  # runs whatever happened before: a leaked VM or lease blocks the lab
    retry_forever: bool = False  # a host leased by another campaign frees up eventually
    remedial: bool = False  # runs only after an unmodified move failed (the remediation ladder)

    @property
    def cost_kind(self) -> str:
        """Whose kind scales the disk part of the cost (the side that moves the data)."""
        return SOURCE if self.side == SOURCE else TARGET


PIPELINE: tuple[StageDef, ...] = (
    StageDef("reserve", BOTH, timeout_s=5 * 60, cost_s=60.0, retry_forever=True),
    StageDef("provision", SOURCE, timeout_s=30 * 60, cost_s=900.0),
    StageDef("baseline", SOURCE, timeout_s=15 * 60, cost_s=600.0),
    StageDef("export", SOURCE, timeout_s=2 * 3600, cost_s=300.0, per_gib_s=60.0, kind_factor={"vsphere": 1.5}),
    # qemu-img reports progress, which heartbeats too; a large conversion may sit between reports
    StageDef("convert", NONE, timeout_s=4 * 3600, heartbeat_s=30.0, cost_s=300.0, per_gib_s=150.0),
    StageDef("import", TARGET, timeout_s=2 * 3600, cost_s=300.0, per_gib_s=60.0, kind_factor={"hyperv": 1.3}),
    StageDef("boot", TARGET, timeout_s=15 * 60, cost_s=600.0),
    StageDef("verify", TARGET, timeout_s=15 * 60, cost_s=900.0),
    StageDef("lifecycle", TARGET, timeout_s=30 * 60, cost_s=1200.0),
    # the remediation ladder: one rung per activity, its artifacts cached by content; then import,
    # boot and verify run again on the remediated disk (a round of the cell)
    StageDef("remediate", NONE, timeout_s=3600, heartbeat_s=30.0, cost_s=300.0, per_gib_s=120.0, remedial=True),
    StageDef("cleanup", BOTH, timeout_s=30 * 60, cost_s=600.0, always=True),
    StageDef("release", BOTH, timeout_s=5 * 60, cost_s=30.0, always=True),
)

BY_NAME: dict[str, StageDef] = {s.name: s for s in PIPELINE}
NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE)
ALWAYS: tuple[str, ...] = tuple(s.name for s in PIPELINE if s.always)
# Before the VM leaves the source: a failure there says nothing about the pair.
SOURCE_SIDE: tuple[str, ...] = ("reserve", "provision", "baseline")


def stage(name: str) -> StageDef:
    return BY_NAME[name]


def host_kind(name: str, source_kind: str, target_kind: str) -> str:
    """The hypervisor kind a stage's work is attributed to (metrics, busy time)."""
    return target_kind if BY_NAME[name].side == TARGET else source_kind


def estimate_s(name: str, disk_gib: float, source_kind: str, target_kind: str) -> float:
    """The static cost model of one stage: fixed overhead plus work per GiB of guest disk."""
    s = BY_NAME[name]
    kind = source_kind if s.cost_kind == SOURCE else target_kind
    return s.cost_s + s.per_gib_s * disk_gib * s.kind_factor.get(kind, 1.0)
