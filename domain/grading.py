"""Grading: turn what the pipeline observed into a grade per check. Pure.

A real interop failure is a FAIL with a reason and evidence; infrastructure that kept failing is an
ERROR (no verdict on interop); checks that could not be reached are SKIPPED with the reason.
"""

from __future__ import annotations

from domain.model import CHECKS, CheckResult, Grade, Platform
from domain.vm import Hardware

# Stages before the VM leaves the source: a failure there says nothing about the pair.
SOURCE_SIDE_STAGES = ("reserve", "provision", "baseline")


def after_stage_failure(checks: list[str], stage: str, reason: str, evidence: dict[str, str]) -> list[CheckResult]:
    """Grades when the pipeline stopped at ``stage`` with an interop failure."""
    if stage in SOURCE_SIDE_STAGES:
        return [
            CheckResult(
                c,
                Grade.SKIPPED,
                f"source cannot run the image ({stage}): {reason}",
                evidence,
            )
            for c in checks
        ]
    return [CheckResult(c, Grade.FAIL, f"{stage} failed: {reason}", evidence) for c in checks]


def after_infra_error(checks: list[str], stage: str, reason: str) -> list[CheckResult]:
    return [CheckResult(c, Grade.ERROR, f"{stage}: infrastructure error after retries: {reason}") for c in checks]


def expected_nic_model(model: str, target: Platform) -> str:
    """The NIC model a correct import should produce: kept when the target supports it, else the
    target's preferred model (what virt-v2v / vSphere import do)."""
    if model in target.nic_models or not target.nic_models:
        return model
    return target.nic_models[0]


def grade_verify(
    checks: list[str],
    baseline: Hardware,
    imported: Hardware,
    target: Platform,
    booted: bool,
    boot_evidence: str,
    source_marker: str,
    target_marker: str,
    guest_marker: str = "",
) -> list[CheckResult]:
    """Grades for the checks the verify stage decides (all but lifecycle)."""
    out: list[CheckResult] = []
    for check in checks:
        if check == "boots":
            tail = boot_evidence[-400:]
            out.append(
                CheckResult(
                    check,
                    Grade.PASS if booted else Grade.FAIL,
                    "" if booted else "guest did not reach boot marker",
                    {"console_tail": tail},
                )
            )
        elif check == "disks":
            out.append(_grade_disks(baseline, imported, source_marker, target_marker, guest_marker))
        elif check == "cpu_memory":
            ok = baseline.cpus == imported.cpus and baseline.memory_mib == imported.memory_mib
            ev = {
                "before": f"{baseline.cpus} vCPU/{baseline.memory_mib} MiB",
                "after": f"{imported.cpus} vCPU/{imported.memory_mib} MiB",
            }
            out.append(
                CheckResult(
                    check,
                    Grade.PASS if ok else Grade.FAIL,
                    "" if ok else "CPU/memory changed",
                    ev,
                )
            )
        elif check == "nics":
            out.append(_grade_nics(baseline, imported, target))
        elif check == "metadata":
            lost = {k: v for k, v in baseline.metadata.items() if imported.metadata.get(k) != v}
            ev = {"lost": ",".join(sorted(lost)) or "-"}
            out.append(
                CheckResult(
                    check,
                    Grade.FAIL if lost else Grade.PASS,
                    f"metadata lost: {sorted(lost)}" if lost else "",
                    ev,
                )
            )
    return out


def _grade_disks(
    baseline: Hardware, imported: Hardware, src_marker: str, dst_marker: str, guest_marker: str = ""
) -> CheckResult:
    ev = {
        "disks_before": str(len(baseline.disks)),
        "disks_after": str(len(imported.disks)),
        "marker_before": src_marker,
        "marker_after": dst_marker,
    }
    if len(baseline.disks) != len(imported.disks):
        return CheckResult("disks", Grade.FAIL, "disk count changed", ev)
    for i, (a, b) in enumerate(zip(baseline.disks, imported.disks)):
        if a.capacity_bytes and b.capacity_bytes and a.capacity_bytes != b.capacity_bytes:
            ev["capacity"] = f"disk{i}: {a.capacity_bytes} -> {b.capacity_bytes}"
            return CheckResult(
                "disks",
                Grade.FAIL,
                f"disk{i} capacity changed by {b.capacity_bytes - a.capacity_bytes} bytes",
                ev,
            )
    if not src_marker or src_marker != dst_marker:
        return CheckResult("disks", Grade.FAIL, "disk content marker differs after conversion", ev)
    if guest_marker:  # what the booted guest itself read: the disk is attached where it expects
        ev["marker_in_guest"] = guest_marker
        if not guest_marker.startswith(src_marker):
            return CheckResult("disks", Grade.FAIL, "the guest reads different content from its first disk", ev)
    return CheckResult("disks", Grade.PASS, "", ev)


def _grade_nics(baseline: Hardware, imported: Hardware, target: Platform) -> CheckResult:
    before = [n.model for n in baseline.nics]
    after = [n.model for n in imported.nics]
    expected = [expected_nic_model(m, target) for m in before]
    ev = {
        "before": ",".join(before) or "-",
        "after": ",".join(after) or "-",
        "expected": ",".join(expected) or "-",
    }
    if len(before) != len(after):
        return CheckResult("nics", Grade.FAIL, f"NIC count changed {len(before)} -> {len(after)}", ev)
    if after != expected:
        return CheckResult("nics", Grade.FAIL, f"NIC models {after} where {expected} expected", ev)
    mapped = [f"{a}->{b}" for a, b in zip(before, after) if a != b]
    return CheckResult("nics", Grade.PASS, f"mapped {', '.join(mapped)}" if mapped else "", ev)


def merge(checks: list[str], decided: list[CheckResult]) -> list[CheckResult]:
    """One result per requested check, in the campaign's check order; undecided -> SKIPPED."""
    by = {c.check: c for c in decided}
    return [by.get(c, CheckResult(c, Grade.SKIPPED, "not reached")) for c in checks]


def validate_checks(checks: list[str]) -> list[str]:
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {list(CHECKS)}")
    return checks
