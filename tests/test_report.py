"""Report rendering and analysis: crafted and generated CampaignResults, parsed back.

The browser half (real headless Chromium: console errors, links, charts, screenshots) is in
tests/web/test_report_browser.py.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from rich.console import Console

from crossvisor import report
from crossvisor.report import (
    REDACTED,
    cause_key,
    check_seconds,
    compare,
    human_duration,
    human_time,
    parse_json,
    platform_order,
    redact,
    render_html,
    render_json,
    render_junit,
    root_causes,
    scorecard,
)
from crossvisor.terminal import render_matrix, render_scorecard
from domain.model import CampaignResult, CellResult, CheckResult, Grade, Host, StageRecord
from tests.web.fixture_campaign import PVSCSI_ROOT, generated_campaign, previous_campaign

SECRETS = ("hunter2", "s3cr3t-value", "tok-abcdef123456", "nbt_abc123.def456", "vcpass")
HOSTILE = "<script>alert('x')</script> & \"q\" ]]> \x1b[31mred\x00"


@pytest.fixture
def campaign() -> CampaignResult:
    return generated_campaign()


@pytest.fixture
def hostile() -> CampaignResult:
    """The generated campaign with secrets and markup planted where guests and tools put text."""
    res = generated_campaign()
    cell = next(c for c in res.cells if c.cell_id == "kvm--xen--deb12-efi")
    cell.checks[0].reason = "no boot marker; token: nbt_abc123.def456 " + HOSTILE
    cell.checks[0].evidence |= {
        "console_log": "path:evidence/kvm--xen--deb12-efi/console.log",
        "escape": "path:../../etc/passwd",
        "absolute": "path:/etc/shadow",
        "password": "hunter2",
        "api_token": "tok-abcdef123456",
        "note": "connect with password=s3cr3t-value to " + HOSTILE,
        "url": "https://admin:vcpass@vc.example/sdk",
        "console": "login: root\npassword=hunter2\n" + HOSTILE,
    }
    cell.stages[0].reason = "lease via https://admin:vcpass@vc.example/sdk"
    res.name = "nightly <interop>"
    res.hosts.append(
        Host(
            "vc-h1",
            "vsphere",
            "vsphere",
            "https://admin:vcpass@vc.example/sdk",
            credentials_ref="hunter2",
            custom={"secret_sauce": "hunter2", "rack": "r1"},
            tags=["lab"],
        )
    )
    res.hosts.append(Host("kvm-h9", "kvm", "libvirt", "qemu+ssh://root@kvm9/system", credentials_ref="env:KVM_PW"))
    return res


# ---------------------------------------------------------------------------------- redaction


def test_redact_free_text() -> None:
    text = "login password=hunter2 Authorization: Bearer abcdefghijkl url=https://u:vcpass@h/x"
    out = redact(text)
    assert "hunter2" not in out and "abcdefghijkl" not in out and "vcpass" not in out
    assert out.count(REDACTED) == 3
    assert redact("boot took 3s on kvm-h1") == "boot took 3s on kvm-h1"
    assert redact("\x1b[0;32m  OK  \x1b[0m] Reached") == "  OK  ] Reached"  # ANSI removed whole


@pytest.mark.parametrize("render", [render_html, render_junit, render_json])
def test_no_secret_in_any_format(hostile: CampaignResult, render) -> None:
    out = render(hostile)
    for secret in SECRETS:
        assert secret not in out, (render.__name__, secret)
    assert "\x1b" not in out and "\x00" not in out


def test_terminal_has_no_secret(hostile: CampaignResult) -> None:
    console = Console(record=True, width=200)
    render_matrix(hostile, console)
    render_scorecard(hostile, console)
    text = console.export_text()
    assert not any(s in text for s in SECRETS)


# ---------------------------------------------------------------------------------- analysis


def test_scorecard_counts_per_pair_and_image(campaign: CampaignResult) -> None:
    sc = scorecard(campaign)
    o = sc.overall
    assert o.total == 36 == sum(o.grades.values())
    assert (
        o.grades[Grade.PASS],
        o.grades[Grade.WARN],
        o.grades[Grade.FAIL],
        o.grades[Grade.ERROR],
        o.grades[Grade.SKIPPED],
    ) == (13, 6, 13, 1, 3)
    # virt-v2v cures the PVSCSI root disk on KVM: a warning, and it is what fixed it
    vk = sc.by_pair[("vsphere-8", "kvm")]
    assert (vk.grades[Grade.PASS], vk.grades[Grade.WARN]) == (2, 1) and vk.remedies == {"virt-v2v": 1}
    assert sc.by_pair[("kvm", "hyperv")].remedies == {"nic-config": 2}
    assert list(sc.by_pair)[0] == ("kvm", "vsphere-8")  # campaign order
    assert sc.by_image["deb12-efi"].grades[Grade.SKIPPED] == 3
    # Hyper-V drops the VMware annotation and the rules did not see it coming
    assert sc.by_pair[("vsphere-8", "hyperv")].missed >= 3
    assert o.predicted > 200 and 0 < o.missed < o.predicted


def test_platform_order_is_one_order_for_both_axes(campaign: CampaignResult) -> None:
    assert platform_order(campaign) == ["kvm", "vsphere-8", "hyperv", "xen"]


def test_root_causes_one_line_per_cause(campaign: CampaignResult) -> None:
    causes = root_causes(campaign)
    by_reason = {rc.reason: rc for rc in causes}
    efi = next(rc for rc in causes if "firmware EFI not supported" in rc.reason)
    # a failed import fails all seven checks of three cells: one cause
    assert len(efi.cells) == 3 and len(efi.checks) == 7
    pv = by_reason[PVSCSI_ROOT]
    # "not reached: boots failed" belongs to the cause that stopped the boot, not a cause of its own
    assert set(pv.checks) == {"boots", "disks", "cpu_memory", "nics", "app"}
    assert not any(rc.reason.startswith("not reached") for rc in causes)
    assert causes[-1].grade == Grade.ERROR  # infrastructure after every interop cause
    assert [len(rc.cells) for rc in causes if rc.grade == Grade.FAIL] == sorted(
        (len(rc.cells) for rc in causes if rc.grade == Grade.FAIL), reverse=True
    )
    # every failing check of every cell is accounted for by exactly one cause
    bad = {(c.cell_id, ch.check) for c in campaign.cells for ch in c.checks if ch.grade in (Grade.FAIL, Grade.ERROR)}
    covered = {(cid, chk) for rc in causes for cid in rc.cells for chk in rc.checks}
    assert bad <= covered


def test_cause_key_groups_what_differs_per_cell() -> None:
    a = CellResult("a--b--i", "a", "b", "i", [], [], source_host="kvm-01", target_host="xen-07")
    b = CellResult("c--d--i", "c", "d", "i", [], [], source_host="kvm-02", target_host="xen-09")
    ra = "convert failed on xen-07 after 3.2 s: /tmp/cv-a1b2/disk.vmdk checksum 0123456789abcdef0123 bad"
    rb = "convert failed on xen-09 after 12 s: /tmp/cv-zz/disk.vmdk checksum fedcba9876543210fedc bad"
    assert cause_key(ra, a) == cause_key(rb, b)
    assert cause_key("controller 15ad:07c0", a) != cause_key("controller 1af4:1001", a)  # device ids matter


def test_compare_with_previous_campaign(campaign: CampaignResult) -> None:
    cmp = compare(campaign, previous_campaign())
    assert [c.cell_id for c in cmp.new_failures] == ["vsphere-8--hyperv--deb12-bios"]
    assert [c.cell_id for c in cmp.fixed] == ["vsphere-8--kvm--rhel9-pvscsi"]
    assert cmp.fixed[0].before == Grade.FAIL and cmp.fixed[0].after == Grade.WARN
    assert len(cmp.still_failing) == 12
    assert (
        cmp.unchanged + len(cmp.new_failures) + len(cmp.fixed) + len(cmp.still_failing) + len(cmp.other_changes) == 36
    )


def test_human_times_and_durations() -> None:
    assert human_time("2026-12-01T08:56:39Z") == "Tue 1 Dec 2026, 08:56:39 UTC"
    assert human_time("2026-12-01T09:56:39+01:00") == "Tue 1 Dec 2026, 08:56:39 UTC"
    assert human_time("") == "\u2014" and human_time("soon") == "soon"
    assert [human_duration(s) for s in (0.42, 42, 245, 7440, 273600)] == [
        "0.4 s",
        "42 s",
        "4 min 05 s",
        "2 h 04 min",
        "3 d 4 h",
    ]


def test_check_time_is_the_stage_that_decided_it() -> None:
    stages = [StageRecord("import", "ok", 20.0), StageRecord("boot", "ok", 31.5), StageRecord("verify", "ok", 7.0)]
    cell = CellResult("x", "a", "b", "i", [], stages)
    assert (check_seconds(cell, "boots"), check_seconds(cell, "nics")) == (31.5, 7.0)
    failed = CellResult("y", "a", "b", "i", [], [StageRecord("import", "fail", 12.0), StageRecord("boot", "skipped")])
    assert check_seconds(failed, "boots") == 12.0  # the import that ended the cell


# --------------------------------------------------------------------------------------- JSON


def test_json_carries_everything_and_reads_back(campaign: CampaignResult) -> None:
    text = render_json(campaign)
    doc = json.loads(text)
    assert doc["summary"] == {"cells": 36, "pass": 13, "warn": 6, "fail": 13, "error": 1, "skipped": 3}
    cell = next(c for c in doc["cells"] if c["cell_id"] == "vsphere-8--kvm--rhel9-pvscsi")
    assert (cell["grade"], cell["odca"], cell["remedy"]) == ("warn", "warning", "virt-v2v")
    assert [r["name"] for r in cell["remediations"]] == ["generic-initramfs", "virt-v2v"]
    assert cell["predictions"][0]["rule"] and cell["stages"][0]["started_at"]
    assert doc["scorecard"]["overall"]["what_fixed_it"] == {"virt-v2v": 3, "nic-config": 3}
    assert len(doc["root_causes"]) == len(root_causes(campaign))
    back = parse_json(text)
    assert [(c.cell_id, c.grade, c.remedy, c.mismatches) for c in back.cells] == [
        (c.cell_id, c.grade, c.remedy, c.mismatches) for c in campaign.cells
    ]
    assert back.cells[5].stages == campaign.cells[5].stages
    assert back.cells[5].checks[0].evidence["console"] == redact(campaign.cells[5].checks[0].evidence["console"])


def test_json_redacts(hostile: CampaignResult) -> None:
    doc = json.loads(render_json(hostile))
    ev = next(c for c in doc["cells"] if c["cell_id"] == "kvm--xen--deb12-efi")["checks"][0]["evidence"]
    assert ev["password"] == REDACTED and ev["api_token"] == REDACTED
    assert ev["console_log"] == "path:evidence/kvm--xen--deb12-efi/console.log"
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert hosts["vc-h1"]["credentials_ref"] == REDACTED and hosts["kvm-h9"]["credentials_ref"] == "env:KVM_PW"
    assert hosts["vc-h1"]["custom"] == {"secret_sauce": REDACTED, "rack": "r1"}


def test_parse_json_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="not a crossvisor JSON report: KeyError: 'cells'"):
        parse_json('{"campaign_id": "x", "name": "y"}')
    with pytest.raises(ValueError, match="JSONDecodeError"):
        parse_json("<html>")


# -------------------------------------------------------------------------------------- JUnit


def test_junit_structure_and_times(campaign: CampaignResult) -> None:
    root = ET.fromstring(render_junit(campaign))
    assert root.tag == "testsuites"
    # 36 cells x 7 checks; failures/errors/skipped are checks, warn is a passed test case
    counts = {k: int(root.get(k, "-1")) for k in ("tests", "failures", "errors", "skipped")}
    flat = [ch for c in campaign.cells for ch in c.checks]
    assert counts == {
        "tests": 252,
        "failures": sum(ch.grade == Grade.FAIL for ch in flat),
        "errors": sum(ch.grade == Grade.ERROR for ch in flat),
        "skipped": sum(ch.grade == Grade.SKIPPED for ch in flat),
    }
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert len(suites) == 12 and suites["vsphere-8->kvm"].get("timestamp", "").startswith("2026-11-30T22")
    cell = next(c for c in campaign.cells if c.cell_id == "vsphere-8--kvm--rhel9-pvscsi")
    cases = {c.get("name"): c for c in suites["vsphere-8->kvm"].findall("testcase")}
    boots = cases["rhel9-pvscsi/boots"]
    assert boots.find("failure") is None and boots.find("skipped") is None  # warn passes
    props = {p.get("name"): p.get("value") for p in boots.iter("property")}
    assert props["remedy"] == "virt-v2v" and props["grade"] == "warn" and props["odca"] == "warning"
    assert "virt-v2v" in (boots.findtext("system-out") or "")
    boot_stage = next(s for s in cell.stages if s.stage == "boot")
    assert float(boots.get("time", "0")) == pytest.approx(boot_stage.duration_s, abs=1e-3)
    assert float(boots.get("time", "0")) > 0
    suite_time = float(suites["vsphere-8->kvm"].get("time", "0"))
    assert suite_time == pytest.approx(
        sum(report.cell_seconds(c) for c in campaign.cells if (c.source, c.target) == ("vsphere-8", "kvm")), abs=0.01
    )
    # a failure carries its evidence, console included
    fail = next(c for c in suites["kvm->xen"].findall("testcase") if c.get("name") == "rhel9-pvscsi/boots")
    assert PVSCSI_ROOT in fail.find("failure").get("message", "")  # type: ignore[union-attr]
    assert "Gave up waiting for root file system device" in (fail.findtext("failure") or "")
    held = {p.get("name"): p.get("value") for p in cases["rhel9-pvscsi/boots"].iter("property")}
    assert held["prediction_held"] == "true"


def test_junit_well_formed_with_hostile_text(hostile: CampaignResult) -> None:
    root = ET.fromstring(render_junit(hostile))
    msgs = [f.get("message", "") for f in root.iter("failure")]
    assert any("<script>" in m for m in msgs)  # escaped on the way out, parsed back


# --------------------------------------------------------------------------------------- HTML


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.chips: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.pairs: list[dict[str, str]] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a":
            self.links.append(a.get("href", ""))
            if "chip" in a.get("class", "").split():
                self.chips.append(a)
        if tag == "td" and "pair" in a.get("class", "").split():
            self.pairs.append(a)
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    return p


def test_html_matrix_same_order_both_axes_and_links(campaign: CampaignResult) -> None:
    page = render_html(campaign)
    p = _parse(page)
    assert p.scripts == 0
    order = platform_order(campaign)
    assert [(d["data-source"], d["data-target"]) for d in p.pairs] == [(s, t) for s in order for t in order]
    diagonal = [d for d in p.pairs if d["data-source"] == d["data-target"]]
    assert len(diagonal) == 4 and all("diag" in d["class"].split() for d in diagonal)
    grades = {c.cell_id: c.grade.value for c in campaign.cells}
    assert {c["data-cell"]: c["data-grade"] for c in p.chips} == grades  # every cell once, right grade
    for chip in p.chips:  # each links to its own detail section
        assert chip["href"] == "#" + report.cell_anchor(chip["data-cell"]) and chip["href"][1:] in p.ids
    missed = {c["data-cell"] for c in p.chips if "miss" in c["class"].split()}
    assert missed == {c.cell_id for c in campaign.cells if c.mismatches} and missed


def test_html_sections_show_what_people_look_for(campaign: CampaignResult) -> None:
    page = render_html(campaign, previous_campaign())
    p = _parse(page)
    text = " ".join(p.text)
    for section in (
        "scorecard",
        "matrix",
        "causes",
        "compare",
        "charts",
        "cells",
        "chart-heatmap",
        "chart-stages",
        "chart-timeline",
    ):
        assert section in p.ids, section
    # one line per root cause, in the order root_causes gives
    assert page.count("<li data-cause-cells=") == len(root_causes(campaign))
    assert re.search(r"data-compare='new' data-count='1'", page) and re.search(
        r"data-compare='fixed' data-count='1'", page
    )
    # human timestamps and durations; raw ISO only inside datetime attributes
    assert "Mon 30 Nov 2026, 22:00:00 UTC" in text and "took" in text
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text)
    # a warning names its remedy; a cell shows its ladder and its console excerpt
    assert "Works only after remediation" in text and "Remediation ladder" in text
    assert "Gave up waiting for root file system device" in text
    # charts are drawn: a rate per pair x check, a bar per stage x platform, a bar per timed cell
    assert page.count('data-rate="') == 12 * 8
    timeline = page[page.index('id="chart-timeline"') : page.index("</svg>", page.index('id="chart-timeline"'))]
    assert timeline.count("<rect") == 36
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # no external assets
    assert "Content-Security-Policy" in page


def test_html_escapes_and_links_only_safe_paths(hostile: CampaignResult) -> None:
    page = render_html(hostile, artifact_base="..")
    p = _parse(page)
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "nightly &lt;interop&gt;" in page
    assert "evidence/kvm--xen--deb12-efi/console.log" in p.links
    assert not any("passwd" in h or "shadow" in h for h in p.links)
    assert "../artifacts/consoles/kvm--xen--deb12-efi.log" in p.links  # artifacts under the home


def test_empty_and_summary_only_campaigns_render() -> None:
    empty = CampaignResult("c0", "empty", [])
    assert "No failures" in render_html(empty)
    assert ET.fromstring(render_junit(empty)).get("tests") == "0"
    assert json.loads(render_json(empty))["summary"]["cells"] == 0
    # a cell rebuilt from the workflow's summary (the store is elsewhere): no stages, no times
    thin = CampaignResult(
        "c1", "thin", [CellResult("a--b--i", "a", "b", "i", [CheckResult("cell", Grade.FAIL, "boots: x")], [])]
    )
    page = render_html(thin)
    assert "No stage records" in page and "No cell recorded its start and finish times" in page
    assert ET.fromstring(render_junit(thin)).get("failures") == "1"


def test_terminal_scorecard_and_matrix(campaign: CampaignResult) -> None:
    console = Console(record=True, width=220)
    render_scorecard(campaign, console)
    out = console.export_text()
    assert "success 13  warning 6  failure 13  error 1  skipped 3" in out
    assert re.search(r"vsphere-8 -> kvm\s+2\s+1\s+0\s+0/0\s+67%\s+21/21\s+virt-v2v x1", out)
    console = Console(record=True, width=220)
    render_matrix(campaign, console)
    out = console.export_text()
    assert "same platform" in out and "rhel9-pvscsi WARN" in out
    assert "FAIL 3 cells (boots, disks, cpu_memory, nics, app, metadata, lifecycle): import failed" in out


def test_campaign_show_prints_the_console_without_escape_sequences(tmp_path) -> None:
    # a real captured boot (SeaBIOS and the kernel clear and colour the screen): the stored
    # evidence keeps what the guest printed; `campaign show` prints it as text
    from pathlib import Path

    from crossvisor.commands.cellview import cell_document, format_cell

    raw = (Path(__file__).parent / "fixtures/consoles/portable-bios--xen-hvm.log").read_text(errors="replace")
    assert "\x1b[" in raw
    cell = CellResult(
        cell_id="kvm--xen--portable",
        source="kvm",
        target="xen",
        image="portable",
        checks=[CheckResult("boots", Grade.FAIL, "no init", {"console": raw[-3000:]})],
        stages=[],
    )
    text = format_cell(cell_document(cell, tmp_path))
    assert "\x1b" not in text and "\r" not in text
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)
    tail = [ln for ln in raw[-3000:].replace("\r", "").splitlines() if ln.strip() and "\x1b" not in ln][-1]
    assert tail.strip() in text  # the text itself stays


def test_unobservable_checks_are_shown_apart_never_as_passes(campaign: CampaignResult) -> None:
    """A check no channel of the guest could see: its own JUnit skipped type, its own badge, and
    the heatmap says so instead of a pass rate; the cell keeps the grade of what was seen."""
    cell = next(c for c in campaign.cells if c.grade == Grade.PASS)
    why = "no channel of this guest reports its disks and their content; it has: console"
    cell.checks = [
        CheckResult(ch.check, Grade.UNOBSERVABLE, why, {"channel": "none"}) if ch.check == "disks" else ch
        for ch in cell.checks
    ]
    root = ET.fromstring(render_junit(campaign))
    case = next(
        c
        for s in root.findall("testsuite")
        if s.get("name") == f"{cell.source}->{cell.target}"
        for c in s.findall("testcase")
        if c.get("name") == f"{cell.image}/disks"
    )
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("type") == "unobservable"
    assert skipped.get("message") == f"unobservable: {why}"
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["grade"] == "unobservable" and props["odca"] == "unobservable"
    page = render_html(campaign)
    assert "g-unobservable" in page
    assert cell.grade == Grade.PASS
