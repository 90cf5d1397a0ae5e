"""Operator control of a running campaign: one request and one result per action, and the checks
that refuse a request before it reaches the workflow's history. Pure.

The campaign workflow exposes one Temporal update per action (``pause``, ``resume``, ``cancel``,
``retry``, ``skip``, ``swap_host``, ``add_cells``, ``set_concurrency``); each update's validator
calls the matching ``check_*`` here with a read-only ``ControlView`` of the campaign. A refused
request raises ``Refused`` with the reason the operator sees.

A ``request_id`` names one request: the campaign keeps a ledger of the requests it applied
(``ledger_entry``) and ``seen_before`` answers a request whose id is in it: the same request again
(a client retrying after a lost reply) is "already applied", whatever the action, before any check
that the campaign's state since then would now fail (a skip's cells are no longer pending); the id
with another payload is refused, naming what differs.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from domain.model import CellOutcome, Grade, Host
from domain.plan import CampaignPlan

RETRYABLE = (Grade.FAIL, Grade.ERROR)  # "retry --failed": what went wrong, not what the operator skipped
OPERATOR_SKIP = "skipped by operator"


class Refused(ValueError):
    """A request the campaign will not apply; the message says why."""


@dataclass
class PauseRequest:
    request_id: str = ""


@dataclass
class ResumeRequest:
    request_id: str = ""


@dataclass
class CancelRequest:
    request_id: str = ""


@dataclass
class RetryRequest:
    cells: list[str] = field(default_factory=list)  # cell ids; empty with failed=True = every failed/error cell
    failed: bool = False
    request_id: str = ""


@dataclass
class SkipRequest:
    cells: list[str] = field(default_factory=list)
    request_id: str = ""


@dataclass
class SwapHostRequest:
    host: str  # take this host out of scheduling
    replacement: str = ""  # a host of the same kind, already in the campaign's snapshot, that takes its platforms
    request_id: str = ""


@dataclass
class AddCellsRequest:
    cells: list[list[str]] = field(default_factory=list)  # [source platform, target platform, image]
    request_id: str = ""


@dataclass
class ConcurrencyRequest:
    max_cells: int
    request_id: str = ""


@dataclass
class ControlResult:
    applied: bool  # False: the request id was applied before (nothing changed now)
    message: str
    cells: list[str] = field(default_factory=list)  # the cells the action touched


@dataclass
class ControlView:
    """What a validator may look at: the campaign as it stands."""

    plan: CampaignPlan
    status: str
    cell_ids: set[str]
    done: dict[str, CellOutcome]
    pending: list[str]
    running: set[str]
    hosts: list[Host]
    platform_hosts: dict[str, list[str]]
    unavailable: list[str]
    cells_by_platform: dict[str, list[tuple[str, str]]]  # platform -> [(cell id, other platform)]


def check_open(v: ControlView) -> None:
    if v.status in ("completed", "cancelled", "cancelling"):
        raise Refused(f"campaign is {v.status}")


def check_cells(v: ControlView, cells: list[str], what: str) -> None:
    if not cells:
        raise Refused(f"{what}: name at least one cell")
    unknown = sorted(c for c in set(cells) if c not in v.cell_ids)
    if unknown:
        raise Refused(f"{what}: unknown cells {unknown}")


def check_retry(v: ControlView, r: RetryRequest) -> None:
    check_open(v)
    if r.failed and not r.cells:
        if not [c for c, o in v.done.items() if o.grade in RETRYABLE]:
            raise Refused("retry --failed: no cell failed or errored")
        return
    check_cells(v, r.cells, "retry")
    busy = sorted(c for c in r.cells if c in v.running or c in v.pending)
    if busy and len(busy) == len(set(r.cells)):
        raise Refused(f"retry: cells {busy} have not finished yet")


def retry_targets(v: ControlView, r: RetryRequest) -> list[str]:
    if r.failed and not r.cells:
        return sorted(c for c, o in v.done.items() if o.grade in RETRYABLE)
    return [c for c in dict.fromkeys(r.cells) if c in v.done]


def check_skip(v: ControlView, r: SkipRequest) -> None:
    check_open(v)
    check_cells(v, r.cells, "skip")
    not_pending = sorted(c for c in set(r.cells) if c not in v.pending)
    if len(not_pending) == len(set(r.cells)):
        raise Refused(f"skip: cells {not_pending} are not pending (running or finished cells cannot be skipped)")


def check_swap_host(v: ControlView, r: SwapHostRequest) -> None:
    check_open(v)
    by_name = {h.name: h for h in v.hosts}
    if r.host not in by_name:
        raise Refused(f"swap-host: unknown host {r.host!r}; the campaign uses {sorted(by_name)}")
    if r.host in v.unavailable:
        raise Refused(f"swap-host: {r.host} is already out of scheduling")
    if r.replacement:
        if r.replacement == r.host:
            raise Refused(f"swap-host: {r.host} cannot replace itself")
        if r.replacement not in by_name:
            raise Refused(f"swap-host: replacement {r.replacement!r} is not in the campaign's inventory snapshot")
        if r.replacement in v.unavailable:
            raise Refused(f"swap-host: replacement {r.replacement} is out of scheduling itself")
        old, new = by_name[r.host], by_name[r.replacement]
        if (old.kind, old.driver) != (new.kind, new.driver):
            raise Refused(
                f"swap-host: {r.replacement} is a {new.kind}/{new.driver} host, {r.host} a {old.kind}/{old.driver} host: "
                "cells would run on another hypervisor and be graded as this one"
            )
    # every pending cell must keep hosts: two distinct ones when both ends are one platform
    out = set(v.unavailable) | {r.host}
    for p, names in v.platform_hosts.items():
        left = {h for h in names if h not in out}
        if r.replacement and r.host in names:
            left.add(r.replacement)
        for cid, other in v.cells_by_platform.get(p, []):
            if cid not in v.pending:
                continue
            need = 2 if other == p else 1
            if len(left) < need:
                raise Refused(
                    f"swap-host: platform {p} would keep {len(left)} host(s) and pending cell {cid} needs {need}; "
                    "name a --replacement or skip those cells first"
                )


def check_add_cells(v: ControlView, r: AddCellsRequest) -> None:
    check_open(v)
    if not r.cells:
        raise Refused("add-cells: name at least one SOURCE:TARGET:IMAGE")
    plats = {p.name for p in v.plan.platforms}
    imgs = {i.name for i in v.plan.images}
    for trip in r.cells:
        if len(trip) != 3:
            raise Refused(f"add-cells: {':'.join(trip)!r} is not SOURCE:TARGET:IMAGE")
        s, t, i = trip
        bad = [f"platform {x!r}" for x in (s, t) if x not in plats] + ([f"image {i!r}"] if i not in imgs else [])
        if bad:
            raise Refused(
                f"add-cells: {':'.join(trip)}: unknown {', '.join(bad)}; platforms {sorted(plats)}, images {sorted(imgs)}"
            )
        if s == t and len([h for h in v.platform_hosts.get(s, []) if h not in v.unavailable]) < 2:
            raise Refused(f"add-cells: {':'.join(trip)}: a same-platform cell needs two hosts of {s}")


def check_concurrency(v: ControlView, r: ConcurrencyRequest) -> None:
    check_open(v)
    if r.max_cells < 1:
        raise Refused(f"concurrency: max_cells must be >= 1 (got {r.max_cells})")
    cap = v.plan.concurrency.max_cells
    if r.max_cells > cap:
        raise Refused(f"concurrency: {r.max_cells} is above the spec's own cap of {cap} (concurrency.max_cells)")


# -- request ids ------------------------------------------------------------------------------------
LEDGER_PAYLOAD_KEPT = 64  # characters of a payload kept verbatim in the ledger (the workflow state); longer: by digest


def action_of(req: object) -> str:
    """The operator action a typed request stands for (its update's name)."""
    return ACTIONS[type(req)]


def _payload(req: object) -> dict:
    return {k: v for k, v in dataclasses.asdict(req).items() if k != "request_id"}  # type: ignore[call-overload]


def _body(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _digest(body: str) -> str:
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:16]


def ledger_entry(req: object) -> str:
    """What the campaign records when it applies a request with an id: the id, the action and the
    payload (verbatim when short, else its digest), one string: ``id<TAB>action<TAB>payload``."""
    body = _body(_payload(req))
    kept = body if len(body) <= LEDGER_PAYLOAD_KEPT else _digest(body)
    return f"{req.request_id}\t{action_of(req)}\t{kept}"  # type: ignore[attr-defined]


def seen_before(ledger: list[str], req: object) -> bool:
    """Whether ``req``'s id was applied before as this same request (answer "already applied",
    change nothing). False for a request without an id or with a new one. ``Refused`` when the id
    was used for another request: the message names the difference. An entry of a ledger kept
    before payloads were recorded (a bare id) counts as the same request: its payload is unknown."""
    rid = getattr(req, "request_id", "")
    if not rid:
        return False
    for entry in reversed(ledger):
        eid, sep, rest = entry.partition("\t")
        if eid != rid:
            continue
        if not sep:
            return True
        action, _, kept = rest.partition("\t")
        diff = _difference(action, kept, req)
        if diff:
            raise Refused(
                f"request id {rid} was used for another request ({diff}); "
                "a request id names one request: send this one under a new id"
            )
        return True
    return False


def _difference(action: str, kept: str, req: object) -> str:
    """How ``req`` differs from the recorded request (action, kept payload); "" when it does not."""
    now_action = action_of(req)
    body = _body(_payload(req))
    if action != now_action:
        return f"it was {action} {kept}, this is {now_action} {body if len(body) <= LEDGER_PAYLOAD_KEPT else '...'}"
    if kept.startswith("sha256:"):
        return "" if _digest(body) == kept else f"{action} with another payload than the one recorded ({kept})"
    if kept == body:
        return ""
    try:
        before = json.loads(kept)
    except ValueError:
        return f"{action} {kept} then, {body} now"
    now = _payload(req)
    fields = [
        f"{k} {json.dumps(before.get(k))} then, {json.dumps(now.get(k))} now"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]
    return f"{action}: " + "; ".join(fields) if fields else ""


ACTIONS: dict[type, str] = {
    PauseRequest: "pause",
    ResumeRequest: "resume",
    CancelRequest: "cancel",
    RetryRequest: "retry",
    SkipRequest: "skip",
    SwapHostRequest: "swap_host",
    AddCellsRequest: "add_cells",
    ConcurrencyRequest: "set_concurrency",
}
