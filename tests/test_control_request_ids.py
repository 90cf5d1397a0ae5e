"""A request id names one request (domain.control ledger): the same request again is "already
applied" for every action, the id with another payload is refused naming the difference."""

from __future__ import annotations

import pytest

from domain import control
from domain.control import (
    AddCellsRequest,
    CancelRequest,
    ConcurrencyRequest,
    PauseRequest,
    Refused,
    ResumeRequest,
    RetryRequest,
    SkipRequest,
    SwapHostRequest,
)

EVERY_ACTION = [
    PauseRequest("r1"),
    ResumeRequest("r1"),
    CancelRequest("r1"),
    RetryRequest(["a:b:x"], request_id="r1"),
    RetryRequest([], failed=True, request_id="r1"),
    SkipRequest(["a:b:x", "b:a:x"], "r1"),
    SwapHostRequest("kvm-1", "kvm-2", "r1"),
    AddCellsRequest([["a", "b", "x"]], "r1"),
    ConcurrencyRequest(2, "r1"),
]


@pytest.mark.parametrize("req", EVERY_ACTION, ids=lambda r: control.action_of(r))
def test_the_same_request_again_is_already_applied_for_every_action(req):
    ledger = [control.ledger_entry(ConcurrencyRequest(3, "other")), control.ledger_entry(req)]
    assert control.seen_before(ledger, req) is True
    assert control.seen_before([control.ledger_entry(ConcurrencyRequest(3, "other"))], req) is False


def test_a_request_without_an_id_is_never_seen_before():
    assert control.seen_before([control.ledger_entry(ConcurrencyRequest(2, ""))], ConcurrencyRequest(2, "")) is False


def test_the_id_with_another_payload_is_refused_naming_the_difference():
    ledger = [control.ledger_entry(ConcurrencyRequest(1, "r7"))]
    with pytest.raises(
        Refused, match=r"request id r7 was used for another request \(set_concurrency: max_cells 1 then, 2 now\)"
    ):
        control.seen_before(ledger, ConcurrencyRequest(2, "r7"))

    ledger = [control.ledger_entry(AddCellsRequest([["a", "b", "x"]], "r8"))]
    with pytest.raises(Refused, match=r'add_cells: cells \[\["a", "b", "x"\]\] then, \[\["b", "a", "x"\]\] now'):
        control.seen_before(ledger, AddCellsRequest([["b", "a", "x"]], "r8"))


def test_the_id_of_another_action_is_refused_naming_both():
    ledger = [control.ledger_entry(PauseRequest("r9"))]
    with pytest.raises(Refused, match=r"it was pause \{\}, this is skip"):
        control.seen_before(ledger, SkipRequest(["a:b:x"], "r9"))


def test_a_long_payload_is_kept_by_digest_and_still_told_apart():
    cells = [f"platform-{i}:platform-{i + 1}:image" for i in range(40)]
    entry = control.ledger_entry(SkipRequest(cells, "big"))
    assert len(entry) < 200, "the ledger lives in the workflow's state: entries stay small"
    assert control.seen_before([entry], SkipRequest(list(cells), "big")) is True
    with pytest.raises(Refused, match=r"skip with another payload than the one recorded \(sha256:"):
        control.seen_before([entry], SkipRequest(cells[:-1], "big"))


def test_a_bare_id_from_a_ledger_kept_before_payloads_counts_as_the_same_request():
    # campaigns started before this change recorded ids only: the retried request stays a no-op
    assert control.seen_before(["r1"], ConcurrencyRequest(5, "r1")) is True


def test_the_latest_use_of_an_id_decides():
    ledger = ["r1", control.ledger_entry(ConcurrencyRequest(4, "r1"))]
    with pytest.raises(Refused):
        control.seen_before(ledger, ConcurrencyRequest(5, "r1"))
