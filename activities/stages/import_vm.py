"""import: the converted package onto the target. Always attempted: the target decides.

What the target makes of the package (the controller it attaches the disk to, the NIC it gives the
guest, the firmware it boots) is the target's own behaviour: on libvirt hosts the platform's
hardware profile, on vSphere the API's import. If the target's API refuses the package, that
refusal (its own error text) is the observed result.
"""

from __future__ import annotations

from temporalio import activity

from activities.stages import guest
from activities.stages.base import Stage, vm_name, vm_owner
from crossvisor.core.errors import BadInput
from domain import profiles
from domain.stage_io import ImportOutput, StageCall
from domain.vm import DiskSpec, ExportedVm
from toolbox import guest_images


def target_vm_name(campaign_id: str, cell_id: str, round_: int) -> str:
    base = vm_name(campaign_id, cell_id, "tgt")
    return base if round_ == 0 else f"{base}-r{round_}"


class Import(Stage):
    name = "import"

    @activity.defn(name="import")
    def run(self, call: StageCall) -> ImportOutput:
        return self.instrumented(call, ImportOutput, lambda log: self._import(call))

    def _import(self, call: StageCall) -> ImportOutput:
        c = call.cell
        conv = call.context.convert
        if conv is None:
            raise BadInput("import needs the convert stage's disks")
        # round N of the remediation ladder imports the remediated disks as a VM of its own
        disks = call.context.remediate.disks if call.round and call.context.remediate else conv.disks
        name = target_vm_name(c.campaign_id, c.cell.id, call.round)
        package = ExportedVm(
            package=conv.descriptor,
            disks=[DiskSpec(d.path, d.format, d.controller, d.capacity_bytes) for d in disks],
            forward_ports=guest.forward_ports(c.image),
            guest_agent=not guest_images.instrumented(c.image.builtin),
            screen=not guest_images.instrumented(c.image.builtin),
        )
        prof = profiles.for_platform(c.target.kind, c.target.profile)
        drv = self.env.driver(c.target_host)
        try:
            for earlier in range(call.round):  # done with: its guest must not compete for the CPU
                if drv.list_vms(target_vm_name(c.campaign_id, c.cell.id, earlier)):
                    drv.power_off(target_vm_name(c.campaign_id, c.cell.id, earlier))
            hw = drv.import_vm(package, name, prof, owner=vm_owner(c.campaign_id, c.cell.id))
            evidence = dict(drv.last_import_evidence)
        finally:
            drv.close()
        return ImportOutput(target_vm=name, hardware=hw, evidence=evidence)
