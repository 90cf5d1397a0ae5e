"""Timestamps and durations as people read them: one set of rules for the CLI, the web UI and
the reports. ``human_duration`` rounds the same way everywhere; ``compact`` only spells the units
without spaces for terminal columns ('4m05s' where a page says '4 min 05 s')."""

from __future__ import annotations

from datetime import UTC, datetime

# unit spellings: (seconds, minutes, hours, days), spaced for pages, compact for terminal columns
_SPACED = (" s", " min", " h", " d")
_COMPACT = ("s", "m", "h", "d")


def parse_time(iso: str) -> datetime | None:
    """An ISO 8601 timestamp as aware UTC; None for empty or unparsable text."""
    if not iso:
        return None
    try:
        dt = datetime.fromisoformat(iso.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def iso(dt: datetime | None) -> str:
    """An aware datetime as ISO 8601 UTC with a 'Z'; '' for None."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z") if dt else ""


def human_time(iso_text: str) -> str:
    """'Tue 1 Dec 2026, 08:56:39 UTC'; the raw text when it is not a timestamp; '—' when empty."""
    dt = parse_time(iso_text)
    if dt is None:
        return iso_text or "\u2014"
    return f"{dt:%a} {dt.day} {dt:%b %Y, %H:%M:%S} UTC"


def human_duration(seconds: float | None, compact: bool = False) -> str:
    """'0.4 s', '42 s', '4 min 05 s', '2 h 04 min', '3 d 4 h' ('0.4s', '42s', '4m05s', '2h04m',
    '3d04h' when ``compact``); '—' (compact: '-') when unknown."""
    if seconds is None:
        return "-" if compact else "\u2014"
    sec_u, min_u, h_u, d_u = _COMPACT if compact else _SPACED
    sep = "" if compact else " "
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f}{sec_u}"
    if s < 60:
        return f"{s:.0f}{sec_u}"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m}{min_u}{sep}{sec:02d}{sec_u}"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h}{h_u}{sep}{m:02d}{min_u}"
    d, h = divmod(round(s / 3600), 24)
    return f"{d}{d_u}{sep}{h:02d}{h_u}" if compact else f"{d}{d_u}{sep}{h}{h_u}"


def span_seconds(start: str, end: str) -> float | None:
    a, b = parse_time(start), parse_time(end)
    return (b - a).total_seconds() if a and b and b >= a else None
