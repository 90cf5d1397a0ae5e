"""Open the inventory a campaign names: ``file:<path>`` (embedded default) or ``netbox``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from inventory.source import InventoryError, InventorySource


def open_inventory(ref: str, state_dir: Path, netbox: dict[str, Any] | None = None) -> InventorySource:
    """``netbox`` is the spec's ``netbox:`` block (``CampaignPlan.netbox``); the NetBox mapping is
    the defaults, then ``CROSSVISOR_NETBOX_CONFIG`` (a YAML file), then that block."""
    if ref.startswith("file:"):
        from inventory.file_source import FileInventory

        return FileInventory(ref[5:], state_dir / "inventory")
    if ref == "netbox":
        return open_netbox(netbox)
    raise InventoryError(f"unknown inventory reference {ref!r}: use file:<path> or netbox")


def open_netbox(netbox: dict[str, Any] | None = None, **kwargs: Any):
    """The NetBox inventory from the environment: ``CROSSVISOR_NETBOX_URL`` +
    ``CROSSVISOR_NETBOX_TOKEN_FILE`` (crossvisor's own, token only ever as a file), else the
    pynetbox-style ``NETBOX_URL`` + ``NETBOX_TOKEN``/``NETBOX_TOKEN_FILE``."""
    from inventory.netbox_mapping import mapping_for
    from inventory.netbox_source import NetBoxInventory

    mapping = mapping_for(netbox)
    url = os.environ.get("CROSSVISOR_NETBOX_URL", "")
    token_file = os.environ.get("CROSSVISOR_NETBOX_TOKEN_FILE", "")
    if url:
        return NetBoxInventory(url, token_file=token_file or None, mapping=mapping, **kwargs)
    return NetBoxInventory.from_env(mapping=mapping, **kwargs)
