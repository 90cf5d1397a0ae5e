"""emulated-first: the rung no conversion tool automates. A guest installed on an emulated disk
controller (IDE, SATA) has an initramfs that knows that controller and no paravirtual one; on the
target's paravirtual controller it never finds its root. By hand an operator boots it once on the
target with the disk on the emulated controller (the guest comes up: its initramfs has that
driver), adds the paravirtual driver from inside the running guest, shuts it down and moves the
disk to the paravirtual controller. This does the same on the target host, through the guest's
own channels (its QEMU guest agent's guest-exec, else an SSH login with the operator's key), and
returns the disk the guest left for the ladder's next import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from activities.channels import ssh
from activities.stages import guest
from activities.stages.base import StageEnv, vm_name, vm_owner
from crossvisor.core import steps
from crossvisor.core.errors import BadInput, InteropFailure
from domain import observation, profiles
from domain.stage_io import ConvertedDisk, StageCall
from domain.vm import DiskSpec, ExportedVm
from drivers.base import Driver, GuestExec
from toolbox import guest_images

SCRIPT_TIMEOUT_S = 900.0  # a dracut or update-initramfs run inside a TCG guest: minutes
# Run by the guest's own /bin/sh; its arguments: the kernel modules of the target's controller. The driver
# list goes where the guest's initramfs tool keeps it for every later rebuild (a kernel update must
# not drop it again), an LVM devices file bound to the old controller's disk identity is reset, the
# initramfs is rebuilt for every installed kernel, and the script prints what it changed and which
# of the drivers each initramfs now holds.
ADD_DRIVERS = r"""
drivers="$*"
pattern=$(echo $drivers | sed 's/ /|/g')
# lvm2's devices file names a PV by the identity its controller gives the disk (an ATA disk's WWID,
# a serial); a paravirtual controller gives none: LVM would ignore the PV and the root never appears
f=/etc/lvm/devices/system.devices
if [ -f $f ] && grep -Eq 'IDTYPE=(sys_wwid|sys_serial|wwid_)' $f; then
  grep -E '^IDTYPE' $f | sed 's/^/lvm: devices file listed /'
  mv $f $f.cv-before && echo "lvm: devices file reset: $f removed (it named the disk by an identity the new controller does not give): LVM scans every disk"
fi
if command -v dracut >/dev/null; then
  f=/etc/dracut.conf.d/90-cv-target-disk.conf
  echo "add_drivers+=\" $drivers \"" > $f && echo "dracut: add_drivers+=\" $drivers \" in $f"
  dracut -f --regenerate-all >/tmp/cv-dracut.log 2>&1; rc=$?
  echo "dracut -f --regenerate-all: rc=$rc"; tail -n 3 /tmp/cv-dracut.log; rm -f /tmp/cv-dracut.log
  for i in /boot/initramfs-*.img /boot/initrd.img-*; do
    [ -f $i ] && echo "initramfs: $i holds $(lsinitrd $i 2>/dev/null | grep -oE "($pattern)\.ko" | sort -u | tr '\n' ' ')"
  done
elif command -v update-initramfs >/dev/null; then
  for m in $drivers; do grep -qx "$m" /etc/initramfs-tools/modules || echo "$m" >> /etc/initramfs-tools/modules; done
  echo "initramfs-tools: $drivers in /etc/initramfs-tools/modules"
  update-initramfs -u -k all >/tmp/cv-ui.log 2>&1; rc=$?
  echo "update-initramfs -u -k all: rc=$rc"; tail -n 3 /tmp/cv-ui.log; rm -f /tmp/cv-ui.log
  for i in /boot/initrd.img-*; do
    [ -f $i ] && echo "initramfs: $i holds $(lsinitramfs $i 2>/dev/null | grep -oE "($pattern)\.ko" | sort -u | tr '\n' ' ')"
  done
else
  echo "neither dracut nor update-initramfs in the guest: nothing changed"; rc=3
fi
sync
exit $rc
"""


def first_boot_on_emulated_bus(
    env: StageEnv, call: StageCall, inputs: list[ConvertedDisk], d: Path, beat: Callable[[str], None]
) -> tuple[list[ConvertedDisk], str]:
    """The rung on the target host: ``inputs`` imported with the boot disk on the emulated
    controller the guest was installed on, booted, the target's driver added by the guest itself,
    shut down by the guest, its disk written to ``d``. A guest that does not come up that way, has
    no agent that runs the command, or whose initramfs tool fails is the rung's result
    (``InteropFailure``, with the console and the tool's words), not a fault to retry."""
    c = call.cell
    src = profiles.for_platform(c.source.kind, c.source.profile)
    tgt = profiles.for_platform(c.target.kind, c.target.profile)
    emulated = profiles.emulated_first(src, tgt)
    if emulated is None or call.context.convert is None:
        raise BadInput(f"emulated-first has nothing to do from {src.name} to {tgt.name}")
    drivers = profiles.PARAVIRTUAL_DRIVERS[tgt.disk_controller]
    name = vm_name(c.campaign_id, c.cell.id, f"emu{call.round}")
    package = ExportedVm(
        package=call.context.convert.descriptor,
        disks=[DiskSpec(x.path, x.format, x.controller, x.capacity_bytes) for x in inputs],
        forward_ports=guest.forward_ports(c.image),
        guest_agent=True,  # the channel the rung works through: the guest decides whether it answers
        screen=not guest_images.instrumented(c.image.builtin),
    )
    console = env.artifact_path(c, f"emulated-first-r{call.round}-console.log")
    drv = env.driver(c.target_host)
    try:
        drv.destroy(name)  # an earlier attempt's VM: the rung starts again from its input
        drv.import_vm(package, name, emulated, owner=vm_owner(c.campaign_id, c.cell.id))
        # the guest's boot and its initramfs rebuild are CPU-bound guest work: one slot for both
        with guest.boot_slot(c.target_host):
            drv.power_on(name)
            watch = drv.watch_console(
                name,
                observation.ready,
                guest.boot_timeout_s(c.image),
                heartbeat=beat,
                idle_s=guest.SILENT_S,
                idle_counts=observation.silence_means_dead,
            )
            seen = guest.observe(watch, console, env)
            evidence = {"console": env.relative(console), "booted_on": emulated.stands_in_for}
            if not seen.reached_init:
                raise InteropFailure(
                    f"emulated-first: the guest did not come up on the emulated {emulated.disk_bus.upper()} "
                    f"controller either: {seen.failure}",
                    {**evidence, "excerpt": seen.console_excerpt},
                )
            ran, channel = _run_in_guest(drv, name, c.image, list(drivers), beat)
        if ran.refused:
            raise InteropFailure(
                f"emulated-first: the guest came up on {emulated.disk_bus.upper()}, but no command could be run "
                f"in it: {ran.refused}",
                evidence,
            )
        report = (
            f"booted on {emulated.stands_in_for} ({seen.seconds:.0f} s to its init); "
            f"added {' '.join(drivers)} inside the guest ({channel})\n{ran.output.strip()}"
        )
        if ran.exit_code != 0:
            raise InteropFailure(
                f"emulated-first: the guest's initramfs rebuild exited {ran.exit_code}",
                {**evidence, "report": report[-2000:]},
            )
        drv.power_off(name)  # the guest's own shutdown (ACPI): its file systems clean
        out = d / "disk0.qcow2"
        with steps.step("download"):
            drv.download_disk(name, 0, out)
        disks = [ConvertedDisk(str(out), "qcow2", inputs[0].controller, inputs[0].capacity_bytes), *inputs[1:]]
        return disks, report
    finally:
        try:
            drv.destroy(name)
        finally:
            drv.close()


def _run_in_guest(
    drv: Driver, name: str, image, drivers: list[str], beat: Callable[[str], None]
) -> tuple[GuestExec, str]:
    """The script by the guest's agent where the VM has that channel and the agent runs it, else by
    SSH where the operator gave a key (or a family image has its build's); both refusals said."""
    refusals = []
    with steps.step("guest exec"):
        ran = drv.guest_exec(name, ["/bin/sh", "-c", ADD_DRIVERS, "cv-add-drivers", *drivers], SCRIPT_TIMEOUT_S, beat)
    if not ran.refused:
        return ran, "guest agent"
    refusals.append(f"guest agent: {ran.refused}")
    access = guest.ssh_access(image)
    if access is None:
        refusals.append("ssh: no key given for the image")
        return GuestExec(refused="; ".join(refusals)), ""
    with steps.step("ssh"):
        ran = ssh.run_script(drv, name, access, ADD_DRIVERS, drivers, beat, SCRIPT_TIMEOUT_S)
    if not ran.refused:
        return ran, "ssh"
    refusals.append(f"ssh: {ran.refused}")
    return GuestExec(refused="; ".join(refusals)), ""
