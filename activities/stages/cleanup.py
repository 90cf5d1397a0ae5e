"""cleanup: remove the cell's VMs on both hosts and its work directory, whatever happened before.

When the two hosts are at sites with workers of their own, each site's worker cleans its host
(``StageCall.side``)."""

from __future__ import annotations

import shutil

from temporalio import activity

from activities.stages.base import Stage, vm_name
from domain.stage_io import StageCall, StageResult

ROLES = ("src", "tgt")  # the VMs a cell may create, by role suffix (see vm_name)


class Cleanup(Stage):
    name = "cleanup"

    @activity.defn(name="cleanup")
    def run(self, call: StageCall) -> StageResult:
        return self.instrumented(call, StageResult, lambda log: self._cleanup(call))

    def _cleanup(self, call: StageCall) -> StageResult:
        c = call.cell
        for side, host, role in (("source", c.source_host, "src"), ("target", c.target_host, "tgt")):
            if call.side and call.side != side:
                continue  # the other host's site cleans it
            drv = self.env.driver(host)
            try:
                # every VM of this cell with this role: the unmodified move and each remediation round
                for name in drv.list_vms(vm_name(c.campaign_id, c.cell.id, role)):
                    drv.destroy(name)
                # and disks uploaded for a VM whose define never came (a cancel or a kill between)
                drv.remove_leftovers(vm_name(c.campaign_id, c.cell.id, role))
            finally:
                drv.close()
        shutil.rmtree(self.env.workdir(c), ignore_errors=True)
        return StageResult()
