"""Campaign spec files (YAML) -> validated ``CampaignPlan``.

Validation happens entirely before anything starts; an error names the file, the field path and
the reason, e.g. ``examples/bad.yaml: platforms.1.kind: Input should be 'kvm', 'vsphere', ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from domain import model as m
from domain.plan import CampaignPlan

Kind = Literal["kvm", "vsphere", "hyperv", "xen"]
DiskFormat = Literal["qcow2", "vmdk", "vpc", "vhdx", "raw"]
from inventory.selection import SELECT_KEYS  # noqa: E402


class SpecError(ValueError):
    """A campaign spec that cannot be run; the message is meant for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is an error, never silently ignored


class PlatformSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    kind: Kind
    driver: Literal["libvirt", "vsphere"] | None = None
    select: dict[str, str] = Field(default_factory=dict)
    disk_format: DiskFormat = "qcow2"
    hardware_version: str = ""
    nic_models: list[str] = Field(default_factory=lambda: ["virtio", "e1000", "vmxnet3"])
    firmware: list[Literal["bios", "efi"]] = Field(default_factory=lambda: ["bios", "efi"])

    @field_validator("select")
    @classmethod
    def _known_keys(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if k not in SELECT_KEYS and not k.startswith("cf_")]
        if bad:
            raise ValueError(f"unknown selection keys {bad}; allowed: {list(SELECT_KEYS)} or cf_<custom field>")
        return v


class ImageSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    cpus: int = Field(1, ge=1, le=256)
    memory_mib: int = Field(256, ge=16, le=4 * 1024 * 1024)
    disk_mib: int = Field(64, ge=1, le=64 * 1024 * 1024)
    firmware: Literal["bios", "efi"] = "bios"
    nic_model: str = "virtio"
    disk_bus: Literal["virtio", "scsi", "ide", "sata"] = "virtio"
    os: str = "linux"
    source: str = ""


class ConcurrencySpec(_Strict):
    max_cells: int = Field(4, ge=1, le=10_000)
    per_kind: dict[Kind, int] = Field(default_factory=dict)


class RetrySpec(_Strict):
    max_attempts: int = Field(5, ge=1, le=100)
    initial_interval_s: float = Field(1.0, gt=0)
    backoff: float = Field(2.0, ge=1.0)
    max_interval_s: float = Field(60.0, gt=0)


class NetBoxSpec(_Strict):
    """Optional ``netbox:`` block: which devices are hypervisor hosts and how they map
    (see ``inventory/netbox_mapping.py``; every key optional, defaults fit most labs)."""

    roles: list[str] | None = None  # device role slugs (any of); default [hypervisor-host]
    tags: list[str] | None = None  # tag slugs a host must all carry
    statuses: list[str] | None = None  # device statuses in service; default [active]
    filters: dict[str, str | int | bool | list[str | int]] | None = None  # any other NetBox device filter
    kinds: dict[str, Kind | Literal[""]] | None = None  # cluster type / platform slug -> kind ("" = none)
    endpoints: dict[Kind, str] | None = None  # kind -> endpoint template, e.g. "qemu+ssh://root@{host}/system"

    @model_validator(mode="after")
    def _mapping_valid(self) -> NetBoxSpec:
        from inventory.netbox_mapping import NetBoxMapping
        from inventory.source import InventoryError

        try:
            NetBoxMapping.build(("spec", self.model_dump(exclude_none=True)))
        except InventoryError as e:
            raise ValueError(str(e)) from None
        return self


class CampaignSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    inventory: str = "file:examples/lab.yaml"
    platforms: list[PlatformSpec] = Field(min_length=1)
    images: list[ImageSpec] = Field(min_length=1)
    checks: list[Literal["boots", "disks", "cpu_memory", "nics", "app", "metadata", "lifecycle"]] = Field(
        default_factory=lambda: list(m.CHECKS)
    )
    pairs: list[tuple[str, str]] = Field(default_factory=list)
    include_same_platform: bool = False
    concurrency: ConcurrencySpec = Field(default_factory=ConcurrencySpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    export_format: Literal["ova", "ovf"] = "ova"
    netbox: NetBoxSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        for what, names in (
            ("platforms", [p.name for p in self.platforms]),
            ("images", [i.name for i in self.images]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} names {dupes}")
        known = {p.name for p in self.platforms}
        for s, t in self.pairs:
            for n in (s, t):
                if n not in known:
                    raise ValueError(f"pairs: unknown platform {n!r}; known: {sorted(known)}")
        if not self.pairs and len(self.platforms) < 2 and not self.include_same_platform:
            raise ValueError("need two platforms (or include_same_platform: true) to form a pair")
        for p in self.platforms:
            if p.driver == "vsphere" and p.kind != "vsphere":
                raise ValueError(f"platform {p.name!r}: driver vsphere only drives kind vsphere")
        if not self.inventory.startswith(("file:", "netbox")):
            raise ValueError("inventory: must be 'file:<path>' or 'netbox'")
        if self.netbox is not None and self.inventory != "netbox":
            raise ValueError(f"netbox: given, but the inventory is {self.inventory!r}, not 'netbox'")
        return self


def _to_plan(spec: CampaignSpec, base_dir: Path) -> CampaignPlan:
    inventory = spec.inventory
    if inventory.startswith("file:"):
        path = Path(inventory[5:])
        if not path.is_absolute():
            path = (base_dir / path).resolve()
        inventory = f"file:{path}"
    return CampaignPlan(
        name=spec.name,
        platforms=[
            m.Platform(
                name=p.name,
                kind=p.kind,
                driver=p.driver or ("vsphere" if p.kind == "vsphere" else "libvirt"),
                select=dict(p.select),
                disk_format=p.disk_format,
                hardware_version=p.hardware_version,
                nic_models=list(p.nic_models),
                firmware=list(p.firmware),
            )
            for p in spec.platforms
        ],
        images=[m.GuestImage(**i.model_dump()) for i in spec.images],
        checks=list(spec.checks),
        concurrency=m.Concurrency(
            max_cells=spec.concurrency.max_cells,
            per_kind=dict(spec.concurrency.per_kind),
        ),
        retry=m.RetryPolicySpec(**spec.retry.model_dump()),
        pairs=[[s, t] for s, t in spec.pairs],
        include_same_platform=spec.include_same_platform,
        inventory=inventory,
        export_format=spec.export_format,
        netbox=spec.netbox.model_dump(exclude_none=True) if spec.netbox else {},
    )


def _format(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        lines.append(f"{where}: {loc}: {e['msg']}")
    return "\n".join(lines)


def load_spec(path: str | Path) -> CampaignPlan:
    """Parse and validate a spec file; a relative ``file:`` inventory resolves against the spec's directory."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError(f"{p}: cannot read: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise SpecError(f"{p}{at}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{p}: (top level): expected a mapping, got {type(doc).__name__}")
    try:
        spec = CampaignSpec.model_validate(doc)
    except ValidationError as e:
        raise SpecError(_format(e, str(p))) from None
    return _to_plan(spec, p.resolve().parent)
