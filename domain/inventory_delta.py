"""Applying an inventory refresh to a running campaign's host view (pure: no I/O, deterministic).

The campaign keeps ``hosts`` (every host it has been handed, kept as the record even after a host
leaves service: the report names the hosts cells ran on, the sweeper visits them) and
``platform_hosts`` (platform -> names of the hosts that may get *new* cells). A refresh only
changes ``platform_hosts`` membership and the Host records; cells already running keep the Host
they started with, so a host that leaves service finishes its running cells and gets no new ones.
"""

from dataclasses import dataclass, field, replace

from domain.messages import InventoryDelta
from domain.model import Host


@dataclass
class AppliedDelta:
    hosts: list[Host]
    platform_hosts: dict[str, list[str]]
    added: list[str] = field(default_factory=list)  # names that became schedulable somewhere
    removed: list[str] = field(default_factory=list)  # names that left every platform they were in
    updated: list[str] = field(default_factory=list)  # names whose record changed

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.updated)


def _key(h: Host) -> str:
    return h.inventory_id or h.name


def apply_delta(hosts: list[Host], platform_hosts: dict[str, list[str]], delta: InventoryDelta) -> AppliedDelta:
    """The campaign's new ``hosts`` and ``platform_hosts`` after ``delta`` (inputs are not modified).

    Platforms the campaign has keep existing (possibly empty: the scheduler then skips their cells
    with a reason, as when the first pull found no host); platforms the delta names that the
    campaign does not have are ignored (a refresh never adds a platform)."""
    by_name: dict[str, Host] = {h.name: h for h in hosts}
    names_of_key: dict[str, set[str]] = {}
    for h in hosts:
        names_of_key.setdefault(_key(h), set()).add(h.name)
    before = {p: list(v) for p, v in platform_hosts.items()}
    members: dict[str, set[str]] = {p: set(v) for p, v in platform_hosts.items()}
    if delta.full:
        members = {p: set(delta.platform_hosts.get(p, [])) for p in platform_hosts}
    else:
        drop: set[str] = set()
        for key in delta.gone:
            drop |= names_of_key.get(key, set())
            drop.add(key)  # a host known by name only (a file inventory without keys)
        for h in delta.hosts:  # a changed host leaves under its old names (a rename) and its new one ...
            drop |= names_of_key.get(_key(h), set())
            drop.add(h.name)
        for p in members:
            members[p] -= drop
        for p, names in delta.platform_hosts.items():  # ... and joins the platforms it matches now
            if p in members:
                members[p] |= set(names)
    updated: list[str] = []
    for h in delta.hosts:
        # a renamed host's old record stays (a running cell may still name it); the new one is added
        old = by_name.get(h.name)
        if old != h:
            by_name[h.name] = replace(h, tags=list(h.tags), custom=dict(h.custom))
            if old is not None:
                updated.append(h.name)
    new_platform_hosts = {p: sorted(members[p]) for p in platform_hosts}
    was = {n for v in before.values() for n in v}
    now = {n for v in new_platform_hosts.values() for n in v}
    added = sorted({n for p, names in new_platform_hosts.items() for n in names if n not in before[p]})
    return AppliedDelta(
        hosts=sorted(by_name.values(), key=lambda h: h.name),
        platform_hosts=new_platform_hosts,
        added=added,
        removed=sorted(was - now),
        updated=sorted(updated),
    )
