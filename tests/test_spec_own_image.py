"""An operator's own image in the spec: a service to probe (app), SSH with a key by reference (ssh).
Bad input is refused before the campaign starts, naming the image, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossvisor.spec import SpecError, load_spec
from domain.matrix import expand, fingerprint
from domain.model import ServiceProbe, SshAccess
from tests.test_spec import LAB

HEAD = """
name: t
inventory: file:lab.yaml
platforms:
  - {name: a, kind: kvm}
  - {name: b, kind: xen}
images:
"""


def spec(tmp_path: Path, images: str) -> Path:
    (tmp_path / "lab.yaml").write_text(LAB)
    p = tmp_path / "spec.yaml"
    p.write_text(HEAD + images)
    return p


def test_app_and_ssh_reach_the_plan_with_the_key_as_an_absolute_reference(tmp_path: Path) -> None:
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    plan = load_spec(
        spec(
            tmp_path,
            "  - {name: web, app: {http: {port: 80, path: /health, expect: 204}},"
            " ssh: {credentials_ref: 'file:id_ed25519', user: admin}}\n"
            "  - {name: ssh-only, app: {tcp: 22}}\n",
        )
    )
    web, only = plan.images
    assert web.app == ServiceProbe("http", 80, "/health", 204)
    assert web.ssh == SshAccess(f"file:{tmp_path / 'id_ed25519'}", "admin", 22)
    assert only.app == ServiceProbe("tcp", 22) and only.ssh is None


def test_an_image_without_the_new_fields_keeps_its_fingerprint(tmp_path: Path) -> None:
    plan = load_spec(spec(tmp_path, "  - {name: img, cpus: 2}\n"))
    # computed by main before images could declare app/ssh (e0e163a): cached results stay valid
    assert fingerprint(plan, "a", "b", "img") == "3ac81e290bd148282c4ebe457407c173"
    assert [c.fingerprint for c in expand(plan) if (c.source, c.target) == ("a", "b")] == [
        "3ac81e290bd148282c4ebe457407c173"
    ]


@pytest.mark.parametrize(
    "image,where,reason",
    [
        ("{name: x, app: {tcp: 22, http: {port: 80}}}", "images.0.app", "exactly one of tcp"),
        ("{name: x, app: {}}", "images.0.app", "exactly one of tcp"),
        ("{name: x, app: {tcp: 70000}}", "images.0.app.tcp", "65535"),
        ("{name: x, ssh: {credentials_ref: 'id_rsa'}}", "images.0.ssh.credentials_ref", "never the key itself"),
        ("{name: x, ssh: {credentials_ref: 'file:missing-key'}}", "images.0.ssh.credentials_ref", "missing-key"),
    ],
)
def test_bad_probe_or_key_is_refused_naming_the_image_field(
    tmp_path: Path, image: str, where: str, reason: str
) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(spec(tmp_path, f"  - {image}\n"))
    msg = str(e.value)
    assert where in msg and reason in msg, msg


def test_a_template_image_takes_cpus_and_memory_from_the_template_unless_given(tmp_path: Path) -> None:
    plan = load_spec(
        spec(
            tmp_path,
            "  - {name: golden, template: rhel9-golden, app: {tcp: 22}}\n"
            "  - {name: sized, template: 'Win 2022 tpl', cpus: 4, memory_mib: 4096}\n",
        )
    )
    golden, sized = plan.images
    assert (golden.template, golden.cpus, golden.memory_mib, golden.source) == ("rhel9-golden", 0, 0, "")
    assert golden.app == ServiceProbe("tcp", 22)
    assert (sized.template, sized.cpus, sized.memory_mib) == ("Win 2022 tpl", 4, 4096)
    # the template is part of the image's identity (cached source sides are per template)
    assert fingerprint(plan, "a", "b", "golden") != fingerprint(plan, "a", "b", "sized")


@pytest.mark.parametrize(
    "image,where,reason",
    [
        ("{name: x, template: t1, source: disk.qcow2}", "images.0", "not source and template"),
        ("{name: x, template: t1, builtin: uefi}", "images.0", "not builtin and template"),
        ("{name: x, template: '../etc/passwd'}", "images.0.template", "name of a VM or template on the source host"),
        ("{name: x, template: 7}", "images.0.template", ""),
        ("{name: x, template: t1, firmware: efi, disk_mib: 9}", "images.0", "disk_mib, firmware: a template's disks"),
    ],
)
def test_a_bad_template_is_refused_naming_the_image_field(tmp_path: Path, image: str, where: str, reason: str) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(spec(tmp_path, f"  - {image}\n"))
    msg = str(e.value)
    assert where in msg and reason in msg, msg


def test_the_network_families_are_builtin_images_with_their_firmware(tmp_path: Path) -> None:
    """dracut-lvm-nm and netplan-cloudinit are named like any built image; SSH with the build's key
    is the worker's to add (activities/stages/guest.py), the service is what the spec declares."""
    plan = load_spec(
        spec(
            tmp_path,
            "  - {name: rhel-like, builtin: dracut-lvm-nm, app: {tcp: 22}}\n  - {name: cloud, builtin: netplan-cloudinit}\n",
        )
    )
    rhel, cloud = plan.images
    assert (rhel.builtin, rhel.firmware, rhel.app, rhel.ssh) == ("dracut-lvm-nm", "bios", ServiceProbe("tcp", 22), None)
    assert (cloud.builtin, cloud.firmware, cloud.app) == ("netplan-cloudinit", "bios", None)
