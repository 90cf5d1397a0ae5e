"""Open the inventory a campaign names: ``file:<path>`` (embedded default) or ``netbox``."""

from __future__ import annotations

from pathlib import Path

from inventory.source import InventoryError, InventorySource


def open_inventory(ref: str, state_dir: Path) -> InventorySource:
    if ref.startswith("file:"):
        from inventory.file_source import FileInventory

        return FileInventory(ref[5:], state_dir / "inventory")
    if ref == "netbox":
        import os

        from inventory.netbox_source import NetBoxInventory

        # crossvisor's own settings first (token only ever as a file), then pynetbox-style env
        url = os.environ.get("CROSSVISOR_NETBOX_URL", "")
        token_file = os.environ.get("CROSSVISOR_NETBOX_TOKEN_FILE", "")
        if url:
            return NetBoxInventory(url, token_file=token_file or None)
        return NetBoxInventory.from_env()
    raise InventoryError(f"unknown inventory reference {ref!r}: use file:<path> or netbox")
