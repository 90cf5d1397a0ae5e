"""What differs between two campaign specs, named field by field (``platforms[esxi-8].hardware_version:
'vmx-20' -> 'vmx-21'``): starting an existing campaign id with another spec is refused with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

MAX_SHOWN = 8


def _keyed(items: list) -> dict[str, Any] | None:
    """A list of named things (platforms, images) compared by name, not position."""
    if items and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        names = [i["name"] for i in items]
        if len(set(names)) == len(names):
            return {n: i for n, i in zip(names, items)}
    return None


def _walk(path: str, a: Any, b: Any, out: list[str]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        _walk_keyed(a, b, lambda k: f"{path}.{k}" if path else str(k), out, show_added=True)
        return
    if isinstance(a, list) and isinstance(b, list):
        ka, kb = _keyed(a), _keyed(b)
        if ka is not None and kb is not None:
            _walk_keyed(ka, kb, lambda n: f"{path}[{n}]", out, show_added=False)
            return
    out.append(f"{path}: {a!r} -> {b!r}")


def _walk_keyed(a: dict, b: dict, sub: Callable[[Any], str], out: list[str], show_added: bool) -> None:
    """Entries removed, added (with their value when ``show_added``) or changed, in ``a``'s order
    then ``b``'s new ones."""
    for k in list(a) + [k for k in b if k not in a]:
        if k not in b:
            out.append(f"{sub(k)}: removed")
        elif k not in a:
            out.append(f"{sub(k)}: added" + (f" {b[k]!r}" if show_added else ""))
        else:
            _walk(sub(k), a[k], b[k], out)


def differences(old: Any, new: Any) -> list[str]:
    """Field paths that differ from ``old`` to ``new`` (dataclasses or plain data)."""
    a = dataclasses.asdict(old) if dataclasses.is_dataclass(old) else old
    b = dataclasses.asdict(new) if dataclasses.is_dataclass(new) else new
    out: list[str] = []
    _walk("", a, b, out)
    return out


def describe(diffs: list[str]) -> str:
    shown = "; ".join(diffs[:MAX_SHOWN])
    return shown + (f"; and {len(diffs) - MAX_SHOWN} more" if len(diffs) > MAX_SHOWN else "")
