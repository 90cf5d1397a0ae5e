"""The campaign's custom search attributes: what Temporal visibility knows of a campaign, so that
``crossvisor campaign list`` and ``temporal workflow list -q`` both filter on name, status and
grade counts (``-q "CrossvisorCampaign = 'lab' AND CrossvisorFail > 0"``). Pure and deterministic:
the campaign workflow upserts ``search_attributes(...)`` as its progress changes; the local stack
registers ``DEFINITIONS`` when it starts its dev server; the CLI reads them back.

Temporal's SQL visibility stores (SQLite, PostgreSQL, MySQL) allow at most 3 custom ``Int``
attributes per namespace (and 10 Keyword, 3 KeywordList): the three counts one filters on most
are ``Int``; every count is in the ``CrossvisorCounts`` keyword for display, and the grades present
in the ``CrossvisorGrades`` keyword list (``CrossvisorGrades = 'warn'``).
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

CAMPAIGN = SearchAttributeKey.for_keyword("CrossvisorCampaign")  # the spec's name
STATUS = SearchAttributeKey.for_keyword("CrossvisorStatus")  # starting|running|paused|stalled|draining|...
COUNTS = SearchAttributeKey.for_keyword("CrossvisorCounts")  # "total=24 done=20 pass=18 ..."
GRADES = SearchAttributeKey.for_keyword_list("CrossvisorGrades")  # grades present, e.g. ["fail", "pass"]
PASS = SearchAttributeKey.for_int("CrossvisorPass")
FAIL = SearchAttributeKey.for_int("CrossvisorFail")
ERROR = SearchAttributeKey.for_int("CrossvisorError")

KEYS = (CAMPAIGN, STATUS, COUNTS, GRADES, PASS, FAIL, ERROR)
_TYPE_NAMES = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "INT": "Int"}
# name -> type as `temporal operator search-attribute create --type` and `start-dev
# --search-attribute NAME=TYPE` spell it
DEFINITIONS: dict[str, str] = {k.name: _TYPE_NAMES[k.indexed_value_type.name] for k in KEYS}

GRADE_NAMES = ("pass", "warn", "fail", "error", "skipped")
# the order of CrossvisorCounts (state counts first, then grades)
COUNT_NAMES = ("total", "done", "pending", "running", *GRADE_NAMES, "cached")


def format_counts(counts: Mapping[str, int]) -> str:
    return " ".join(f"{k}={int(counts.get(k, 0))}" for k in COUNT_NAMES)


def parse_counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in (text or "").split():
        k, _, v = part.partition("=")
        if k and v.lstrip("-").isdigit():
            out[k] = int(v)
    return out


def search_attributes(progress_counts: Mapping[str, int], status: str, name: str) -> TypedSearchAttributes:
    """The campaign's attributes for these counts (the ``progress`` query's ``counts``), status
    and spec name. Upsert them all at once: ``workflow.upsert_search_attributes(
    [p.key.value_set(p.value) for p in search_attributes(...)])``."""
    c = progress_counts
    present = [g for g in GRADE_NAMES if c.get(g, 0)]
    return TypedSearchAttributes(
        [
            SearchAttributePair(CAMPAIGN, name),
            SearchAttributePair(STATUS, status),
            SearchAttributePair(COUNTS, format_counts(c)),
            SearchAttributePair(GRADES, present),
            SearchAttributePair(PASS, int(c.get("pass", 0))),
            SearchAttributePair(FAIL, int(c.get("fail", 0))),
            SearchAttributePair(ERROR, int(c.get("error", 0))),
        ]
    )


def updates(progress_counts: Mapping[str, int], status: str, name: str) -> list:
    """``search_attributes`` as the update list ``workflow.upsert_search_attributes`` takes."""
    return [p.key.value_set(p.value) for p in search_attributes(progress_counts, status, name)]


def registered(attrs: TypedSearchAttributes) -> bool:
    """Whether a run started with crossvisor's attributes (the server has them registered): the
    workflow upserts only then, since upserting an unregistered attribute fails its task."""
    return attrs.get(CAMPAIGN) is not None


def read(attrs: TypedSearchAttributes) -> dict | None:
    """name, status and counts from a listed execution's attributes; None when it has none."""
    name = attrs.get(CAMPAIGN)
    if name is None:
        return None
    counts = parse_counts(attrs.get(COUNTS) or "")
    for key, grade in ((PASS, "pass"), (FAIL, "fail"), (ERROR, "error")):
        v = attrs.get(key)
        if v is not None:
            counts[grade] = int(v)
    return {"name": name, "status": attrs.get(STATUS) or "", "counts": counts}


def dev_server_args() -> list[str]:
    """``temporal server start-dev`` flags that register the attributes."""
    return [arg for n, t in DEFINITIONS.items() for arg in ("--search-attribute", f"{n}={t}")]
