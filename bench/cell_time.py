"""Where each cell's time went: per stage, seconds against the cell's own boot, and the largest
sub-step; the campaign's wall time against its CPU floor. Read from a finished run's execution
log, so the figures are the ones the run measured (a demo, a test campaign).

    .venv/bin/python bench/cell_time.py [--home .state] [--campaign ID] [--cores N] [--json]

Every stage records its sub-steps (``crossvisor.core.steps``: upload, define, start, console
wait, probe, power off, convert, image build, birth, ...) with exclusive seconds, so a stage's
steps plus "other" add up to the stage. The CPU floor is the CPU seconds of the run's builds,
births, boots (the guests' QEMU CPU, as libvirt reports it) and conversions (qemu-img's rusage),
divided by the cores: no schedule on this machine can end sooner.

Goals (issue 24), each printed with its verdict:
- import <= 1/3 of the cell's boot; provision with a cached image <= 1/3 of the cell's boot;
- lifecycle <= 1 boot;
- the largest upload's rate >= 50 % of a local copy of the same file (timed right after it);
- wall <= 1.3 x the CPU floor (first demo, fresh machine), <= 1.2 x (image cache warm).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain import stage_time as st  # noqa: E402

STAGE_ORDER = (
    "reserve",
    "provision",
    "baseline",
    "export",
    "convert",
    "import",
    "boot",
    "verify",
    "lifecycle",
    "remediate",
    "cleanup",
    "release",
)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(records: list[dict], campaign: str | None, cores: int, warm: bool | None = None) -> dict:
    times = st.stage_times(records, campaign)
    boots = st.boot_seconds(times)
    cells: dict[str, list[st.StageTime]] = {}
    for t in times:
        cells.setdefault(t.cell, []).append(t)
    rows = []
    for cell, ts in cells.items():
        boot = boots.get(cell, 0.0)
        for t in sorted(ts, key=lambda x: STAGE_ORDER.index(x.stage) if x.stage in STAGE_ORDER else 99):
            name, secs = t.largest_step()
            rows.append(
                {
                    "cell": cell,
                    "stage": t.stage,
                    "outcome": t.outcome,
                    "seconds": round(t.seconds, 2),
                    "boots": round(t.seconds / boot, 2) if boot else None,
                    "largest_step": name,
                    "largest_step_s": round(secs, 2),
                    "cpu_s": round(t.cpu_s, 1),
                    "image_cached": st.image_was_cached(t) if t.stage == "provision" else None,
                }
            )
    fl = st.floor(times, cores)
    up_bytes, up_s = st.upload_rate(times)
    copy_s = 0.0
    for t in times:
        up = t.steps.get("upload") or {}
        if int(up.get("big_bytes", 0)) == up_bytes and up.get("big_copy_s"):
            copy_s = float(up["big_copy_s"])
    goals = []

    def worst(stage: str, pick=lambda r: True) -> tuple[float, str]:
        got = [(r["boots"], r["cell"]) for r in rows if r["stage"] == stage and r["boots"] is not None and pick(r)]
        got = [g for g in got if g[0] is not None]
        return max(got) if got else (float("nan"), "")

    for label, stage, limit, pick in (
        ("import <= 1/3 boot", "import", st.IMPORT_MAX_BOOTS, lambda r: r["outcome"] == "ok"),
        (
            "provision (image cached) <= 1/3 boot",
            "provision",
            st.PROVISION_CACHED_MAX_BOOTS,
            lambda r: r["outcome"] == "ok" and r["image_cached"],
        ),
        ("lifecycle <= 1 boot", "lifecycle", st.LIFECYCLE_MAX_BOOTS, lambda r: r["outcome"] == "ok"),
    ):
        w, cell = worst(stage, pick)
        goals.append(
            {
                "goal": label,
                "measured": f"worst {w:.2f} boots ({cell})" if cell else "no such stage ran",
                "verdict": _verdict(bool(cell) and w <= limit) if cell else "not measured",
            }
        )
    if up_bytes and up_s and copy_s:
        share = (up_bytes / up_s) / (up_bytes / copy_s)
        goals.append(
            {
                "goal": "upload >= 50 % of a local copy",
                "measured": f"{up_bytes / 2**20:.0f} MiB in {up_s:.2f} s = {up_bytes / up_s / 2**20:.0f} MiB/s; "
                f"local copy {copy_s:.2f} s = {up_bytes / copy_s / 2**20:.0f} MiB/s; {share:.0%}",
                "verdict": _verdict(share >= st.UPLOAD_MIN_OF_LOCAL_COPY),
            }
        )
    else:
        goals.append(
            {
                "goal": "upload >= 50 % of a local copy",
                "measured": "no upload large enough to time against a copy",
                "verdict": "not measured",
            }
        )
    limit = st.WARM_DEMO_MAX_FLOOR if warm else st.FIRST_DEMO_MAX_FLOOR
    goals.append(
        {
            "goal": f"wall <= {limit} x CPU floor ({'image cache warm' if warm else 'first run'})",
            "measured": f"wall {fl.wall_s:.0f} s, CPU {fl.cpu_s:.0f} s / {fl.cores} cores = floor {fl.floor_s:.0f} s, "
            f"{fl.ratio:.2f} x",
            "verdict": _verdict(fl.ratio <= limit),
        }
    )
    return {
        "campaign": campaign or (records[-1]["campaign"] if records else ""),
        "rows": rows,
        "floor": {"wall_s": fl.wall_s, "cpu_s": fl.cpu_s, "cores": fl.cores, "ratio": fl.ratio},
        "goals": goals,
    }


def print_report(rep: dict) -> None:
    print(f"campaign {rep['campaign']}")
    print(f"{'cell':28} {'stage':10} {'outcome':7} {'s':>7} {'x boot':>7} {'cpu s':>6}  largest sub-step")
    for r in rep["rows"]:
        boots = f"{r['boots']:.2f}" if r["boots"] is not None else "-"
        print(
            f"{r['cell'][:28]:28} {r['stage']:10} {r['outcome']:7} {r['seconds']:7.1f} {boots:>7} {r['cpu_s']:6.1f}"
            f"  {r['largest_step']} {r['largest_step_s']:.1f} s"
        )
    print()
    for g in rep["goals"]:
        print(f"{g['verdict']:>12}  {g['goal']}: {g['measured']}")


_WATCH = re.compile(r"^(\d\d):(\d\d):(\d\d) \S+ (\w+) (\d+)/(\d+)\b.*?(?:ETA ~([0-9hms]+)|$)")


def _secs(text: str) -> float:
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([hms])", text))


def eta_errors(lines: list[str]) -> tuple[float, list[tuple[int, float, float]]]:
    """From a demo's (or ``campaign watch``'s) progress lines: (the end, [(cells done, ETA said,
    seconds it really took from that line)]). The end is the first line with every cell done."""
    seen: list[tuple[float, int, int, float | None]] = []
    day = 0.0
    for line in lines:
        m = _WATCH.match(line.strip())
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + day
        if seen and t < seen[-1][0] - 43200:  # past midnight
            day += 86400
            t += 86400
        seen.append((t, int(m[5]), int(m[6]), _secs(m[7]) if m[7] else None))
    end = next((t for t, done, total, _ in seen if done == total), None)
    if end is None:
        return 0.0, []
    return end, [(done, eta, end - t) for t, done, _total, eta in seen if eta is not None and t < end]


def print_eta(path: Path) -> None:
    end, rows = eta_errors(path.read_text(errors="replace").splitlines())
    if not rows:
        print(f"ETA: no finished campaign's progress lines with an ETA in {path}")
        return
    after = [(d, eta, real) for d, eta, real in rows if d >= 2 and real > 0]
    worst = max((abs(eta - real) / real for _, eta, real in after), default=float("nan"))
    print(
        f"ETA: {len(rows)} lines with a figure, {len(after)} after two cells finished; worst error after two cells "
        f"{worst:+.0%}" + ("" if not after else f" ({_verdict(worst <= 0.3)}: goal within +-30 %)")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", default=os.environ.get("CROSSVISOR_HOME", ".state"))
    p.add_argument("--campaign", default=None, help="campaign id (default: the log's last)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--warm", action="store_true", help="the image cache was warm: the 1.2 x goal applies")
    p.add_argument("--json", action="store_true")
    p.add_argument("--eta-log", type=Path, help="a demo's output: its ETA lines against when it really ended")
    a = p.parse_args(argv)
    log = Path(a.home) / "executions.jsonl"
    if not log.is_file():
        print(f"no execution log at {log}", file=sys.stderr)
        return 2
    records = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    rep = report(records, a.campaign, a.cores, a.warm)
    if a.json:
        print(json.dumps(rep, indent=1))
    else:
        print_report(rep)
    if a.eta_log:
        print_eta(a.eta_log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
