"""Report rendering: crafted CampaignResults, parsed back, plus a real headless Chromium render."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from crossvisor.report import REDACTED, redact, render_html, render_json, render_junit
from domain.model import CampaignResult, CellResult, CheckResult, Grade, Host, StageRecord

SECRETS = ("hunter2", "s3cr3t-value", "tok-abcdef123456", "nbt_abc123.def456", "vcpass")
HOSTILE = "<script>alert('x')</script> & \"q\" ]]> \x1b[31mred\x00"


def _stages(status: str = "ok") -> list[StageRecord]:
    return [
        StageRecord("provision", "ok", 1.5),
        StageRecord("convert", status, 4.0, attempts=3 if status == "error" else 1),
        StageRecord("cleanup", "ok", 0.5),
    ]


def _cell(src: str, tgt: str, image: str, grades: dict[str, Grade], **kw) -> CellResult:
    checks = [CheckResult(name, g, reason=kw.pop(f"reason_{name}", "")) for name, g in grades.items()]
    for c in checks:
        c.evidence = kw.get("evidence", {}) if c.grade in (Grade.FAIL, Grade.ERROR) else {}
    return CellResult(
        cell_id=f"{src}--{tgt}--{image}",
        source=src,
        target=tgt,
        image=image,
        checks=checks,
        stages=_stages("error" if Grade.ERROR in grades.values() else "ok"),
        source_host=f"{src}-h1",
        target_host=f"{tgt}-h1",
    )


@pytest.fixture
def result() -> CampaignResult:
    P, F, E, S = Grade.PASS, Grade.FAIL, Grade.ERROR, Grade.SKIPPED
    evidence = {
        "console_log": "path:evidence/kvm--vsphere--tiny/console.log",
        "escape": "path:../../etc/passwd",
        "absolute": "path:/etc/shadow",
        "password": "hunter2",
        "api_token": "tok-abcdef123456",
        "note": "connect with password=s3cr3t-value to " + HOSTILE,
        "url": "https://admin:vcpass@vc.example/sdk",
    }
    cells = [
        _cell("kvm", "vsphere", "tiny", {"boots": P, "disks": P}),
        _cell(
            "kvm",
            "vsphere",
            "efi",
            {"boots": F, "disks": P},
            reason_boots="no boot marker; token: nbt_abc123.def456 " + HOSTILE,
            evidence=evidence,
        ),
        _cell("vsphere", "kvm", "tiny", {"boots": E, "disks": S}, reason_boots="vcsim 503"),
        _cell("vsphere", "kvm", "efi", {"boots": S, "disks": S}),
    ]
    hosts = [
        Host("kvm-h1", "kvm", "libvirt", "qemu+ssh://root@kvm1/system", credentials_ref="env:KVM_PW"),
        Host(
            "vsphere-h1",
            "vsphere",
            "vsphere",
            "https://admin:vcpass@vc.example/sdk",
            credentials_ref="hunter2",
            custom={"secret_sauce": "hunter2", "rack": "r1"},
            tags=["lab"],
        ),
    ]
    return CampaignResult("camp-1", "nightly <interop>", cells, hosts, started_at="2025-01-01T00:00:00Z")


def test_redact_free_text() -> None:
    text = "login password=hunter2 Authorization: Bearer abcdefghijkl url=https://u:vcpass@h/x"
    out = redact(text)
    assert "hunter2" not in out and "abcdefghijkl" not in out and "vcpass" not in out
    assert out.count(REDACTED) == 3
    assert redact("boot took 3s on kvm-h1") == "boot took 3s on kvm-h1"


@pytest.mark.parametrize("render", [render_html, render_junit, render_json])
def test_no_secret_in_any_format(result: CampaignResult, render) -> None:
    out = render(result)
    for secret in SECRETS:
        assert secret not in out, (render.__name__, secret)
    assert "\x1b" not in out and "\x00" not in out


def test_json_roundtrip(result: CampaignResult) -> None:
    doc = json.loads(render_json(result))
    assert doc["summary"] == {"cells": 4, "pass": 1, "fail": 1, "error": 1, "skipped": 1}
    grades = {c["cell_id"]: c["grade"] for c in doc["cells"]}
    assert grades["vsphere--kvm--tiny"] == "error"
    ev = doc["cells"][1]["checks"][0]["evidence"]
    assert ev["password"] == REDACTED and ev["api_token"] == REDACTED
    assert ev["console_log"] == "path:evidence/kvm--vsphere--tiny/console.log"
    assert doc["hosts"][1]["credentials_ref"] == REDACTED
    assert doc["hosts"][0]["credentials_ref"] == "env:KVM_PW"
    assert doc["hosts"][1]["custom"] == {"secret_sauce": REDACTED, "rack": "r1"}


def test_junit_structure(result: CampaignResult) -> None:
    root = ET.fromstring(render_junit(result))  # must be well-formed despite HOSTILE
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "8",
        "1",
        "1",
        "3",
    )
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"kvm->vsphere", "vsphere->kvm"}
    kv = suites["kvm->vsphere"]
    assert kv.get("tests") == "4" and kv.get("failures") == "1"
    failed = [c for c in kv.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["efi/boots"]
    failure = failed[0].find("failure")
    assert failure is not None and "<script>" in failure.get("message", "")  # escaped, parsed back
    assert "console_log: path:evidence/" in (failure.text or "")
    vk = suites["vsphere->kvm"]
    err = [c for c in vk.findall("testcase") if c.find("error") is not None]
    assert [c.get("name") for c in err] == ["tiny/boots"]
    assert err[0].find("error").get("message") == "vcsim 503"  # type: ignore[union-attr]
    assert len(vk.findall("testcase/skipped")) == 3
    assert float(vk.get("time", "0")) == pytest.approx(12.0)


class _Cells(HTMLParser):
    """Collects matrix cells (td.grade with data-* attributes) and links."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "td" and "grade" in a.get("class", "").split():
            self.cells.append(a)
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "script":
            self.scripts += 1


def _matrix_cells(page: str) -> dict[tuple[str, str, str], str]:
    parser = _Cells()
    parser.feed(page)
    assert parser.scripts == 0
    return {
        (c["data-image"], c["data-source"], c["data-target"]): c["data-grade"]
        for c in parser.cells
        if "data-image" in c
    }


EXPECTED_IMAGE_MATRIX = {
    ("tiny", "kvm", "kvm"): "none",
    ("tiny", "kvm", "vsphere"): "pass",
    ("tiny", "vsphere", "kvm"): "error",
    ("tiny", "vsphere", "vsphere"): "none",
    ("efi", "kvm", "kvm"): "none",
    ("efi", "kvm", "vsphere"): "fail",
    ("efi", "vsphere", "kvm"): "skipped",
    ("efi", "vsphere", "vsphere"): "none",
}


def test_html_matrix_and_escaping(result: CampaignResult) -> None:
    page = render_html(result)
    assert _matrix_cells(page) == EXPECTED_IMAGE_MATRIX
    parser = _Cells()
    parser.feed(page)
    by_check = {
        (c["data-check"], c["data-source"], c["data-target"]): c["data-grade"]
        for c in parser.cells
        if "data-check" in c and "data-source" in c
    }
    assert by_check[("boots", "kvm", "vsphere")] == "fail"  # worst over images
    assert by_check[("disks", "kvm", "vsphere")] == "pass"
    assert by_check[("disks", "vsphere", "kvm")] == "skipped"
    # Only the safe relative evidence path becomes a link.
    assert parser.links == ["evidence/kvm--vsphere--tiny/console.log"]
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "nightly &lt;interop&gt;" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # no external assets


def test_empty_campaign_renders() -> None:
    empty = CampaignResult("c0", "empty", [])
    assert "Failures and errors (0)" in render_html(empty)
    assert ET.fromstring(render_junit(empty)).get("tests") == "0"
    assert json.loads(render_json(empty))["summary"]["cells"] == 0


# ------------------------------------------------------------------------------- real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], profile: Path, timeout: float = 60) -> str:
    cmd = [
        CHROMIUM or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    # Own session: Chromium forks zygote/renderer helpers; killing the group by our PID stops them.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, err[-2000:]
    return out


@pytest.mark.chromium
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (deploy/install-system.sh)")
def test_chromium_renders_report(result: CampaignResult, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(result), encoding="utf-8")
    url = page.as_uri()

    png = tmp_path / "report.png"
    _chromium([f"--screenshot={png}", "--window-size=1280,1600", url], tmp_path / "profile-shot")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 1600)
    assert len(data) > 20_000  # a blank page compresses to a few KB

    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    # The DOM as the browser built it: same matrix, grades visible as text, hostile text inert.
    assert _matrix_cells(dom) == EXPECTED_IMAGE_MATRIX
    for label in ("PASS", "FAIL", "ERROR", "SKIPPED"):
        assert f">{label}<" in dom
    assert "&lt;script&gt;alert" in dom
    assert not any(s in dom for s in SECRETS)
