"""What differs between two campaign specs, named field by field (``platforms[esxi-8].hardware_version:
'vmx-20' -> 'vmx-21'``): starting an existing campaign id with another spec is refused with it."""

from __future__ import annotations

import dataclasses
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
        for k in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in b:
                out.append(f"{sub}: removed")
            elif k not in a:
                out.append(f"{sub}: added {b[k]!r}")
            else:
                _walk(sub, a[k], b[k], out)
        return
    if isinstance(a, list) and isinstance(b, list):
        ka, kb = _keyed(a), _keyed(b)
        if ka is not None and kb is not None:
            for n in list(ka) + [n for n in kb if n not in ka]:
                sub = f"{path}[{n}]"
                if n not in kb:
                    out.append(f"{sub}: removed")
                elif n not in ka:
                    out.append(f"{sub}: added")
                else:
                    _walk(sub, ka[n], kb[n], out)
            return
    out.append(f"{path}: {a!r} -> {b!r}")


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
