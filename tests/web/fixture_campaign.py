"""A generated campaign result (a fake: no workflow ran it) with every shape a report must show.

Built from platform and image traits with the interop rules a real lab hits, so its reasons,
evidence and consoles look like the pipeline's: an EFI guest on a BIOS-only Xen pool (import
fails, every check with the same reason), a VMware PVSCSI guest whose root disk has no driver on
the target (virt-v2v cures it on KVM: a warning; nothing cures it on Xen or Hyper-V: a failure), a
NIC model the target lacks (nic-config maps it: a warning), Hyper-V dropping the OVF annotation (a
failure that the prediction rules missed), raw Xen disks refusing snapshots, one infrastructure
error, skipped cells the source cannot run, and cached cells. Stage records and cell times come
from a simulated schedule on a fixed number of slots, so the timeline has real concurrency.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.model import (
    CHECKS,
    STAGES,
    CampaignResult,
    CellResult,
    CellSummary,
    CheckResult,
    Grade,
    Host,
    Prediction,
    RemediationRecord,
    StageRecord,
)

P, W, F, E, S = Grade.PASS, Grade.WARN, Grade.FAIL, Grade.ERROR, Grade.SKIPPED


@dataclass(frozen=True)
class Plat:
    name: str
    kind: str  # kvm | vsphere | hyperv | xen
    host: str


@dataclass(frozen=True)
class Img:
    name: str
    firmware: str  # bios | efi
    disk_bus: str  # virtio | pvscsi
    nic: str


PLATFORMS = (
    Plat("kvm", "kvm", "kvm-01"),
    Plat("vsphere-8", "vsphere", "esxi8-01"),
    Plat("hyperv", "hyperv", "hv-01"),
    Plat("xen", "xen", "xen-01"),
)
IMAGES = (
    Img("deb12-bios", "bios", "virtio", "virtio"),
    Img("deb12-efi", "efi", "virtio", "e1000"),
    Img("rhel9-pvscsi", "bios", "pvscsi", "vmxnet3"),
)
STAGE_SECONDS = {
    "reserve": (0.2, 1.0),
    "provision": (20, 60),
    "baseline": (10, 30),
    "export": (60, 300),
    "convert": (30, 200),
    "import": (20, 80),
    "boot": (15, 90),
    "verify": (10, 40),
    "lifecycle": (20, 60),
    "cleanup": (5, 15),
    "release": (0.1, 0.5),
}
PVSCSI_ROOT = "root device /dev/sda1 not found: no driver bound to the disk controller 15ad:07c0 (VMware PVSCSI)"


def console_excerpt(cell_id: str, target: Plat, failing: bool, rng: random.Random) -> str:
    """A serial console tail as a guest prints it (kernel timestamps, ANSI colour from systemd)."""
    t = 0.0
    lines = []

    def log(msg: str) -> None:
        nonlocal t
        t += rng.uniform(0.001, 0.4)
        lines.append(f"[{t:12.6f}] {msg}")

    log("Linux version 6.1.0-27-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC")
    log(f"Command line: BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro console=ttyS0 crossvisor.cell={cell_id}")
    log("x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'")
    log(f"DMI: {target.kind} virtual platform, BIOS 1.16.2-debian-1.16.2-1 04/01/2014")
    for i in range(12):
        log(
            f"pci 0000:00:{i:02x}.0: [{rng.choice(['8086', '1af4', '15ad'])}:{rng.randrange(0x1000, 0xFFFF):04x}] type 00 class 0x0{i}0000"
        )
    if failing:
        log("Waiting for root device /dev/sda1...")
        lines.append("\x1b[0;1;31mGave up waiting for root file system device.\x1b[0m  Common problems:")
        lines.append(" - Boot args (cat /proc/cmdline)")
        lines.append(" - Missing modules (cat /proc/modules; ls /dev)")
        lines.append("ALERT!  /dev/sda1 does not exist.  Dropping to a shell!")
        lines.append("(initramfs) ")
    else:
        log("EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.")
        lines.append("\x1b[0;32m  OK  \x1b[0m] Reached target multi-user.target - Multi-User System.")
        lines.append("CV-BOOT ok CV-DISK marker=7f3a9c CV-NIC driver=virtio_net")
    return "\n".join(lines)


def _outcome(src: Plat, tgt: Plat, img: Img, rng: random.Random):
    """(checks, predictions, remediations, remedy, stage that ended the cell or '', its status)."""
    grades = dict.fromkeys(CHECKS, P)
    reasons = dict.fromkeys(CHECKS, "")
    pred = {c: (P, "", "traits: all supported") for c in CHECKS}
    ladder: list[RemediationRecord] = []
    remedy = ""
    ended, ended_status = "", ""
    console_fail = False

    if img.firmware == "efi" and src.kind == "xen":
        reason = f"source cannot run the image (provision): firmware EFI not supported on {src.name}"
        return ({c: (S, reason) for c in CHECKS}, {}, [], "", "provision", "fail", False)
    if src.kind == "hyperv" and tgt.kind == "xen" and img.name.startswith("deb12-bios"):
        reason = f"export: infrastructure error after retries: WinRM connection reset by {src.host} (5 attempts)"
        return ({c: (E, reason) for c in CHECKS}, {}, [], "", "export", "error", False)
    if img.firmware == "efi" and tgt.kind == "xen":
        reason = f"import failed: firmware EFI not supported on {tgt.name}: the pool boots BIOS guests only"
        p = {c: (F, "EFI guest, BIOS-only target", "firmware: target firmware list lacks efi") for c in CHECKS}
        return ({c: (F, reason) for c in CHECKS}, p, [], "", "import", "fail", False)

    if img.disk_bus == "pvscsi" and tgt.kind != "vsphere":
        cured = tgt.kind == "kvm"
        ladder.append(
            RemediationRecord(
                "generic-initramfs",
                "not-cured",
                changed="rebuilt the initramfs with MODULES=most",
                evidence={"modules_added": "0 (vmw_pvscsi not shipped by the cloud kernel)"},
            )
        )
        ladder.append(
            RemediationRecord(
                "virt-v2v",
                "cured" if cured else "failed",
                cured=PVSCSI_ROOT if cured else "",
                changed="converted the disk controller to virtio-scsi and rewrote the initramfs" if cured else "",
                evidence={
                    "output": "[   0.0] Setting up the source: -i ova pkg.ova\n[  42.1] Inspecting the source\n"
                    + ("[ 188.0] Finishing off" if cured else f"virt-v2v: error: no output mode for {tgt.kind}")
                },
            )
        )
        pred["boots"] = (W, "pvscsi has no driver on the target; virt-v2v converts it", "disk_bus: pvscsi -> virt-v2v")
        if cured:
            remedy = "virt-v2v"
            grades["boots"], reasons["boots"] = W, f"{PVSCSI_ROOT}; cured by virt-v2v"
        else:
            console_fail = True
            grades["boots"], reasons["boots"] = F, PVSCSI_ROOT
            if tgt.kind == "xen":
                pred["boots"] = (F, "no virt-v2v output for xen", "disk_bus: pvscsi, no v2v output")
            for c in ("disks", "cpu_memory", "nics", "app"):
                grades[c], reasons[c] = F, "not reached: boots failed"
                # what the rules expect downstream follows their boots prediction
                pred[c] = (F, "boots predicted to fail", pred["boots"][2]) if pred["boots"][0] == F else pred[c]
    if tgt.kind == "hyperv" and img.nic not in ("netvsc",) and grades["nics"] == P:
        grades["nics"], reasons["nics"] = W, f"no driver for {img.nic} on {tgt.name}; nic-config mapped it to netvsc"
        ladder.append(
            RemediationRecord("nic-config", "cured", cured=f"no driver for {img.nic}", changed=f"{img.nic} -> netvsc")
        )
        pred["nics"] = (W, f"{img.nic} not offered by hyperv", "nic_models: map to netvsc")
        remedy = remedy or "nic-config"
    if tgt.kind == "hyperv" and src.kind == "vsphere":
        grades["metadata"] = F
        reasons["metadata"] = "annotation dropped: Hyper-V has no field for the OVF Annotation section (vmw:annotation)"
        # the rules believe the annotation survives: a prediction that misses (a rule to fix)
    if tgt.kind == "xen":
        grades["lifecycle"] = F
        reasons["lifecycle"] = f"snapshot refused: raw disk on {tgt.host} storage has no internal snapshots"
        pred["lifecycle"] = (F, "raw disk format", "disk_format: raw has no snapshots")
    if grades["boots"] == F:
        ended, ended_status = "boot", "fail"
    checks = {c: (grades[c], reasons[c]) for c in CHECKS}
    return checks, pred, ladder, remedy, ended, ended_status, console_fail


def generated_campaign(
    platforms: tuple[Plat, ...] = PLATFORMS,
    images: tuple[Img, ...] = IMAGES,
    *,
    campaign_id: str = "fixture-2026-12",
    name: str = "nightly-interop",
    seed: int = 7,
    slots: int = 4,
    start: str = "2026-11-30T22:00:00+00:00",
    cached: tuple[str, ...] = ("kvm--vsphere-8--deb12-bios",),
) -> CampaignResult:
    """Every ordered pair of distinct platforms x every image (4 x 3 x 3 = 36 cells by default)."""
    rng = random.Random(seed)
    t0 = datetime.fromisoformat(start)
    free = [(t0, i) for i in range(slots)]
    heapq.heapify(free)
    cells = []
    for src in platforms:
        for tgt in platforms:
            if src == tgt:
                continue
            for img in images:
                cid = f"{src.name}--{tgt.name}--{img.name}"
                checks, pred, ladder, remedy, ended, ended_status, console_fail = _outcome(src, tgt, img, rng)
                at, slot = heapq.heappop(free)
                at += timedelta(seconds=rng.uniform(0.5, 3))
                is_cached = cid in cached
                stages, cursor = [], at
                for st in STAGES:
                    if is_cached:
                        break
                    if st == "remediate":  # the ladder's rounds are modelled by the remediation records
                        continue
                    after_end = ended and STAGES.index(st) > STAGES.index(ended)
                    if after_end and st not in ("cleanup", "release"):
                        stages.append(StageRecord(st, "skipped", 0.0, 1, f"{ended} {ended_status}ed", ""))
                        continue
                    lo, hi = STAGE_SECONDS[st]
                    dur = rng.uniform(lo, hi)
                    status, attempts, reason = "ok", 1, ""
                    if st == ended:
                        status, reason = ended_status, checks["boots"][1]
                        attempts = 5 if ended_status == "error" else 1
                        dur *= attempts
                    if st == "convert" and rng.random() < 0.1:
                        attempts = 2  # a transient qemu-img failure, retried
                    stages.append(StageRecord(st, status, round(dur, 3), attempts, reason, cursor.isoformat()))
                    cursor += timedelta(seconds=dur)
                if is_cached:
                    stages = [StageRecord("reserve", "reused", 0.0, 1, "identical result reused", at.isoformat())]
                    cursor = at + timedelta(seconds=0.2)
                evidence_common = {"source_host": src.host, "target_host": tgt.host}
                results = []
                for c in CHECKS:
                    g, reason = checks[c]
                    ev = dict(evidence_common)
                    if c == "boots" and g != S:
                        ev["console"] = console_excerpt(cid, tgt, console_fail, rng)
                        ev["boot_seconds"] = f"{rng.uniform(4, 30):.1f}"
                    if c == "disks" and g == P:
                        ev |= {"marker_before": "7f3a9c", "marker_after": "7f3a9c"}
                    if c == "nics" and g in (P, W):
                        ev |= {
                            "mac_before": "52:54:00:12:34:56",
                            "mac_after": "52:54:00:12:34:56",
                            "driver": "virtio_net",
                        }
                    if g == F and c == "boots":
                        ev["controller"] = "15ad:07c0 VMware PVSCSI"
                    results.append(CheckResult(c, g, reason, ev))
                predictions = [Prediction(c, pg, pr, rule) for c, (pg, pr, rule) in pred.items()]
                fp = f"{rng.getrandbits(128):032x}"
                cells.append(
                    CellResult(
                        cell_id=cid,
                        source=src.name,
                        target=tgt.name,
                        image=img.name,
                        checks=results,
                        stages=stages,
                        source_host=src.host,
                        target_host=tgt.host,
                        fingerprint=fp,
                        cached=is_cached,
                        predictions=predictions,
                        remediations=ladder,
                        remedy=remedy,
                        started_at=at.isoformat(),
                        finished_at=cursor.isoformat(),
                        artifacts={
                            "console.log": f"artifacts/consoles/{cid}.log",
                            "package.ova": f"cache/packages/{fp}.ova",
                        },
                    )
                )
                heapq.heappush(free, (cursor, slot))
    hosts = [
        Host(
            p.host, p.kind, "vsphere" if p.kind == "vsphere" else "libvirt", f"test:///{p.host}", site="lab-a", slots=2
        )
        for p in platforms
    ]
    finished = max(datetime.fromisoformat(c.finished_at) for c in cells)
    summary = [CellSummary(c.cell_id, c.source, c.target, c.image, c.grade, c.cached) for c in cells]
    return CampaignResult(campaign_id, name, cells, hosts, "completed", t0.isoformat(), finished.isoformat(), summary)


def large_campaign(n_platforms: int = 9, n_images: int = 28, **kw) -> CampaignResult:
    """The same rules on many platforms and images: 9 x 8 pairs x 28 images = 2,016 cells."""
    kinds = ("kvm", "vsphere", "hyperv", "xen")
    platforms = tuple(
        Plat(f"{kinds[i % 4]}-{i // 4 + 1}", kinds[i % 4], f"{kinds[i % 4]}-{i:02d}") for i in range(n_platforms)
    )
    images = tuple(
        Img(f"{base.name}-{i // 3 + 1}", base.firmware, base.disk_bus, base.nic)
        for i, base in ((i, IMAGES[i % 3]) for i in range(n_images))
    )
    return generated_campaign(platforms, images, slots=16, cached=(), **kw)


def previous_campaign() -> CampaignResult:
    """Last week's run of the same spec: some of today's failures were passing (new failures),
    some of its failures pass today (fixed)."""
    prev = generated_campaign(campaign_id="fixture-2026-11", seed=3, start="2026-11-23T22:00:00+00:00")
    for cell in prev.cells:
        if cell.cell_id == "vsphere-8--hyperv--deb12-bios":  # Hyper-V metadata used to pass
            for ch in cell.checks:
                if ch.check == "metadata":
                    ch.grade, ch.reason = P, ""
        if cell.cell_id == "vsphere-8--kvm--rhel9-pvscsi":  # before virt-v2v was on the ladder
            for ch in cell.checks:
                if ch.check == "boots":
                    ch.grade, ch.reason = F, PVSCSI_ROOT
            cell.remedy = ""
    return prev
