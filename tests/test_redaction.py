"""One redaction routine (crossvisor.core.redact) for logs, the CLI's error line and URIs; every
secret ``crossvisor.core.credentials.resolve_secret`` resolves is masked from then on (issue 14 item 4)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import structlog

from crossvisor.core import log
from crossvisor.core.credentials import CredentialError, resolve_secret
from crossvisor.core.redact import (
    MASK,
    is_secret_key,
    redact_mapping,
    redact_text,
    redact_uri,
    redact_value,
    register_secret,
)
from drivers.libvirt import uri as libvirt_uri

ROOT = Path(__file__).resolve().parent.parent


def fresh_secret() -> str:
    # quotes and a backslash: JSON escapes them, so a check after rendering alone would miss it
    return f'Sx-{uuid.uuid4().hex[:12]}"q\\z'


@pytest.fixture
def log_stream():
    """structlog and one stdlib handler writing to a buffer, restored afterwards."""
    buf = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(buf)
    root.addHandler(handler)
    saved = [(h, h.formatter) for h in root.handlers]
    log.configure("debug", stream=buf)
    yield buf
    for h, f in saved:
        h.setFormatter(f)
    root.removeHandler(handler)
    structlog.reset_defaults()


def test_env_secret_never_in_a_structlog_line(monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO) -> None:
    secret = fresh_secret()
    monkeypatch.setenv("CVI_TEST_SECRET", secret)
    s = resolve_secret("env:CVI_TEST_SECRET")
    assert s.reveal() == secret and secret not in repr(s)
    lg = log.get(campaign="c1", host="kvm-1")
    lg.info("connecting", detail=f"login with {secret} failed", nested={"attempts": [f"x{secret}x", 3]})
    lg.warning("failed", error=ValueError(f"auth rejected for {secret}"))
    try:
        raise RuntimeError(f"endpoint said: bad password {secret}")
    except RuntimeError:
        lg.exception("stage failed")
    logging.getLogger("temporalio.activity").error("activity failed: %s", f"CredentialError: {secret}")
    out = log_stream.getvalue()
    assert secret not in out
    assert json.dumps(secret)[1:-1] not in out  # nor its JSON-escaped form
    assert secret.split('"')[0] not in out  # nor the part before the first quote
    assert out.count(MASK) >= 5, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["connecting", "failed", "stage failed"]
    assert events[0]["campaign"] == "c1" and events[0]["nested"]["attempts"][1] == 3
    assert "activity failed: CredentialError: " + MASK in out


def test_file_secret_never_in_a_structlog_line(tmp_path: Path, log_stream: io.StringIO) -> None:
    secret = fresh_secret()
    f = tmp_path / "vc.pw"
    f.write_text(secret + "\n")
    assert resolve_secret(f"file:{f}").reveal() == secret
    log.get().error("vcenter login", url=f"https://vc.example/sdk?u=admin&x={secret}", msg=secret)
    out = log_stream.getvalue()
    assert secret not in out and MASK in out


def test_secret_keys_are_masked_whatever_the_value(log_stream: io.StringIO) -> None:
    log.get().info("record", password="plain", db_pass="p2", api_key="k", credentials_ref="env:VC_PW", passed=3)
    e = json.loads(log_stream.getvalue().splitlines()[-1])
    assert e["password"] == e["db_pass"] == e["api_key"] == MASK
    assert e["credentials_ref"] == "env:VC_PW" and e["passed"] == 3


def test_grade_counts_survive_the_rendered_line(log_stream: io.StringIO) -> None:
    # the campaign's start/end lines carry counts by grade; the rendered JSON goes through the text
    # rules once more, where '"pass": 6' had looked like a credential pair
    log.get().info("campaign.start", counts={"pass": 6, "fail": 1}, db_pass="1234")
    e = json.loads(log_stream.getvalue().splitlines()[-1])
    assert e["counts"] == {"pass": 6, "fail": 1} and e["db_pass"] == MASK


def test_secret_in_an_exception_through_the_cli_error_path(tmp_path: Path) -> None:
    """The real CLI, its real error line: a resolved secret inside an exception message (here the
    path of a spec it cannot read) is printed masked."""
    secret = f"Sx-{uuid.uuid4().hex[:16]}"
    (tmp_path / "pw").write_text(secret)
    script = (
        "import sys\n"
        "from crossvisor.core.credentials import resolve_secret\n"
        f"resolve_secret('file:{tmp_path / 'pw'}')\n"
        "from crossvisor.cli import main\n"
        f"main(['validate', '{tmp_path}/{secret}/spec.yaml'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert secret not in out.stderr + out.stdout
    assert out.stderr.startswith("crossvisor: error: ") and f"/{MASK}/spec.yaml" in out.stderr
    assert "Traceback" not in out.stderr


def test_uris_are_redacted() -> None:
    secret = fresh_secret().replace('"', "").replace("\\", "")
    assert libvirt_uri.redact("esx://root:pl4in-pw@esx1/?no_verify=1") == f"esx://root:{MASK}@esx1/?no_verify=1"
    assert libvirt_uri.redact("vpx://admin:p@ss:w0rd@vc/dc/cluster/h1") == f"vpx://admin:{MASK}@vc/dc/cluster/h1"
    assert libvirt_uri.redact("qemu+ssh://root@kvm1/system") == "qemu+ssh://root@kvm1/system"
    register_secret(secret)
    # a registered secret anywhere in a URI, not only as its password
    out = libvirt_uri.redact(f"qemu+tls://kvm1/system?pkipath=/etc/{secret}")
    assert secret not in out and MASK in out
    with pytest.raises(libvirt_uri.UriError) as e:
        libvirt_uri.scheme_of(f"bogus://root:{secret}@h/")
    assert secret not in str(e.value)
    assert redact_uri("https://u:pw@[::1:bad") != ""  # malformed netloc: text rules, no exception


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("login password=hunter2 ok", "hunter2"),
        ('{"password": "hunter2"}', "hunter2"),
        ("db_pass: hunter2", "hunter2"),
        ('"pass": "1234"', "1234"),
        ("db_pass: 1234", "1234"),
        ("Authorization: Bearer abcdefghijkl", "abcdefghijkl"),
        ("authorization=Token 0123456789abcdef0123456789abcdef01234567", "0123456789abcdef"),
        ("header Token 0123456789abcdef0123456789abcdef01234567 sent", "0123456789abcdef"),
        ("token nbt_AbC123.DeF456ghi", "DeF456ghi"),
        ("url=https://u:vcpass@h/x", "vcpass"),
        ("esx://root:p@ss@esx1/", "p@ss"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "MIIE"),
        ("?api_key=k3y&x=1", "k3y"),
    ],
)
def test_credential_shapes(text: str, gone: str) -> None:
    out = redact_text(text)
    assert gone not in out and MASK in out, out


@pytest.mark.parametrize(
    "text",
    [
        "boot took 3s on kvm-h1",
        "passed: 3, failed: 0",
        "credentials_ref: env:VC_PW",
        "sha1 0123456789abcdef0123456789abcdef01234567 disk.vmdk",  # OVA manifest digests stay
        "qemu+ssh://root@kvm1/system",
        "bypass cache for author alice",
    ],
)
def test_innocent_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_report_sample_masks_exactly_three() -> None:
    text = "login password=hunter2 Authorization: Bearer abcdefghijkl url=https://u:vcpass@h/x"
    assert redact_text(text).count(MASK) == 3


def test_mapping_and_keys() -> None:
    assert redact_mapping({"secret_sauce": "x", "rack": "r1", "note": "password=hunter2"}) == {
        "secret_sauce": MASK,
        "rack": "r1",
        "note": f"password={MASK}",
    }
    for key in ("password", "db_pass", "passwd", "api_key", "apiKey", "Authorization", "x-auth-token", "session_id"):
        assert is_secret_key(key), key
    for key in ("passed", "author", "credentials_ref", "site", "version", "sessions_total"):
        assert not is_secret_key(key), key
    assert redact_value({"a": [{"token": "t"}], "n": None, "k": 1.5}) == {"a": [{"token": MASK}], "n": None, "k": 1.5}


def test_short_values_are_not_registered() -> None:
    register_secret("ab")  # would mask every "ab" everywhere
    assert redact_text("abc abd") == "abc abd"


def test_credential_file_is_read_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (65 * 1024))
    for ref, reason in [
        (f"file:{big}", "at most 64 KiB"),
        ("file:/dev/zero", "not a file under /dev"),
        ("file:/proc/self/environ", "not a file under /proc"),
        (f"file:{tmp_path}", "directory"),
        (f"file:{tmp_path / 'missing'}", "does not exist"),
    ]:
        with pytest.raises(CredentialError, match=reason):
            resolve_secret(ref)
    bad = tmp_path / "latin1"
    bad.write_bytes(b"pass\xe9word-Sekrit")
    with pytest.raises(CredentialError) as e:
        resolve_secret(f"file:{bad}")
    assert "Sekrit" not in str(e.value) and "not valid UTF-8" in str(e.value)


def test_resolve_registers_in_this_process_only(tmp_path: Path) -> None:
    """Registration is per process: a fresh interpreter masks a value only after resolving it."""
    secret = f"Sx-{uuid.uuid4().hex[:16]}"
    env = {**os.environ, "CVI_SECRET": secret}
    script = (
        "from crossvisor.core.redact import redact_text\n"
        "import os\n"
        "before = redact_text('v=' + os.environ['CVI_SECRET'])\n"
        "from crossvisor.core.credentials import resolve_secret\n"
        "resolve_secret('env:CVI_SECRET')\n"
        "print(before.endswith(os.environ['CVI_SECRET']), redact_text('v=' + os.environ['CVI_SECRET']))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"True v={MASK}", out.stderr
