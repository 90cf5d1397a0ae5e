"""A generator of malformed campaign specs (issue 14): every field, type and level, the YAML
itself, the encodings and the files a spec names. For each case: refused with a ``SpecError``
(exit code 2 from the real CLI), the file, the field and a reason named, no traceback, none of
the offending content echoed, nothing started (``campaign start`` is refused before it contacts
Temporal: it runs against an address where nothing listens and must fail on the spec)."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from crossvisor.spec import MAX_SPEC_BYTES, SpecError, load_spec

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "Zq9 sentinel!Hx"  # an invalid value under every string field; must never be echoed
SENTINEL_KEY = "zq9_sentinel_key"  # an unknown key: no near-miss of a field name, so never echoed

LAB = """hosts:
  - {name: kvm-1, kind: kvm, endpoint: "test:///default", site: s1, slots: 2}
  - {name: esx-1, kind: vsphere, endpoint: "test:///default", site: s1, version: "6.5", slots: 2}
  - {name: xen-1, kind: xen, endpoint: "test:///default", site: s1}
"""

BASE: dict[str, Any] = {
    "name": "fz",
    "inventory": "file:lab.yaml",
    "platforms": [
        {
            "name": "kvm",
            "kind": "kvm",
            "driver": "libvirt",
            "select": {"site": "s1"},
            "disk_format": "qcow2",
            "nic_models": ["virtio", "e1000"],
            "firmware": ["bios", "efi"],
        },
        {
            "name": "esx",
            "kind": "vsphere",
            "driver": "vsphere",
            "select": {"version": "6.5"},
            "disk_format": "vmdk",
            "hardware_version": "vmx-13",
            "nic_models": ["vmxnet3"],
            "firmware": ["bios"],
        },
    ],
    "images": [
        {
            "name": "tiny",
            "cpus": 1,
            "memory_mib": 256,
            "disk_mib": 32,
            "firmware": "bios",
            "nic_model": "virtio",
            "disk_bus": "virtio",
            "os": "linux",
            "source": "disk.qcow2",
        }
    ],
    "checks": ["boots", "disks"],
    "pairs": [["kvm", "esx"], ["esx", "kvm"]],
    "include_same_platform": False,
    "concurrency": {"max_cells": 4, "per_kind": {"kvm": 2}},
    "retry": {"max_attempts": 3, "initial_interval_s": 1.0, "backoff": 2.0, "max_interval_s": 10.0},
    "export_format": "ova",
}

# Wrong values by the type a field has. Each list holds only values that field must refuse.
NOT_STR = [123, 1.5, True, [], {}, [SENTINEL], {SENTINEL_KEY: 1}]
NOT_INT = ["3", 1.5, True, False, None, [], {}, math.inf, SENTINEL]
NOT_FLOAT = ["1.0", True, None, [], {}, math.inf, -math.inf, math.nan, SENTINEL]
NOT_BOOL = ["yes", "true", 1, 0, None, [], {}, SENTINEL]
NOT_LIST = [SENTINEL, 1, True, {}, {SENTINEL_KEY: 1}, None]
NOT_MAP = [SENTINEL, 1, True, [], [SENTINEL], None]


@dataclass
class Case:
    id: str
    field: str  # the field path (or "invalid YAML" / "cannot read") the message must name
    spec: dict[str, Any] | str | bytes | None = None  # a document to dump, or raw text/bytes
    reason: str = ""  # a fragment of the reason, when the case pins one
    echo_ok: bool = False  # the bad value is a path: naming it is the point
    extra: dict[str, str | bytes] = field(default_factory=dict)  # more files beside the spec
    setup: Callable[[Path], None] | None = None


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    node: Any = d
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return d


def _del(doc: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    node: Any = d
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return d


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def _typed_cases() -> list[Case]:
    """Every leaf of the spec with every value of a wrong type or out of range."""
    leaves: list[tuple[tuple[Any, ...], list[Any]]] = [
        (("name",), [*NOT_STR, "", "-lead", "a" * 64, SENTINEL, None]),
        (("inventory",), [*NOT_STR, None]),
        (("include_same_platform",), NOT_BOOL),
        (("export_format",), [*NOT_STR, "vmx", "OVA", SENTINEL, None]),
        (("checks", 0), [*NOT_STR, "smell", "Boots", SENTINEL, None]),
        (("pairs", 0, 1), [*NOT_STR, None]),
        (("concurrency", "max_cells"), [*NOT_INT, 0, -1, 10_001, 10**30]),
        (("concurrency", "per_kind", "kvm"), [*NOT_INT, 0, -3, 10_001]),
        (("retry", "max_attempts"), [*NOT_INT, 0, -1, 101]),
        (("retry", "initial_interval_s"), [*NOT_FLOAT, 0, -1.0, 0.001, 1e9]),
        (("retry", "backoff"), [*NOT_FLOAT, 0.5, 0, 1e6]),
        (("retry", "max_interval_s"), [*NOT_FLOAT, 0, -5, 1e12]),
    ]
    for i in (0, 1):
        at = ("platforms", i)
        leaves += [
            ((*at, "name"), [*NOT_STR, "", SENTINEL, None]),
            ((*at, "kind"), [*NOT_STR, "KVM", "esxi", SENTINEL, None]),
            ((*at, "disk_format"), [*NOT_STR, "vhd", "iso", SENTINEL]),
            ((*at, "nic_models", 0), [*NOT_STR, "", "Virtio NIC", SENTINEL, None]),
            ((*at, "firmware", 0), [*NOT_STR, "uefi", "BIOS", SENTINEL, None]),
            ((*at, "select", "site" if i == 0 else "version"), [*NOT_STR, None, 6.5]),
        ]
    leaves.append((("platforms", 0, "driver"), [*NOT_STR, "qemu", "VSphere", SENTINEL]))
    leaves.append(
        (("platforms", 1, "hardware_version"), [*NOT_STR, "vmx13", "vmx-", "13", "vmx-3", "vmx-100", SENTINEL])
    )
    img = ("images", 0)
    leaves += [
        ((*img, "name"), [*NOT_STR, "", SENTINEL, None]),
        ((*img, "cpus"), [*NOT_INT, 0, -1, 257]),
        ((*img, "memory_mib"), [*NOT_INT, 0, 15, 10**9]),
        ((*img, "disk_mib"), [*NOT_INT, 0, -64]),
        ((*img, "firmware"), [*NOT_STR, "uefi", SENTINEL, None]),
        ((*img, "nic_model"), [*NOT_STR, "", SENTINEL, None]),
        ((*img, "disk_bus"), [*NOT_STR, "nvme", SENTINEL, None]),
        ((*img, "os"), [*NOT_STR, "", SENTINEL, None]),
        ((*img, "source"), [*NOT_STR, None]),
    ]
    cases = []
    for path, values in leaves:
        for j, v in enumerate(values):
            cases.append(Case(f"{_dotted(path)}={j}", _dotted(path), _set(BASE, path, v)))
    return cases


def _container_cases() -> list[Case]:
    """Lists and mappings of the wrong type, empty where something is needed, unknown keys at
    every level, required fields missing."""
    cases = []
    lists = [
        ("platforms",),
        ("images",),
        ("checks",),
        ("pairs",),
        ("platforms", 0, "nic_models"),
        ("platforms", 1, "firmware"),
    ]
    maps = [
        ("concurrency",),
        ("retry",),
        ("concurrency", "per_kind"),
        ("platforms", 0, "select"),
        ("platforms", 0),
        ("images", 0),
    ]
    for path in lists:
        for j, v in enumerate(NOT_LIST):
            cases.append(Case(f"{_dotted(path)}:notlist{j}", _dotted(path), _set(BASE, path, v)))
        if path != ("pairs",):
            cases.append(
                Case(f"{_dotted(path)}:empty", _dotted(path), _set(BASE, path, []), reason="must not be empty")
            )
    for path in maps:
        for j, v in enumerate(NOT_MAP):
            if path == ("platforms", 0, "select") and v is None:
                continue  # null is covered below as an empty selection
            cases.append(Case(f"{_dotted(path)}:notmap{j}", _dotted(path), _set(BASE, path, v)))
    for path in [(), ("platforms", 0), ("platforms", 1), ("images", 0), ("concurrency",), ("retry",)]:
        cases.append(
            Case(
                f"{_dotted(path) or 'top'}:unknown-key",
                _dotted((*path, "(unknown key)")),
                _set(BASE, (*path, SENTINEL_KEY), 1),
                reason="unknown field",
            )
        )
    typos = [((), "platform", "platforms"), (("images", 0), "cpu", "cpus"), (("retry",), "max_atempts", "max_attempts")]
    for path, typo, real in typos:
        doc = _set(BASE, (*path, typo), 1)
        cases.append(Case(f"typo-{typo}", _dotted((*path, typo)), doc, reason=f"did you mean {real!r}"))
    cases.append(
        Case(
            "select:unknown-key",
            "platforms.0.select.(unknown key)",
            _set(BASE, ("platforms", 0, "select", SENTINEL_KEY), "x"),
        )
    )
    cases.append(
        Case(
            "select:typo",
            "platforms.0.select.sight",
            _set(BASE, ("platforms", 0, "select", "sight"), "x"),
            reason="did you mean 'site'",
        )
    )
    cases.append(Case("select:cf-bad", "platforms.0.select", _set(BASE, ("platforms", 0, "select", "cf_"), "x")))
    cases.append(
        Case("select:empty-value", "platforms.0.select.site", _set(BASE, ("platforms", 0, "select", "site"), ""))
    )
    cases.append(
        Case("select:empty", "platforms.0.select", _set(BASE, ("platforms", 0, "select"), {}), reason="empty selection")
    )
    cases.append(
        Case(
            "select:null", "platforms.0.select", _set(BASE, ("platforms", 0, "select"), None), reason="empty selection"
        )
    )
    cases.append(
        Case(
            "select:kind-contradicts", "platforms.0.select.kind", _set(BASE, ("platforms", 0, "select", "kind"), "xen")
        )
    )
    cases.append(
        Case("per_kind:unknown-kind", "concurrency.per_kind", _set(BASE, ("concurrency", "per_kind", "kvmm"), 1))
    )
    cases.append(
        Case(
            "per_kind:sentinel-kind",
            "concurrency.per_kind.(unknown key)",
            _set(BASE, ("concurrency", "per_kind", SENTINEL_KEY), 1),
        )
    )
    for path in [
        ("name",),
        ("platforms",),
        ("images",),
        ("platforms", 0, "name"),
        ("platforms", 1, "kind"),
        ("images", 0, "name"),
    ]:
        cases.append(
            Case(f"missing-{_dotted(path)}", _dotted(path), _del(BASE, path), reason="required field is missing")
        )
    for j, v in enumerate([["kvm"], ["kvm", "esx", "kvm"], "kvm", {"kvm": "esx"}]):
        cases.append(Case(f"pairs.0:shape{j}", "pairs.0", _set(BASE, ("pairs", 0), v)))
    return cases


def _cross_field_cases() -> list[Case]:
    def platform(**kw: Any) -> dict[str, Any]:
        return {"name": "p", "kind": "kvm", **kw}

    plats = BASE["platforms"]
    c = [
        Case(
            "retry-max<initial",
            "retry.max_interval_s",
            _set(BASE, ("retry", "initial_interval_s"), 20.0),
            reason="at least initial_interval_s",
        ),
        Case(
            "per_kind>max_cells",
            "concurrency.per_kind.kvm",
            _set(BASE, ("concurrency", "per_kind", "kvm"), 5),
            reason="exceeds max_cells",
        ),
        Case(
            "per_kind-absent-kind",
            "concurrency.per_kind.xen",
            _set(BASE, ("concurrency", "per_kind", "xen"), 1),
            reason="no platform of kind xen",
        ),
        Case(
            "pairs-dup",
            "pairs.2",
            _set(BASE, ("pairs",), [["kvm", "esx"], ["esx", "kvm"], ["kvm", "esx"]]),
            reason="listed twice",
        ),
        Case("pairs-unknown", "pairs.1.0", _set(BASE, ("pairs", 1, 0), "esxi"), reason="not a platform of this spec"),
        Case(
            "pairs-sentinel", "pairs.0.1", _set(BASE, ("pairs", 0, 1), SENTINEL), reason="not a platform of this spec"
        ),
        Case(
            "platform-dup-name",
            "platforms.1.name",
            _set(BASE, ("platforms", 1, "name"), "kvm"),
            reason="duplicate name",
        ),
        Case(
            "platform-slug-collision",
            "platforms.2.name",
            _set(BASE, ("platforms",), [*plats, platform(name="KVM")]),
            reason="same cell id part",
        ),
        Case(
            "platform-slug-dots",
            "platforms.3.name",
            _set(BASE, ("platforms",), [*plats, platform(name="esxi-6.5"), platform(name="esxi-6-5")]),
            reason="same cell id part",
        ),
        Case(
            "image-dup-name",
            "images.1.name",
            _set(BASE, ("images",), [BASE["images"][0], {"name": "tiny"}]),
            reason="duplicate name",
        ),
        Case(
            "image-slug-collision",
            "images.1.name",
            _set(BASE, ("images",), [BASE["images"][0], {"name": "Tiny"}]),
            reason="same cell id part",
        ),
        Case(
            "cell-id-ambiguous",
            "platforms",
            _set(
                _del(BASE, ("pairs",)),
                ("platforms",),
                [platform(name="a--b"), platform(name="a"), platform(name="b--c"), platform(name="c")],
            ),
            reason="share the cell id",
        ),
        Case(
            "driver-vsphere-on-kvm",
            "platforms.0.driver",
            _set(BASE, ("platforms", 0, "driver"), "vsphere"),
            reason="only drives kind vsphere",
        ),
        Case(
            "hw-version-on-kvm",
            "platforms.0.hardware_version",
            _set(BASE, ("platforms", 0, "hardware_version"), "vmx-13"),
            reason="vsphere platforms only",
        ),
        Case(
            "nic-dup",
            "platforms.0.nic_models.1",
            _set(BASE, ("platforms", 0, "nic_models"), ["virtio", "virtio"]),
            reason="listed twice",
        ),
        Case(
            "firmware-dup",
            "platforms.0.firmware.1",
            _set(BASE, ("platforms", 0, "firmware"), ["bios", "bios"]),
            reason="listed twice",
        ),
        Case("checks-dup", "checks.2", _set(BASE, ("checks",), ["boots", "disks", "boots"]), reason="listed twice"),
        Case(
            "one-platform-no-pairs",
            "platforms",
            _set(_del(BASE, ("pairs",)), ("platforms",), [plats[0]]),
            reason="need two platforms",
        ),
        Case(
            "select-matches-nothing",
            "platforms.0.select",
            _set(BASE, ("platforms", 0, "select", "site"), "s9"),
            reason="selects no host",
        ),
        Case(
            "kind-matches-nothing",
            "platforms.1.kind",
            _set(BASE, ("platforms", 1), {"name": "esx", "kind": "hyperv"}) | {"concurrency": {"max_cells": 4}},
            reason="selects no host",
        ),
        Case(
            "too-many-cells",
            "platforms",
            _set(
                _set(_del(BASE, ("pairs",)), ("platforms",), [platform(name=f"p{i}") for i in range(64)]),
                ("images",),
                [{"name": f"i{i}"} for i in range(5)],
            )
            | {"concurrency": {"max_cells": 4}},
            reason="at most 20000",
        ),
        Case(
            "too-many-platforms", "platforms", _set(BASE, ("platforms",), [platform(name=f"p{i}") for i in range(65)])
        ),
    ]
    for case in c:
        if isinstance(case.spec, dict):
            # the cell-count cases replace every platform: no hardware_version or per_kind to trip on
            case.spec.setdefault("concurrency", {"max_cells": 4})
    return c


def _file_cases() -> list[Case]:
    """What the spec names: the inventory reference and the image source."""
    inv = [
        ("netboxx", "must be 'file:<path>' or 'netbox'", False),
        ("NetBox", "must be 'file:<path>' or 'netbox'", False),
        ("file:", "names no file", False),
        ("file:   ", "names no file", False),
        ("file://lab.yaml", "not a file:// URL", False),
        ("file:missing.yaml", "inventory does not exist", True),
        ("file:/tmp", "this is a directory", True),
        ("file:/dev/zero", "not a file under /dev", True),
        ("file:/dev/null", "not a file under /dev", True),
        ("file:/proc/self/environ", "not a file under /proc", True),
        ("file:/proc/self/status", "not a file under /proc", True),
        ("file:/sys/kernel/mm/transparent_hugepage/enabled", "not a file under /sys", True),
        ("file:inv-fifo", "a FIFO", True),
        ("file:inv-syntax.yaml", "invalid YAML", True),
        ("file:inv-utf16.yaml", "UTF-16", True),
        ("file:inv-list.yaml", "expected a mapping with a 'hosts' list", True),
        ("file:inv-badhost.yaml", "missing field 'endpoint'", True),
        ("file:inv-dupkey.yaml", "duplicate key", True),
        ("file:inv-bomb.yaml", "alias bomb", True),
        ("file:disk.qcow2", "not valid UTF-8", True),
    ]
    extra = {
        "inv-syntax.yaml": "hosts:\n  - {name: a, kind: kvm, endpoint: 'test:///default'\n  password: "
        + SENTINEL
        + "\n",
        "inv-utf16.yaml": LAB.encode("utf-16"),
        "inv-list.yaml": "- a\n- b\n",
        "inv-badhost.yaml": "hosts:\n  - {name: a, kind: kvm}\n",
        "inv-dupkey.yaml": "hosts: []\nhosts: []\n",
        "inv-bomb.yaml": "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefg", "bcdefgh", strict=True))
        + "hosts: [*h]\n",
    }

    def mkfifo(d: Path) -> None:
        for name in ("inv-fifo", "src-fifo"):
            if not (d / name).exists():
                os.mkfifo(d / name)

    cases = [
        Case(
            f"inventory-ref={j}",
            "inventory",
            _set(BASE, ("inventory",), ref),
            reason=reason,
            echo_ok=echo,
            extra=extra,
            setup=mkfifo,
        )
        for j, (ref, reason, echo) in enumerate(inv)
    ]
    src = [
        ("missing.qcow2", "image source does not exist"),
        ("/tmp", "this is a directory"),
        ("/dev/zero", "not a file under /dev"),
        ("/proc/self/environ", "not a file under /proc"),
        ("src-fifo", "a FIFO"),
        ("notes.txt", "not a disk image or a package"),
        ("lab.yaml", "too small to be a disk image"),
        ("/etc/passwd", "not a disk image or a package"),
        ("backed.qcow2", "has a backing file"),
        ("zeros.img", "not a disk image or a package"),
        ("tiny.bin", "too small"),
        ("notova.ova", "not an OVA package"),
        ("page.ovf", "not an OVF descriptor"),
        ("evil.vmdk", "extent files must sit beside the descriptor"),
        ("https://example.invalid/disk.qcow2", "must be a local file path"),
        ("", None),  # not a refusal: the generated blank disk (checked below as the control)
    ]
    extra_src = {
        "notes.txt": ("password: " + SENTINEL + "\n") * 100,
        "zeros.img": b"\0" * 4096,
        "tiny.bin": b"QFI\xfb",
        "notova.ova": b"\0" * 1024,
        "page.ovf": "<html><body>" + SENTINEL + "</body></html>",
        "evil.vmdk": '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        'RW 2048 FLAT "/etc/shadow" 0\n',
    }
    for j, (source, reason) in enumerate(src):
        if reason is None:
            continue
        cases.append(
            Case(
                f"source-file={j}",
                "images.0.source",
                _set(BASE, ("images", 0, "source"), source),
                reason=reason,
                echo_ok=True,
                extra=extra_src,
                setup=mkfifo,
            )
        )
    return cases


def _yaml_cases() -> list[Case]:
    """The text itself: encodings, syntax, duplicate keys at every level, depth, aliases, tags, size."""
    good = yaml.safe_dump(BASE, sort_keys=False)
    dup = [
        ("top", "name: fz\n" + good),
        ("platform", good.replace("  kind: kvm\n", "  kind: kvm\n  kind: xen\n", 1)),
        ("image", good.replace("  cpus: 1\n", "  cpus: 1\n  cpus: 2\n", 1)),
        ("retry", good.replace("  backoff: 2.0\n", "  backoff: 2.0\n  backoff: 3.0\n", 1)),
        ("select", good.replace("    site: s1\n", "    site: s1\n    site: s2\n", 1)),
        ("per_kind", good.replace("    kvm: 2\n", "    kvm: 2\n    kvm: 3\n", 1)),
    ]
    cases = [Case(f"dupkey-{n}", "invalid YAML", t, reason="duplicate key") for n, t in dup]
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
    )
    raw: list[tuple[str, str | bytes, str, str]] = [
        ("utf16", good.encode("utf-16"), "cannot read", "UTF-16"),
        ("utf16le", good.encode("utf-16-le"), "cannot read", "UTF-16"),
        ("utf16be", good.encode("utf-16-be"), "cannot read", "UTF-16"),
        ("utf32", good.encode("utf-32"), "cannot read", "UTF-32"),
        ("latin1", ("# café\n" + good).encode("latin-1"), "cannot read", "not valid UTF-8"),
        ("nul", good.encode() + b"\0\n", "cannot read", "NUL byte"),
        ("bell", good + "x: \x07\n", "invalid YAML", "control character"),
        ("size", good + "#" * MAX_SPEC_BYTES, "cannot read", "at most 1 MiB"),
        ("deep-flow", "name: " + "[" * 500 + "]" * 500 + "\n", "invalid YAML", "nested deeper"),
        ("deep-block", "name:\n" + "".join("  " * i + "- \n" for i in range(1, 40)), "invalid YAML", "nested deeper"),
        ("deep-map", "".join("  " * i + f"k{i}:\n" for i in range(40)), "invalid YAML", "nested deeper"),
        ("bomb", bomb, "invalid YAML", "alias bomb"),
        ("recursive", "name: &a [*a]\n", "invalid YAML", "recursive"),
        ("undefined-alias", good + "x: *" + SENTINEL_KEY + "\n", "invalid YAML", "undefined alias"),
        ("python-tag", "name: !!python/object/apply:os.system [" + SENTINEL_KEY + "]\n", "invalid YAML", "constructor"),
        ("custom-tag", "name: !" + SENTINEL_KEY + " x\n", "invalid YAML", "constructor"),
        ("complex-key", "? [a, b]\n: 1\n", "invalid YAML", "plain value"),
        ("multi-doc", good + "---\n" + good, "invalid YAML", "single document"),
        ("tab-indent", "name: fz\nplatforms:\n\t- " + SENTINEL + "\n", "invalid YAML", "indented with a tab"),
        # PyYAML itself takes a tab on a quoted value's continuation line: the spec loader does not
        ("tab-in-quoted", good.replace("name: fz\n", 'name: "fz\n\tfz"\n', 1), "invalid YAML", "indented with a tab"),
        ("unclosed-flow", "name: [fz\nimages: " + SENTINEL + "\n", "invalid YAML", ""),
        ("unclosed-quote", "name: 'fz\n" + SENTINEL + "\n", "invalid YAML", ""),
        ("bad-escape", 'name: "\\q' + SENTINEL + '"\n', "invalid YAML", "escape"),
        ("huge-int", "name: " + "9" * 5000 + "\n", "invalid YAML", "invalid value"),
        ("bad-date", "name: 2024-13-45\n", "invalid YAML", "invalid value"),
        ("bad-indent", "name: fz\n  platforms: x\n", "invalid YAML", ""),
        ("empty", "", "(top level)", "empty"),
        ("only-comment", "# nothing\n", "(top level)", "empty"),
        ("top-list", "- " + SENTINEL + "\n", "(top level)", "must be a mapping"),
        ("top-str", SENTINEL + "\n", "(top level)", "must be a mapping"),
        ("top-int", "42\n", "(top level)", "must be a mapping"),
        (
            "shadow-like",
            "".join(f"user{i}:$6$" + SENTINEL.replace(" ", "") + f"{i}:19000:0:99999:7:::\n" for i in range(10)),
            "(top level)",
            "unknown fields",
        ),
        (
            "env-like",
            "".join(f"VAR_{i}=" + SENTINEL.replace(" ", "") + "\n" for i in range(5)),
            "(top level)",
            "must be a mapping",
        ),
    ]
    cases += [Case(f"yaml-{n}", f, t, reason=r) for n, t, f, r in raw]
    return cases


def generate() -> list[Case]:
    return _typed_cases() + _container_cases() + _cross_field_cases() + _file_cases() + _yaml_cases()


CASES = generate()
_LINE = re.compile(r"^(?P<file>/[^:]+?)(?::\d+){0,2}: (?P<rest>.+)$")


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "lab.yaml").write_text(LAB)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / "disk.qcow2"), "1M"], check=True)
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(d / "disk.qcow2"),
            "-F",
            "qcow2",
            str(d / "backed.qcow2"),
        ],
        check=True,
    )
    return d


def materialise(case: Case, d: Path) -> Path:
    for name, content in case.extra.items():
        p = d / name
        if not p.exists():
            p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    if case.setup:
        case.setup(d)
    p = d / (re.sub(r"[^A-Za-z0-9_.=-]", "_", case.id) + ".yaml")
    if isinstance(case.spec, bytes):
        p.write_bytes(case.spec)
    elif isinstance(case.spec, str):
        p.write_text(case.spec)
    else:
        p.write_text(yaml.safe_dump(case.spec, sort_keys=False))
    return p


def check_message(case: Case, path: Path, msg: str) -> None:
    assert msg, case.id
    assert "Traceback" not in msg
    lines = msg.splitlines()
    for line in lines:
        if line.startswith("... and "):
            continue
        m = _LINE.match(line)
        assert m and m["file"] == str(path), (case.id, line)
        assert len(m["rest"]) > len(case.field) + 2 or ":" in m["rest"], (case.id, line)  # a reason follows
    assert any(f"{case.field}:" in line or f"{case.field}." in line for line in lines), (case.id, case.field, msg)
    if case.reason:
        assert case.reason in msg, (case.id, case.reason, msg)
    if not case.echo_ok:
        assert SENTINEL not in msg and SENTINEL.replace(" ", "") not in msg, (case.id, msg)
        assert SENTINEL_KEY not in msg, (case.id, msg)


def test_generator_covers_enough() -> None:
    assert len(CASES) >= 200, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    top_fields = {c.field.split(".")[0] for c in CASES}
    for f in (
        "name",
        "inventory",
        "platforms",
        "images",
        "checks",
        "pairs",
        "include_same_platform",
        "concurrency",
        "retry",
        "export_format",
        "invalid YAML",
        "cannot read",
        "(top level)",
    ):
        assert f in top_fields, f


def test_base_spec_is_valid(spec_dir: Path) -> None:
    p = spec_dir / "base.yaml"
    p.write_text(yaml.safe_dump(BASE, sort_keys=False))
    plan = load_spec(p)
    assert plan.images[0].source == str(spec_dir / "disk.qcow2")
    assert plan.inventory == f"file:{spec_dir / 'lab.yaml'}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_spec_is_refused(case: Case, spec_dir: Path) -> None:
    path = materialise(case, spec_dir)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    check_message(case, path, str(e.value))


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossvisor.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )


# a spread over every category (the order of CASES); each run of the CLI costs ~0.9 s of imports
_PICKED = (
    "retry-max<initial",
    "pairs-dup",
    "platform-slug-dots",
    "source-file=8",
    "dupkey-platform",
    "yaml-bomb",
    "yaml-shadow-like",
)
CLI_SAMPLE = CASES[::48] + [c for c in CASES if c.id in _PICKED]


@pytest.mark.parametrize("case", CLI_SAMPLE, ids=[c.id for c in CLI_SAMPLE])
def test_cli_validate_refuses(case: Case, spec_dir: Path) -> None:
    path = materialise(case, spec_dir)
    out = _cli(["validate", str(path)])
    assert out.returncode == 2, (case.id, out.stdout, out.stderr)
    assert out.stdout == ""
    assert out.stderr.startswith("crossvisor: error: "), out.stderr
    check_message(case, path, out.stderr.removeprefix("crossvisor: error: ").rstrip("\n"))


START_SAMPLE = [
    c
    for c in CASES
    if c.id in ("retry-max<initial", "inventory-ref=0", "checks:empty", "yaml-utf16", "concurrency.per_kind.kvm=9")
]


@pytest.mark.parametrize("case", START_SAMPLE, ids=[c.id for c in START_SAMPLE])
def test_campaign_start_refuses_before_contacting_temporal(case: Case, spec_dir: Path, tmp_path: Path) -> None:
    """Nothing listens on 127.0.0.1:1: a connection attempt would fail differently (exit 1, a
    connection error); a refusal of the spec is exit 2 and names the spec."""
    path = materialise(case, spec_dir)
    out = _cli(
        ["campaign", "start", str(path), "--id", "cvi-fuzz"],
        CROSSVISOR_TEMPORAL_ADDRESS="127.0.0.1:1",
        CROSSVISOR_HOME=str(tmp_path),
    )
    assert out.returncode == 2, (case.id, out.stdout, out.stderr)
    assert "started" not in out.stdout
    assert out.stderr.startswith("crossvisor: error: "), out.stderr
    assert not re.search(r"connect|transport|unavailable", out.stderr, re.I), out.stderr
    check_message(case, path, out.stderr.removeprefix("crossvisor: error: ").rstrip("\n"))


def test_good_spec_through_campaign_start_does_contact_temporal(spec_dir: Path, tmp_path: Path) -> None:
    """The control for the test above: with a valid spec the same command gets as far as the
    connection, and fails there (exit 4: no server at the address), so exit 2 above really was the
    spec's refusal."""
    p = spec_dir / "base-start.yaml"
    p.write_text(yaml.safe_dump(BASE, sort_keys=False))
    out = _cli(
        ["campaign", "start", str(p), "--id", "cvi-fuzz"],
        CROSSVISOR_TEMPORAL_ADDRESS="127.0.0.1:1",
        CROSSVISOR_HOME=str(tmp_path),
    )
    assert out.returncode == 4, (out.stdout, out.stderr)
    assert out.stderr.startswith("crossvisor: error: ")
