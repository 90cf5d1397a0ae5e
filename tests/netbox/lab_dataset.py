"""A NetBox shaped like a real lab, as operators have it before crossvisor (after the NetBox
community's demo data): generic roles (``server``, switches, PDUs), the cloud cluster types next to
``KVM``, ``VMware`` (slug ``vmware``) and ``XCP-ng``, unnamed devices, two device names used twice,
servers with only a primary IP, an offline server, servers outside any hypervisor cluster, and no
crossvisor role, custom field or tag at all.

Loaded through the REST API (pynetbox). Addresses are from TEST-NET-1 (192.0.2.0/24): data only,
nothing ever connects to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pynetbox


@dataclass
class Lab:
    ids: dict[str, int] = field(default_factory=dict)  # label -> device id (labels are ours, not names)
    types: dict[str, int] = field(default_factory=dict)  # cluster type slug -> id

    def id(self, label: str) -> int:
        return self.ids[label]


SITES = [
    ("DM-Akron", "dm-akron"),
    ("DM-Binghamton", "dm-binghamton"),
    ("DM-Camden", "dm-camden"),
    ("Lab West", "lab-west"),
]
ROLES = [
    ("Server", "server", "9e9e9e"),
    ("Core Switch", "core-switch", "2196f3"),
    ("Access Switch", "access-switch", "3f51b5"),
    ("PDU", "pdu", "607d8b"),
    ("Router", "router", "8bc34a"),
]
CLUSTER_TYPES = [
    ("KVM", "kvm"),
    ("VMware", "vmware"),
    ("XCP-ng", "xcp-ng"),
    ("AWS", "aws"),
    ("Azure", "azure"),
    ("Google Cloud", "google-cloud"),
    ("DigitalOcean", "digitalocean"),
]
CLUSTERS = [
    ("vSphere Akron", "vmware"),
    ("KVM Lab West", "kvm"),
    ("KVM Camden", "kvm"),
    ("XCP Pool 1", "xcp-ng"),
    ("AWS us-east-1", "aws"),
    ("Azure West", "azure"),
]
DEVICE_TYPES = [
    ("Dell", "PowerEdge R640", "poweredge-r640"),
    ("Supermicro", "SYS-1029P", "sys-1029p"),
    ("Juniper", "EX4300-48T", "ex4300-48t"),
    ("APC", "AP7901", "ap7901"),
    ("Cisco", "ISR 1111", "isr1111"),
]

# label: (name or None, device type, role, site, cluster or None, primary IP or None, status, tags)
DEVICES: dict[str, tuple] = {
    # VMware hosts: one name twice (two sites), primary IP only
    "esx-akron": ("esx-01", "poweredge-r640", "server", "dm-akron", "vSphere Akron", "192.0.2.11", "active", []),
    "esx-bing": ("esx-01", "poweredge-r640", "server", "dm-binghamton", "vSphere Akron", "192.0.2.12", "active", []),
    "esx-02": ("esx-02", "poweredge-r640", "server", "dm-akron", "vSphere Akron", "192.0.2.13", "active", []),
    # KVM hosts: two unnamed, one name twice, one that will be dead, one offline
    "kvm-unnamed-dell": (
        None,
        "poweredge-r640",
        "server",
        "lab-west",
        "KVM Lab West",
        "192.0.2.21",
        "active",
        ["alpha"],
    ),
    "kvm-unnamed-smc": (None, "sys-1029p", "server", "lab-west", "KVM Lab West", "192.0.2.22", "active", []),
    "kvm-node-west": ("kvm-node", "sys-1029p", "server", "lab-west", "KVM Lab West", "192.0.2.23", "active", []),
    "kvm-node-camden": (
        "kvm-node",
        "sys-1029p",
        "server",
        "dm-camden",
        "KVM Camden",
        "192.0.2.24",
        "active",
        ["alpha"],
    ),
    "kvm-dead": ("kvm-dead", "sys-1029p", "server", "lab-west", "KVM Lab West", "192.0.2.25", "active", ["alpha"]),
    "kvm-old": ("kvm-old", "sys-1029p", "server", "lab-west", "KVM Lab West", "192.0.2.26", "offline", ["alpha"]),
    # Xen (XCP-ng) hosts: one unnamed, one without any address
    "xcp-01": ("xcp-01", "poweredge-r640", "server", "lab-west", "XCP Pool 1", "192.0.2.31", "active", []),
    "xcp-unnamed": (None, "sys-1029p", "server", "lab-west", "XCP Pool 1", "192.0.2.32", "active", []),
    "xcp-noip": ("xcp-noip", "sys-1029p", "server", "lab-west", "XCP Pool 1", None, "active", []),
    # servers that are no hypervisors: a cloud gateway, one outside any cluster
    "aws-gw": ("aws-gw", "poweredge-r640", "server", "dm-akron", "AWS us-east-1", "192.0.2.41", "active", []),
    "backup-01": ("backup-01", "poweredge-r640", "server", "dm-camden", None, "192.0.2.42", "active", []),
    # network and power gear, some unnamed (as in the demo data)
    "core-1": ("dmi01-akron-rtr01", "isr1111", "router", "dm-akron", None, None, "active", []),
    "core-2": ("dmi01-akron-sw01", "ex4300-48t", "core-switch", "dm-akron", None, None, "active", []),
    "core-3": ("dmi01-camden-sw01", "ex4300-48t", "core-switch", "dm-camden", None, None, "active", []),
    "acc-1": ("dmi01-akron-sw02", "ex4300-48t", "access-switch", "dm-akron", None, None, "active", []),
    "acc-2": ("dmi01-akron-sw02", "ex4300-48t", "access-switch", "dm-binghamton", None, None, "active", []),
    "pdu-1": (None, "ap7901", "pdu", "dm-akron", None, None, "active", []),
    "pdu-2": (None, "ap7901", "pdu", "dm-akron", None, None, "active", []),
    "pdu-3": (None, "ap7901", "pdu", "dm-camden", None, None, "active", []),
}


def load_lab(nb: pynetbox.api) -> Lab:
    lab = Lab()
    sites = {slug: nb.dcim.sites.create(name=name, slug=slug).id for name, slug in SITES}
    roles = {slug: nb.dcim.device_roles.create(name=n, slug=slug, color=c).id for n, slug, c in ROLES}
    for slug in ("alpha", "bravo"):
        nb.extras.tags.create(name=slug.title(), slug=slug)
    lab.types = {slug: nb.virtualization.cluster_types.create(name=n, slug=slug).id for n, slug in CLUSTER_TYPES}
    clusters = {name: nb.virtualization.clusters.create(name=name, type=lab.types[t]).id for name, t in CLUSTERS}
    mfrs: dict[str, int] = {}
    dtypes: dict[str, int] = {}
    for mfr, model, slug in DEVICE_TYPES:
        if mfr not in mfrs:
            mfrs[mfr] = nb.dcim.manufacturers.create(name=mfr, slug=mfr.lower()).id
        dtypes[slug] = nb.dcim.device_types.create(manufacturer=mfrs[mfr], model=model, slug=slug).id
    labels = list(DEVICES)
    created = nb.dcim.devices.create(
        [
            {
                "name": name,
                "device_type": dtypes[dtype],
                "role": roles[role],
                "site": sites[site],
                "cluster": clusters[cluster] if cluster else None,
                "status": status,
                "tags": [{"slug": t} for t in tags],
            }
            for name, dtype, role, site, cluster, _ip, status, tags in DEVICES.values()
        ]
    )
    lab.ids = {label: d.id for label, d in zip(labels, created, strict=True)}
    for label, (_n, _t, _r, _s, _c, ip, _st, _tg) in DEVICES.items():
        if ip is None:
            continue
        iface = nb.dcim.interfaces.create(device=lab.ids[label], name="eno1", type="1000base-t")
        addr = nb.ipam.ip_addresses.create(
            address=f"{ip}/24", assigned_object_type="dcim.interface", assigned_object_id=iface.id
        )
        nb.dcim.devices.get(lab.ids[label]).update({"primary_ip4": addr.id})
    return lab
