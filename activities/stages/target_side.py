"""boot, verify, lifecycle: what the target and the guest on it report after the move."""

from __future__ import annotations

import gzip

from temporalio import activity

from activities.stages import guest
from activities.stages.base import Stage, stands_in
from activities.stages.source_side import disk_marker
from crossvisor.core.errors import BadInput, InteropFailure
from domain import file_manifest, grading, profiles
from domain.model import CheckResult, Grade
from domain.stage_io import BootOutput, GuestObservation, LifecycleOutput, StageCall, VerifyOutput
from domain.vm import MARKER_OFFSET


def _target_vm(call: StageCall) -> str:
    imp = call.context.import_
    if imp is None or not imp.target_vm:
        raise BadInput("this stage needs an imported target VM")
    return imp.target_vm


class Boot(Stage):
    name = "boot"

    @activity.defn(name="boot")
    def run(self, call: StageCall) -> BootOutput:
        return self.instrumented(call, BootOutput, lambda log: self._boot(call))

    def _boot(self, call: StageCall) -> BootOutput:
        name = _target_vm(call)
        c = call.cell
        prof = profiles.for_platform(c.target.kind, c.target.profile)
        imported = call.context.import_.hardware if call.context.import_ else None
        if imported is not None and imported.firmware == "efi" and not prof.efi_boots and stands_in(c.target_host):
            # the stand-in's limit, not the move's: grading it would blame the guest for OVMF
            note = (
                f"the stand-in for {prof.stands_in_for} cannot boot EFI from its disk controller (Debian's OVMF has "
                "no driver for it; the real hypervisor's firmware has)"
            )
            return BootOutput(guest=GuestObservation(observed=False, note=note), power_state=imported.power_state)
        drv = self.env.driver(c.target_host)
        try:
            seen, app, state = guest.boot_and_observe(
                drv,
                name,
                self.env.artifact_path(call.cell, "target-console.log"),
                self.env,
                self.heartbeat,
                c.image,
                c.target_host,
            )
        finally:
            drv.close()
        # not a stage failure: a guest that did not boot is an observation the verify stage grades
        return BootOutput(guest=seen, app=app, power_state=state)


class Verify(Stage):
    name = "verify"

    @activity.defn(name="verify")
    def run(self, call: StageCall) -> VerifyOutput:
        return self.instrumented(call, VerifyOutput, lambda log: self._verify(call))

    def _verify(self, call: StageCall) -> VerifyOutput:
        ctx = call.context
        if ctx.baseline is None or ctx.boot is None:
            raise BadInput("verify needs the baseline and boot observations")
        name = _target_vm(call)
        drv = self.env.driver(call.cell.target_host)
        try:
            target_hw = drv.inspect(name)
            # no marker in a clone of a template (the source VM is the host's clone: nothing was written)
            marker = "" if call.cell.image.template else disk_marker(call.cell.source.name, call.cell.image.name).hex()
            # a target whose guest crossvisor cannot see: read the marker from its storage instead
            unseen = not ctx.boot.guest.observed and marker
            marker_on_target = drv.read_disk(name, 0, MARKER_OFFSET, 32).hex() if unseen else ""
        finally:
            drv.close()
        checks = grading.grade_observed(
            [c for c in call.cell.cell.checks if c != "lifecycle"],
            grading.Observed(
                source_hw=ctx.baseline.hardware,
                source_guest=ctx.baseline.guest,
                source_app=ctx.baseline.app,
                marker=marker,
                target_hw=target_hw,
                target_guest=ctx.boot.guest,
                target_app=ctx.boot.app,
                target_power=ctx.boot.power_state,
                marker_on_target=marker_on_target,
                import_evidence=ctx.import_.evidence if ctx.import_ else {},
                files=self._files(ctx.baseline.guest, ctx.boot.guest),
            ),
        )
        return VerifyOutput(hardware=target_hw, checks=checks)

    def _files(self, source: GuestObservation, target: GuestObservation) -> file_manifest.ManifestDiff | None:
        """Both sides' manifests of the guest's files, compared; None unless both were taken and
        this worker can read them (they are in CROSSVISOR_HOME, which a remote site's worker may
        not share: then the files are not compared, and ``disks`` says nothing of them)."""
        if not source.manifest_artifact or not target.manifest_artifact:
            return None
        home = self.env.settings.home
        try:
            return file_manifest.compare(
                file_manifest.read((home / source.manifest_artifact).read_bytes()),
                file_manifest.read((home / target.manifest_artifact).read_bytes()),
            )
        except (OSError, EOFError, gzip.BadGzipFile):
            return None


class Lifecycle(Stage):
    name = "lifecycle"

    @activity.defn(name="lifecycle")
    def run(self, call: StageCall) -> LifecycleOutput:
        return self.instrumented(call, LifecycleOutput, lambda log: self._lifecycle(call))

    def _lifecycle(self, call: StageCall) -> LifecycleOutput:
        if "lifecycle" not in call.cell.cell.checks:
            return LifecycleOutput()
        name = _target_vm(call)
        drv = self.env.driver(call.cell.target_host)
        steps: list[str] = []
        try:
            for step, op in (
                ("power_off", lambda: drv.power_off(name)),
                ("snapshot", lambda: drv.snapshot(name, "crossvisor-lifecycle")),
                ("power_on", lambda: drv.power_on(name)),
                ("running", lambda: _require_running(drv, name)),
                # hard: the guest is mid-boot, its ACPI handling not up yet; the boot was graded already
                ("power_off_again", lambda: drv.power_off(name, hard=True)),
            ):
                try:
                    op()
                    steps.append(f"{step}:ok")
                except InteropFailure as f:
                    steps.append(f"{step}:fail")
                    check = CheckResult(
                        "lifecycle", Grade.FAIL, f"{step}: {f.reason}", {"steps": " ".join(steps), **f.evidence}
                    )
                    return LifecycleOutput(steps=steps, checks=[check])
        finally:
            drv.close()
        return LifecycleOutput(
            steps=steps, checks=[CheckResult("lifecycle", Grade.PASS, "", {"steps": " ".join(steps)})]
        )


def _require_running(drv, name: str) -> None:
    state = drv.inspect(name).power_state
    if state != "on":
        raise InteropFailure(f"the target reports the VM {state} right after power-on", {"power_state": state})
