"""Host selection semantics shared by every inventory source (file, NetBox)."""

from __future__ import annotations

from domain.model import Host
from inventory.source import InventoryError

SELECT_KEYS = ("site", "tag", "kind", "version")


def matches(host: Host, select: dict[str, str]) -> bool:
    """Selection semantics shared by every source; unknown keys are rejected by ``check_select``."""
    for key, want in select.items():
        if key == "site" and host.site != want:
            return False
        if key == "tag" and want not in host.tags:
            return False
        if key == "kind" and host.kind != want:
            return False
        if key == "version" and host.version != want:
            return False
        if key.startswith("cf_") and host.custom.get(key[3:]) != want:
            return False
    return True


def check_select(select: dict[str, str]) -> None:
    bad = [k for k in select if k not in SELECT_KEYS and not k.startswith("cf_")]
    if bad:
        raise InventoryError(f"unknown selection keys {bad}; allowed: {list(SELECT_KEYS)} or cf_<field>")
