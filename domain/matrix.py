"""Campaign matrix expansion: plan -> cells, each with a content fingerprint.

The fingerprint covers everything that decides a cell's result (both platforms, the image, the
checks and the pipeline version), so a rerun or a new campaign with the same spec can reuse a
passed cell instead of redoing it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict

from domain.model import Cell, image_identity
from domain.plan import CampaignPlan

# Bump when stage semantics change so that cached results from the old pipeline are not reused.
PIPELINE_VERSION = "2"  # 2: grades from observed guests (typed stages); 1: from declared traits

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def slug(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")


def cell_id(source: str, target: str, image: str) -> str:
    """The internal id (workflow ids, the result store): ``kvm--esxi-6-5--tiny-bios``."""
    return f"{slug(source)}--{slug(target)}--{slug(image)}"


def human_id(source: str, target: str, image: str) -> str:
    """The one form operators type and see, in the CLI, the web UI and the reports: platform and
    image names as the spec spells them (``kvm:esxi-6.5:tiny-bios``)."""
    return f"{source}:{target}:{image}"


def fingerprint(plan: CampaignPlan, source: str, target: str, image: str) -> str:
    doc = {
        "v": PIPELINE_VERSION,
        "source": asdict(plan.platform(source)),
        "target": asdict(plan.platform(target)),
        "image": image_identity(plan.image(image)),
        "checks": sorted(plan.checks),
        "remediate": list(plan.remediate),  # the ladder decides warn vs fail
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def pairs(plan: CampaignPlan) -> list[tuple[str, str]]:
    if plan.pairs:
        return [(s, t) for s, t in plan.pairs]
    names = [p.name for p in plan.platforms]
    return [(s, t) for s in names for t in names if s != t or plan.include_same_platform]


def expand(plan: CampaignPlan) -> list[Cell]:
    """Every cell of the plan, in a stable order (source, target, image)."""
    cells = []
    for source, target in pairs(plan):
        for image in plan.images:
            cells.append(
                Cell(
                    id=cell_id(source, target, image.name),
                    source=source,
                    target=target,
                    image=image.name,
                    checks=list(plan.checks),
                    fingerprint=fingerprint(plan, source, target, image.name),
                )
            )
    return cells
