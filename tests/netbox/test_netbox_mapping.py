"""The NetBox mapping, host naming and the spec's ``netbox:`` block: pure logic, no server (runs in
the quick suite; everything that talks to NetBox is in the other modules here)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from crossvisor.spec import SpecError, load_spec
from inventory.netbox_mapping import (
    NetBoxMapping,
    compose_endpoint,
    driver_for_endpoint,
    host_form,
    mapping_for,
)
from inventory.netbox_schema import CUSTOM_FIELDS
from inventory.netbox_source import unique_names
from inventory.source import InventoryError


@pytest.mark.parametrize(
    ("slug", "name", "kind"),
    [
        ("vmware", "VMware", "vsphere"),
        ("vmware-esxi", "", "vsphere"),
        ("vsphere", "", "vsphere"),
        ("kvm", "KVM", "kvm"),
        ("proxmox", "Proxmox", "kvm"),
        ("hyper-v", "", "hyperv"),
        ("xcp-ng", "XCP-ng", "xen"),
        ("xen", "", "xen"),
        ("my-esx", "VMware ESXi", "vsphere"),  # an odd slug, a name that says it
        ("aws", "AWS", None),
        ("google-cloud", "Google Cloud", None),
    ],
)
def test_default_kinds_cover_common_cluster_types(slug: str, name: str, kind: str | None) -> None:
    assert NetBoxMapping().kind_of(slug, name) == kind


def test_layers_merge_dicts_and_replace_lists(tmp_path: Path) -> None:
    cfg = tmp_path / "netbox.yaml"
    cfg.write_text("roles: [server]\nkinds: {aws: kvm}\nendpoints: {kvm: 'qemu+tcp://{host}/system'}\n")
    m = mapping_for({"roles": ["hv"], "kinds": {"kvm": ""}}, environ={"CROSSVISOR_NETBOX_CONFIG": str(cfg)})
    assert m.roles == ["hv"]  # the spec replaces the file's list
    assert m.kind_of("aws") == "kvm" and m.kind_of("kvm") is None and m.kind_of("vmware") == "vsphere"
    assert m.endpoints["kvm"] == "qemu+tcp://{host}/system" and m.endpoints["vsphere"] == "https://{host}/sdk"
    assert m.sources == ["defaults", str(cfg), "spec"]
    # the file may also wrap its keys in `netbox:`
    cfg.write_text("netbox:\n  tags: [hv]\n")
    assert mapping_for(None, environ={"CROSSVISOR_NETBOX_CONFIG": str(cfg)}).tags == ["hv"]


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"role": ["x"]}, "spec: unknown keys role; allowed: roles"),
        ({"kinds": {"aws": "cloud"}}, "spec: netbox.kinds.aws: 'cloud' is not a hypervisor kind"),
        ({"endpoints": {"kvm": "qemu+ssh://{ip}/system"}}, r"unknown placeholder \{ip\}"),
        ({"endpoints": {"esx": "https://{host}/sdk"}}, "netbox.endpoints.esx: not a hypervisor kind"),
        ({"endpoints": {"kvm": "qemu://{host"}}, "netbox.endpoints.kvm: .* expected '}' before end"),
        ({"roles": "a b"}, "netbox.roles: expected a list of slugs"),
        ({"filters": {"role": "x"}}, "use netbox.roles"),
        ({"roles": []}, "every NetBox device would be a hypervisor host"),
    ],
)
def test_bad_mapping_is_an_error_naming_the_key(layer: dict, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        NetBoxMapping.build(("spec", layer))


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "netbox.yaml"
    cfg.write_text("kinds: {aws: cloud}\n")
    with pytest.raises(InventoryError, match=f"{cfg}: netbox.kinds.aws"):
        mapping_for(None, environ={"CROSSVISOR_NETBOX_CONFIG": str(cfg)})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read NetBox mapping file"):
        mapping_for(None, environ={"CROSSVISOR_NETBOX_CONFIG": str(tmp_path / "nope.yaml")})


def test_config_file_that_is_a_fifo_or_bad_yaml_is_refused_without_its_lines(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InventoryError, match="FIFO"):  # refused at once, not waited on
        mapping_for(None, environ={"CROSSVISOR_NETBOX_CONFIG": str(fifo)})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kinds: {aws: cloud\npassword-like-line: hunter2\n")
    with pytest.raises(InventoryError, match=r"bad\.yaml:\d+:\d+: invalid YAML") as err:
        mapping_for(None, environ={"CROSSVISOR_NETBOX_CONFIG": str(bad)})
    assert "hunter2" not in str(err.value)


def test_endpoint_composition() -> None:
    assert host_form("10.0.0.2/24") == "10.0.0.2"
    assert host_form("2001:db8::5/64") == "[2001:db8::5]"
    ep, missing = compose_endpoint("qemu+ssh://root@{host}/system", {"host": "[2001:db8::5]"})
    assert (ep, missing) == ("qemu+ssh://root@[2001:db8::5]/system", [])
    assert compose_endpoint("https://{host}/sdk", {"host": ""}) == ("", ["host"])
    assert compose_endpoint("test:///default", {}) == ("test:///default", [])


@pytest.mark.parametrize(
    ("endpoint", "driver"),
    [
        ("qemu+ssh://root@h/system", "libvirt"),
        ("test:///default", "libvirt"),
        ("esx://h/?no_verify=1", "libvirt"),
        ("hyperv://h/?transport=http", "libvirt"),
        ("https://vc/sdk", "vsphere"),
        ("10.0.0.2", None),  # a bare address is no endpoint: the template makes one from it
        ("winrm://h", None),
    ],
)
def test_driver_follows_the_endpoint_scheme(endpoint: str, driver: str | None) -> None:
    assert driver_for_endpoint(endpoint) == driver


def test_unique_names_for_unnamed_and_shared_names() -> None:
    devs = [
        {"id": 1, "name": "esx-01"},
        {"id": 2, "name": "esx-01"},
        {"id": 3, "name": None, "device_type": {"slug": "poweredge-r640"}},
        {"id": 4, "name": "kvm"},
        {"id": 5, "name": "kvm-9"},  # a real name that "<name>-<id>" of device 9 would also make
    ]
    # device 9 ("kvm") is a candidate outside this selection: "kvm" is still a shared name
    universe = Counter({"esx-01": 2, "kvm": 2, "kvm-9": 1})
    names = unique_names([*devs, {"id": 9, "name": "kvm"}], universe)
    assert names[1] == "esx-01-1" and names[2] == "esx-01-2"
    assert names[3] == "poweredge-r640-3"
    assert names[4] == "kvm-4"
    assert len(set(names.values())) == len(names)
    # the same device gets the same name whichever subset is asked
    assert unique_names(devs[:1], universe) == {1: "esx-01-1"}


def test_custom_field_labels_fit_netbox() -> None:
    assert all(len(f.label) <= 50 for f in CUSTOM_FIELDS)  # NetBox rejects longer labels (HTTP 400)


SPEC = """\
name: s
inventory: {inventory}
platforms:
  - {{name: a, kind: kvm}}
  - {{name: b, kind: xen}}
images: [{{name: i}}]
"""


def test_spec_netbox_block_reaches_the_plan(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(inventory="netbox") + "netbox:\n  roles: [server]\n  kinds: {pve-cluster: kvm}\n")
    plan = load_spec(spec)
    assert plan.netbox == {"roles": ["server"], "kinds": {"pve-cluster": "kvm"}}
    assert load_spec(_write(tmp_path, SPEC.format(inventory="netbox"))).netbox == {}


@pytest.mark.parametrize(
    ("inventory", "block", "message"),
    [
        (
            "netbox",
            "netbox:\n  kinds: {aws: cloud}\n",
            r"netbox\.kinds\.aws: must be 'kvm', 'vsphere', 'hyperv', 'xen' or ''",
        ),
        ("netbox", "netbox:\n  endpoints: {kvm: 'x://{nope}'}\n", r"unknown placeholder \{nope\}"),
        ("netbox", "netbox:\n  rolez: [x]\n", r"netbox\.rolez"),
        ("file:lab.yaml", "netbox:\n  roles: [x]\n", "the inventory is 'file:lab.yaml', not 'netbox'"),
    ],
)
def test_spec_netbox_block_errors(tmp_path: Path, inventory: str, block: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, SPEC.format(inventory=inventory) + block))


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "spec.yaml"
    p.write_text(text)
    return p


def test_file_inventory_keys_hosts_by_name(tmp_path: Path) -> None:
    from inventory.file_source import FileInventory

    lab = tmp_path / "lab.yaml"
    lab.write_text("hosts:\n  - {name: k1, kind: kvm, endpoint: 'test:///default'}\n")
    inv = FileInventory(lab, tmp_path / "state")
    (h,) = inv.hosts()
    assert h.inventory_id == "k1"
    assert inv.acquire_lease(h.inventory_id, "c/1")
    assert inv.leases() == {"k1": "c/1"} and inv.label("k1") == "k1" and inv.resolve("k1") == "k1"
