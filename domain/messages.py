"""Workflow <-> activity messages. Plain dataclasses; no secrets (credentials stay references)."""

from dataclasses import dataclass, field

from domain.model import (
    Cell,
    CellOutcome,
    CellResult,
    CheckResult,
    GuestImage,
    Host,
    Platform,
    RetryPolicySpec,
)
from domain.plan import CampaignPlan


@dataclass
class StageInput:
    campaign_id: str
    cell: Cell
    stage: str
    source: Platform
    target: Platform
    image: GuestImage
    source_host: Host
    target_host: Host
    inventory: str
    context: dict[str, str] = field(default_factory=dict)  # outputs of earlier stages
    export_format: str = "ova"


@dataclass
class StageOutput:
    status: str  # ok | fail (interop failure: a result, not an error) | reused
    reason: str = ""
    evidence: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)  # grades this stage decided


@dataclass
class CellInput:
    campaign_id: str
    cell: Cell
    source: Platform
    target: Platform
    image: GuestImage
    source_host: Host
    target_host: Host
    inventory: str
    retry: RetryPolicySpec
    export_format: str = "ova"
    attempt: int = 1
    # the remediation ladder, tried in order only after the unmodified move failed (domain.remedies)
    remediate: list[str] = field(default_factory=list)


@dataclass
class InventoryRequest:
    inventory: str
    selections: dict[str, dict[str, str]]  # platform name -> selection (kind added by the workflow)
    netbox: dict = field(default_factory=dict)  # the spec's NetBox mapping (plan.netbox)


@dataclass
class InventorySnapshot:
    hosts: list[Host]
    platform_hosts: dict[str, list[str]]  # platform name -> host names


@dataclass
class ProgressReport:
    campaign: str
    counts: dict[str, int]  # state/grade -> number
    running: bool = True
    paused: bool = False
    stalled: str = ""  # why nothing can start although cells are pending ("" = not stalled)


@dataclass
class CachedResultRequest:
    fingerprint: str


@dataclass
class StoreResultRequest:
    campaign_id: str
    # None when the result travels as the activity's second argument, passed through untouched
    # from the child workflow (the campaign never decodes nor re-encodes it)
    result: CellResult | None
    source_kind: str = ""
    target_kind: str = ""


@dataclass
class SweepRequest:
    campaign_id: str
    inventory: str
    hosts: list[Host]
    netbox: dict = field(default_factory=dict)  # the spec's NetBox mapping: leases are listed through it


@dataclass
class CampaignState:
    """Everything that crosses continue-as-new. Kept compact (~90 bytes per finished cell) so
    that decoding it stays far inside the first workflow task's deadlock timeout."""

    done: dict[str, CellOutcome] = field(default_factory=dict)  # cell id -> outcome
    pending: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    hosts: list[Host] = field(default_factory=list)
    platform_hosts: dict[str, list[str]] = field(default_factory=dict)
    unavailable_hosts: list[str] = field(default_factory=list)  # swapped out by the operator
    extra_cells: list[Cell] = field(default_factory=list)  # added while running
    paused: bool = False
    max_cells: int = 0  # 0 = plan's value
    generation: int = 0  # continue-as-new count
    started_at: str = ""
    applied_updates: list[str] = field(default_factory=list)  # idempotency keys already applied
    # Legacy: runs started before CellOutcome carried full results here. Read once (folded into
    # ``done``) so that in-flight campaigns and recorded histories continue; never written.
    results: dict[str, CellResult] = field(default_factory=dict)


@dataclass
class CampaignInput:
    plan: CampaignPlan
    campaign_id: str = ""  # defaults to the workflow id
    # set only when continuing as new: the compact state that carries over
    state: CampaignState | None = None
    # continue-as-new once history passes this many events (Temporal warns at 10,240)
    history_limit: int = 8000
    # the child workflow type run per cell: "CellWorkflow" for real work; a simulated lab
    # (bench/, capacity planning) plugs in a workflow that only sleeps each stage's duration
    cell_workflow: str = "CellWorkflow"
