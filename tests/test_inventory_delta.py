"""Applying an inventory refresh to a campaign's host view (pure: domain.inventory_delta)."""

from __future__ import annotations

from dataclasses import replace

from domain.inventory_delta import apply_delta
from domain.messages import InventoryDelta
from domain.model import Host


def host(name: str, key: str, kind: str = "kvm", **kw) -> Host:
    return Host(name=name, kind=kind, driver="libvirt", endpoint=f"qemu+ssh://{name}/system", inventory_id=key, **kw)


A, B, C = host("kvm-a", "1"), host("kvm-b", "2"), host("xen-c", "3", kind="xen")
PLATFORMS = {"kvm": ["kvm-a", "kvm-b"], "xen": ["xen-c"]}


def test_gone_host_leaves_every_platform_and_stays_on_record() -> None:
    out = apply_delta([A, B, C], PLATFORMS, InventoryDelta(full=False, gone={"2": "status 'failed' in NetBox"}))
    assert out.platform_hosts == {"kvm": ["kvm-a"], "xen": ["xen-c"]}
    assert out.removed == ["kvm-b"] and out.added == [] and out.changed
    assert [h.name for h in out.hosts] == ["kvm-a", "kvm-b", "xen-c"]  # the record of hosts handed out


def test_inputs_are_not_modified() -> None:
    platforms = {p: list(v) for p, v in PLATFORMS.items()}
    hosts = [A, B, C]
    apply_delta(hosts, platforms, InventoryDelta(full=False, gone={"1": "deleted from NetBox"}))
    assert platforms == PLATFORMS and hosts == [A, B, C]


def test_repaired_host_comes_back_and_a_new_one_joins() -> None:
    gone = apply_delta([A, B, C], PLATFORMS, InventoryDelta(full=False, gone={"2": "failed"}))
    d = host("kvm-d", "4")
    back = apply_delta(
        gone.hosts,
        gone.platform_hosts,
        InventoryDelta(full=False, hosts=[B, d], platform_hosts={"kvm": ["kvm-b", "kvm-d"], "xen": []}),
    )
    assert back.platform_hosts == {"kvm": ["kvm-a", "kvm-b", "kvm-d"], "xen": ["xen-c"]}
    assert back.added == ["kvm-b", "kvm-d"] and back.removed == []
    assert [h.name for h in back.hosts] == ["kvm-a", "kvm-b", "kvm-d", "xen-c"]


def test_changed_host_moves_between_platforms_and_its_record_is_updated() -> None:
    moved = replace(A, site="lab-b", slots=4)
    out = apply_delta(
        [A, B, C], PLATFORMS, InventoryDelta(full=False, hosts=[moved], platform_hosts={"kvm": [], "xen": []})
    )
    assert out.platform_hosts == {"kvm": ["kvm-b"], "xen": ["xen-c"]}  # no longer matches its platform
    assert out.removed == ["kvm-a"] and out.updated == ["kvm-a"]
    assert next(h for h in out.hosts if h.name == "kvm-a").slots == 4


def test_renamed_host_keeps_its_old_record_for_running_cells() -> None:
    renamed = replace(A, name="kvm-a2")
    out = apply_delta(
        [A, B, C], PLATFORMS, InventoryDelta(full=False, hosts=[renamed], platform_hosts={"kvm": ["kvm-a2"]})
    )
    assert out.platform_hosts["kvm"] == ["kvm-a2", "kvm-b"]
    assert {h.name for h in out.hosts} == {"kvm-a", "kvm-a2", "kvm-b", "xen-c"}


def test_unchanged_delta_changes_nothing() -> None:
    out = apply_delta([A, B, C], PLATFORMS, InventoryDelta(full=False, cursor="2026-12-01T00:00:00Z"))
    assert not out.changed and out.platform_hosts == PLATFORMS
    same = apply_delta([A, B, C], PLATFORMS, InventoryDelta(full=False, hosts=[A], platform_hosts={"kvm": ["kvm-a"]}))
    assert not same.changed


def test_full_delta_replaces_membership_and_ignores_unknown_platforms() -> None:
    out = apply_delta(
        [A, B, C],
        PLATFORMS,
        InventoryDelta(full=True, hosts=[A, C], platform_hosts={"kvm": ["kvm-a"], "xen": ["xen-c"], "esx": ["x"]}),
    )
    assert out.platform_hosts == {"kvm": ["kvm-a"], "xen": ["xen-c"]}
    assert out.removed == ["kvm-b"]


def test_platform_losing_every_host_stays_empty() -> None:
    out = apply_delta([A, B, C], PLATFORMS, InventoryDelta(full=False, gone={"3": "tagged crossvisor-unhealthy"}))
    assert out.platform_hosts["xen"] == []
