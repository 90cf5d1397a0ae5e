"""One module per stage (or small group); this registry maps the stage table to their activities.

hosts.py        reserve, release     host leases and health
source_side.py  provision, baseline, export
convert.py      convert
import_vm.py    import
target_side.py  boot, verify, lifecycle
cleanup.py      cleanup
legacy.py       run_stage            cells started before typed stages (replay set v3 and older)
"""

from __future__ import annotations

from activities.stages.base import Stage, StageEnv
from activities.stages.cleanup import Cleanup
from activities.stages.convert import Convert
from activities.stages.hosts import Release, Reserve
from activities.stages.import_vm import Import
from activities.stages.remediate import Remediate
from activities.stages.source_side import Baseline, Export, Provision
from activities.stages.target_side import Boot, Lifecycle, Verify
from domain import stages

STAGE_ACTIVITIES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (
        Reserve,
        Provision,
        Baseline,
        Export,
        Convert,
        Import,
        Boot,
        Verify,
        Lifecycle,
        Remediate,
        Cleanup,
        Release,
    )
}
if set(STAGE_ACTIVITIES) != set(stages.NAMES):  # the table and the bodies must not drift apart
    raise RuntimeError(f"stage table {stages.NAMES} and activities {sorted(STAGE_ACTIVITIES)} differ")


def stage_activities(env: StageEnv) -> list:
    """Every stage activity bound to ``env``, for a worker to register."""
    from activities.stages.legacy import LegacyRunStage

    return [cls(env).run for cls in STAGE_ACTIVITIES.values()] + [LegacyRunStage(env, STAGE_ACTIVITIES).run_stage]
