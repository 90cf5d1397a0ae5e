"""provision, baseline, export: the VM on its source platform, observed, then packaged.

The source half of a move is the same whatever the target: the image born on the source
hardware, booted there once to record what the guest sees, and exported as a package. So the three
stages share one content-addressed cache entry per (source platform, image, package format): the
first cell does the work and every later cell of that source and image reuses the package and the
baseline observation ("reused"), without booting the source again.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from temporalio import activity
from temporalio.converter import value_to_type

from activities.artifacts import ArtifactCache, key, sha256_file
from activities.stages import guest
from activities.stages.base import Stage, stands_in, vm_name, vm_owner
from crossvisor.core import steps
from crossvisor.core.errors import BadInput, InteropFailure
from crossvisor.core.safe_read import check_disk_image
from domain import guest_evidence, profiles
from domain.messages import CellInput
from domain.model import image_identity
from domain.stage_io import BaselineOutput, ExportOutput, ProvisionOutput, StageCall
from domain.vm import MARKER_OFFSET, DiskSpec, NicSpec, VmSpec
from drivers.base import TemplateMissing
from toolbox import diskconv, guest_images, ova

PIPELINE_SOURCE = "2"  # bump when what the source side produces changes: old cache entries are ignored
BIRTH_TIMEOUT_S = 600.0  # a birth boot rebuilds the initramfs under TCG
# a source side claimed by a cell whose stages stopped touching the claim this long is free again
# (its stages touch it with every heartbeat, 2 s; between two of its stages only seconds pass)
CLAIM_FRESH_S = 60.0


def disk_marker(source_platform: str, image: str) -> bytes:
    """Content written into the source disk and looked for after conversion, import and boot."""
    return hashlib.sha256(f"crossvisor-marker:{source_platform}:{image}".encode()).digest()


MARKER_GUARD_BYTES = 4096  # zero on a disk whose first partition starts past 1 MiB (or whose filesystem pads it)


def disk_from_source(source: str, out: Path, scratch: Path) -> None:
    """The operator's image as a qcow2 at ``out``: a disk image converted (its format from its
    content, never its name; a backing file or external extent refused), or an OVF/OVA package
    (exported from vSphere, ...) whose manifest is verified and whose first disk with content is
    inflated and converted. The source VM gets the spec's CPU and memory, not the package's."""
    fmt = check_disk_image(source)
    if fmt not in ("ova", "ovf"):
        diskconv.convert(source, fmt, out, "qcow2")
        return
    try:
        pkg = ova.open_package(source, extract_to=scratch)
        first = next((d for d in pkg.disks if d.path is not None and not d.blank), None)
        if first is None:
            raise BadInput(f"image source {source}: the package holds no disk with content")
        diskconv.convert(first.path, first.qemu_format, out, "qcow2")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def source_key(c: CellInput) -> str:
    # a template on a host may be changed by its owner between campaigns (its name stays): its
    # clone's package and baseline are shared by the cells of one campaign only
    scope = (c.campaign_id,) if c.image.template else ()
    return key(
        "source-side", PIPELINE_SOURCE, dataclasses.asdict(c.source), image_identity(c.image), c.export_format, *scope
    )


def _claim_path(env, k: str) -> Path:
    return env.cache.root / "claims" / k


def _claimant(c: CellInput) -> str:
    return f"{c.campaign_id}/{c.cell.id}"


def touch_claim(env, c: CellInput) -> None:
    """Keep this cell's claim on its source side fresh (called with each heartbeat)."""
    p = _claim_path(env, source_key(c))
    try:
        if p.read_text() == _claimant(c):
            p.touch()
    except OSError:
        pass


def drop_claim(env, c: CellInput) -> None:
    p = _claim_path(env, source_key(c))
    try:
        if p.read_text() == _claimant(c):
            p.unlink()
    except OSError:
        pass


class SourceSide(Stage):
    """The three source-side stages keep their cell's claim on the source side alive, and drop it
    when the source side ends (exported, or failed: another cell may try)."""

    def keep_alive(self, call: StageCall) -> Callable[[], None] | None:
        return lambda: touch_claim(self.env, call.cell)

    def ended(self, call: StageCall, outcome: str) -> None:
        if outcome not in ("ok", "reused") or self.name == "export":
            drop_claim(self.env, call.cell)


class Provision(SourceSide):
    name = "provision"

    @activity.defn(name="provision")
    def run(self, call: StageCall) -> ProvisionOutput:
        return self.instrumented(call, ProvisionOutput, lambda log: self._provision(call, log))

    def _provision(self, call: StageCall, log) -> ProvisionOutput:
        c = call.cell
        if self.env.cache.lookup(source_key(c)) is not None or self._made_by_another_cell(c):
            return ProvisionOutput(status="reused")
        prof = profiles.for_platform(c.source.kind, c.source.profile)
        img = c.image
        if img.template:
            return self._clone_template(c, prof)
        firmware = guest_images.firmware_of(img.builtin) if img.builtin else img.firmware
        if firmware not in prof.firmware:
            raise InteropFailure(
                f"{c.source.name} ({prof.stands_in_for}) offers no {firmware.upper()} firmware: "
                "the image cannot run on its source platform",
                {"firmware": firmware, "platform_firmware": ",".join(prof.firmware)},
            )
        if firmware == "efi" and not prof.efi_boots and stands_in(c.source_host):
            raise InteropFailure(
                f"the stand-in for {prof.stands_in_for} cannot boot EFI from its disk controller (Debian's OVMF "
                "has no driver for it; the real hypervisor's firmware has): nothing to observe as a source",
                {"firmware": firmware, "profile": prof.name},
            )
        name = vm_name(c.campaign_id, c.cell.id, "src")
        disk, capacity, birth = self._source_disk(call, prof, firmware, log)
        marker = disk_marker(c.source.name, img.name)
        # An operator's disk may use the bytes at 1 MiB (a partition or filesystem starting there):
        # the marker goes only where they are zero; else the grade compares the content the source
        # guest read there with what the target guest reads (domain.grading._disks).
        if img.builtin or not any(diskconv.read_marker(disk, "qcow2", MARKER_OFFSET, MARKER_GUARD_BYTES)):
            diskconv.write_marker(disk, "qcow2", MARKER_OFFSET, marker)
        spec = VmSpec(
            name=name,
            cpus=img.cpus,
            memory_mib=img.memory_mib,
            disks=[DiskSpec(str(disk), "qcow2", prof.disk_controller, capacity)],
            nics=[NicSpec(prof.nic_model, mac=self._source_mac(img.builtin), pci_slot=prof.nic_slot)],
            firmware=firmware,
            hardware_version=c.source.hardware_version,
            metadata={"crossvisor.image": img.name, "crossvisor.os": img.os, "owner": "interop-lab"},
            machine=prof.machine,
            forward_ports=guest.forward_ports(img),
            owner=vm_owner(c.campaign_id, c.cell.id),
            # an operator's image gets the agent channel where the platform has one (real KVM does)
            guest_agent=not guest_images.instrumented(img.builtin) and prof.guest_agent_channel,
            video="" if guest_images.instrumented(img.builtin) else prof.video,
            # a boot family's own UEFI variable store goes with its source VM only (an import
            # gets a fresh one, as an OVF import does)
            nvram=self._own_nvram(img.builtin, firmware),
        )
        drv = self.env.driver(c.source_host)
        try:
            hw = drv.provision(spec)
        finally:
            drv.close()
        return ProvisionOutput(source_vm=name, hardware=hw, marker=marker.hex(), birth=birth)

    @staticmethod
    def _source_mac(builtin: str) -> str:
        """The MAC a family image was installed with (dracut-lvm-nm: its NetworkManager keyfile is
        bound to it, as an installer leaves it): its source VM has that NIC. "" = the host's choice."""
        if builtin not in guest_images.FAMILY_IMAGES:
            return ""
        return guest_images.build_plain_image(builtin).manifest.get("source_mac", "")

    @staticmethod
    def _own_nvram(builtin: str, firmware: str) -> str:
        if firmware != "efi" or builtin not in guest_images.BOOT_FAMILIES:
            return ""
        nvram = guest_images.build_plain_image(builtin).nvram
        return str(nvram) if nvram else ""

    def _clone_template(self, c: CellInput, prof) -> ProvisionOutput:
        """The source VM of a ``template:`` image: a clone of the operator's VM or template on the
        source host (the host's own clone: vCenter's CloneVM, or overlays on the template domain's
        disks on libvirt), which stays as it was. Its firmware and disks are the template's; no
        marker is written (the grade compares the content the source guest read at the marker
        offset with the target's). A template the host does not have is bad input, not retried."""
        img = c.image
        name = vm_name(c.campaign_id, c.cell.id, "src")
        spec = VmSpec(
            name=name,
            cpus=img.cpus,  # 0: the template's
            memory_mib=img.memory_mib,
            disks=[],
            nics=[NicSpec(prof.nic_model, pci_slot=prof.nic_slot)],
            firmware=img.firmware,
            hardware_version=c.source.hardware_version,
            metadata={"crossvisor.image": img.name, "crossvisor.os": img.os, "owner": "interop-lab"},
            machine=prof.machine,
            forward_ports=guest.forward_ports(img),
            owner=vm_owner(c.campaign_id, c.cell.id),
            guest_agent=prof.guest_agent_channel,
            video=prof.video,
        )
        drv = self.env.driver(c.source_host)
        try:
            with steps.step("clone template"):
                hw = drv.clone_template(img.template, spec)
        except TemplateMissing as e:
            raise BadInput(
                f"image {img.name!r}: template {img.template!r} does not exist on source host "
                f"{c.source_host.name if c.source_host else '?'} ({e.where})"
            ) from None
        finally:
            drv.close()
        return ProvisionOutput(source_vm=name, hardware=hw, marker="", birth="")

    def _made_by_another_cell(self, c: CellInput) -> bool:
        """Another running cell is making this source side (same source platform, image and
        package format): wait for its package instead of booting and exporting the same source
        again (two baselines of one source cost a boot of CPU for nothing). True once it is in
        the cache; False when no live cell claims it (then this cell claims it)."""
        k = source_key(c)
        claim = _claim_path(self.env, k)
        claim.parent.mkdir(parents=True, exist_ok=True)
        with steps.step("wait for source side"):
            while True:
                if (self.env.cache.dir(k) / "manifest.json").exists() and self.env.cache.lookup(k) is not None:
                    return True
                # look and claim in one step: cells that start together must not both find it free
                with open(claim.parent / ".lock", "a") as lf:
                    fcntl.flock(lf, fcntl.LOCK_EX)
                    try:
                        holder, age = claim.read_text(), time.time() - claim.stat().st_mtime
                    except OSError:
                        holder, age = "", CLAIM_FRESH_S
                    if not holder or holder == _claimant(c) or age >= CLAIM_FRESH_S:
                        tmp = claim.with_name(f".{claim.name}.{os.getpid()}.{threading.get_ident()}")
                        tmp.write_text(_claimant(c))
                        tmp.replace(claim)
                        return False
                time.sleep(1.0)

    def _source_disk(self, call: StageCall, prof, firmware: str, log) -> tuple[Path, int, str]:
        """The cell's own source disk (qcow2), and its capacity: an overlay on the image (born on
        this hardware when the image is born), a conversion of ``source``, or a blank disk."""
        c = call.cell
        wd = self.env.workdir(c)
        disk = wd / "source-disk0.qcow2"
        birth = ""
        if c.image.builtin in guest_images.FAMILIES:
            if not disk.exists():
                diskconv.create_overlay(disk, guest_images.build_plain_image(c.image.builtin).disk, "qcow2")
        elif c.image.builtin:
            built = guest_images.build_image(c.image.builtin)
            base = built.disk
            if built.born_on_first_boot:
                with steps.step("birth"):
                    base, birth = self._born(call, built, prof, firmware, log)
            if not disk.exists():
                diskconv.create_overlay(disk, base, "qcow2")
        elif not disk.exists():
            tmp = wd / "source-disk0.qcow2.tmp"
            if c.image.source:
                # the format from the content, never from the name; a disk with a backing file or
                # an external extent is refused (it would read files the spec never named)
                disk_from_source(c.image.source, tmp, wd / "source-package")
            else:
                diskconv.create(tmp, "qcow2", c.image.disk_mib * 1024 * 1024)
            tmp.rename(disk)
        return disk, diskconv.info(disk, "qcow2").virtual_size, birth

    def _born(self, call: StageCall, built, prof, firmware: str, log) -> tuple[Path, str]:
        """The image after its first boot on this hardware profile: the guest specialised itself
        (initramfs for this hardware, fstab, network config bound to this NIC name) and powered
        off. Cached per (image build, profile): births are the same for every cell."""
        c = call.cell
        k = key("birth", built.key, dataclasses.asdict(prof))
        # a born image is an image: kept with the image builds, shared by every state dir
        births = ArtifactCache(guest_images.cache_dir() / "born")
        with births.locked(k) as d:
            entry = births.lookup(k)
            born = d / "born.qcow2"
            if entry is not None:
                return born, entry["meta"]["birth"]
            for f in d.iterdir():
                if f.name != ".lock":
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
            # the image as it goes onto the host; the host boots an overlay of its own on it
            seed = d / "seed.qcow2"
            diskconv.create_overlay(seed, built.disk, "qcow2")
            name = vm_name(c.campaign_id, c.cell.id, "src") + "-birth"
            spec = VmSpec(
                name=name,
                cpus=c.image.cpus,
                memory_mib=c.image.memory_mib,
                disks=[DiskSpec(str(seed), "qcow2", prof.disk_controller, 0)],
                nics=[NicSpec(prof.nic_model, pci_slot=prof.nic_slot)],
                firmware=firmware,
                machine=prof.machine,
                owner=vm_owner(c.campaign_id, c.cell.id),
            )
            drv = self.env.driver(c.source_host)
            try:
                drv.destroy(name)  # a killed earlier attempt's VM: its disk was just recreated
                drv.provision(spec)
                # a birth is a whole boot and initramfs build, with its whole cell behind it: first
                with guest.boot_slot(c.source_host, guest.BIRTH):
                    drv.power_on(name)
                    watch = drv.watch_console(name, guest.stopped, BIRTH_TIMEOUT_S, heartbeat=self.heartbeat)
                if guest_evidence.parse(watch.text).birth.get("ok") == "1":
                    # what the guest made of itself, fetched from the host (one flattened image)
                    drv.power_off(name, hard=True)
                    drv.download_disk(name, 0, born)
                drv.destroy(name)
            finally:
                drv.close()
            seed.unlink(missing_ok=True)
            born_as = guest_evidence.parse(watch.text).birth
            if born_as.get("ok") != "1":
                cause = guest.observe(watch, self.env.artifact_path(c, "birth-console.log"), self.env).failure
                raise InteropFailure(
                    f"the image could not be born on {c.source.name}: {cause or 'its first boot did not finish'}",
                    {"console": guest.excerpt(watch.text)},
                )
            birth = " ".join(f"{k}={born_as[k]}" for k in ("root", "driver", "nic", "initramfs") if k in born_as)
            births.commit(k, [born], {"birth": birth})
            log.info("image.born", profile=prof.name, birth=birth)
            return born, birth


class Baseline(SourceSide):
    name = "baseline"

    @activity.defn(name="baseline")
    def run(self, call: StageCall) -> BaselineOutput:
        return self.instrumented(call, BaselineOutput, lambda log: self._baseline(call))

    def _baseline(self, call: StageCall) -> BaselineOutput:
        c = call.cell
        prov = call.context.provision
        if prov is None:
            raise BadInput("baseline needs the provision stage's output")
        if prov.status == "reused":
            entry = self.env.cache.lookup(source_key(c))
            if entry is None:
                raise BadInput("the source side was reused at provision but its cache entry is gone; retry the cell")
            out = value_to_type(BaselineOutput, entry["meta"]["baseline"])
            return dataclasses.replace(out, status="reused")
        drv = self.env.driver(c.source_host)
        try:
            seen, app, _state = guest.boot_and_observe(
                drv,
                prov.source_vm,
                self.env.artifact_path(c, "source-console.log"),
                self.env,
                self.heartbeat,
                c.image,
                c.source_host,
                guest.BASELINE,
            )
            drv.power_off(prov.source_vm)
            hw = drv.inspect(prov.source_vm)
        finally:
            drv.close()
        if seen.observed and not seen.reached_init:
            raise InteropFailure(
                f"the guest did not boot on its own platform {c.source.name}: {seen.failure or 'no init reached'}",
                {"console": seen.console_excerpt},
            )
        return BaselineOutput(hardware=hw, guest=seen, app=app)


class Export(SourceSide):
    name = "export"

    @activity.defn(name="export")
    def run(self, call: StageCall) -> ExportOutput:
        return self.instrumented(call, ExportOutput, lambda log: self._export(call))

    def _export(self, call: StageCall) -> ExportOutput:
        c = call.cell
        ctx = call.context
        k = source_key(c)
        with self.env.cache.locked(k) as d:
            entry = self.env.cache.lookup(k)
            status = "reused"
            if entry is None:
                status = "ok"
                if ctx.provision is None or not ctx.provision.source_vm or ctx.baseline is None:
                    raise BadInput("export needs a provisioned and observed source VM")
                for f in d.iterdir():
                    if f.name != ".lock":
                        shutil.rmtree(f) if f.is_dir() else f.unlink()
                drv = self.env.driver(c.source_host)
                try:
                    exported = drv.export(ctx.provision.source_vm, d, c.export_format)
                    how = dict(drv.last_export_evidence)
                finally:
                    drv.close()
                files = [
                    p
                    for p in d.rglob("*")
                    if p.is_file() and p.name not in (".lock", "manifest.json", "manifest.json.tmp")
                ]
                # the baseline rides along: a later cell of this source and image reuses it
                baseline = dataclasses.asdict(dataclasses.replace(ctx.baseline, status="ok"))
                entry = self.env.cache.commit(
                    k,
                    files,
                    {"package": str(Path(exported.package).relative_to(d)), "baseline": baseline, "exported": how},
                )
        pkg = d / entry["meta"]["package"]
        with steps.step("hash"):
            sha = sha256_file(pkg)
        return ExportOutput(
            status=status,
            package=str(pkg),
            package_sha256=sha,
            evidence={"package": pkg.name, **entry["meta"].get("exported", {})},
        )
