"""The rung no tool automates, for real: "first boot on the emulated bus, then the paravirtual one".

dracut-lvm-nm (a RHEL-family VM: dracut host-only initramfs made on its KVM source, root on LVM)
moved to the ESXi stand-in cannot find its root on PVSCSI: its initramfs has no vmw_pvscsi, and
dracut says so on the console. The rung, as an operator does it by hand: the VM imported on the
ESXi host with its disk on the emulated IDE controller (the i440FX machine's own), it comes up (its
initramfs kept ata_piix); the target presents no QEMU guest agent channel, so the rung logs in by
SSH with the image's key and the guest's own dracut adds vmw_pvscsi; the guest shuts itself down.
The ladder's next round boots that disk on PVSCSI: the move works, ODCA's middle tier, naming the
rung. Minutes: three boots of a stock Debian under TCG and an in-guest dracut run.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from crossvisor.spec import load_spec
from domain.model import Grade
from tests.harness import run_on_own_server

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name: emu-{uid}
inventory: file:{lab}
platforms:
  - {{name: kvm, kind: kvm, profile: kvm, select: {{site: lab-a}}, disk_format: qcow2}}
  - {{name: esxi, kind: vsphere, driver: libvirt, profile: esxi, select: {{site: lab-a}}, disk_format: vmdk}}
images:
  - {{name: rhel-like, builtin: dracut-lvm-nm, cpus: 1, memory_mib: 512, app: {{tcp: 22}}}}
pairs: [[kvm, esxi]]
remediate: [emulated-first]
checks: [boots, disks, cpu_memory, nics, app]
concurrency: {{max_cells: 1}}
retry: {{max_attempts: 2, initial_interval_s: 1, backoff: 2.0, max_interval_s: 10}}
"""


async def test_a_host_only_initramfs_gets_its_pvscsi_driver_in_a_first_boot_on_ide(
    libvirt_conn, settings, tmp_path: Path
) -> None:
    spec = tmp_path / "emu.yaml"
    spec.write_text(SPEC.format(uid=uuid.uuid4().hex[:6], lab=ROOT / "examples/lab.yaml"))
    res = await run_on_own_server(load_spec(spec), settings)
    [cell] = res.cells
    checks = {c.check: c for c in cell.checks}
    summary = [(c.check, c.grade, c.reason[:160]) for c in cell.checks]
    [rung] = cell.remediations
    report = rung.evidence.get("report", "")
    assert cell.remedy == "emulated-first", (summary, rung)
    # unmodified: dracut's own words on the target's console
    boots = checks["boots"]
    assert boots.grade == Grade.WARN, summary
    assert "unmodified: root device /dev/mapper/vg0-root not found: dracut" in boots.reason, boots.reason
    assert {checks[c].grade for c in ("disks", "cpu_memory", "nics", "app")} <= {Grade.WARN, Grade.PASS}, summary
    assert rung.status == "cured", rung
    # what the rung did, in its own report: where it booted, how it got in, what dracut now holds
    assert "booted on VMware ESXi (PVSCSI, VMXNET3), its boot disk on the emulated IDE controller" in report, report
    assert "added vmw_pvscsi sd_mod inside the guest (ssh)" in report, report
    assert 'dracut: add_drivers+=" vmw_pvscsi sd_mod " in /etc/dracut.conf.d/90-cv-target-disk.conf' in report
    assert "dracut -f --regenerate-all: rc=0" in report, report
    assert "vmw_pvscsi.ko" in report, report
    # the round after it booted on PVSCSI, and nothing of the cell is left on the host
    assert [s.status for s in cell.stages if s.round == 1 and s.stage == "boot"] == ["ok"], cell.stages
    assert not [d.name() for d in libvirt_conn.listAllDomains() if d.name().startswith("cv-")]
