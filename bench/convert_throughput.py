"""Conversion throughput: raw -> {raw, vpc, vhdx, qcow2, vmdk} vs a plain copy of the same bytes.

    .venv/bin/python bench/convert_throughput.py [--size-mib 256] [--reps 5] [--random-fraction 0.5]
        [--stat min|median] [--dir /tmp]

The source disk is real data: 1 MiB blocks, by default half random and half zeros (spread evenly,
like a freshly installed guest). Every run starts from the page cache (the source was just
written), so both sides measure CPU + write cost, not the source disk. convert(durable=True),
the default, flushes its output once (``-t writeback``); ``durable=False`` (``-t unsafe``) and
``shutil.copyfile`` never flush. So each conversion is timed twice and compared like with like:
``durable=False`` vs copyfile, ``durable=True`` vs copyfile + fsync. Goal: raw/vpc/vhdx <= 1.3x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers import diskconv  # noqa: E402

MiB = 2**20
TARGETS = [
    ("raw", ""),
    ("vpc", ""),
    ("vhdx", ""),
    ("qcow2", ""),
    ("vmdk", "monolithicSparse"),
    ("vmdk", "streamOptimized"),  # deflate: CPU-bound by design, not part of the goal
]
GOAL = {"raw", "vpc", "vhdx"}


def make_source(path: Path, size_mib: int, random_fraction: float) -> None:
    """1 MiB blocks, ``random_fraction`` of them random (evenly spread), the rest zeros."""
    with open(path, "wb") as fh:
        for i in range(size_mib):
            rnd = int((i + 1) * random_fraction) > int(i * random_fraction)
            fh.write(os.urandom(MiB) if rnd else bytes(MiB))


def run_interleaved(
    ops: dict[str, tuple[Callable[[], object], int]],
    cleanup: Callable[[], None],
    warm: Callable[[], None],
    reps: int,
    stat: Callable[[list[float]], float],
) -> dict[str, float]:
    """Seconds per op (``stat`` over the runs). Ops are interleaved per round so load from other processes on
    this shared machine hits all of them alike; dirty pages are synced before each timing so
    one op's writeback is not billed to the next, and the source is re-read into the page
    cache first (qemu-img may leave it evicted, which would bill a disk read to the next op)."""
    times: dict[str, list[float]] = {name: [] for name in ops}
    for rep in range(reps):
        for name, (fn, max_reps) in ops.items():
            if rep >= max_reps:
                continue
            cleanup()
            warm()
            os.sync()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    cleanup()
    return {name: stat(v) for name, v in times.items()}


def copy_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--random-fraction", type=float, default=0.5)
    # min estimates the uncontended cost on a shared machine; median shows typical cost.
    ap.add_argument("--stat", choices=("min", "median"), default="min")
    ap.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cv-bench-", dir=args.dir) as tmp:
        src = Path(tmp) / "src.raw"
        make_source(src, args.size_mib, args.random_fraction)
        dst = Path(tmp) / "dst"

        def rm() -> None:
            dst.unlink(missing_ok=True)

        ops: dict[str, tuple[Callable[[], object], int]] = {
            "copy": (lambda: shutil.copyfile(src, dst), args.reps),
            "copy+fsync": (lambda: copy_fsync(src, dst), args.reps),
        }
        for fmt, sub in TARGETS:
            reps = 1 if sub == "streamOptimized" else args.reps
            for durable in (False, True):
                ops[f"{fmt}/{sub}/{durable}"] = (
                    lambda f=fmt, s=sub, d=durable: diskconv.convert(src, "raw", dst, f, subformat=s, durable=d),
                    reps,
                )

        def warm() -> None:
            with open(src, "rb") as fh:
                while fh.read(8 * MiB):
                    pass

        stat = min if args.stat == "min" else statistics.median
        med = run_interleaved(ops, rm, warm, args.reps, stat)
        copy_s, copy_sync_s = med["copy"], med["copy+fsync"]
        rows = []
        for fmt, sub in TARGETS:
            diskconv.convert(src, "raw", dst, fmt, subformat=sub)
            size = dst.stat().st_blocks * 512
            ok = diskconv.compare(src, "raw", dst, fmt)
            rm()
            name = f"raw->{fmt}{'/' + sub if sub else ''}"
            fast, durable = med[f"{fmt}/{sub}/False"], med[f"{fmt}/{sub}/True"]
            rows.append((name, fmt in GOAL, fast, durable, size, ok))

    mb = args.size_mib
    print(
        f"source: {mb} MiB raw, {args.random_fraction:.0%} random 1 MiB blocks, rest zero; {args.stat} of {args.reps} runs; "
        f"{os.cpu_count()} cpus; convert() = full API call (qemu-img + size check + rename)"
    )
    print(
        f"baselines: shutil.copyfile {copy_s:.3f} s ({mb / copy_s:.0f} MiB/s), "
        f"copyfile+fsync {copy_sync_s:.3f} s ({mb / copy_sync_s:.0f} MiB/s)"
    )
    head = (
        f"{'conversion':<28}{'durable=False s':>16}{'x copyfile':>11}"
        f"{'durable s':>11}{'x copy+fsync':>13}{'x copyfile':>11}{'disk MiB':>9}  verdict"
    )
    print(head)
    failed = False
    for name, goal, fast, durable, size, ok in rows:
        r_fast, r_sync, r_dur = fast / copy_s, durable / copy_sync_s, durable / copy_s
        verdict = "" if ok else "CONTENT MISMATCH"
        if goal:
            met = r_fast <= 1.3 and r_sync <= 1.3
            verdict = verdict or ("goal met" if met else "goal MISSED (>1.3x)")
            failed |= not met
        failed |= not ok
        print(
            f"{name:<28}{fast:>16.3f}{r_fast:>11.2f}{durable:>11.3f}{r_sync:>13.2f}"
            f"{r_dur:>11.2f}{size / MiB:>9.0f}  {verdict}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
