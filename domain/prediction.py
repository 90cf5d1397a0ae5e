"""Predictions: what the spec's declared traits and the known traps say a move will do. Pure.

They are recorded beside the observed grades and compared with them (``CellResult.mismatches``),
never used instead of them: a prediction that disagrees with what the target reported is a rule or
a declaration that is wrong, and the report shows it.
"""

from __future__ import annotations

import re

from domain import profiles
from domain.model import Grade as G
from domain.model import GuestImage, Platform, Prediction

_VMX = re.compile(r"vmx-(\d+)")


def hardware_family(version: str) -> int:
    m = _VMX.search(version or "")
    return int(m.group(1)) if m else 0


def predict(
    checks: list[str], source: Platform, target: Platform, image: GuestImage, firmware: str = ""
) -> list[Prediction]:
    """One prediction per check. ``firmware`` is the image's real firmware when known (a built image),
    else the declared one."""
    fw = firmware or image.firmware
    out: dict[str, Prediction] = {}

    def say(check: str, grade: G, reason: str, rule: str) -> None:
        if check in checks and check not in out:
            out[check] = Prediction(check, grade, reason, rule)

    src_family, max_family = hardware_family(source.hardware_version), hardware_family(target.hardware_version)
    if src_family and max_family and src_family > max_family:
        reason = f"hardware family vmx-{src_family} is newer than {target.name} supports (up to vmx-{max_family})"
        for c in checks:
            say(c, G.FAIL, reason, "declared hardware_version")
    if fw not in target.firmware:
        reason = f"{fw.upper()} firmware is not among {target.name}'s declared firmware {target.firmware}"
        for c in checks:
            if c not in ("metadata", "lifecycle"):
                say(c, G.FAIL, reason, "declared firmware")
    try:
        src_prof = profiles.for_platform(source.kind, source.profile)
        tgt_prof = profiles.for_platform(target.kind, target.profile)
    except profiles.UnknownProfile:
        src_prof = tgt_prof = None
    if (
        src_prof
        and tgt_prof
        and image.builtin == "legacy-bios"
        and src_prof.disk_controller != tgt_prof.disk_controller
    ):
        say(
            "boots",
            G.FAIL,
            f"an initramfs built for {src_prof.disk_controller} on the source has no {tgt_prof.disk_controller} driver",
            "trap: MODULES=dep initramfs",
        )
    model = image.nic_model if not image.builtin or src_prof is None else src_prof.nic_model
    if target.nic_models and model not in target.nic_models:
        say(
            "nics",
            G.PASS,
            f"NIC model {model} not offered by {target.name}; mapped to {target.nic_models[0]}",
            "declared nic_models",
        )
    for c in checks:
        say(c, G.PASS, "nothing declared stands in the way", "default")
    return [out[c] for c in checks]
