"""``run_stage``: the one activity cells used before typed stages (replay sets v1-v3).

A cell that started on that code replays through ``workflows/cell_v3.py`` and keeps calling
``run_stage`` with a string-keyed context. This adapter rebuilds the typed context from those
strings, runs today's stage body, and hands the output back in the old shape, so such a cell
finishes on the new worker. Remove with ``workflows/cell_v3.py``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from temporalio import activity
from temporalio.converter import value_to_type

from activities.stages.base import Stage, StageEnv
from domain.messages import CellInput, StageInput, StageOutput
from domain.model import RetryPolicySpec
from domain.stage_io import (
    BaselineOutput,
    BootOutput,
    CellContext,
    ConvertedDisk,
    ConvertOutput,
    ExportOutput,
    GuestObservation,
    ImportOutput,
    ProvisionOutput,
    StageCall,
)
from domain.vm import Hardware

UNOBSERVED = GuestObservation(observed=False, note="the cell started before guests were observed")


def _hw(text: str) -> Hardware | None:
    return value_to_type(Hardware, json.loads(text)) if text else None


def _json(hw: Hardware | None) -> str:
    return json.dumps(dataclasses.asdict(hw), sort_keys=True) if hw is not None else ""


def context_from_strings(d: dict[str, str]) -> CellContext:
    hw = _hw(d.get("baseline_hw", ""))
    ctx = CellContext()
    if "source_vm" in d:
        ctx.provision = ProvisionOutput(source_vm=d["source_vm"], hardware=hw)
    if hw is not None:
        ctx.baseline = BaselineOutput(hardware=hw, guest=UNOBSERVED)
    if "package" in d:
        ctx.export = ExportOutput(package=d["package"], package_sha256=d.get("package_sha256", ""))
    if "converted" in d:
        disks = [
            ConvertedDisk(x["path"], x["format"], x.get("bus", ""), x.get("capacity_bytes", 0))
            for x in json.loads(d["converted"])
        ]
        ctx.convert = ConvertOutput(disks=disks, descriptor=d.get("descriptor", ""))
    if "target_vm" in d:
        ctx.import_ = ImportOutput(target_vm=d["target_vm"], hardware=_hw(d.get("imported_hw", "")))
    if "boot_evidence" in d:
        ctx.boot = BootOutput(guest=UNOBSERVED)
    return ctx


def strings_from_output(stage: str, out) -> dict[str, str]:
    if stage == "provision":
        return {"source_vm": out.source_vm, "baseline_hw": _json(out.hardware)} if out.source_vm else {}
    if stage == "baseline":
        return {"baseline_hw": _json(out.hardware), "source_marker": ""}
    if stage == "export":
        return {"package": out.package, "package_sha256": out.package_sha256}
    if stage == "convert":
        return {
            "converted": json.dumps(
                [
                    {"path": x.path, "format": x.format, "bus": x.controller, "capacity_bytes": x.capacity_bytes}
                    for x in out.disks
                ]
            ),
            "descriptor": out.descriptor,
        }
    if stage == "import":
        return {"target_vm": out.target_vm, "imported_hw": _json(out.hardware)}
    if stage == "boot":
        return {"booted": "1" if out.guest.reached_init else "", "boot_evidence": out.guest.console_excerpt[-3000:]}
    if stage == "verify":
        return {"imported_hw": _json(out.hardware)}
    return {}


class LegacyRunStage:
    def __init__(self, env: StageEnv, stage_activities: Mapping[str, type[Stage]]):
        self.env = env
        self.stage_activities = stage_activities  # the registry (activities/stages/__init__.py)

    @activity.defn(name="run_stage")
    def run_stage(self, inp: StageInput) -> StageOutput:
        cell = CellInput(
            campaign_id=inp.campaign_id,
            cell=inp.cell,
            source=inp.source,
            target=inp.target,
            image=inp.image,
            source_host=inp.source_host,
            target_host=inp.target_host,
            inventory=inp.inventory,
            retry=RetryPolicySpec(),
            export_format=inp.export_format,
        )
        out = self.stage_activities[inp.stage](self.env).run(StageCall(cell, context_from_strings(inp.context)))
        return StageOutput(
            status=out.status,
            reason=out.reason,
            evidence=out.evidence,
            outputs=strings_from_output(inp.stage, out) if out.status != "fail" else {},
            checks=out.checks,
        )
