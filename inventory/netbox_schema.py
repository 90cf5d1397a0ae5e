"""The NetBox objects crossvisor relies on, and ``ensure_schema`` to create them (idempotent).

A fresh NetBox becomes usable by crossvisor after one ``ensure_schema(pynetbox.api(...))``.
"""

from __future__ import annotations

from typing import Any

DEFAULT_ROLE = "hypervisor-host"
UNHEALTHY_TAG = "crossvisor-unhealthy"

CF_VERSION = "hypervisor_version"
CF_ENDPOINT = "mgmt_endpoint"
CF_CPUS = "cpus"
CF_MEMORY = "memory_mib"
CF_SLOTS = "cell_slots"
CF_CREDENTIALS = "credentials_ref"
CF_LEASE = "crossvisor_lease"  # JSON list of owners ("<campaign>/<cell>")
CF_FAILURES = "crossvisor_health_failures"  # consecutive failed health checks
# Volatile bookkeeping: not part of a host's identity, so kept out of Host.custom/snapshots.
INTERNAL_FIELDS = frozenset({CF_LEASE, CF_FAILURES})

# name -> (type, label, default)
CUSTOM_FIELDS: dict[str, tuple[str, str, Any]] = {
    CF_VERSION: ("text", "Hypervisor version", None),
    CF_ENDPOINT: ("text", "Management endpoint (libvirt URI / vCenter URL)", None),
    CF_CPUS: ("integer", "CPUs", None),
    CF_MEMORY: ("integer", "Memory (MiB)", None),
    CF_SLOTS: ("integer", "crossvisor cell slots", 1),
    CF_CREDENTIALS: (
        "text",
        "Credentials reference (env:/file:, never a secret)",
        None,
    ),
    CF_LEASE: ("json", "crossvisor lease owners", None),
    CF_FAILURES: ("integer", "crossvisor consecutive health failures", None),
}

# Cluster type (slug or lower-cased name) -> Host.kind. Unknown types are malformed records.
CLUSTER_TYPE_KINDS: dict[str, str] = {
    "vmware-esxi": "vsphere",
    "vmware esxi": "vsphere",
    "vmware-vsphere": "vsphere",
    "vsphere": "vsphere",
    "esxi": "vsphere",
    "kvm": "kvm",
    "libvirt-kvm": "kvm",
    "hyper-v": "hyperv",
    "hyperv": "hyperv",
    "microsoft-hyper-v": "hyperv",
    "xen": "xen",
    "xcp-ng": "xen",
}
# What ensure_schema creates: (name, slug).
CLUSTER_TYPES = (
    ("VMware ESXi", "vmware-esxi"),
    ("KVM", "kvm"),
    ("Hyper-V", "hyper-v"),
    ("Xen", "xen"),
)


def kind_of_cluster_type(name: str, slug: str) -> str | None:
    return CLUSTER_TYPE_KINDS.get(slug.lower()) or CLUSTER_TYPE_KINDS.get(name.lower())


def ensure_schema(api: Any, role: str = DEFAULT_ROLE) -> None:
    """Create the device role, cluster types, custom fields and tag crossvisor uses.

    ``api`` is a ``pynetbox.api``; existing objects are left as they are.
    """
    if api.dcim.device_roles.get(slug=role) is None:
        api.dcim.device_roles.create(name=role.replace("-", " ").title(), slug=role, color="2196f3")
    for name, slug in CLUSTER_TYPES:
        if api.virtualization.cluster_types.get(slug=slug) is None:
            api.virtualization.cluster_types.create(name=name, slug=slug)
    if api.extras.tags.get(slug=UNHEALTHY_TAG) is None:
        api.extras.tags.create(name=UNHEALTHY_TAG, slug=UNHEALTHY_TAG, color="f44336")
    for name, (type_, label, default) in CUSTOM_FIELDS.items():
        if api.extras.custom_fields.get(name=name) is None:
            api.extras.custom_fields.create(
                name=name,
                label=label,
                type=type_,
                object_types=["dcim.device"],
                default=default,
                required=False,
            )
