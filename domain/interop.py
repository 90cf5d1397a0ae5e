"""Known interop traps, decided before an import is attempted. Pure.

Each trap becomes a precise failure reason (a FAIL grade with evidence), the way the ODCA
proof-of-concept recorded them: hardware family too new for the target, firmware the target
cannot boot, a disk bus the target lacks, NIC models that must be mapped.
"""

from __future__ import annotations

import re

from domain.model import Platform
from domain.vm import Hardware

_VMX = re.compile(r"vmx-(\d+)")


def hardware_family(version: str) -> int:
    m = _VMX.search(version or "")
    return int(m.group(1)) if m else 0


def import_problems(hw: Hardware, target: Platform) -> list[str]:
    """Reasons the target cannot take this VM as described; empty when the import may proceed."""
    problems = []
    src_family, max_family = (
        hardware_family(hw.hardware_version),
        hardware_family(target.hardware_version),
    )
    if src_family and max_family and src_family > max_family:
        problems.append(
            f"hardware family vmx-{src_family} is newer than {target.name} supports (up to vmx-{max_family})"
        )
    if hw.firmware not in target.firmware:
        problems.append(f"firmware {hw.firmware.upper()} not supported on {target.name} (supports {target.firmware})")
    return problems


def nic_map(hw: Hardware, target: Platform) -> dict[str, str]:
    """Source NIC model -> target model: kept when supported, else the target's preferred model."""
    out = {}
    for n in hw.nics:
        if target.nic_models and n.model not in target.nic_models:
            out[n.model] = target.nic_models[0]
    return out
