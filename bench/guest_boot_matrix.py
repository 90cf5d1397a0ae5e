"""Boots the self-booting guest images on the hardware profiles through libvirtd and records what happens.

For every (image, profile) cell: a qcow2 overlay on the image (a content marker written at byte
1 MiB of the disk), the domain the product's libvirt driver defines for the profile (``tests/qemu/guest_boot.py``),
the app port forwarded to 127.0.0.1, the whole serial console saved, the
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
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from domain.guest_evidence import boot_failure, parse  # noqa: E402
from domain.profiles import PROFILES, HardwareProfile  # noqa: E402
from drivers.libvirt.driver import LibvirtDriver  # noqa: E402
from tests.qemu.guest_boot import boot, overlay_with_marker  # noqa: E402
from toolbox.guest_images import IMAGES, build_image  # noqa: E402

URI = "qemu:///system"
PREFIX = "cvg-"


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


def run_cell(cell: Cell, work: Path, out_dir: Path, timeout_s: float) -> dict:
    drv = LibvirtDriver(URI, state_dir=work / "driver")
    name = PREFIX + cell.label.replace("--", "-")[:60]
    disk = cell.keep_disk or work / f"{cell.label}.qcow2"
    marker_hex = overlay_with_marker(cell.base_disk, disk, f"crossvisor-marker {cell.label}"[:64])
    try:
        obs = boot(
            drv,
            name,
            cell.profile,
            cell.firmware,
            disk,
            timeout_s=timeout_s * 6 if cell.birth else timeout_s,
            until_off=cell.birth,
        )
    finally:
        drv.close()
    (out_dir / f"{cell.label}.log").write_text(obs.console)
    res: dict = {"label": cell.label, "image": cell.image, "profile": cell.profile.name, "firmware": cell.firmware}
    res.update(
        seconds=obs.seconds,
        milestones_s=obs.milestones_s,
        ended=obs.ended,
        forward=obs.host_port,
        app_body=obs.app_body,
        app_error=obs.app_error,
        acpi_shutdown_s=obs.shutdown_s,
        off_s=obs.off_s,
    )
    res["marker_hex"] = marker_hex
    classify(res, obs.console, cell.birth)
    cell.result = res
    return res


def classify(res: dict, console: str, birth: bool) -> None:
    """What the console says (domain.guest_evidence), into the result row."""
    ev = parse(console)
    fail = boot_failure(console)
    if birth:
        res["outcome"] = "born" if ev.birth.get("ok") == "1" else (fail.kind if fail else "birth-incomplete")
        res["birth"] = ev.birth
        fail = None if ev.birth.get("ok") == "1" else fail
    else:
        res["outcome"] = "booted" if ev.complete else (fail.kind if fail else "unknown")
    res["failure"] = fail.detail if fail else None
    res["root_driver"] = ev.root.driver if ev.root else None
    res["nics"] = [(n.name, n.driver, n.ipv4) for n in ev.nics]
    res["netcfg"] = list(ev.netcfg.names) if ev.netcfg else None
    res["undriven"] = [p.id for p in (ev.undriven_storage + ev.undriven_network)]
    marker_hex = res.get("marker_hex", "")
    res["disk_marker_ok"] = any(d.marker == marker_hex for d in ev.disks)
    body = res.get("app_body") or ""
    res["app_ok"] = bool(body and marker_hex in body and (ev.boot_id or "?") in body)
    res["guest_uptime_s"] = ev.uptime_s


def _cause(r: dict) -> str:
    if r["outcome"] == "born":
        b = r.get("birth", {})
        return (
            f"born: root={b.get('root')} ({b.get('driver')}), NIC {b.get('nic')}, initramfs {b.get('initramfs')} "
            f"({b.get('initrd_modules')} modules), update-grub {b.get('update_grub_s')} s"
        )
    if r["outcome"] == "booted":
        nics = ", ".join(f"{n} {d or 'no driver'} {ip or 'no address'}" for n, d, ip in r["nics"]) or "no NIC"
        extra = f"; no driver for {', '.join(r['undriven'])}" if r.get("undriven") else ""
        app = "app answers" if r.get("app_ok") else "app NOT reachable"
        return f"root on {r['root_driver']}; {nics}; {app}{extra}"
    return r.get("failure") or r["outcome"]


def outcome_table(results: list[dict]) -> str:
    rows = [
        "| console (fixture) | firmware | outcome | cause / what the guest saw | boot s (ready or end) | ACPI off s |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: r["label"]):
        secs = r.get("off_s") if r["outcome"] == "born" else r["seconds"]
        rows.append(
            f"| `{r['label']}.log` | {r['firmware']} | {r['outcome']} | {_cause(r)} | {secs} | "
            f"{r.get('acpi_shutdown_s') or '-'} |"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "consoles")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--only", default="", help="regex on cell labels")
    ap.add_argument("--no-births", action="store_true", help="skip legacy-bios births and born-disk cells")
    ap.add_argument("--table", action="store_true", help="only print the outcome table of OUT/results.json")
    ap.add_argument(
        "--reclassify", action="store_true", help="re-derive outcomes in OUT/results.json from the saved consoles"
    )
    args = ap.parse_args()
    if args.reclassify:
        path = args.out / "results.json"
        rows = json.loads(path.read_text())
        for r in rows:
            r.setdefault("marker_hex", f"crossvisor-marker {r['label']}"[:64].encode().ljust(64, b"\0").hex())
            classify(r, (args.out / f"{r['label']}.log").read_text(errors="replace"), birth="birth" in r)
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return 0
    if args.table:
        print(outcome_table(json.loads((args.out / "results.json").read_text())))
        return 0
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
            fw = "efi" if "efi" in prof.firmware else "bios"
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
                keep = work / f"legacy-bios-born-{prof.name}.qcow2"
                births.append(
                    Cell(
                        f"legacy-bios--birth--{prof.name}",
                        "legacy-bios",
                        images["legacy-bios"].disk,
                        "bios",
                        prof,
                        birth=True,
                        keep_disk=keep,
                    )
                )
                born[prof.name] = keep
            run(births)
            cells = []
            for src, disk in born.items():
                if not disk.exists():
                    continue
                for prof in main_profiles:
                    cells.append(Cell(f"legacy-bios-born-{src}--{prof.name}", "legacy-bios", disk, "bios", prof))
                for key in ("kvm-virtio-scsi", "esxi-lsisas", "xen-hvm-e1000"):
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
