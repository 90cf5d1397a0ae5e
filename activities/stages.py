"""The stage activity: one call runs one stage of one cell against real drivers.

Outcome contract (what the workflow relies on):
- returns ``StageOutput(status="ok"|"reused")`` on success, with outputs for later stages;
- returns ``StageOutput(status="fail")`` for a real interop failure (``InteropFailure``): a result
  with evidence, never retried;
- raises for infrastructure faults: Temporal retries them with the campaign's retry policy.
Every side effect is keyed by campaign/cell ids (VM names, work dirs) or content hashes (cache),
so a retried attempt finds what an earlier attempt made.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.artifacts import ArtifactCache, key, sha256_file
from activities.execlog import ExecutionLog
from crossvisor.core import metrics
from crossvisor.core.config import Settings
from domain import grading, interop
from domain.messages import StageInput, StageOutput
from domain.model import CheckResult, Grade, Host
from domain.ovf import QEMU_FORMAT, build_ovf, hardware_from_descriptor, ovf_disk_format
from domain.vm import DiskSpec, ExportedVm, Hardware, NicSpec, VmSpec
from drivers import diskconv, ova
from drivers.base import Driver, InteropFailure
from drivers.factory import open_driver
from drivers.packaging import read_descriptor
from inventory.factory import open_inventory

HEARTBEAT_EVERY_S = 2.0  # well inside the workflow's heartbeat timeout (10 s)
MARKER_OFFSET = 1 << 20  # 1 MiB into the first disk: past any partition table a guest tool rewrites


def vm_name(campaign_id: str, cell_id: str, role: str) -> str:
    """Deterministic, short, libvirt/vSphere-safe VM name; the prefix identifies the campaign for the sweeper."""
    return f"{vm_prefix(campaign_id)}{hashlib.sha1(cell_id.encode()).hexdigest()[:10]}-{role}"


def vm_prefix(campaign_id: str) -> str:
    return f"cv-{hashlib.sha1(campaign_id.encode()).hexdigest()[:8]}-"


def disk_marker(source_platform: str, image: str) -> bytes:
    """Content written into the source disk and looked for after conversion and import."""
    return hashlib.sha256(f"crossvisor-marker:{source_platform}:{image}".encode()).digest()


def hw_json(hw: Hardware) -> str:
    return json.dumps(dataclasses.asdict(hw), sort_keys=True)


def hw_from_json(text: str) -> Hardware:
    d = json.loads(text)
    d["disks"] = [DiskSpec(**x) for x in d["disks"]]
    d["nics"] = [NicSpec(**x) for x in d["nics"]]
    return Hardware(**d)


class StageActivities:
    def __init__(
        self,
        settings: Settings,
        tiny_guest: Callable[[], tuple[str, str]] | None = None,
    ):
        self.settings = settings
        self.cache = ArtifactCache(settings.cache)
        self.execlog = ExecutionLog(settings.home / "executions.jsonl")
        self._tiny_guest = tiny_guest

    # -- plumbing -----------------------------------------------------------------------------------
    def _driver(self, host: Host) -> Driver:
        return open_driver(host, self.settings.home / "drivers")

    def _workdir(self, inp: StageInput) -> Path:
        d = self.settings.artifacts / vm_prefix(inp.campaign_id).rstrip("-") / inp.cell.id
        d.mkdir(parents=True, exist_ok=True)
        return d

    @activity.defn(name="run_stage")
    def run_stage(self, inp: StageInput) -> StageOutput:
        info = activity.info()
        log = structlog.get_logger("crossvisor").bind(
            campaign=inp.campaign_id,
            cell=inp.cell.id,
            stage=inp.stage,
            attempt=info.attempt,
            source_host=inp.source_host.name,
            target_host=inp.target_host.name,
        )
        if info.attempt > 1:
            metrics.STAGE_RETRIES.labels(
                inp.stage,
                info.heartbeat_details[0] if info.heartbeat_details else "retry",
            ).inc()
        kind = inp.target.kind if inp.stage in ("import", "boot", "verify", "lifecycle") else inp.source.kind
        self.execlog.record(inp.campaign_id, inp.cell.id, inp.stage, info.attempt, "start")
        log.info("stage.start")
        t0 = time.monotonic()
        outcome = "error"
        beating = _Heartbeat(HEARTBEAT_EVERY_S)
        try:
            out = getattr(self, f"_stage_{inp.stage}")(inp, log)
            outcome = out.status
            return out
        except InteropFailure as f:
            outcome = "fail"
            log.warning("stage.interop_failure", reason=f.reason)
            return StageOutput(
                status="fail",
                reason=f.reason,
                evidence={k: str(v)[:4000] for k, v in f.evidence.items()},
            )
        except Exception as e:
            log.warning("stage.infra_fault", error=f"{type(e).__name__}: {e}")
            # counted here because only this attempt knows the cause; Temporal retries it
            metrics.STAGE_RETRIES.labels(inp.stage, type(e).__name__).inc()
            raise
        finally:
            beating.stop()
            dt = time.monotonic() - t0
            metrics.STAGE_DURATION.labels(inp.stage, kind, outcome).observe(dt)
            metrics.HOST_BUSY_SECONDS.labels(kind).inc(dt)
            self.execlog.record(
                inp.campaign_id,
                inp.cell.id,
                inp.stage,
                info.attempt,
                "end",
                outcome=outcome,
            )
            log.info("stage.end", outcome=outcome, seconds=round(dt, 3))

    def _heartbeat(self, what: str) -> None:
        if activity.in_activity():
            activity.heartbeat(what)

    # -- stages -------------------------------------------------------------------------------------
    def _stage_reserve(self, inp: StageInput, log) -> StageOutput:
        inv = open_inventory(inp.inventory, self.settings.home)
        owner = f"{inp.campaign_id}/{inp.cell.id}"
        held = []  # host keys (inventory_id): leases and health are stored under the key, not the name
        for host in (inp.source_host, inp.target_host):
            hkey = host.inventory_id or host.name
            if hkey in held:
                continue
            if not inv.acquire_lease(hkey, owner, note=f"crossvisor cell {inp.cell.id}"):
                for h in held:
                    inv.release_lease(h, owner)
                # infrastructure contention, not interop: retried with backoff until the host frees
                raise RuntimeError(f"host {host.name} is leased by another owner: {inv.leases().get(hkey, '?')}")
            held.append(hkey)
        for host in (inp.source_host, inp.target_host):
            hkey = host.inventory_id or host.name
            try:
                self._driver(host).close()  # health: the endpoint answers
                inv.report_health(hkey, True)
            except Exception as e:
                inv.report_health(hkey, False, str(e))
                metrics.HEALTH_FAILURES.labels(host.kind).inc()
                for h in held:
                    inv.release_lease(h, owner)
                if inv.is_unhealthy(hkey):
                    metrics.HOSTS_AVAILABLE.labels(host.kind, "unhealthy").inc()
                    metrics.HOSTS_AVAILABLE.labels(host.kind, "healthy").dec()
                    # no retry can fix this cell on this host: the campaign reschedules it elsewhere
                    raise ApplicationError(
                        f"host {host.name} marked unhealthy: {e}", host.name, type="HostUnhealthy", non_retryable=True
                    ) from None
                raise
        metrics.HOST_LEASES.labels(inp.source.kind).inc()
        metrics.HOST_LEASES.labels(inp.target.kind).inc()
        return StageOutput("ok", outputs={"leases": ",".join(held)})

    def _guest_boot(self, host: Host) -> tuple[str, str, str]:
        """Direct-kernel-boot pieces for real QEMU hosts (the test driver boots nothing)."""
        if not host.endpoint.startswith("qemu") or self._tiny_guest is None:
            return "", "", ""
        kernel, initrd = self._tiny_guest()
        return (
            kernel,
            initrd,
            f"console=ttyS0 cv.marker_offset={MARKER_OFFSET} panic=-1",
        )

    def _stage_provision(self, inp: StageInput, log) -> StageOutput:
        img = inp.image
        wd = self._workdir(inp)
        disk = wd / "source-disk0.qcow2"
        if not disk.exists():
            tmp = wd / "source-disk0.qcow2.tmp"
            if img.source:
                diskconv.convert(img.source, _fmt_of(img.source), tmp, "qcow2")
            else:
                diskconv.create(tmp, "qcow2", img.disk_mib * 1024 * 1024)
            diskconv.write_marker(tmp, "qcow2", MARKER_OFFSET, disk_marker(inp.source.name, img.name))
            tmp.rename(disk)
        kernel, initrd, cmdline = self._guest_boot(inp.source_host)
        spec = VmSpec(
            name=vm_name(inp.campaign_id, inp.cell.id, "src"),
            cpus=img.cpus,
            memory_mib=img.memory_mib,
            # SCSI test images use the paravirtual controller every platform here has a driver for
            disks=[
                DiskSpec(
                    str(disk),
                    "qcow2",
                    "scsi:pvscsi" if img.disk_bus == "scsi" else img.disk_bus,
                    img.disk_mib * 1024 * 1024,
                )
            ],
            nics=[NicSpec(img.nic_model)],
            firmware=img.firmware,
            hardware_version=inp.source.hardware_version,
            metadata={
                "crossvisor.image": img.name,
                "crossvisor.os": img.os,
                "owner": "interop-lab",
            },
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
        )
        if img.firmware not in inp.source.firmware:
            raise InteropFailure(
                f"{inp.source.name} cannot boot {img.firmware.upper()} guests",
                {"firmware": img.firmware},
            )
        drv = self._driver(inp.source_host)
        try:
            hw = drv.provision(spec)
        finally:
            drv.close()
        return StageOutput("ok", outputs={"source_vm": spec.name, "baseline_hw": hw_json(hw)})

    def _stage_baseline(self, inp: StageInput, log) -> StageOutput:
        name = inp.context["source_vm"]
        drv = self._driver(inp.source_host)
        try:
            drv.power_on(name)
            evidence = drv.guest_evidence(name, timeout_s=120)
            booted = drv.is_booted(name, evidence)
            drv.power_off(name)
            hw = drv.inspect(name)
            marker = drv.read_disk(name, 0, MARKER_OFFSET, 32).hex() if booted else ""
        finally:
            drv.close()
        if not booted:
            raise InteropFailure(
                "source guest did not boot on its own platform",
                {"console_tail": evidence[-2000:]},
            )
        return StageOutput(
            "ok",
            outputs={"baseline_hw": hw_json(hw), "source_marker": marker},
            evidence={"console_tail": evidence[-1000:]},
        )

    def _stage_export(self, inp: StageInput, log) -> StageOutput:
        # Same source platform + image + pipeline => same package: reuse it across cells and campaigns.
        k = key(
            "export",
            inp.source.name,
            inp.source.kind,
            inp.source.hardware_version,
            dataclasses.asdict(inp.image),
            inp.export_format,
        )
        with self.cache.locked(k) as d:
            entry = self.cache.lookup(k)
            status = "reused"
            if entry is None:
                status = "ok"
                for f in d.iterdir():
                    if f.name not in (".lock",):
                        shutil.rmtree(f) if f.is_dir() else f.unlink()
                drv = self._driver(inp.source_host)
                try:
                    exported = drv.export(inp.context["source_vm"], d)
                finally:
                    drv.close()
                pkg = Path(exported.package)
                entry = self.cache.commit(
                    k,
                    [
                        p
                        for p in d.rglob("*")
                        if p.is_file() and p.name not in (".lock", "manifest.json", "manifest.json.tmp")
                    ],
                    {"package": str(pkg.relative_to(d))},
                )
        pkg = d / entry["meta"]["package"]
        return StageOutput(
            status,
            outputs={"package": str(pkg), "package_sha256": sha256_file(pkg)},
            evidence={"package": pkg.name},
        )

    def _stage_convert(self, inp: StageInput, log) -> StageOutput:
        pkg = Path(inp.context["package"])
        fmt = inp.target.disk_format
        # vCenter imports only streamOptimized VMDKs through an OVF lease
        subformat = "streamOptimized" if fmt == "vmdk" and inp.target.driver == "vsphere" else ""
        k = key("convert", inp.context["package_sha256"], fmt, subformat)
        with self.cache.locked(k) as d:
            entry = self.cache.lookup(k)
            if entry is not None:
                return StageOutput(
                    "reused",
                    outputs={
                        "converted": json.dumps(entry["meta"]["disks"]),
                        "descriptor": str(d / "descriptor.ovf"),
                    },
                )
            extract = d / "extract"
            shutil.rmtree(extract, ignore_errors=True)
            extract.mkdir()
            # verifies the manifest: a corrupt package is an interop failure with a precise reason
            if pkg.suffix == ".ova":
                desc, files = ova.read_ova(pkg, extract)
                (d / "descriptor.ovf").write_text(_member_text(pkg, ".ovf"))
            else:
                desc, files = ova.read_ovf_dir(pkg)
                shutil.copy(pkg, d / "descriptor.ovf")
            disks, outs = [], []
            for i, disk in enumerate(desc.disks):
                src = files[disk.file_href]
                src_fmt = QEMU_FORMAT[disk.format]
                dst = d / f"disk{i}.{_ext(fmt)}"
                self._heartbeat(f"convert disk{i}")
                res = diskconv.convert(
                    src,
                    src_fmt,
                    dst,
                    fmt,
                    subformat=subformat,
                    progress=lambda p: self._heartbeat(f"convert {p:.0f}%"),
                )
                metrics.CONVERSION_BYTES.labels(src_fmt, fmt).inc(res.bytes)
                metrics.CONVERSION_SECONDS.labels(src_fmt, fmt).inc(res.seconds)
                disks.append(
                    {
                        "path": str(dst),
                        "format": fmt,
                        "bus": f"{disk.controller}:{disk.controller_subtype}"
                        if disk.controller_subtype
                        else disk.controller,
                        "capacity_bytes": disk.capacity_bytes,
                    }
                )
                outs.append(dst)
            shutil.rmtree(extract, ignore_errors=True)
            self.cache.commit(k, outs + [d / "descriptor.ovf"], {"disks": disks})
        return StageOutput(
            "ok",
            outputs={
                "converted": json.dumps(disks),
                "descriptor": str(d / "descriptor.ovf"),
            },
        )

    def _stage_import(self, inp: StageInput, log) -> StageOutput:
        name = vm_name(inp.campaign_id, inp.cell.id, "tgt")
        desc = read_descriptor(inp.context["descriptor"])
        converted = json.loads(inp.context["converted"])
        described = hardware_from_descriptor(
            desc, [d["path"] for d in converted], converted[0]["format"] if converted else "qcow2"
        )
        problems = interop.import_problems(described, inp.target)
        if problems:
            raise InteropFailure(
                "; ".join(problems),
                {"hardware_version": described.hardware_version, "firmware": described.firmware},
            )
        # The target gets its own package: the converted disks (copied: booting the VM must not
        # alter the shared cached conversion) under the descriptor's hrefs, with a fresh manifest.
        # Every driver imports the same way from it (libvirt defines, vSphere uploads via NFC).
        pkgdir = self._workdir(inp) / "import"
        files = []
        for i, (disk, conv) in enumerate(zip(desc.disks, converted)):
            disk.file_href = f"{name}-disk{i}.{_ext(conv['format'])}"
            disk.format = ovf_disk_format(conv["format"])
            files.append(Path(conv["path"]))
        staged = pkgdir / "staged"
        staged.mkdir(parents=True, exist_ok=True)
        named = []
        for f, disk in zip(files, desc.disks):
            dst = staged / disk.file_href
            if not dst.exists():
                shutil.copyfile(f, staged / f"{disk.file_href}.tmp")
                (staged / f"{disk.file_href}.tmp").rename(dst)
            named.append(dst)
        ovf_path = ova.write_ovf_dir(build_ovf(desc), named, pkgdir, name=name)
        disks = [
            DiskSpec(str(pkgdir / d.file_href), c["format"], _bus(c["bus"]), c["capacity_bytes"])
            for d, c in zip(desc.disks, converted)
        ]
        shutil.rmtree(staged, ignore_errors=True)
        kernel, initrd, cmdline = self._guest_boot(inp.target_host)
        package = ExportedVm(
            package=str(ovf_path),
            disks=disks,
            nic_map=interop.nic_map(described, inp.target),
            boot={"kernel": kernel, "initrd": initrd, "cmdline": cmdline} if kernel else {},
        )
        drv = self._driver(inp.target_host)
        try:
            hw = drv.import_vm(package, name)
        finally:
            drv.close()
        return StageOutput("ok", outputs={"target_vm": name, "imported_hw": hw_json(hw)})

    def _stage_boot(self, inp: StageInput, log) -> StageOutput:
        name = inp.context["target_vm"]
        drv = self._driver(inp.target_host)
        try:
            drv.power_on(name)
            evidence = drv.guest_evidence(name, timeout_s=120)
            booted = drv.is_booted(name, evidence)
        finally:
            drv.close()
        return StageOutput(
            "ok",
            outputs={
                "booted": "1" if booted else "",
                "boot_evidence": evidence[-3000:],
            },
        )

    def _stage_verify(self, inp: StageInput, log) -> StageOutput:
        name = inp.context["target_vm"]
        drv = self._driver(inp.target_host)
        try:
            imported = drv.inspect(name)
            target_marker = drv.read_disk(name, 0, MARKER_OFFSET, 32).hex() if imported.disks else ""
        finally:
            drv.close()
        baseline = hw_from_json(inp.context["baseline_hw"])
        checks = grading.grade_verify(
            [c for c in inp.cell.checks if c != "lifecycle"],
            baseline,
            imported,
            inp.target,
            booted=bool(inp.context.get("booted")),
            boot_evidence=inp.context.get("boot_evidence", ""),
            source_marker=inp.context.get("source_marker", ""),
            target_marker=target_marker,
            guest_marker=_guest_marker(inp.context.get("boot_evidence", "")),
        )
        return StageOutput("ok", checks=checks, outputs={"imported_hw": hw_json(imported)})

    def _stage_lifecycle(self, inp: StageInput, log) -> StageOutput:
        if "lifecycle" not in inp.cell.checks:
            return StageOutput("ok")
        name = inp.context["target_vm"]
        drv = self._driver(inp.target_host)
        steps = []
        try:
            for step, op in (
                ("power_off", lambda: drv.power_off(name)),
                ("snapshot", lambda: drv.snapshot(name, "crossvisor-lifecycle")),
                ("power_on", lambda: drv.power_on(name)),
                ("power_off_again", lambda: drv.power_off(name)),
            ):
                try:
                    op()
                    steps.append(f"{step}:ok")
                except InteropFailure as f:
                    steps.append(f"{step}:fail")
                    return StageOutput(
                        "ok",
                        checks=[
                            CheckResult(
                                "lifecycle",
                                Grade.FAIL,
                                f"{step}: {f.reason}",
                                {"steps": " ".join(steps)},
                            )
                        ],
                    )
        finally:
            drv.close()
        return StageOutput(
            "ok",
            checks=[CheckResult("lifecycle", Grade.PASS, "", {"steps": " ".join(steps)})],
        )

    def _stage_cleanup(self, inp: StageInput, log) -> StageOutput:
        for host, role in ((inp.source_host, "src"), (inp.target_host, "tgt")):
            drv = self._driver(host)
            try:
                drv.destroy(vm_name(inp.campaign_id, inp.cell.id, role))
            finally:
                drv.close()
        shutil.rmtree(self._workdir(inp), ignore_errors=True)
        return StageOutput("ok")

    def _stage_release(self, inp: StageInput, log) -> StageOutput:
        inv = open_inventory(inp.inventory, self.settings.home)
        owner = f"{inp.campaign_id}/{inp.cell.id}"
        for host in {h.inventory_id or h.name for h in (inp.source_host, inp.target_host)}:
            inv.release_lease(host, owner)
        metrics.HOST_LEASES.labels(inp.source.kind).dec()
        metrics.HOST_LEASES.labels(inp.target.kind).dec()
        return StageOutput("ok")


def _member_text(pkg: Path, suffix: str) -> str:
    import tarfile

    with tarfile.open(pkg) as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith(suffix))
        f = tar.extractfile(m)
        assert f is not None
        return f.read().decode()


def _ext(fmt: str) -> str:
    return {"vpc": "vhd"}.get(fmt, fmt)


def _fmt_of(path: str) -> str:
    return {".vhd": "vpc", ".img": "raw"}.get(Path(path).suffix, Path(path).suffix.lstrip(".") or "raw")


def _bus(controller: str) -> str:
    """OVF controller ("scsi:pvscsi", "ide", ...) -> DiskSpec bus; the controller model rides along."""
    return controller if controller.partition(":")[0] in ("scsi", "ide", "sata") else "virtio"


def _guest_marker(console: str) -> str:
    """The content marker as the booted guest itself read it from its first disk (real guests only)."""
    if "CV-DISK" not in console:
        return ""
    from drivers.guest_images import parse_boot_evidence

    return parse_boot_evidence(console).get("disk_marker_hex") or ""


class _Heartbeat:
    """Heartbeats from a side thread while a stage blocks in a driver call.

    Without it Temporal notices a dead worker only when the stage's start-to-close timeout ends
    (hours for an export); with it, within the heartbeat timeout, and the stage is retried.
    """

    def __init__(self, every_s: float):
        self._stop = threading.Event()
        if not activity.in_activity():
            return
        ctx = contextvars.copy_context()  # the activity context lives in contextvars
        self._thread = threading.Thread(target=ctx.run, args=(self._loop, every_s), daemon=True)
        self._thread.start()

    def _loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            activity.heartbeat()

    def stop(self) -> None:
        self._stop.set()
