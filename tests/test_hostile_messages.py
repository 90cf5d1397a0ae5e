"""Messages an operator reads when the spec or the NetBox settings are wrong (issue 27, item 5):
each pins a message that was wrong before. The NetBox ones that need a server are in
tests/netbox/test_netbox_inventory.py (user@host endpoints, /api/ URLs, HTML answers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossvisor.core.redact import redact_text, register_secret
from crossvisor.spec import SpecError, load_spec
from inventory.netbox_http import check_url, resolve_token
from inventory.netbox_mapping import split_mgmt_endpoint, with_user
from inventory.source import InventoryError

SPEC = """name: t
inventory: netbox
platforms:
  - {name: kvm-a, kind: kvm}
images:
  - {name: img, builtin: legacy-bios}
"""


@pytest.mark.parametrize(
    ("given", "template", "expected"),
    [
        ("root@10.65.0.27", "qemu+ssh://root@{host}/system", "qemu+ssh://root@{host}/system"),
        ("admin@kvm-01.lab", "qemu+ssh://root@{host}/system", "qemu+ssh://admin@{host}/system"),
        ("admin@kvm-01", "https://{host}/sdk", "https://admin@{host}/sdk"),
        ("kvm-01", "qemu+ssh://root@{host}/system", "qemu+ssh://root@{host}/system"),
    ],
)
def test_mgmt_endpoint_user_replaces_the_templates(given: str, template: str, expected: str) -> None:
    """``mgmt_endpoint: root@10.65.0.27`` became ``qemu+ssh://root@root@10.65.0.27/system``."""
    user, host = split_mgmt_endpoint(given)
    assert with_user(template, user) == expected
    assert "@" not in host


@pytest.mark.parametrize("given", ["evil host", "a/b", "x?socket=/tmp/s", "a@b@c", "root@", "-x", "a b@c"])
def test_mgmt_endpoint_that_is_no_host_is_refused(given: str) -> None:
    assert split_mgmt_endpoint(given) is None


def test_ipv6_mgmt_endpoint() -> None:
    assert split_mgmt_endpoint("root@fd00::5") == ("root", "fd00::5")
    assert split_mgmt_endpoint("[fd00::5]") == ("", "[fd00::5]")


def test_redactor_keeps_status_words_and_masks_values() -> None:
    """ "token: set" was printed as "token: [REDACTED]"; a YAML error's "next token: found" too."""
    assert redact_text("token: set") == "token: set"
    assert redact_text("password: missing, token=none") == "password: missing, token=none"
    assert "found character" in redact_text("while scanning for the next token: found character")
    assert redact_text("token: 0123abcd-real") == "token: [REDACTED]"
    assert redact_text("password=hunter2") == "password=[REDACTED]"
    register_secret("missing-but-registered")
    assert "missing-but-registered" not in redact_text("token: missing-but-registered")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://netbox.lab/api/", "https://netbox.lab"),
        ("https://netbox.lab/api", "https://netbox.lab"),
        ("http://h:8000/netbox/api/", "http://h:8000/netbox"),
        ("http://h:8000/", "http://h:8000"),
    ],
)
def test_netbox_url_with_api_suffix_is_its_base(url: str, expected: str) -> None:
    assert check_url(url) == expected


@pytest.mark.parametrize("url", ["netbox.lab", "netbox.lab:8000/api", "ftp://netbox.lab", "http://", ""])
def test_netbox_url_without_scheme_says_how_to_write_it(url: str) -> None:
    """Before: requests' own MissingSchema/InvalidURL text."""
    with pytest.raises(InventoryError, match=r"must start with http:// or https://") as err:
        check_url(url)
    if url and "://" not in url:
        assert f"did you mean https://{url}?" in str(err.value)


def test_token_file_holding_the_header_form(tmp_path: Path, monkeypatch) -> None:
    """A token file holding ``Token <value>`` was sent as ``Token Token <value>``, a 401 and no hint."""
    monkeypatch.delenv("NETBOX_TOKEN", raising=False)
    f = tmp_path / "token"
    for text in ("Token 0123456789abcdef\n", "Bearer 0123456789abcdef", "Authorization: Token 0123456789abcdef"):
        f.write_text(text)
        assert resolve_token(token_file=str(f)) == "0123456789abcdef"
    f.write_text("Token\n")
    with pytest.raises(InventoryError, match="holds no NetBox API token"):
        resolve_token(token_file=str(f))
    f.write_text("abc def\n")
    with pytest.raises(InventoryError, match="one word"):
        resolve_token(token_file=str(f))


def test_token_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path, monkeypatch) -> None:
    import os

    monkeypatch.delenv("NETBOX_TOKEN", raising=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InventoryError, match="FIFO"):
        resolve_token(token_file=str(fifo))


def test_unknown_netbox_kinds_key_is_named(tmp_path: Path) -> None:
    """An invalid ``netbox.kinds`` entry was reported as ``netbox.kinds.(unknown key).(unknown key)``,
    twice (once per union branch)."""
    p = tmp_path / "s.yaml"
    p.write_text(SPEC + "netbox:\n  kinds:\n    my-cluster: vmwre\n")
    with pytest.raises(SpecError) as err:
        load_spec(p)
    text = str(err.value)
    assert text == f"{p}:9: netbox.kinds.my-cluster: must be 'kvm', 'vsphere', 'hyperv', 'xen' or ''", text
    p.write_text(SPEC + "netbox:\n  endpoints:\n    vmware: https://{host}/sdk\n")
    with pytest.raises(SpecError, match=r"netbox\.endpoints\.vmware"):
        load_spec(p)


@pytest.mark.parametrize(
    "text",
    [
        SPEC.replace("  - {name: kvm-a", "\t- {name: kvm-a"),
        SPEC.replace("name: t\n", 'name: "t\n\tx"\n'),  # PyYAML accepts this one
    ],
)
def test_spec_indented_with_tabs_is_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match="indented with a tab; indent YAML with spaces only"):
        load_spec(p)


def test_inventory_files_are_confined_to_the_credentials_dir(tmp_path: Path) -> None:
    """Names resolved the way opening them would resolve (.., links); nothing is opened."""
    import os

    from crossvisor.core.credentials import files_outside_credentials_dir

    root = tmp_path / "creds"
    (root / "keys").mkdir(parents=True)
    (root / "pw").write_text("x")
    os.symlink("/etc/shadow", root / "shadow-link")
    os.mkfifo(root / "fifo")  # would block if opened: resolving names must not open anything
    inside = {"ssh_key": str(root / "keys" / "id"), "pki_path": str(root / "keys"), "known_hosts": str(root / "fifo")}
    assert files_outside_credentials_dir(f"file:{root}/pw", inside, str(root)) == []
    assert files_outside_credentials_dir("env:PW", {}, str(root)) == []
    assert files_outside_credentials_dir("file:/etc/shadow", {}, str(root)) == [("credentials_ref", "/etc/shadow")]
    assert files_outside_credentials_dir(f"file:{root}/shadow-link", {}, str(root)) == [
        ("credentials_ref", f"{root}/shadow-link")
    ]
    assert files_outside_credentials_dir(f"file:{root}/../x", {}, str(root)) == [("credentials_ref", f"{root}/../x")]
    assert files_outside_credentials_dir("file:relative/pw", {}, str(root)) == [("credentials_ref", "relative/pw")]
    assert files_outside_credentials_dir("", {"ssh_key": "/root/.ssh/id_rsa"}, str(root)) == [
        ("ssh_key", "/root/.ssh/id_rsa")
    ]
    # a sibling whose name starts like the directory is not inside it
    assert files_outside_credentials_dir(f"file:{root}-other/pw", {}, str(root)) == [
        ("credentials_ref", f"{root}-other/pw")
    ]
