"""remediate: one rung of the remediation ladder, applied to the disk the target got.

The rungs do what a person would do by hand (domain/remedies.py): virt-v2v for KVM targets;
libguestfs edits inside the guest for the others; emulated-first boots the guest on the target
(activities/stages/emulated_first.py). Each rung writes a qcow2 overlay on its input
(the shared conversion, or the previous rung's overlay: rungs are cumulative), cached by content:
a rerun or a worker killed after a rung completed never repeats it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from temporalio import activity

from activities.artifacts import key
from activities.stages.base import Stage
from activities.stages.emulated_first import first_boot_on_emulated_bus
from crossvisor.core import steps
from crossvisor.core.errors import BadInput, InfraFault
from crossvisor.core.resources import deploy_file
from domain import profiles, remedies
from domain.stage_io import ConvertedDisk, RemediateOutput, StageCall
from toolbox import diskconv, guest_images

REPORT_KEPT = 3000  # characters of a tool's output kept as evidence
TOOL_TIMEOUT_S = 1800  # virt-v2v takes minutes on two cores under TCG

# guestfish scripts, run with the guest's file systems mounted (-i). They print what they change,
# so that the rung's own report says it.
GENERIC_INITRAMFS = r"""
sh "echo MODULES=most > /etc/initramfs-tools/conf.d/cv-modules; echo initramfs: MODULES=most"
sh "u=$(findmnt -no UUID /); sed -i -E \"s#^[^ #]+[[:space:]]+/[[:space:]]#UUID=$u / #\" /etc/fstab; echo fstab: / by UUID=$u"
sh "sed -i -E '/^GRUB_DISABLE_LINUX_(PART)?UUID=/d' /etc/default/grub; echo grub: root by UUID"
sh "update-initramfs -u -k all >/tmp/cv-ui.log 2>&1; echo update-initramfs: rc=$?; tail -n 3 /tmp/cv-ui.log"
sh "update-grub >/tmp/cv-ug.log 2>&1; echo update-grub: rc=$?; grep -m1 -o 'root=[^ ]*' /boot/grub/grub.cfg"
"""
NIC_CONFIG = r"""
sh "grep -l -r . /etc/systemd/network 2>/dev/null | sed 's/^/replaced: /'; rm -f /etc/systemd/network/*.network"
sh "printf '[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n' > /etc/systemd/network/10-cv.network; echo networkd: DHCP on any Ethernet NIC"
sh "for f in /etc/systemd/network/*.link; do grep -Eqs '^(MACAddress|OriginalName|Name)=' $f && rm -f $f && echo .link: removed $f; done; true"
sh "for f in /etc/NetworkManager/system-connections/*; do grep -Eqs '^(mac-address|interface-name)=' $f || continue; grep -E '^(mac-address|interface-name)=' $f | sed \"s#^#NetworkManager: $f unbound from #\"; sed -i -E '/^(mac-address|interface-name)=/d' $f; grep -Eh '^(method|address1)=' $f | tr '\n' ' ' | sed 's/^/NetworkManager: keeps its own addressing on any NIC: /'; echo; done; true"
sh "for f in /etc/netplan/*.yaml; do [ -f $f ] || continue; echo netplan: replaced $f; grep -E 'macaddress|set-name' $f | sed 's/^ */netplan:   was /'; mv $f $f.cv-before; done; if [ -d /etc/netplan ] && [ -n \"$(ls /etc/netplan/*.cv-before 2>/dev/null)\" ]; then printf 'network:\n  version: 2\n  ethernets:\n    any-ethernet:\n      match:\n        name: \"e*\"\n      dhcp4: true\n' > /etc/netplan/90-cv-any.yaml; chmod 600 /etc/netplan/90-cv-any.yaml; echo 'netplan: DHCP on any interface named e* in /etc/netplan/90-cv-any.yaml'; fi; true"
sh "if [ -d /etc/cloud/cloud.cfg.d ]; then echo 'network: {config: disabled}' > /etc/cloud/cloud.cfg.d/99-cv-network.cfg; echo cloud-init: network rendering disabled in /etc/cloud/cloud.cfg.d/99-cv-network.cfg; fi; true"
sh "f=/etc/network/interfaces; if grep -Eqs '^(auto|allow-hotplug|iface) +[^l ]' $f; then cp $f $f.cv-before; awk '/^(auto|allow-hotplug|iface|mapping)[ \t]/ {skip = ($2 != \"lo\")} /^[^ \t#]/ && !/^(auto|allow-hotplug|iface|mapping)[ \t]/ {skip = 0} {print (skip ? \"#cv# \" $0 : $0)}' $f.cv-before > $f; grep '^#cv# iface' $f | sed 's/^/ifupdown: disabled /'; systemctl enable -q systemd-networkd && echo ifupdown: systemd-networkd enabled for DHCP on any NIC; fi; true"
"""
# faminit: what an operator does to a guest whose dracut initramfs was made host-only on the old
# hardware and whose LVM devices file names the old disk (dracut-lvm-nm)
DRACUT_GENERIC = r"""
sh "if ! command -v dracut >/dev/null; then echo dracut: not installed, nothing changed; exit 0; fi; grep -ls 'hostonly=' /etc/dracut.conf /etc/dracut.conf.d/*.conf | sed 's/^/dracut: had hostonly setting in /'; echo 'hostonly=\"no\"' > /etc/dracut.conf.d/99-cv-generic.conf; echo dracut: hostonly=no in /etc/dracut.conf.d/99-cv-generic.conf"
sh "f=/etc/lvm/devices/system.devices; if [ -f $f ]; then grep -E '^IDTYPE' $f | sed 's/^/lvm: devices file listed /'; mv $f $f.cv-before; echo lvm: devices file reset: $f removed, LVM scans every disk; else echo lvm: no devices file; fi"
sh "command -v dracut >/dev/null || exit 0; dracut --no-hostonly --regenerate-all -f >/tmp/cv-dracut.log 2>&1; echo dracut --no-hostonly --regenerate-all -f: rc=$?; tail -n 3 /tmp/cv-dracut.log; for i in /boot/initrd.img-* /boot/initramfs-*.img; do [ -f $i ] && echo initramfs: $i $(stat -c %s $i) bytes; done; true"
"""

# -- the boot families' rungs (domain.remedies.BOOT_FAMILY_REMEDIES) ------------------------------
# Shell scripts run by the guest's own /bin/sh in its root (uploaded by guestfish, then removed);
# each prints what it changes, so that the rung's report says it.
#
# fstab-uuid: every fstab line whose source is a kernel disk name (/dev/sdX, hdX, vdX, xvdX) and
# whose mount point the appliance mounted gets that file system's UUID; GRUB's root= follows
# (update-grub without GRUB_DISABLE_LINUX_UUID). A line it cannot map is printed and left as is.
FSTAB_UUID = r"""
cp /etc/fstab /etc/fstab.before-uuid
awk '$1 ~ "^/dev/(sd|hd|vd|xvd)[a-z]+[0-9]*$" {print $1, $2}' /etc/fstab | while read -r dev mnt; do
  u=$(findmnt -no UUID --mountpoint "$mnt" 2>/dev/null)
  if [ -n "$u" ]; then
    sed -i -E "s#^$dev([[:space:]]+$mnt[[:space:]])#UUID=$u\1#" /etc/fstab
    echo "fstab: $mnt $dev -> UUID=$u"
  else
    echo "fstab: $mnt $dev left as is (not mounted here)"
  fi
done
sed -i -E '/^GRUB_DISABLE_LINUX_(PART)?UUID=/d' /etc/default/grub && echo "grub: GRUB_DISABLE_LINUX_UUID removed"
update-grub >/tmp/cv-ug.log 2>&1; echo "update-grub: rc=$?"; rm -f /tmp/cv-ug.log
echo "grub: $(sed -n 's/^[[:space:]]*linux[[:space:]].* \(root=[^ ]*\).*/\1/p' /boot/grub/grub.cfg | head -n 1)"
"""
# uefi-fallback: the boot loader the NVRAM entry starts (shim where there is one, else GRUB) copied
# to the removable-media path, as Debian's grub-install --force-extra-removable does.
UEFI_FALLBACK = r"""
esp=/boot/efi; [ -d $esp/EFI ] || esp=/efi
[ -d $esp/EFI ] || { echo "uefi-fallback: no EFI system partition mounted at /boot/efi or /efi"; exit 0; }
[ -f $esp/EFI/BOOT/BOOTX64.EFI ] && echo "uefi-fallback: $esp/EFI/BOOT/BOOTX64.EFI exists, replaced"
src=""
for d in $esp/EFI/*/; do
  case "$d" in */BOOT/ | */boot/ | */Boot/) continue ;; esac
  for f in shimx64.efi grubx64.efi; do [ -z "$src" ] && [ -f "$d$f" ] && src="$d$f"; done
done
[ -n "$src" ] || { echo "uefi-fallback: no shimx64.efi or grubx64.efi under $esp/EFI"; exit 0; }
mkdir -p $esp/EFI/BOOT && cp "$src" $esp/EFI/BOOT/BOOTX64.EFI && echo "uefi-fallback: $src -> $esp/EFI/BOOT/BOOTX64.EFI"
case "$src" in *shimx64.efi) cp "$(dirname "$src")/grubx64.efi" $esp/EFI/BOOT/ && echo "uefi-fallback: grubx64.efi beside it (shim loads it)" ;; esac
"""
# guest-agent: the worker's staged .debs (no network in the appliance) installed by the guest's own
# dpkg (only what it lacks), VMware Tools purged.
GUEST_AGENT = r"""
cd /var/tmp/cv-agent || exit 0
todo=""
for f in *.deb; do
  p=$(dpkg-deb -f $f Package); v=$(dpkg-deb -f $f Version)
  if [ "$(dpkg-query -W -f '${Version}' $p 2>/dev/null)" = "$v" ]; then echo "guest-agent: $p $v was installed"; else todo="$todo $f"; fi
done
if [ -n "$todo" ]; then
  dpkg -i $todo >/tmp/cv-dpkg.log 2>&1; echo "dpkg -i: rc=$?"; tail -n 2 /tmp/cv-dpkg.log
  for f in $todo; do echo "guest-agent: installed $(dpkg-deb -f $f Package) $(dpkg-deb -f $f Version)"; done
fi
for p in open-vm-tools open-vm-tools-desktop; do
  dpkg-query -W -f '${Status}' $p 2>/dev/null | grep -q ' installed' || continue
  v=$(dpkg-query -W -f '${Version}' $p)
  if dpkg --purge $p >/tmp/cv-dpkg.log 2>&1; then echo "guest-agent: removed $p $v"; else echo "guest-agent: dpkg --purge $p failed"; tail -n 3 /tmp/cv-dpkg.log; fi
done
cd / && rm -rf /var/tmp/cv-agent /tmp/cv-dpkg.log
dpkg-query -W -f '${Package} ${Version} ${Status}\n' qemu-guest-agent
"""
# the rungs that are guestfish commands of their own (the others: virt-v2v, FAMILY_SCRIPTS)
GUESTFISH_SCRIPTS = {"generic-initramfs": GENERIC_INITRAMFS, "nic-config": NIC_CONFIG, "dracut-generic": DRACUT_GENERIC}
FAMILY_SCRIPTS = {"fstab-uuid": FSTAB_UUID, "uefi-fallback": UEFI_FALLBACK, "guest-agent": GUEST_AGENT}
# the agent and the libraries it needs that a minimal Debian may lack (its Depends)
AGENT_PACKAGES = ("qemu-guest-agent", "libglib2.0-0", "libnuma1", "liburing2")


def _agent_debs() -> list[Path]:
    """qemu-guest-agent's .debs from the worker's Debian archive (apt-get download), kept in the
    image cache under a key of their versions: downloaded once per version, never per move."""
    pol = subprocess.run(
        ["apt-cache", "policy", *AGENT_PACKAGES], capture_output=True, text=True, timeout=120, check=False
    )
    versions = [x.split()[-1] for x in pol.stdout.splitlines() if "Candidate:" in x]
    if pol.returncode != 0 or len(versions) != len(AGENT_PACKAGES) or "(none)" in versions:
        raise InfraFault(f"the worker's apt knows no candidate for {AGENT_PACKAGES}: {pol.stdout.strip()[-400:]}")
    d = guest_images.cache_dir() / "debs-agent" / key("agent-debs", list(zip(AGENT_PACKAGES, versions, strict=True)))
    if not (d / "done").exists():
        d.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(
            ["apt-get", "download", *(f"{p}={v}" for p, v in zip(AGENT_PACKAGES, versions, strict=True))],
            cwd=d,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if got.returncode != 0:
            raise InfraFault(f"apt-get download {' '.join(AGENT_PACKAGES)}: {got.stderr.strip()[-400:]}")
        (d / "done").write_text("\n".join(versions) + "\n")
    return sorted(d.glob("*.deb"))


def _libguestfs_env() -> dict[str, str]:
    """The environment that lets libguestfs run here (kernel for the appliance, TCG)."""
    out = subprocess.run(
        ["bash", str(deploy_file("guests", "libguestfs-env.sh"))],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise InfraFault(f"libguestfs-env.sh failed: {out.stderr.strip()[-500:]}")
    env = dict(os.environ)
    env.update(dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line))
    return env


def _run(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    # the tool boots its own appliance VM to edit the disk: its CPU (the whole process tree's) is
    # the rung's work, counted as a conversion's is (the demo's CPU floor)
    with steps.step(Path(cmd[0]).name):
        p = steps.run(cmd, timeout=TOOL_TIMEOUT_S, input=stdin, env=env)
    if p.returncode != 0:
        raise InfraFault(f"{cmd[0]} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}")
    return (p.stdout + p.stderr).strip()


def _guestfish(
    inputs: list[ConvertedDisk], d: Path, env: dict[str, str], script: str
) -> tuple[list[ConvertedDisk], str]:
    """``script`` run by guestfish with the guest's file systems mounted, on qcow2 overlays (in
    ``d``) of ``inputs``: the overlays and what the script printed."""
    out = []
    for i, disk in enumerate(inputs):
        overlay = d / f"disk{i}.qcow2"
        diskconv.create_overlay(overlay, Path(disk.path), disk.format)
        out.append(ConvertedDisk(str(overlay), "qcow2", disk.controller, disk.capacity_bytes))
    args = ["guestfish", "--rw", "-i"]
    for x in out:
        args += ["--format=qcow2", "-a", x.path]
    return out, _run(args, env, stdin=script)


def apply_family_rung(
    rung: str, inputs: list[ConvertedDisk], d: Path, env: dict[str, str]
) -> tuple[list[ConvertedDisk], str]:
    """A boot family's rung on overlays of ``inputs`` in ``d``: its script (and, for guest-agent,
    the staged .debs) uploaded and run by the guest's own shell in its root, then removed."""
    script = d / f"{rung}.sh"
    script.write_text(FAMILY_SCRIPTS[rung])
    debs = _agent_debs() if rung == "guest-agent" else []
    gf = "".join(["mkdir-p /var/tmp/cv-agent\n"] * bool(debs) + [f"copy-in {p} /var/tmp/cv-agent\n" for p in debs])
    gf += (
        f"upload {script} /var/tmp/cv-rung.sh\n" + 'sh "/bin/sh /var/tmp/cv-rung.sh 2>&1; rm -f /var/tmp/cv-rung.sh"\n'
    )
    try:
        return _guestfish(inputs, d, env, gf)
    finally:
        script.unlink(missing_ok=True)


class Remediate(Stage):
    name = "remediate"

    @activity.defn(name="remediate")
    def run(self, call: StageCall) -> RemediateOutput:
        return self.instrumented(call, RemediateOutput, lambda log: self._remediate(call))

    def _remediate(self, call: StageCall) -> RemediateOutput:
        c, ctx, rung = call.cell, call.context, call.rung
        if rung not in remedies.REMEDIES:
            raise BadInput(f"unknown remediation {rung!r}; known: {sorted(remedies.REMEDIES)}")
        prof = profiles.for_platform(c.target.kind, c.target.profile)
        failing = ctx.verify.checks if ctx.verify is not None else []
        why_not = remedies.applicable(rung, prof.name, failing)
        inputs = (
            ctx.remediate.disks
            if ctx.remediate is not None and ctx.remediate.disks
            else (ctx.convert.disks if ctx.convert else [])
        )
        if why_not:
            return RemediateOutput(status="skipped", rung=rung, applicable=False, reason=why_not, disks=inputs)
        if not inputs:
            raise BadInput("remediate needs the converted disks")
        k = key("remediate", rung, [(d.path, d.format) for d in inputs], prof.name)
        with self.env.cache.locked(k) as d:
            entry = self.env.cache.lookup(k)
            if entry is not None:
                m = entry["meta"]
                return RemediateOutput(
                    status="reused",
                    rung=rung,
                    disks=[ConvertedDisk(**x) for x in m["disks"]],
                    changed=m["changed"],
                    report=m["report"],
                )
            for f in d.iterdir():
                if f.name != ".lock":
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
            self.heartbeat(f"remediate {rung}")
            if rung == "emulated-first":  # in the guest itself, booted on the target
                disks, report = first_boot_on_emulated_bus(self.env, call, inputs, d, self.heartbeat)
            elif rung == "virt-v2v":
                disks, report = self._virt_v2v(inputs[0], d, _libguestfs_env())
            elif rung in FAMILY_SCRIPTS:
                disks, report = apply_family_rung(rung, inputs, d, _libguestfs_env())
            else:
                disks, report = _guestfish(inputs, d, _libguestfs_env(), GUESTFISH_SCRIPTS[rung])
            changed = remedies.REMEDIES[rung].does
            self.env.cache.commit(
                k,
                [Path(x.path) for x in disks],
                {"disks": [vars(x) for x in disks], "changed": changed, "report": report[-REPORT_KEPT:]},
            )
        return RemediateOutput(
            rung=rung,
            disks=disks,
            changed=changed,
            report=report[-REPORT_KEPT:],
            evidence={"report": report[-REPORT_KEPT:]},
        )

    def _virt_v2v(self, disk: ConvertedDisk, d: Path, env: dict[str, str]) -> tuple[list[ConvertedDisk], str]:
        report = _run(
            [
                "virt-v2v",
                "-i",
                "disk",
                "-if",
                disk.format,
                disk.path,
                "-o",
                "local",
                "-os",
                str(d),
                "-of",
                "qcow2",
                "-on",
                "cv",
            ],
            env,
        )
        (d / "cv.xml").unlink(missing_ok=True)  # the target's own import decides the hardware
        return [ConvertedDisk(str(d / "cv-sda"), "qcow2", "virtio", disk.capacity_bytes)], report
