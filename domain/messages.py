"""Workflow <-> activity messages. Plain dataclasses; no secrets (credentials stay references)."""

from dataclasses import dataclass, field

from domain.model import (
    Cell,
    CellOutcome,
    CellResult,
    CellSummary,
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
    # where the next incremental refresh starts (InventorySource.cursor_now()); "" = a full pull
    cursor: str = ""


@dataclass
class InventoryRefreshRequest:
    """What changed in the inventory since ``cursor`` (``""``: a full pull)."""

    inventory: str
    selections: dict[str, dict[str, str]]  # platform name -> selection (kind added by the workflow)
    netbox: dict = field(default_factory=dict)
    cursor: str = ""


@dataclass
class InventoryDelta:
    """The answer to an ``InventoryRefreshRequest`` (applied by ``domain.inventory_delta``).

    ``full``: ``hosts``/``platform_hosts`` are the whole inventory (every host not in them is out).
    Otherwise they cover only the hosts that changed and are in service: each changed host is a
    member of exactly the platforms whose list names it. ``gone`` maps the key
    (``Host.inventory_id``) of each host that left service (status, unhealthy tag, deleted, no
    longer a usable candidate) to why. ``cursor`` is where the next refresh starts."""

    full: bool
    hosts: list[Host] = field(default_factory=list)
    platform_hosts: dict[str, list[str]] = field(default_factory=dict)
    gone: dict[str, str] = field(default_factory=dict)
    cursor: str = ""


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
class RunningCell:
    """A cell still running when its campaign continued as new: the next run re-attaches to its
    child workflow (``<campaign>.cell.<cell>.<attempt>``), which reports its result by signal."""

    cell_id: str
    source_host: str
    target_host: str
    attempt: int


@dataclass
class CellReport:
    """What a cell workflow sends its campaign (signal ``cell_finished``, with its CellResult as a
    second, untouched argument) when the campaign asked it to: after a continue-as-new the new
    run is not the child's parent run and hears of its completion no other way."""

    cell_id: str
    attempt: int
    workflow_id: str = ""


@dataclass
class ResultsPageRequest:
    offset: int = 0  # position among the finished cells, in matrix order
    limit: int = 500  # capped at RESULTS_PAGE_MAX


RESULTS_PAGE_MAX = 500  # rows per page: ~300 bytes each (at most ~500), so a page stays below 256 KB


@dataclass
class ResultsPage:
    rows: list[CellSummary]
    total: int  # finished cells
    next_offset: int = -1  # -1: this was the last page


@dataclass
class CampaignState:
    """Everything that crosses continue-as-new, bounded at ~2 bytes per cell (``book``) plus the
    running cells, so that a 50,000-cell campaign continues with a payload far below 512 KB and
    its first workflow task stays far inside the deadlock timeout.

    Replay sets v2-v4 carried ``done``/``pending``/``attempts`` instead (~130 bytes per finished
    cell); a run continuing from such a state reads them once and writes only the new fields."""

    book: str = ""  # domain.cellbook.CellBook.encode(): grade, attempts, reason of every cell
    running: list[RunningCell] = field(default_factory=list)  # handed over at continue-as-new
    done: dict[str, CellOutcome] = field(default_factory=dict)  # legacy: cell id -> outcome
    pending: list[str] = field(default_factory=list)  # legacy; v5: not done and not running
    attempts: dict[str, int] = field(default_factory=dict)  # legacy
    hosts: list[Host] = field(default_factory=list)
    platform_hosts: dict[str, list[str]] = field(default_factory=dict)
    unavailable_hosts: list[str] = field(default_factory=list)  # swapped out by the operator
    extra_cells: list[Cell] = field(default_factory=list)  # added while running
    paused: bool = False
    max_cells: int = 0  # 0 = plan's value
    generation: int = 0  # continue-as-new count
    started_at: str = ""
    applied_updates: list[str] = field(default_factory=list)  # idempotency keys already applied
    # the inventory refresh's position (InventoryDelta.cursor): the next refresh, also in the run
    # after a continue-as-new, asks only for what changed since
    inventory_cursor: str = ""
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
    # the task queue of the cell workflows ("" = the campaign's own): cells of one site on that
    # site's workers, or a simulated lab's cells on a worker of their own (bench/scheduler.py)
    cell_task_queue: str = ""
