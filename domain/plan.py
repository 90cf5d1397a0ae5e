"""The validated campaign plan: the workflow's input, built by ``crossvisor.spec`` from YAML."""

from dataclasses import dataclass, field
from typing import Any

from domain.model import CHECKS, Concurrency, GuestImage, Platform, RetryPolicySpec

# a host failed or retired in NetBox stops getting new cells within this many seconds
DEFAULT_NETBOX_REFRESH_S = 300


@dataclass
class CampaignPlan:
    name: str
    platforms: list[Platform]
    images: list[GuestImage]
    checks: list[str] = field(default_factory=lambda: list(CHECKS))
    concurrency: Concurrency = field(default_factory=Concurrency)
    retry: RetryPolicySpec = field(default_factory=RetryPolicySpec)
    # explicit [source, target] platform pairs; empty = every ordered pair of distinct platforms
    pairs: list[list[str]] = field(default_factory=list)
    include_same_platform: bool = False
    # where hosts come from: "file:<path>" or "netbox" (connection settings come from the worker's env)
    inventory: str = "file:examples/lab.yaml"
    export_format: str = "ova"  # ova | ovf
    # remediations to try, in order, when an unmodified move fails (domain.remedies.REMEDIES)
    remediate: list[str] = field(default_factory=list)
    # the spec's optional `netbox:` block (roles, tags, statuses, filters, kinds, endpoints), plain
    # JSON; read by inventory.netbox_mapping.mapping_for (open_inventory(..., netbox=plan.netbox))
    netbox: dict[str, Any] = field(default_factory=dict)
    # seconds between incremental inventory refreshes during the campaign; -1 = the default for
    # the inventory (netbox: DEFAULT_NETBOX_REFRESH_S, a file: off), 0 = never refresh
    inventory_refresh_s: int = -1

    def refresh_interval_s(self) -> int:
        """The effective refresh interval (0 = off)."""
        if self.inventory_refresh_s >= 0:
            return self.inventory_refresh_s
        return DEFAULT_NETBOX_REFRESH_S if self.inventory == "netbox" else 0

    def platform(self, name: str) -> Platform:
        for p in self.platforms:
            if p.name == name:
                return p
        raise KeyError(name)

    def image(self, name: str) -> GuestImage:
        for i in self.images:
            if i.name == name:
                return i
        raise KeyError(name)
