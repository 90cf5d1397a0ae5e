"""Boots the self-booting guest images on the hardware profiles through libvirtd and records what happens.

For every (image, profile) cell: a qcow2 overlay on the image (a content marker written at byte
1 MiB of the disk), a transient ``<domain type='qemu'>`` from ``drivers.guest_images
.profile_domain_xml``, the app port forwarded to 127.0.0.1, the whole serial console saved, the
wall-clock time of each boot milestone, ``GET /cv`` through the forward, then an ACPI shutdown
(virDomainShutdown) timed until the domain is off. ``legacy-bios`` is first born on each source
profile (its birth boot), then each born disk is booted on every profile.

    .venv/bin/python bench/guest_boot_matrix.py --out tests/fixtures/consoles [--parallel 2] [--only REGEX]

Writes ``<label>.log`` per boot and ``results.json`` (what the fixtures README table is made of).
Domains are named ``cvg-*`` and are gone when this exits; overlays live in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from domain.guest_evidence import boot_failure, parse  # noqa: E402
from drivers.guest_images import (  # noqa: E402
    IMAGES,
    PROFILES,
    HardwareProfile,
    build_image,
    forward_app_port,
    profile_domain_xml,
)

URI = "qemu:///system"
PREFIX = "cvg-"
# Milestones whose first appearance on the console is timed (wall clock from domain start).
MILESTONES = {
    "firmware": re.compile(r"SeaBIOS|BdsDxe|UEFI|EFI stub|Booting from"),
    "kernel": re.compile(r"Linux version \d"),
    "initramfs": re.compile(r"CV-INITRAMFS stage=local-top"),
    "userspace": re.compile(r"CROSSVISOR-BOOT-OK|CV-BIRTH stage=start"),
    "ready": re.compile(r"CV-READY|CV-BIRTH stage=done"),
}
# A console that ends in one of these is not going anywhere: stop waiting shortly after.
DEAD_ENDS = re.compile(
    r"No bootable device|Boot failed: not a bootable disk|No bootable option or device|Shell> |"
    r"grub rescue> |grub> |Press any key to continue"
)


@dataclass
class Cell:
    label: str
    image: str
    base_disk: Path
    firmware: str
    profile: HardwareProfile
    birth: bool = False
    keep_disk: Path | None = None  # births: where the born disk is kept
    result: dict = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_overlay(base: Path, out: Path, marker: str) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(out)], check=True, timeout=60
    )
    blob = out.with_suffix(".marker")
    blob.write_bytes(marker.encode().ljust(64, b"\0"))
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -s {blob} 1048576 64", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    blob.unlink()


def run_cell(cell: Cell, work: Path, out_dir: Path, timeout_s: float) -> dict:
    import libvirt

    conn = libvirt.open(URI)
    name = PREFIX + cell.label.replace("--", "-")[:60]
    disk = cell.keep_disk or work / f"{cell.label}.qcow2"
    marker = f"crossvisor-marker {cell.label}"[:64]
    qemu_overlay(cell.base_disk, disk, marker)
    log = work / f"{cell.label}.log"
    nvram = work / f"{cell.label}.VARS.fd" if cell.firmware == "efi" else None
    xml = profile_domain_xml(name, cell.profile, cell.firmware, disk, log, nvram=nvram)
    res: dict = {"label": cell.label, "image": cell.image, "profile": cell.profile.key, "firmware": cell.firmware}
    res["marker_hex"] = marker.encode().ljust(64, b"\0").hex()
    port = free_port()
    t0 = time.monotonic()
    dom = conn.createXML(xml, 0)
    try:
        forward_app_port(dom, port)
        res["forward"] = f"127.0.0.1:{port}->8080"
    except Exception as e:  # noqa: BLE001 - recorded: a cell without a forward still boots
        res["forward_error"] = str(e)
    seen: dict[str, float] = {}
    dead_at = None
    text = ""
    while True:
        now = time.monotonic() - t0
        text = log.read_text(errors="replace") if log.exists() else ""
        for k, rx in MILESTONES.items():
            if k not in seen and rx.search(text):
                seen[k] = round(now, 1)
        active = dom.isActive()
        if "ready" in seen or not active or now > timeout_s:
            break
        if dead_at is None and DEAD_ENDS.search(text):
            dead_at = now
        if dead_at is not None and now - dead_at > 3:
            break
        time.sleep(0.1)
    res["milestones_s"] = seen
    res["ended"] = "ready" if "ready" in seen else ("domain-off" if not dom.isActive() else "stopped-waiting")
    res["seconds"] = round(time.monotonic() - t0, 1)
    if "ready" in seen and not cell.birth:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/cv", timeout=5) as r:
                res["app_body"] = r.read().decode(errors="replace").strip()
        except Exception as e:  # noqa: BLE001 - the answer (or its absence) is the observation
            res["app_error"] = f"{type(e).__name__}: {e}"
        ts = time.monotonic()
        dom.shutdown()  # ACPI power button
        while dom.isActive() and time.monotonic() - ts < 60:
            time.sleep(0.2)
        res["acpi_shutdown_s"] = round(time.monotonic() - ts, 1) if not dom.isActive() else None
    elif cell.birth:
        ts = time.monotonic()
        while dom.isActive() and time.monotonic() - ts < 600:
            time.sleep(0.2)
        res["birth_poweroff_s"] = round(time.monotonic() - t0, 1)
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass
    conn.close()
    text = log.read_text(errors="replace") if log.exists() else ""
    shutil.copyfile(log, out_dir / f"{cell.label}.log") if log.exists() else None
    ev = parse(text)
    fail = boot_failure(text)
    res["outcome"] = "booted" if ev.complete else (fail.kind if fail else "unknown")
    res["failure"] = fail.detail if fail else None
    res["root_driver"] = ev.root.driver if ev.root else None
    res["nics"] = [(n.name, n.driver, n.ipv4) for n in ev.nics]
    res["disk_marker_ok"] = bool(ev.disks) and any(d.marker == res["marker_hex"] for d in ev.disks)
    cell.result = res
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "consoles")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--only", default="", help="regex on cell labels")
    ap.add_argument("--no-births", action="store_true", help="skip legacy-bios births and born-disk cells")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    only = re.compile(args.only) if args.only else None

    t_build = time.monotonic()
    images = {n: build_image(n) for n in IMAGES}
    print(f"images ready in {time.monotonic() - t_build:.0f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="cvg-matrix-"))
    results: list[dict] = []
    lock = threading.Lock()

    def run(cells: list[Cell]) -> None:
        cells = [c for c in cells if not only or only.search(c.label)]
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for res in pool.map(lambda c: run_cell(c, work, args.out, args.timeout), cells):
                with lock:
                    results.append(res)
                print(json.dumps(res), flush=True)

    main_profiles = [PROFILES[k] for k in ("kvm", "esxi", "hyperv-gen1", "xen-hvm")]
    try:
        cells: list[Cell] = []
        for key, prof in PROFILES.items():
            img = images["portable-bios"]
            cells.append(Cell(f"portable-bios--{key}", img.name, img.disk, "bios", prof))
            img = images["uefi"]
            # EFI where the platform offers it; on a BIOS-only platform the EFI disk meets SeaBIOS.
            fw = "efi" if "efi" in prof.firmwares else "bios"
            cells.append(Cell(f"uefi--{key}", img.name, img.disk, fw, prof))
        cells.append(
            Cell(
                "portable-bios--kvm--efi-firmware",
                "portable-bios",
                images["portable-bios"].disk,
                "efi",
                PROFILES["kvm"],
            )
        )
        run(cells)
        if not args.no_births:
            born: dict[str, Path] = {}
            births = []
            for prof in main_profiles:
                keep = work / f"legacy-bios-born-{prof.key}.qcow2"
                births.append(
                    Cell(
                        f"legacy-bios--birth--{prof.key}",
                        "legacy-bios",
                        images["legacy-bios"].disk,
                        "bios",
                        prof,
                        birth=True,
                        keep_disk=keep,
                    )
                )
                born[prof.key] = keep
            run(births)
            cells = []
            for src, disk in born.items():
                if not disk.exists():
                    continue
                for prof in main_profiles:
                    cells.append(Cell(f"legacy-bios-born-{src}--{prof.key}", "legacy-bios", disk, "bios", prof))
                for key in ("kvm--virtio-scsi", "esxi--lsisas", "xen-hvm--e1000"):
                    cells.append(Cell(f"legacy-bios-born-{src}--{key}", "legacy-bios", disk, "bios", PROFILES[key]))
            run(cells)
    finally:
        import libvirt

        conn = libvirt.open(URI)
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    res_path = args.out / "results.json"
    old = json.loads(res_path.read_text()) if res_path.exists() and only else []
    merged = {r["label"]: r for r in old}
    merged.update({r["label"]: r for r in results})
    res_path.write_text(json.dumps(sorted(merged.values(), key=lambda r: r["label"]), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
