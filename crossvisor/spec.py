"""Campaign spec files (YAML) -> validated ``CampaignPlan``.

Validation happens entirely before anything starts (``crossvisor validate`` and ``campaign start``
both come through ``load_spec``): a spec that Temporal or the scheduler cannot run is refused
here, never accepted and left running. Every refusal is a ``SpecError`` whose lines read
``file[:line]: field.path: reason``, e.g. ``examples/bad.yaml:7: platforms.1.kind: must be 'kvm',
'vsphere', 'hyperv' or 'xen'``. A message never quotes the file's content (point ``validate`` at
``/etc/shadow`` and it says what is wrong, not what is in it); the only values it repeats are
names that passed the name rule and near-misses of field names (``cpu``, did you mean ``cpus``).

The files a spec names are checked too: the spec itself, a ``file:`` inventory (a regular file,
bounded, parsed as the worker will parse it, every platform selecting at least one host) and each
image ``source`` (a disk image or a package, detected from its content).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crossvisor.core.safe_read import (
    InputFileError,
    ParsedYaml,
    check_disk_image,
    parse_yaml,
    read_text_bounded,
)
from domain import model as m
from domain.matrix import cell_id, slug
from domain.plan import CampaignPlan
from inventory.selection import SELECT_KEYS

MAX_SPEC_BYTES = 1024 * 1024  # the demo spec is 1.5 KiB; a 10,000-cell lab spec is a few dozen
MAX_YAML_DEPTH = 16  # a spec nests 5 levels deep
MAX_YAML_NODES = 50_000  # values after alias expansion
MAX_PLATFORMS = 64
MAX_IMAGES = 256
MAX_CELLS = 20_000  # the scheduler benchmark's month is 2,000 cells
MAX_PROBLEMS_SHOWN = 40
MAX_INTERVAL_S = 7 * 86400.0

Kind = Literal["kvm", "vsphere", "hyperv", "xen"]
DiskFormat = Literal["qcow2", "vmdk", "vpc", "vhdx", "raw"]
Check = Literal["boots", "disks", "cpu_memory", "nics", "app", "metadata", "lifecycle"]
Firmware = Literal["bios", "efi"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_NAME_RULE = "must start with a letter or digit and use only letters, digits, '.', '_' and '-' (at most 63)"
_MODEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"  # NIC models, guest OS families
_MODEL_RULE = "must be lower-case letters, digits, '_' or '-' (at most 32, e.g. virtio, e1000, linux)"
_HW_VERSION = re.compile(r"vmx-([1-9][0-9]?)")

Name = Annotated[str, Field(strict=True, pattern=NAME_PATTERN)]
ModelName = Annotated[str, Field(strict=True, pattern=_MODEL_PATTERN)]
Str = Annotated[str, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]


Cpus = Annotated[int, Field(strict=True, ge=1, le=256)]
MemoryMiB = Annotated[int, Field(strict=True, ge=16, le=4 * 1024 * 1024)]
DiskMiB = Annotated[int, Field(strict=True, ge=1, le=64 * 1024 * 1024)]
CellCount = Annotated[int, Field(strict=True, ge=1, le=10_000)]  # 0 would never schedule a cell
Attempts = Annotated[int, Field(strict=True, ge=1, le=100)]
Backoff = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=1.0, le=100.0)]
# Seconds: finite (``.inf`` makes Temporal's retry policy unusable), at least 10 ms, at most a week.
# 0 = never; at most a day (a host retired in NetBox must stop getting cells within a campaign's day)
RefreshSeconds = Annotated[int, Field(strict=True, ge=0, le=86_400)]
Interval = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.01, le=MAX_INTERVAL_S)]


class SpecError(ValueError):
    """A campaign spec that cannot be run; the message is meant for the operator.

    ``problems`` holds each refusal as a ``Problem``; ``str()`` is one line per problem."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", None, "", problems)]
        self.problems = sorted(problems, key=lambda p: p.line or 0)  # in file order; stable
        problems = self.problems
        lines = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str  # dotted path ("platforms.1.kind"), or what failed ("cannot read"); "" for YAML syntax
    reason: str
    column: int | None = None

    def __str__(self) -> str:
        if not self.file:
            return self.reason
        where = f"{self.file}:{self.line}" if self.line else self.file
        where += f":{self.column}" if self.line and self.column else ""
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is an error, never silently ignored


class PlatformSpec(_Strict):
    name: Name
    kind: Kind
    driver: Literal["libvirt", "vsphere"] | None = None
    select: dict[str, Str] | None = None  # None: every host of the platform's kind
    disk_format: DiskFormat = "qcow2"
    hardware_version: Str = ""
    nic_models: list[ModelName] = Field(default_factory=lambda: ["virtio", "e1000", "vmxnet3"], min_length=1)
    firmware: list[Firmware] = Field(default_factory=lambda: ["bios", "efi"], min_length=1)
    # the virtual hardware this hypervisor presents (domain/profiles.py); default: the kind's
    profile: Str = ""

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        from domain.profiles import PROFILES

        if v and v not in PROFILES:
            raise ValueError(f"unknown hardware profile {v!r}; known: {sorted(PROFILES)}")
        return v


Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
CREDENTIALS_REF_PATTERN = r"^(file|env):.+$"
# a VM's name on a libvirt or vSphere host: letters, digits, space and ._+- (no path, no quoting)
TEMPLATE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,79}$"
HttpStatus = Annotated[int, Field(strict=True, ge=100, le=599)]


class HttpProbeSpec(_Strict):
    port: Port = 80
    path: Annotated[str, Field(strict=True, pattern=r"^/[\x21-\x7e]*$", max_length=512)] = "/"
    expect: HttpStatus = 200


class AppProbeSpec(_Strict):
    """A service on the operator's image crossvisor asks through the guest's network: one of
    ``tcp: PORT`` (the port answers) or ``http: {port, path, expect}`` (the status it answers)."""

    tcp: Port | None = None
    http: HttpProbeSpec | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.tcp is None) == (self.http is None):
            raise ValueError("give exactly one of tcp: PORT or http: {port, path, expect}")
        return self


class SshSpec(_Strict):
    """Read-only commands over SSH with a key given by reference (file:/path or env:NAME)."""

    credentials_ref: Annotated[str, Field(strict=True, pattern=CREDENTIALS_REF_PATTERN)]
    user: Annotated[str, Field(strict=True, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "root"
    port: Port = 22


class ImageSpec(_Strict):
    name: Name
    cpus: Cpus = 1
    memory_mib: MemoryMiB = 256
    disk_mib: DiskMiB = 64
    firmware: Firmware = "bios"
    nic_model: ModelName = "virtio"
    disk_bus: Literal["virtio", "scsi", "ide", "sata"] = "virtio"
    os: ModelName = "linux"
    source: Str = ""
    # a guest image the project builds and boots from its own disk (deploy/guests): the real thing
    builtin: Literal[
        "", "legacy-bios", "uefi", "portable-bios", "vmware-born", "uefi-nvram", "dracut-lvm-nm", "netplan-cloudinit"
    ] = ""
    # what crossvisor may observe on an operator's image besides its console (README "Bring your own image")
    app: AppProbeSpec | None = None
    ssh: SshSpec | None = None
    # an existing VM or template on the source host (its name there), cloned for each cell
    template: Annotated[str, Field(strict=True, pattern=TEMPLATE_NAME_PATTERN)] = ""

    @model_validator(mode="after")
    def _one_origin(self):
        given = [k for k in ("builtin", "source", "template") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one of builtin, source or template, not {' and '.join(given)}")
        own = [k for k in ("disk_mib", "disk_bus", "firmware") if self.template and k in self.model_fields_set]
        if own:
            raise ValueError(
                f"{', '.join(own)}: a template's disks and firmware are its own; give only cpus/memory_mib"
            )
        return self


class ConcurrencySpec(_Strict):
    max_cells: CellCount = 4
    per_kind: dict[Kind, CellCount] = Field(default_factory=dict)


class RetrySpec(_Strict):
    max_attempts: Attempts = 5
    initial_interval_s: Interval = 1.0
    backoff: Backoff = 2.0
    max_interval_s: Interval = 60.0


class NetBoxSpec(_Strict):
    """Optional ``netbox:`` block: which devices are hypervisor hosts and how they map
    (see ``inventory/netbox_mapping.py``; every key optional, defaults fit most labs)."""

    roles: list[Str] | None = None  # device role slugs (any of); default [hypervisor-host]
    tags: list[Str] | None = None  # tag slugs a host must all carry
    statuses: list[Str] | None = None  # device statuses in service; default [active]
    filters: dict[Str, Str | int | bool | list[Str | int]] | None = None  # any other NetBox device filter
    kinds: dict[Str, Kind | Literal[""]] | None = None  # cluster type / platform slug -> kind ("" = none)
    endpoints: dict[Kind, Str] | None = None  # kind -> endpoint template, e.g. "qemu+ssh://root@{host}/system"

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
    name: Name
    inventory: Str = "file:examples/lab.yaml"
    platforms: list[PlatformSpec] = Field(min_length=1, max_length=MAX_PLATFORMS)
    images: list[ImageSpec] = Field(min_length=1, max_length=MAX_IMAGES)
    # an empty list would grade every cell PASS on no evidence at all
    checks: list[Check] = Field(default_factory=lambda: list(m.CHECKS), min_length=1)
    pairs: list[tuple[Str, Str]] = Field(default_factory=list)
    include_same_platform: Bool = False
    concurrency: ConcurrencySpec = Field(default_factory=ConcurrencySpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    export_format: Literal["ova", "ovf"] = "ova"
    # the remediation ladder (ODCA's "manual intervention"), tried in order after an unmodified move failed
    remediate: list[
        Literal[
            "virt-v2v",
            "generic-initramfs",
            "nic-config",
            "fstab-uuid",
            "guest-agent",
            "uefi-fallback",
            "dracut-generic",
            "emulated-first",
        ]
    ] = Field(default_factory=list)
    netbox: NetBoxSpec | None = None  # how NetBox devices map to hosts (inventory: netbox only)
    # seconds between inventory refreshes while the campaign runs (0 = never); default: 300 for
    # netbox, never for a file inventory (set it to re-read the file)
    inventory_refresh_s: RefreshSeconds | None = None


# which model describes the mapping at a field path (to name its allowed fields)
_MODEL_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): CampaignSpec,
    ("platforms", "#"): PlatformSpec,
    ("images", "#"): ImageSpec,
    ("images", "#", "app"): AppProbeSpec,
    ("images", "#", "app", "http"): HttpProbeSpec,
    ("images", "#", "ssh"): SshSpec,
    ("concurrency",): ConcurrencySpec,
    ("retry",): RetrySpec,
    ("netbox",): NetBoxSpec,
}
_VOCABULARY = (
    {f for model in _MODEL_AT.values() for f in model.model_fields} | set(SELECT_KEYS) | set(m.HYPERVISOR_KINDS)
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_SLUGGISH = re.compile(r"[A-Za-z0-9_][-A-Za-z0-9_.]{0,63}")
# pydantic names the branch of a union an error is about as the last part of its location
# ("literal['kvm',...]", "str", "list[union[str,int]]"): not a field, so never shown
_BRANCH = re.compile(r"^(?:str|int|bool|float|none|(?:literal|list|dict|union|tuple|nullable)\[.*\])$")

Loc = tuple[Any, ...]


def _shape(loc: Loc) -> tuple[str, ...]:
    return tuple("#" if isinstance(p, int) else str(p) for p in loc)


def _near(word: str, known: list[str] | set[str]) -> str | None:
    hits = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return hits[0] if hits else None


def _display_part(part: Any, prev: Loc) -> str:
    """A field path segment as shown: indexes and known names as they are; a key taken from the
    document only when it is a near-miss of a known name, or a cf_<custom field> selection key."""
    if isinstance(part, int):
        return str(part)
    text = str(part)
    if text in _VOCABULARY:
        return text
    if (
        prev[:1] == ("netbox",)
        and len(prev) == 2
        and prev[1] in ("kinds", "filters", "endpoints")
        and _SLUGGISH.fullmatch(text)
    ):
        return text  # a cluster type slug or a NetBox filter name: the operator's own key, named
    if prev and prev[-1] == "select" and text.startswith("cf_") and _IDENT.fullmatch(text):
        return text
    if _IDENT.fullmatch(text) and _near(text, _VOCABULARY):
        return text
    return "(unknown key)"


def _display_loc(loc: Loc) -> str:
    parts = [p for p in loc if p != "[key]"]
    return ".".join(_display_part(p, tuple(parts[:i])) for i, p in enumerate(parts)) or "(top level)"


_PATTERN_RULES = {
    NAME_PATTERN: _NAME_RULE,
    _MODEL_PATTERN: _MODEL_RULE,
    CREDENTIALS_REF_PATTERN: "must be a reference to the key, file:/path/to/key or env:NAME (never the key itself)",
    TEMPLATE_NAME_PATTERN: "must be the name of a VM or template on the source host: 1-80 letters, digits, "
    "spaces and ._+-, starting with a letter or digit",
}


def _reason(err: dict[str, Any]) -> str:
    """pydantic's message in the operator's words, never quoting the input."""
    kind, msg, value, loc = err["type"], err["msg"], err.get("input"), err["loc"]
    if kind == "extra_forbidden":
        model = _MODEL_AT.get(_shape(loc[:-1]))
        allowed = list(model.model_fields) if model else []
        hint = _near(str(loc[-1]), allowed) if _IDENT.fullmatch(str(loc[-1])) else None
        return (
            "unknown field"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        )
    if kind == "merged":
        return msg
    if kind == "missing":
        return "required field is missing"
    if kind == "string_type":
        quoted = isinstance(value, int | float | bool | date | datetime)
        return "must be a string" + ('; quote numbers, dates and yes/no (e.g. "8.0")' if quoted else "")
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        return _PATTERN_RULES.get(pattern, f"must match {pattern}")
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return "must be a whole number" + (", not true/false" if isinstance(value, bool) else "")
    if kind in ("float_type", "float_parsing"):
        return "must be a number" + (", not true/false" if isinstance(value, bool) else "")
    if kind == "finite_number":
        return "must be a finite number (not .inf or .nan)"
    if kind == "bool_type":
        return "must be true or false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping (key: value)"
    if kind in ("list_type", "tuple_type"):
        return "must be a [source, target] pair" if loc[:1] == ("pairs",) and len(loc) == 2 else "must be a list"
    if kind == "too_short" and (err.get("ctx") or {}).get("min_length") == 1:
        return "must not be empty"
    if kind in ("too_long", "too_short") and loc and loc[0] == "pairs" and len(loc) == 2:
        return "must be a [source, target] pair of platform names"
    if kind == "too_long":
        ctx = err.get("ctx") or {}
        return f"at most {ctx.get('max_length')} entries ({ctx.get('actual_length')} given)"
    if kind == "literal_error" and loc and loc[-1] == "[key]":
        return msg.replace("Input should be", "must be")
    return msg.removeprefix("Value error, ").replace("Input should be", "must be")


# -- checks across fields and files --------------------------------------------------------------


@dataclass
class _Checker:
    spec: CampaignSpec
    base_dir: Path
    problems: list[tuple[Loc, str]]
    inventory_path: Path | None = None
    sources: dict[int, tuple[str, str]] | None = None  # image index -> (absolute path, format)

    def add(self, loc: Loc, reason: str) -> None:
        self.problems.append((loc, reason))

    def run(self) -> None:
        self.names()
        self.platforms()
        self.images()
        self.pairs_and_cells()
        self.concurrency_and_retry()
        self.inventory()

    def names(self) -> None:
        for what, names in (
            ("platforms", [p.name for p in self.spec.platforms]),
            ("images", [i.name for i in self.spec.images]),
        ):
            first: dict[str, int] = {}
            by_slug: dict[str, int] = {}
            for i, n in enumerate(names):
                if n in first:
                    self.add((what, i, "name"), f"duplicate name {n!r} (also {what}.{first[n]})")
                    continue
                first[n] = i
                s = slug(n)
                if s in by_slug:
                    j = by_slug[s]
                    self.add(
                        (what, i, "name"),
                        f"{n!r} and {names[j]!r} ({what}.{j}) give the same cell id part {s!r}: rename one",
                    )
                by_slug.setdefault(s, i)

    def platforms(self) -> None:
        for i, p in enumerate(self.spec.platforms):
            at = ("platforms", i)
            if p.driver == "vsphere" and p.kind != "vsphere":
                self.add((*at, "driver"), "driver vsphere only drives kind vsphere")
            if "select" in p.model_fields_set and not p.select:
                self.add(
                    (*at, "select"),
                    f"empty selection: omit select to take every host of kind {p.kind}, or name site, tag, "
                    "version or cf_<custom field>",
                )
            for key, value in (p.select or {}).items():
                if key not in SELECT_KEYS and not key.startswith("cf_"):
                    hint = _near(key, SELECT_KEYS) if _IDENT.fullmatch(key) else None
                    self.add(
                        (*at, "select", key),
                        "unknown selection key"
                        + (f" (did you mean {hint!r}?)" if hint else "")
                        + f"; allowed: {', '.join(SELECT_KEYS)} or cf_<custom field>",
                    )
                elif key.startswith("cf_") and not _IDENT.fullmatch(key[3:] or "-"):
                    self.add((*at, "select", key), "a custom field name is letters, digits and '_'")
                elif value == "":
                    self.add((*at, "select", key), "empty value: it would only match hosts without one")
                elif key == "kind" and value != p.kind:
                    self.add((*at, "select", key), f"contradicts the platform's kind {p.kind!r}")
            if p.hardware_version:
                hw = _HW_VERSION.fullmatch(p.hardware_version)
                if not hw or int(hw.group(1)) < 4:
                    self.add((*at, "hardware_version"), "must be a vSphere hardware family vmx-NN (vmx-4 .. vmx-99)")
                elif p.kind != "vsphere":
                    self.add((*at, "hardware_version"), f"applies to vsphere platforms only (this one is {p.kind})")
            for field in ("nic_models", "firmware"):
                values = getattr(p, field)
                for j, v in enumerate(values):
                    if v in values[:j]:
                        self.add((*at, field, j), f"listed twice ({v!r})")

    def images(self) -> None:
        self.sources = {}
        self.ssh_keys: dict[int, str] = {}
        for i, img in enumerate(self.spec.images):
            self._ssh_key(i, img)
            if not img.source:
                continue
            at = ("images", i, "source")
            if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", img.source):
                self.add(at, "must be a local file path (URLs are not fetched)")
                continue
            path = Path(img.source).expanduser()
            if not path.is_absolute():
                path = self.base_dir / path
            try:
                fmt = check_disk_image(path)
            except InputFileError as e:
                self.add(at, f"{e.path}: {e.reason}")
                continue
            self.sources[i] = (str(path.resolve()), fmt)

    def _ssh_key(self, i: int, img: ImageSpec) -> None:
        """A key file given by reference must be readable now, not when the first cell boots (its
        content is never read into the plan, never shown)."""
        if img.ssh is None or not img.ssh.credentials_ref.startswith("file:"):
            return
        path = Path(img.ssh.credentials_ref[len("file:") :]).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            read_text_bounded(path, what=f"SSH key of image {img.name!r}", max_bytes=64 * 1024)
        except InputFileError as e:
            self.add(("images", i, "ssh", "credentials_ref"), f"{e.path}: {e.reason}")
            return
        self.ssh_keys[i] = f"file:{path.resolve()}"

    def pairs_and_cells(self) -> None:
        spec = self.spec
        known = list(dict.fromkeys(p.name for p in spec.platforms))
        seen: dict[tuple[str, str], int] = {}
        for i, (s, t) in enumerate(spec.pairs):
            bad = False
            for j, n in enumerate((s, t)):
                if n not in known:
                    bad = True
                    self.add(("pairs", i, j), f"not a platform of this spec; known: {', '.join(known)}")
            if bad:
                continue
            if (s, t) in seen:
                self.add(("pairs", i), f"the pair {s} -> {t} is listed twice (also pairs.{seen[s, t]})")
            seen.setdefault((s, t), i)
        if not spec.pairs and len(spec.platforms) < 2 and not spec.include_same_platform:
            self.add(("platforms",), "need two platforms (or include_same_platform: true) to form a pair")
        if self.problems:
            return  # cell ids from broken names or pairs would only repeat those problems
        pairs = list(seen) or [(s, t) for s in known for t in known if s != t or spec.include_same_platform]
        n_cells = len(pairs) * len(spec.images)
        if n_cells > MAX_CELLS:
            self.add(
                ("platforms",), f"{n_cells} cells ({len(pairs)} pairs x {len(spec.images)} images); at most {MAX_CELLS}"
            )
            return
        ids: dict[str, tuple[str, str, str]] = {}
        for s, t in pairs:
            for img in spec.images:
                cid = cell_id(s, t, img.name)
                if cid in ids and ids[cid] != (s, t, img.name):
                    o = ids[cid]
                    self.add(
                        ("platforms",),
                        f"cells {s} -> {t} / {img.name} and {o[0]} -> {o[1]} / {o[2]} share the cell id {cid!r}: "
                        "rename a platform or image ('--' inside a name is ambiguous)",
                    )
                    return
                ids[cid] = (s, t, img.name)

    def concurrency_and_retry(self) -> None:
        c, r = self.spec.concurrency, self.spec.retry
        kinds = {p.kind for p in self.spec.platforms}
        for kind, cap in c.per_kind.items():
            at = ("concurrency", "per_kind", kind)
            if kind not in kinds:
                self.add(at, f"no platform of kind {kind} in this spec")
            elif cap > c.max_cells:
                self.add(at, f"{cap} exceeds max_cells ({c.max_cells}): the cap could never apply")
        if r.max_interval_s < r.initial_interval_s:
            self.add(
                ("retry", "max_interval_s"),
                f"must be at least initial_interval_s ({r.initial_interval_s:g}); Temporal refuses the policy otherwise",
            )

    def inventory(self) -> None:
        ref = self.spec.inventory
        if self.spec.netbox is not None and ref != "netbox":
            self.add(("netbox",), f"given, but the inventory is {ref!r}, not 'netbox'")
        if ref == "netbox":
            return
        if not ref.startswith("file:"):
            self.add(("inventory",), "must be 'file:<path>' or 'netbox'")
            return
        raw = ref[5:]
        if not raw.strip():
            self.add(("inventory",), "file: names no file; use file:<path to the inventory YAML>")
            return
        if raw.startswith("//"):
            self.add(("inventory",), "use file:/absolute/path or file:relative/path, not a file:// URL")
            return
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        path = path.resolve()
        from inventory.file_source import load_hosts
        from inventory.source import InventoryError

        try:
            hosts = load_hosts(path)
        except InventoryError as e:
            self.add(("inventory",), str(e))
            return
        self.inventory_path = path
        from inventory.selection import matches

        flagged = {loc[1] for loc, _ in self.problems if loc[:1] == ("platforms",) and len(loc) > 2}
        for i, p in enumerate(self.spec.platforms):
            if i in flagged:
                continue  # its selection is already refused for a reason of its own
            if not any(matches(h, {**(p.select or {}), "kind": p.kind}) for h in hosts.values()):
                self.add(
                    ("platforms", i, "select") if p.select else ("platforms", i, "kind"),
                    f"selects no host of kind {p.kind} in {path}",
                )


def _to_plan(spec: CampaignSpec, checker: _Checker) -> CampaignPlan:
    inventory = f"file:{checker.inventory_path}" if checker.inventory_path else spec.inventory
    sources = checker.sources or {}
    images = []
    for i, img in enumerate(spec.images):
        doc = img.model_dump()
        if i in sources:
            doc["source"] = sources[i][0]  # absolute: the worker does not run in the spec's directory
        if doc.get("template"):  # the template's own vCPUs and memory unless the spec gives them
            doc["cpus"] = img.cpus if "cpus" in img.model_fields_set else 0
            doc["memory_mib"] = img.memory_mib if "memory_mib" in img.model_fields_set else 0
        if doc.get("builtin"):  # a built image's firmware is what it was built for, not a declaration
            doc["firmware"] = "efi" if doc["builtin"] in ("uefi", "uefi-nvram") else "bios"
        app, ssh = doc.pop("app", None), doc.pop("ssh", None)
        if app and app.get("tcp") is not None:
            doc["app"] = m.ServiceProbe("tcp", app["tcp"])
        elif app:
            doc["app"] = m.ServiceProbe("http", app["http"]["port"], app["http"]["path"], app["http"]["expect"])
        if ssh:
            ref = getattr(checker, "ssh_keys", {}).get(i, ssh["credentials_ref"])  # absolute for the worker
            doc["ssh"] = m.SshAccess(ref, ssh["user"], ssh["port"])
        images.append(m.GuestImage(**doc))
    return CampaignPlan(
        name=spec.name,
        platforms=[
            m.Platform(
                name=p.name,
                kind=p.kind,
                driver=p.driver or ("vsphere" if p.kind == "vsphere" else "libvirt"),
                select=dict(p.select or {}),
                disk_format=p.disk_format,
                hardware_version=p.hardware_version,
                nic_models=list(p.nic_models),
                firmware=list(p.firmware),
                profile=p.profile,
            )
            for p in spec.platforms
        ],
        images=images,
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
        remediate=list(dict.fromkeys(spec.remediate)),
        netbox=spec.netbox.model_dump(exclude_none=True) if spec.netbox else {},
        inventory_refresh_s=-1 if spec.inventory_refresh_s is None else spec.inventory_refresh_s,
    )


def _problems(where: str, parsed: ParsedYaml, items: list[tuple[Loc, str]]) -> list[Problem]:
    return [Problem(where, parsed.line_of([p for p in loc if p != "[key]"]), _display_loc(loc), r) for loc, r in items]


def _validation_problems(where: str, parsed: ParsedYaml, err: ValidationError) -> list[Problem]:
    """pydantic's errors as problems; many unknown keys in one mapping (a file that is no spec
    at all, like /etc/shadow) become one line that gives their lines, not one line each."""
    errors = _merge_branches(err.errors(include_url=False))
    unknown: dict[Loc, list[int]] = {}
    for e in errors:
        if e["type"] == "extra_forbidden":
            unknown.setdefault(tuple(e["loc"][:-1]), []).append(parsed.line_of(e["loc"]) or 0)
    out: list[Problem] = []
    for e in errors:
        loc = tuple(e["loc"])
        parent = loc[:-1]
        if e["type"] == "extra_forbidden" and len(unknown.get(parent, [])) > 3:
            lines = unknown.pop(parent)
            model = _MODEL_AT.get(_shape(parent))
            allowed = f"; allowed: {', '.join(model.model_fields)}" if model else ""
            shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
            field = _display_loc(parent) if parent else "(top level)"
            out.append(Problem(where, lines[0] or None, field, f"{len(lines)} unknown fields (lines {shown}){allowed}"))
            continue
        if e["type"] == "extra_forbidden" and parent not in unknown:
            continue  # already reported in a group
        out.append(Problem(where, parsed.line_of([x for x in loc if x != "[key]"]), _display_loc(loc), _reason(e)))
    return out


def _merge_branches(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One error per value where pydantic gives one per union branch: ``netbox.kinds.my-cluster:
    must be 'kvm', 'vsphere', 'hyperv', 'xen' or ''`` instead of two lines naming branch types."""
    out: list[dict[str, Any]] = []
    by_parent: dict[Loc, dict[str, Any]] = {}
    for e in errors:
        loc = tuple(e["loc"])
        if not (loc and isinstance(loc[-1], str) and _BRANCH.match(loc[-1])):
            out.append(e)
            continue
        parent = loc[:-1]
        reason = _reason({**e, "loc": parent})
        if e["type"] == "literal_error":
            reason = str((e.get("ctx") or {}).get("expected", ""))
        first = by_parent.get(parent)
        if first is None:
            first = {**e, "loc": parent, "_reasons": [reason], "_literal": e["type"] == "literal_error"}
            by_parent[parent] = first
            out.append(first)
        elif reason not in first["_reasons"]:
            first["_reasons"].append(reason)
            first["_literal"] = first["_literal"] and e["type"] == "literal_error"
    for e in by_parent.values():
        reasons = e.pop("_reasons")
        literal = e.pop("_literal")
        if literal:
            values = [v.strip() for r in reasons for v in re.split(r",| or ", r) if v.strip()]
            e["type"], e["msg"] = "merged", "must be " + ", ".join(values[:-1]) + " or " + values[-1]
        else:
            e["type"], e["msg"] = "merged", " or ".join(reasons) if len(reasons) > 1 else reasons[0]
    return out


def _unique_checks(doc: dict[str, Any]) -> list[tuple[Loc, str]]:
    checks = doc.get("checks")
    if not isinstance(checks, list):
        return []
    out = []
    for j, c in enumerate(checks):
        if isinstance(c, str) and c in checks[:j]:
            out.append((("checks", j), "listed twice"))
    return out


def _tab_indented(text: str) -> int | None:
    """The first line whose indentation holds a tab. YAML forbids tabs in indentation, yet PyYAML
    takes one on the continuation line of a quoted value (the value silently changes); and
    where it does refuse, its message is about "the next token", not about the tab."""
    for n, line in enumerate(text.splitlines(), 1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            return n
    return None


def load_spec(path: str | Path) -> CampaignPlan:
    """Parse and validate a spec file; relative ``file:`` inventories and image sources resolve
    against the spec's directory. Raises ``SpecError`` for every way a spec can be wrong."""
    p = Path(path)
    where = str(p)
    try:
        text = read_text_bounded(p, what="campaign spec", max_bytes=MAX_SPEC_BYTES)
    except InputFileError as e:
        raise SpecError([Problem(where, e.line, "cannot read", e.reason, e.column)]) from None
    tabbed = _tab_indented(text)
    if tabbed:
        raise SpecError([Problem(where, tabbed, "", "invalid YAML: indented with a tab; indent YAML with spaces only")])
    try:
        parsed = parse_yaml(text, where=where, max_depth=MAX_YAML_DEPTH, max_nodes=MAX_YAML_NODES)
    except InputFileError as e:
        raise SpecError([Problem(where, e.line, "", e.reason, e.column)]) from None
    doc = parsed.data
    if doc is None:
        raise SpecError(
            [
                Problem(
                    where, None, "(top level)", "the file is empty; a spec is a mapping with name, platforms and images"
                )
            ]
        )
    if not isinstance(doc, dict):
        raise SpecError(
            [Problem(where, parsed.line_of(()), "(top level)", "must be a mapping with name, platforms and images")]
        )
    try:
        spec = CampaignSpec.model_validate(doc)
    except ValidationError as e:
        raise SpecError(
            _validation_problems(where, parsed, e) + _problems(where, parsed, _unique_checks(doc))
        ) from None
    checker = _Checker(spec, p.resolve().parent, _unique_checks(doc))
    checker.run()
    if checker.problems:
        raise SpecError(_problems(where, parsed, checker.problems))
    return _to_plan(spec, checker)
