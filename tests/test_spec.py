"""Campaign spec validation: each refusal names the file, the line, the field and the reason,
and never quotes the file's content. The broad generator of malformed specs is test_spec_fuzz.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossvisor.spec import MAX_SPEC_BYTES, SpecError, load_spec
from domain.matrix import expand

ROOT = Path(__file__).resolve().parent.parent

LAB = """hosts:
  - {name: kvm-1, kind: kvm, endpoint: "test:///default", site: s1}
  - {name: xen-1, kind: xen, endpoint: "test:///default", site: s1, custom: {rack: r1}}
  - {name: esx-1, kind: vsphere, endpoint: "test:///default", site: s1, version: "6.5"}
"""

GOOD = """
name: t
inventory: file:lab.yaml
platforms:
  - {name: a, kind: kvm}
  - {name: b, kind: xen, select: {site: s1, cf_rack: r1}}
images:
  - {name: img, cpus: 2}
"""


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    p = tmp_path / "lab.yaml"
    p.write_text(LAB)
    return p


def write(tmp_path: Path, text: str | bytes, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def refused(path: Path) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert str(path) in msg
    return msg


def test_example_spec_validates(root: Path) -> None:
    plan = load_spec(root / "examples/demo.yaml")
    assert len(expand(plan)) == 4 * 2  # four moves x two guests
    assert {p.profile for p in plan.platforms} == {"kvm", "esxi", "hyperv-gen1", "xen-hvm"}
    assert [i.builtin for i in plan.images] == ["legacy-bios", "portable-bios"]
    odca = load_spec(root / "examples/odca.yaml")
    assert len(expand(odca)) == 4 * 3 * 7
    assert odca.remediate == [
        "uefi-fallback",
        "fstab-uuid",
        "virt-v2v",
        "emulated-first",
        "generic-initramfs",
        "dracut-generic",
        "nic-config",
    ]
    fam = {
        i.name: i
        for i in odca.images
        if i.builtin in ("vmware-born", "uefi-nvram", "dracut-lvm-nm", "netplan-cloudinit")
    }
    assert {n: (i.firmware, i.app.port) for n, i in fam.items()} == {
        "vmware-born": ("bios", 22),
        "uefi-nvram": ("efi", 22),
        "dracut-lvm-nm": ("bios", 22),
        "netplan-cloudinit": ("bios", 22),
    }
    assert plan.inventory == f"file:{(root / 'examples/lab.yaml').resolve()}"  # examples/ links to deploy/examples


def test_good_spec_defaults(tmp_path: Path, lab: Path) -> None:
    plan = load_spec(write(tmp_path, GOOD))
    assert [p.driver for p in plan.platforms] == ["libvirt", "libvirt"]
    assert plan.concurrency.max_cells == 4 and plan.retry.max_attempts == 5
    assert plan.platforms[1].select == {"site": "s1", "cf_rack": "r1"}
    assert plan.inventory == f"file:{lab}"
    assert plan.images[0].cpus == 2 and plan.images[0].memory_mib == 256


def test_inventory_refresh_interval(tmp_path: Path, lab: Path) -> None:
    plan = load_spec(write(tmp_path, GOOD))
    assert plan.inventory_refresh_s == -1 and plan.refresh_interval_s() == 0  # a file: off unless asked
    plan = load_spec(write(tmp_path, GOOD + "inventory_refresh_s: 60\n"))
    assert plan.refresh_interval_s() == 60
    netbox = load_spec(write(tmp_path, GOOD.replace("inventory: file:lab.yaml", "inventory: netbox")))
    assert netbox.refresh_interval_s() == 300
    off = load_spec(
        write(tmp_path, GOOD.replace("inventory: file:lab.yaml", "inventory: netbox") + "inventory_refresh_s: 0\n")
    )
    assert off.refresh_interval_s() == 0


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path, lab: Path) -> None:
    text = GOOD.replace("  - {name: a, kind: kvm}", "  - &base {name: a, kind: kvm, nic_models: [virtio]}") + (
        "  - {name: img2, cpus: 1}\npairs: [[a, b], [b, a]]\n"
    )
    plan = load_spec(write(tmp_path, text))
    assert [i.name for i in plan.images] == ["img", "img2"]


@pytest.mark.parametrize(
    ("text", "where", "line"),
    [
        (GOOD.replace("kind: xen", "kind: xenn"), "platforms.1.kind: must be 'kvm'", 6),
        (GOOD.replace("cpus: 2", "cpus: 0"), "images.0.cpus: must be greater than or equal to 1", 8),
        (GOOD.replace("cpus: 2", "cpu: 2"), "images.0.cpu: unknown field (did you mean 'cpus'?)", 8),
        (GOOD.replace("site: s1", "sight: s1"), "platforms.1.select.sight: unknown selection key", 6),
        (GOOD + "concurrency: {max_cells: 0}\n", "concurrency.max_cells: must be greater than or equal to 1", 9),
        (GOOD + "pairs: [[a, zz]]\n", "pairs.0.1: not a platform of this spec; known: a, b", 9),
        (GOOD.replace("name: b", "name: a"), "platforms.1.name: duplicate name 'a'", 6),
        (GOOD + "checks: [boots, smell]\n", "checks.1: must be 'boots'", 9),
        (GOOD.replace("file:lab.yaml", "ldap://x"), "inventory: must be 'file:<path>' or 'netbox'", 3),
        # issue 14, item 1: what Temporal or the scheduler cannot run
        (
            GOOD + "retry: {initial_interval_s: 10, max_interval_s: 1}\n",
            "retry.max_interval_s: must be at least initial_interval_s (10)",
            9,
        ),
        (GOOD + "retry: {max_interval_s: .inf}\n", "retry.max_interval_s: must be a finite number", 9),
        (GOOD + "retry: {initial_interval_s: .inf}\n", "retry.initial_interval_s: must be a finite number", 9),
        (GOOD + "retry: {backoff: .nan}\n", "retry.backoff: must be a finite number", 9),
        (
            GOOD + "concurrency: {per_kind: {kvm: 0}}\n",
            "concurrency.per_kind.kvm: must be greater than or equal to 1",
            9,
        ),
        (GOOD + "concurrency: {per_kind: {kvm: -2}}\n", "concurrency.per_kind.kvm: must be greater", 9),
        (GOOD + "checks: []\n", "checks: must not be empty", 9),
        # item 3: the inventory reference
        (GOOD.replace("file:lab.yaml", "netboxx"), "inventory: must be 'file:<path>' or 'netbox'", 3),
        (GOOD.replace("file:lab.yaml", "'file:'"), "inventory: file: names no file", 3),
        (GOOD.replace("file:lab.yaml", "file:missing.yaml"), "missing.yaml: inventory does not exist", 3),
        (GOOD.replace("file:lab.yaml", "file:/tmp"), "inventory must be a regular file, this is a directory", 3),
        (GOOD.replace("file:lab.yaml", "file:/dev/zero"), "inventory must be a regular file, not a file under /dev", 3),
        (GOOD.replace("file:lab.yaml", "file:/proc/self/environ"), "not a file under /proc", 3),
        # item 5
        (GOOD.replace("cpus: 2", "cpus: true"), "images.0.cpus: must be a whole number, not true/false", 8),
        (GOOD.replace("cpus: 2", "cpus: '2'"), "images.0.cpus: must be a whole number", 8),
        (GOOD.replace("kind: kvm}", "kind: kvm, firmware: []}"), "platforms.0.firmware: must not be empty", 5),
        (GOOD.replace("kind: kvm}", "kind: kvm, nic_models: []}"), "platforms.0.nic_models: must not be empty", 5),
        (
            GOOD.replace("kind: kvm}", "kind: vsphere, hardware_version: vmx13}"),
            "platforms.0.hardware_version: must be a vSphere hardware family vmx-NN",
            5,
        ),
        (
            GOOD.replace("kind: kvm}", "kind: kvm, hardware_version: vmx-13}"),
            "platforms.0.hardware_version: applies to vsphere platforms only",
            5,
        ),
        (GOOD + "pairs: [[a, b], [b, a], [a, b]]\n", "pairs.2: the pair a -> b is listed twice (also pairs.0)", 9),
        (
            GOOD.replace("name: b, kind: xen, select: {site: s1, cf_rack: r1}", "name: A, kind: xen"),
            "platforms.1.name: 'A' and 'a' (platforms.0) give the same cell id part 'a'",
            6,
        ),
        (
            GOOD + "  - {name: img.2}\n  - {name: img-2}\n",
            "images.2.name: 'img-2' and 'img.2' (images.1) give the same cell id part 'img-2'",
            10,
        ),
        (GOOD.replace("select: {site: s1, cf_rack: r1}", "select: {}"), "platforms.1.select: empty selection", 6),
        (GOOD.replace("cf_rack: r1", "cf_rack: r9"), "platforms.1.select: selects no host of kind xen", 6),
        (
            GOOD + "concurrency: {max_cells: 2, per_kind: {kvm: 3}}\n",
            "concurrency.per_kind.kvm: 3 exceeds max_cells (2)",
            9,
        ),
        (GOOD + "concurrency: {per_kind: {hyperv: 1}}\n", "concurrency.per_kind.hyperv: no platform of kind hyperv", 9),
        (GOOD + "checks: [boots, boots]\n", "checks.1: listed twice", 9),
        (GOOD + "include_same_platform: 'yes'\n", "include_same_platform: must be true or false", 9),
        (GOOD.replace("site: s1,", "version: 6.5,"), "platforms.1.select.version: must be a string; quote numbers", 6),
        (GOOD + "inventory_refresh_s: -1\n", "inventory_refresh_s: must be greater than or equal to 0", 9),
        (GOOD + "inventory_refresh_s: 90000\n", "inventory_refresh_s: must be less than or equal to 86400", 9),
        (GOOD + "inventory_refresh_s: 1.5\n", "inventory_refresh_s: must be a whole number", 9),
    ],
)
def test_bad_spec_names_file_line_field_reason(tmp_path: Path, lab: Path, text: str, where: str, line: int) -> None:
    msg = refused(write(tmp_path, text))
    assert f"spec.yaml:{line}: " in msg, msg
    assert where in msg, msg


def test_bad_yaml_has_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"spec.yaml:2:1: invalid YAML: while parsing a flow sequence: expected .,. or .\]., but got .<stream end>.",
    ):
        load_spec(write(tmp_path, "name: [unclosed\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read: campaign spec does not exist"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("name: t\n".encode("utf-16"), "is UTF-16 encoded; save it as UTF-8"),
        ("name: t\n".encode("utf-16-le"), "looks UTF-16 encoded"),
        ("name: t\n".encode("utf-32"), "is UTF-32 encoded"),
        (b"name: caf\xe9\n", "spec.yaml:1:10: cannot read: campaign spec is not valid UTF-8"),
        (b"name: t\x00\n", "contains a NUL byte"),
        (b"", "the file is empty"),
        (b"- a\n- b\n", "(top level): must be a mapping"),
        (b"name: t\nname: u\n", "spec.yaml:2:1: invalid YAML: duplicate key 'name' (first at line 1)"),
        (b"name: " + b"[" * 200 + b"]" * 200 + b"\n", "nested deeper than 16 levels"),
        (b"a: &a [*a]\n", "a recursive structure"),
        (b"name: !!python/object/apply:os.system [id]\n", "could not determine a constructor"),
        (b"name: " + b"9" * 5000 + b"\n", "invalid value"),
        (b"name: t\n---\nname: u\n", "expected a single document in the stream, but found another document"),
    ],
)
def test_unreadable_specs(tmp_path: Path, content: bytes, reason: str) -> None:
    msg = refused(write(tmp_path, content))
    assert reason in msg, msg


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    msg = refused(write(tmp_path, "\n".join(lines) + "\n"))
    assert "an alias bomb" in msg


def test_size_limit(tmp_path: Path) -> None:
    msg = refused(write(tmp_path, GOOD + "#" * MAX_SPEC_BYTES))
    assert "at most 1 MiB is read" in msg


@pytest.mark.parametrize("target", ["/dev/zero", "/proc/self/environ", "/etc"])
def test_spec_path_must_be_a_regular_file(target: str) -> None:
    with pytest.raises(SpecError, match="cannot read: campaign spec must be a regular file"):
        load_spec(target)


def test_fifo_spec_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="a FIFO"):
        load_spec(fifo)


def test_etc_shadow_content_never_printed() -> None:
    """Issue 14 item 4: `crossvisor validate /etc/shadow` printed every line of the file."""
    if not os.access("/etc/shadow", os.R_OK):
        pytest.skip("needs a readable /etc/shadow (root)")
    out = subprocess.run(
        [sys.executable, "-m", "crossvisor.cli", "validate", "/etc/shadow"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    text = out.stdout + out.stderr
    for line in Path("/etc/shadow").read_text().splitlines():
        for field in line.split(":")[:2]:
            if len(field) >= 3:  # user names and hashes
                assert field not in text.replace("/etc/shadow", ""), field
    assert "unknown fields (lines 1, 2" in text


def test_inventory_yaml_error_names_line_not_content(tmp_path: Path) -> None:
    """Issue 14 item 4: a YAML syntax error in an inventory put its offending line (a password) into
    workflow history. The spec refuses it first; the worker's read (load_hosts) says the same."""
    from inventory.file_source import load_hosts
    from inventory.source import InventoryError

    (tmp_path / "lab.yaml").write_text(
        "hosts:\n  - {name: kvm-1, kind: kvm, endpoint: 'test:///default'\n  password: Hunter2-Sekrit\n"
    )
    msg = refused(write(tmp_path, GOOD))
    assert "Hunter2-Sekrit" not in msg
    assert f"spec.yaml:3: inventory: {tmp_path / 'lab.yaml'}:3:" in msg
    with pytest.raises(InventoryError) as e:
        load_hosts(tmp_path / "lab.yaml")
    assert "Hunter2-Sekrit" not in str(e.value) and ":3:" in str(e.value)


def test_inventory_bad_value_is_not_quoted(tmp_path: Path) -> None:
    from inventory.file_source import load_hosts
    from inventory.source import InventoryError

    lab = tmp_path / "lab.yaml"
    lab.write_text("hosts:\n  - {name: kvm-1, kind: kvm, endpoint: 'test:///default', cpus: Hunter2-Sekrit}\n")
    with pytest.raises(InventoryError) as e:
        load_hosts(lab)
    assert "Hunter2-Sekrit" not in str(e.value) and "whole numbers" in str(e.value)


def test_image_source_is_checked_and_made_absolute(tmp_path: Path, lab: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "disk.qcow2"), "1M"], check=True)
    plan = load_spec(write(tmp_path, GOOD.replace("cpus: 2}", "cpus: 2, source: disk.qcow2}")))
    assert plan.images[0].source == str(tmp_path / "disk.qcow2")
    (tmp_path / "notes.txt").write_text("password: Hunter2-Sekrit\n" * 40)
    for source, reason in [
        ("notes.txt", "not a disk image or a package"),
        ("/etc/passwd", "not a disk image or a package"),
        ("/dev/zero", "not a file under /dev"),
        ("missing.qcow2", "image source does not exist"),
        ("https://example.invalid/disk.qcow2", "must be a local file path"),
    ]:
        msg = refused(write(tmp_path, GOOD.replace("cpus: 2}", f"cpus: 2, source: '{source}'}}")))
        assert "spec.yaml:8: images.0.source: " in msg and reason in msg, msg
        assert "Hunter2-Sekrit" not in msg
