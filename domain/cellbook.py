"""Every cell of a campaign by position, and where it stands: compact enough to cross
continue-as-new (and to end a campaign) at 50,000 cells far inside Temporal's payload limits. Pure.

``CellCatalog``: the campaign's cells in their stable order (``matrix.expand`` order, then the
cells an operator added), built from the plan without computing 50,000 fingerprints up front
(a cell's fingerprint is computed the first time the cell is needed whole).

``CellBook``: per cell, one grade code (or "not done"), its attempt count and, for a cell that did
not pass, an index into a table of distinct reasons. ``encode`` packs it as fixed-width byte
columns (1 + 2 + 2 bytes per cell) behind a small JSON header, zlib-compressed, in base64: ~3
bytes per cell for adversarial outcomes, a few hundred bytes for a 50,000-cell all-pass matrix. A
``CampaignState`` of replay sets v2-v4 carried a ``CellOutcome`` per finished cell (~130 bytes each,
6.5 MB at 50,000 cells: over the 2 MB limit).
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping

from domain import matrix
from domain.model import CELL_GRADES, REASON_KEPT, Cell, CellOutcome, CellSummary, Grade, MatrixShape
from domain.plan import CampaignPlan

NOT_DONE = "."
_CODE = {Grade.PASS: "p", Grade.WARN: "w", Grade.FAIL: "f", Grade.ERROR: "e", Grade.SKIPPED: "s"}
_GRADE = {v: k for k, v in _CODE.items()}
# A campaign whose cells fail for many different reasons keeps the first ones in the book; the
# others read "see the result store" (the full reason is always in the cell's stored result).
MAX_REASONS = 2000
MAX_REASON_CHARS = 32_000
REASON_IN_STORE = "(reason in the result store)"


class CellCatalog(Mapping[str, Cell]):
    """The campaign's cells by id, in their stable order; ``catalog[cid]`` is the whole Cell."""

    def __init__(self, plan: CampaignPlan, extra: list[Cell] | None = None) -> None:
        self.plan = plan
        # matrix.cell_id, with each name slugged once instead of once per cell
        plat = {p.name: matrix.slug(p.name) for p in plan.platforms}
        imgs = [(i.name, matrix.slug(i.name)) for i in plan.images]
        self._where: dict[str, tuple[str, str, str]] = {}
        for s, t in matrix.pairs(plan):
            for name, islug in imgs:
                self._where[f"{plat[s]}--{plat[t]}--{islug}"] = (s, t, name)
        self._full: dict[str, Cell] = {}
        self._extra: set[str] = set()
        for c in extra or []:
            self.add(c)

    def add(self, cell: Cell) -> bool:
        if cell.id in self._where:
            return False
        self._where[cell.id] = (cell.source, cell.target, cell.image)
        self._full[cell.id] = cell
        self._extra.add(cell.id)
        return True

    def __getitem__(self, cid: str) -> Cell:
        c = self._full.get(cid)
        if c is None:
            s, t, i = self._where[cid]
            c = Cell(cid, s, t, i, list(self.plan.checks), matrix.fingerprint(self.plan, s, t, i))
            self._full[cid] = c
        return c

    def __contains__(self, cid: object) -> bool:
        return cid in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def ids(self) -> list[str]:
        return list(self._where)

    @property
    def places(self) -> Mapping[str, tuple[str, str, str]]:
        """cell id -> (source platform, target platform, image), for every cell."""
        return self._where

    def where(self, cid: str) -> tuple[str, str, str]:
        """(source platform, target platform, image) of a cell, without building it."""
        return self._where[cid]

    def shape(self) -> MatrixShape:
        extra = [[c.source, c.target, c.image] for cid, c in self._full.items() if cid in self._extra]
        return MatrixShape([list(p) for p in matrix.pairs(self.plan)], [i.name for i in self.plan.images], extra)

    def light(self, cid: str) -> Cell:
        """A cell for the scheduler: id and platforms only (no fingerprint computed)."""
        s, t, i = self._where[cid]
        return Cell(cid, s, t, i, [], "")


def shape_cells(shape: MatrixShape) -> list[tuple[str, str, str, str]]:
    """(cell id, source, target, image) of every cell of a ``MatrixShape``, in order."""
    imgs = [(i, matrix.slug(i)) for i in shape.images]
    out = []
    for s, t in shape.pairs:
        head = f"{matrix.slug(s)}--{matrix.slug(t)}--"
        out.extend((head + slug, s, t, i) for i, slug in imgs)
    seen = {c[0] for c in out}
    for s, t, i in shape.extra:
        cid = matrix.cell_id(s, t, i)
        if cid not in seen:
            seen.add(cid)
            out.append((cid, s, t, i))
    return out


class CellBook:
    """Outcome, attempts and reason of every cell of a campaign, by position in its catalog."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = list(ids)
        self.index = {cid: n for n, cid in enumerate(self.ids)}
        self.codes = [NOT_DONE] * len(self.ids)
        self.attempts = [0] * len(self.ids)
        self.why = [0] * len(self.ids)  # 0 = no reason, k = self.reasons[k - 1]
        self.reasons: list[str] = []
        self._reason_no: dict[str, int] = {}
        self._reason_chars = 0
        self.counts: Counter[str] = Counter()  # grade value -> cells, and "cached"
        self.done = 0

    # -- cells ----------------------------------------------------------------------------------
    def add(self, cid: str) -> None:
        if cid in self.index:
            return
        self.index[cid] = len(self.ids)
        self.ids.append(cid)
        self.codes.append(NOT_DONE)
        self.attempts.append(0)
        self.why.append(0)

    def __len__(self) -> int:
        return len(self.ids)

    def is_done(self, cid: str) -> bool:
        return self.codes[self.index[cid]] != NOT_DONE

    def outcome(self, cid: str) -> CellOutcome | None:
        n = self.index[cid]
        code = self.codes[n]
        if code == NOT_DONE:
            return None
        k = self.why[n]
        return CellOutcome(_GRADE[code.lower()], code.isupper(), self.reasons[k - 1] if k else "")

    def set_done(self, cid: str, o: CellOutcome) -> None:
        self.clear(cid)
        n = self.index[cid]
        code = _CODE[o.grade]
        self.codes[n] = code.upper() if o.cached else code
        self.why[n] = self._reason(o.reason[:REASON_KEPT]) if o.reason else 0
        self.counts[o.grade.value] += 1
        self.counts["cached"] += o.cached
        self.done += 1

    def clear(self, cid: str) -> None:
        """Not done any more (an operator retry)."""
        n = self.index[cid]
        code = self.codes[n]
        if code == NOT_DONE:
            return
        self.counts[_GRADE[code.lower()].value] -= 1
        self.counts["cached"] -= code.isupper()
        self.done -= 1
        self.codes[n] = NOT_DONE
        self.why[n] = 0

    def attempt(self, cid: str) -> int:
        return self.attempts[self.index[cid]]

    def next_attempt(self, cid: str) -> int:
        n = self.index[cid]
        self.attempts[n] += 1
        return self.attempts[n]

    def _reason(self, text: str) -> int:
        k = self._reason_no.get(text)
        if k is None:
            if len(self.reasons) >= MAX_REASONS or self._reason_chars + len(text) > MAX_REASON_CHARS:
                text = REASON_IN_STORE
                k = self._reason_no.get(text)
            if k is None:
                self.reasons.append(text)
                self._reason_chars += len(text)
                k = self._reason_no[text] = len(self.reasons)
        return k

    # -- views ----------------------------------------------------------------------------------
    def done_ids(self) -> Iterator[str]:
        return (cid for cid, code in zip(self.ids, self.codes) if code != NOT_DONE)

    def not_done_ids(self) -> Iterator[str]:
        return (cid for cid, code in zip(self.ids, self.codes) if code == NOT_DONE)

    def rows(self, where: Mapping[str, tuple[str, str, str]] | None = None) -> Iterator[CellSummary]:
        """One summary row per finished cell, in catalog order. ``where``: cell id -> (source,
        target, image); without it the rows carry the id only."""
        for cid, code in zip(self.ids, self.codes):
            if code != NOT_DONE:
                o = self.outcome(cid)
                s, t, i = where[cid] if where is not None else ("", "", "")
                yield CellSummary(cid, s, t, i, o.grade, o.cached, o.reason)

    def done_view(self) -> DoneView:
        return DoneView(self)

    def grade_counts(self) -> dict[str, int]:
        out = {g.value: self.counts.get(g.value, 0) for g in CELL_GRADES}
        out["cached"] = self.counts.get("cached", 0)
        return out

    # -- compact form ---------------------------------------------------------------------------
    def encode(self) -> str:
        head = json.dumps({"v": 1, "ids": len(self.ids), "reasons": self.reasons}, separators=(",", ":"))
        raw = b"".join(
            (
                head.encode(),
                b"\0",
                "".join(self.codes).encode("ascii"),
                _u16(min(a, 65535) for a in self.attempts),
                _u16(self.why),
            )
        )
        return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")

    @staticmethod
    def count_done(blob: str) -> int:
        """How many cells an encoded book holds as finished (without the campaign's cell ids)."""
        if not blob:
            return 0
        raw = zlib.decompress(base64.b64decode(blob))
        cut = raw.index(b"\0")
        n = json.loads(raw[:cut])["ids"]
        codes = raw[cut + 1 : cut + 1 + n]
        return n - codes.count(NOT_DONE.encode())

    @classmethod
    def decode(cls, ids: list[str], blob: str) -> CellBook:
        """The book ``encode`` wrote, for the same cells in the same order (a campaign's catalog
        only ever grows at its end, so a book of fewer cells is a prefix)."""
        book = cls(ids)
        if not blob:
            return book
        raw = zlib.decompress(base64.b64decode(blob))
        cut = raw.index(b"\0")
        doc = json.loads(raw[:cut])
        if doc.get("v") != 1:
            raise ValueError(f"cell book version {doc.get('v')!r} unknown")
        n = doc["ids"]
        if n > len(ids):
            raise ValueError(f"cell book holds {n} cells, the campaign has {len(ids)}")
        if len(raw) != cut + 1 + 5 * n:
            raise ValueError(f"cell book of {n} cells is {len(raw) - cut - 1} bytes, not {5 * n}")
        body = raw[cut + 1 :]
        book.reasons = list(doc["reasons"])
        book._reason_no = {r: k for k, r in enumerate(book.reasons, 1)}
        book._reason_chars = sum(map(len, book.reasons))
        book.codes[:n] = list(body[:n].decode("ascii"))
        book.attempts[:n] = _from_u16(body[n : 3 * n])
        book.why[:n] = _from_u16(body[3 * n : 5 * n])
        for code in book.codes[:n]:
            if code != NOT_DONE:
                book.counts[_GRADE[code.lower()].value] += 1
                book.counts["cached"] += code.isupper()
                book.done += 1
        return book


def _u16(values) -> bytes:
    """Unsigned 16-bit little-endian, whatever the machine (the book is read back elsewhere)."""
    a = array("H", values)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def _from_u16(data: bytes) -> list[int]:
    a = array("H", data)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


class DoneView(Mapping[str, CellOutcome]):
    """The finished cells as a read-only mapping id -> outcome (what ``domain.control`` reads)."""

    def __init__(self, book: CellBook) -> None:
        self._book = book

    def __getitem__(self, cid: str) -> CellOutcome:
        o = self._book.outcome(cid) if cid in self._book.index else None
        if o is None:
            raise KeyError(cid)
        return o

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and cid in self._book.index and self._book.is_done(cid)

    def __iter__(self) -> Iterator[str]:
        return self._book.done_ids()

    def __len__(self) -> int:
        return self._book.done
