from pathlib import Path

import pytest

from crossvisor.spec import SpecError, load_spec
from domain.matrix import expand


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


GOOD = """
name: t
inventory: file:lab.yaml
platforms:
  - {name: a, kind: kvm}
  - {name: b, kind: xen, select: {site: s1, cf_rack: r1}}
images:
  - {name: img, cpus: 2}
"""


def test_example_spec_validates(root: Path) -> None:
    plan = load_spec(root / "examples/demo.yaml")
    assert len(expand(plan)) == 4 * 3 * 2
    assert plan.inventory == f"file:{root / 'examples/lab.yaml'}"


def test_good_spec_defaults(tmp_path: Path) -> None:
    plan = load_spec(write(tmp_path, GOOD))
    assert [p.driver for p in plan.platforms] == ["libvirt", "libvirt"]
    assert plan.concurrency.max_cells == 4 and plan.retry.max_attempts == 5
    assert plan.platforms[1].select == {"site": "s1", "cf_rack": "r1"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("kind: xen", "kind: xenn"), "platforms.1.kind"),
        (GOOD.replace("cpus: 2", "cpus: 0"), "images.0.cpus"),
        (GOOD.replace("cpus: 2", "cpu: 2"), "images.0.cpu"),  # typo is an error, not ignored
        (GOOD.replace("site: s1", "sight: s1"), "platforms.1.select"),
        (GOOD + "concurrency: {max_cells: 0}\n", "concurrency.max_cells"),
        (GOOD + "pairs: [[a, zz]]\n", "unknown platform 'zz'"),
        (GOOD.replace("name: b", "name: a"), "duplicate platforms names"),
        (GOOD + "checks: [boots, smell]\n", "checks.1"),
        (GOOD.replace("file:lab.yaml", "ldap://x"), "inventory"),
    ],
)
def test_bad_spec_names_file_field_reason(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text))
    msg = str(e.value)
    assert str(tmp_path / "spec.yaml") in msg
    assert where in msg


def test_bad_yaml_has_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec.yaml:\d+:\d+: invalid YAML"):
        load_spec(write(tmp_path, "name: [unclosed\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")
