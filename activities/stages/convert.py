"""convert: the package's disks into the target platform's disk format, cached by content."""

from __future__ import annotations

import shutil
from pathlib import Path

from temporalio import activity

from activities.artifacts import key, sha256_file
from activities.stages.base import Stage
from crossvisor.core import metrics
from crossvisor.core.errors import BadInput, InfraFault
from domain.stage_io import ConvertedDisk, ConvertOutput, StageCall
from toolbox import diskconv, ova


def _ext(fmt: str) -> str:
    return {"vpc": "vhd"}.get(fmt, fmt)


class Convert(Stage):
    name = "convert"

    @activity.defn(name="convert")
    def run(self, call: StageCall) -> ConvertOutput:
        return self.instrumented(call, ConvertOutput, lambda log: self._convert(call))

    def _convert(self, call: StageCall) -> ConvertOutput:
        c = call.cell
        exp = call.context.export
        if exp is None:
            raise BadInput("convert needs the export stage's package")
        fmt = c.target.disk_format
        # vCenter imports only streamOptimized VMDKs through an OVF lease
        subformat = "streamOptimized" if fmt == "vmdk" and c.target.driver == "vsphere" else ""
        k = key("convert", exp.package_sha256, fmt, subformat)
        with self.env.cache.locked(k) as d:
            entry = self.env.cache.lookup(k)
            if entry is not None:
                return ConvertOutput(
                    status="reused",
                    disks=[ConvertedDisk(**x) for x in entry["meta"]["disks"]],
                    descriptor=str(d / "descriptor.ovf"),
                )
            arrival = self._arrival(call, Path(exp.package), exp.package_sha256)
            extract = d / "extract"
            shutil.rmtree(extract, ignore_errors=True)
            extract.mkdir()
            pkg = Path(exp.package)
            # verifies the manifest: a corrupt package is an interop failure with a precise reason
            # the one package reader: manifest verified, bounds enforced, every disk probed; a
            # corrupt package is an interop failure with a precise reason
            package = ova.open_package(pkg, extract_to=extract)
            (d / "descriptor.ovf").write_text(package.descriptor_text)
            disks, outs = [], []
            for i, pd in enumerate(package.disks):
                disk, src, src_fmt = pd.disk, pd.path, pd.qemu_format
                dst = d / f"disk{i}.{_ext(fmt)}"
                self.heartbeat(f"convert disk{i}")
                res = diskconv.convert(
                    src, src_fmt, dst, fmt, subformat=subformat, progress=lambda p: self.heartbeat(f"convert {p:.0f}%")
                )
                metrics.CONVERSION_BYTES.labels(src_fmt, fmt).inc(res.bytes)
                metrics.CONVERSION_SECONDS.labels(src_fmt, fmt).inc(res.seconds)
                controller = (
                    f"{disk.controller}:{disk.controller_subtype}" if disk.controller_subtype else disk.controller
                )
                disks.append(ConvertedDisk(str(dst), fmt, controller, disk.capacity_bytes))
                outs.append(dst)
            shutil.rmtree(extract, ignore_errors=True)
            self.env.cache.commit(k, outs + [d / "descriptor.ovf"], {"disks": [vars(x) for x in disks]})
        return ConvertOutput(disks=disks, descriptor=str(d / "descriptor.ovf"), evidence=arrival)

    def _arrival(self, call: StageCall, pkg: Path, recorded: str) -> dict[str, str]:
        """A package exported at another site came through the artifact store: before anything
        reads it, its bytes must be the ones the export recorded (a copy still arriving, or one the
        store damaged, is an infrastructure fault: retried, never graded)."""
        c = call.cell
        src, dst = c.source_host.site, c.target_host.site
        if not (src and dst and src != dst):
            return {}
        if not recorded:
            raise BadInput(f"the export at site {src} recorded no sha256 for {pkg.name}: cannot verify it")
        if not pkg.is_file():
            raise InfraFault(f"package {pkg} from site {src} is not in the artifact store at site {dst} (yet)")
        got = sha256_file(pkg)
        if got != recorded:
            raise InfraFault(
                f"package {pkg.name} arrived at site {dst} with sha256 {got}; the export at site {src} "
                f"recorded {recorded}: the artifact store's copy is incomplete or corrupt"
            )
        return {"package_arrival": f"sha256 {recorded} verified at site {dst} (exported at site {src})"}
