"""Sub-step accounting (crossvisor.core.steps) and the pure summary of an execution log
(domain.stage_time): exclusive times, a real subprocess's CPU, the floor and the largest step."""

from __future__ import annotations

import sys
import time

from crossvisor.core import steps
from domain import stage_time


def test_nested_steps_count_their_time_once_and_outside_a_recording_nothing_is_kept() -> None:
    with steps.step("lost"):
        pass  # no recording open: a no-op, not an error
    with steps.recording() as rec:
        with steps.step("outer"):
            time.sleep(0.05)
            with steps.step("inner", nbytes=10):
                time.sleep(0.1)
        with steps.step("inner", nbytes=30):
            pass
    got = rec.as_dict()
    assert set(got) == {"outer", "inner"}
    assert 0.04 <= got["outer"]["seconds"] < 0.1  # its child's 0.1 s is the child's only
    assert got["inner"]["seconds"] >= 0.1 and got["inner"]["count"] == 2
    assert got["inner"]["bytes"] == 40 and got["inner"]["big_bytes"] == 30


def test_a_subprocess_cpu_is_charged_to_the_open_step_from_its_own_rusage() -> None:
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass"
    with steps.recording() as rec, steps.step("convert"):
        p = steps.run([sys.executable, "-c", burn], timeout=30)
    assert p.returncode == 0
    assert 0.25 <= rec.as_dict()["convert"]["cpu_s"] < 2.0


def test_a_tool_fed_on_stdin_has_its_whole_process_tree_charged() -> None:
    """A rung's guestfish reads its script on stdin and boots an appliance VM as its child: the
    child's CPU is the rung's (the demo's floor counts it)."""
    child = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass"
    tool = f"import subprocess, sys\nscript = sys.stdin.read()\nsubprocess.run([sys.executable, '-c', {child!r}])\nprint(script.upper())"
    with steps.recording() as rec, steps.step("guestfish"):
        p = steps.run([sys.executable, "-c", tool], timeout=30, input="mount /dev/sda1 /\n")
    assert (p.returncode, p.stdout) == (0, "MOUNT /DEV/SDA1 /\n\n")
    assert 0.25 <= rec.as_dict()["guestfish"]["cpu_s"] < 2.0


def _log(cell: str, stage: str, t0: float, secs: float, steps_: dict) -> list[dict]:
    base = {"campaign": "c1", "cell": cell, "stage": stage, "attempt": 1}
    return [
        {**base, "t": t0, "event": "start"},
        {**base, "t": t0 + secs, "event": "end", "outcome": "ok", "seconds": secs, "steps": steps_},
    ]


def test_stage_times_floor_and_largest_step_from_log_records() -> None:
    recs = (
        _log("a", "boot", 0, 30, {"console wait": {"seconds": 25, "cpu_s": 0}, "start": {"seconds": 1}})
        + _log("a", "import", 30, 12, {"upload": {"seconds": 2, "big_bytes": 100, "big_s": 2, "big_copy_s": 1}})
        + _log("a", "lifecycle", 42, 20, {"guest cpu": {"seconds": 0, "cpu_s": 40}})
    )
    times = stage_time.stage_times(recs)
    assert [t.stage for t in times] == ["boot", "import", "lifecycle"]
    assert stage_time.boot_seconds(times) == {"a": 30}
    assert times[0].largest_step() == ("console wait", 25)
    assert times[1].largest_step() == ("other", 10)  # 10 s no step covered: named as such
    fl = stage_time.floor(times, cores=2)
    assert (fl.wall_s, fl.cpu_s, fl.floor_s) == (62, 40, 20) and fl.ratio == 3.1
    assert stage_time.upload_rate(times) == (100, 2.0)


def test_the_lab_model_estimates_what_is_left_from_measured_stage_times() -> None:
    from domain.model import Cell, CellResult, StageRecord

    def result(cid: str, src: str, tgt: str, img: str, cached: bool = False) -> CellResult:
        stages = [
            StageRecord("provision", "ok", 40.0, timing={"image build": {"seconds": 30.0}}),
            StageRecord("baseline", "ok", 20.0),
            StageRecord("export", "ok", 10.0),
            StageRecord("import", "ok", 4.0),
            StageRecord("boot", "ok", 25.0),
            StageRecord("import", "ok", 99.0, round=1),  # a ladder round: not the unmodified move
        ]
        return CellResult(cid, src, tgt, img, [], stages, cached=cached)

    one = stage_time.lab_model([result("a", "esxi", "kvm", "p")])
    assert one.cells == 1 < stage_time.MIN_MEASURED_CELLS
    model = stage_time.lab_model([result("a", "esxi", "kvm", "p"), result("b", "esxi", "xen", "p")])
    assert model.cells == 2
    assert model.stage_s("provision", "esxi", "p") == 10.0  # the once-per-image build left out
    assert model.stage_s("import", "hyperv", "p") == 4.0  # unseen platform: the stage's mean for the image
    pipeline = ["provision", "baseline", "export", "import", "boot"]
    cells = [Cell("c", "esxi", "hyperv", "p", [], ""), Cell("d", "esxi", "kvm", "p", [], "")]
    # esxi/p's source side is done (a finished cell did it): only import + boot per cell are left
    left = stage_time.remaining_s(model, cells, set(), {}, pipeline, {("esxi", "p")})
    assert left == 2 * 29.0
    # "c" is half-way in its provision: it does the source side, "d" reuses it
    left = stage_time.remaining_s(model, cells, set(), {"c": "provision"}, pipeline, set())
    assert left == (5 + 20 + 10 + 4 + 25) + 29
    # "c" is half-way in its boot: past its source side, which "d" then reuses
    assert stage_time.remaining_s(model, cells, set(), {"c": "boot"}, pipeline, set()) == 12.5 + 29
    assert stage_time.remaining_s(model, cells, set(), {}, [*pipeline, "never-measured"], set()) is None


def test_the_eta_is_never_shorter_than_the_slowest_cells_own_chain() -> None:
    from domain.model import Cell, CellResult, StageRecord

    stages = [StageRecord(n, "ok", s) for n, s in (("provision", 10.0), ("baseline", 20.0), ("export", 10.0))]
    stages += [StageRecord(n, "ok", s) for n, s in (("import", 4.0), ("boot", 25.0))]
    model = stage_time.lab_model([CellResult(x, "esxi", "kvm", "p", [], stages) for x in "ab"])
    pipeline = ["provision", "baseline", "export", "import", "boot"]
    cells = [Cell("c", "esxi", "hyperv", "p", [], ""), Cell("d", "esxi", "kvm", "p", [], "")]
    # both cells wait for one source side (40 s), then import + boot (29 s) each
    total = stage_time.remaining_s(model, cells, set(), {}, pipeline, set())
    longest = stage_time.longest_remaining_s(model, cells, set(), {}, pipeline, set())
    assert (total, longest) == (40 + 29 + 29, 40 + 29)
    # eight lanes for two cells: the work over the lanes would say 12 s; the slowest cell needs 69
    assert stage_time.eta_s(total, 2, longest) == 69.0
    assert stage_time.eta_s(total, 1, longest) == 98.0
    # "c" is half-way in its baseline: "d" waits for the same side, which has 10 + 10 s left
    assert stage_time.longest_remaining_s(model, cells, set(), {"c": "baseline"}, pipeline, set()) == 20 + 29


def test_a_cell_in_a_round_of_the_ladder_has_its_re_import_onwards_left() -> None:
    from domain.model import Cell, CellResult, StageRecord

    stages = [StageRecord(n, "ok", s) for n, s in (("provision", 10.0), ("baseline", 20.0), ("export", 10.0))]
    stages += [StageRecord(n, "ok", s) for n, s in (("import", 4.0), ("boot", 25.0))]
    model = stage_time.lab_model([CellResult(x, "esxi", "kvm", "p", [], stages) for x in "ab"])
    pipeline = ["provision", "baseline", "export", "import", "boot"]
    cells = [Cell("c", "esxi", "hyperv", "p", [], "")]
    for at, left in (
        ("boot (after nic-config)", 12.5),
        ("remediate", 2.0 + 25),
        ("import (after nic-config)", 2.0 + 25),
    ):
        assert stage_time.remaining_s(model, cells, set(), {"c": at}, pipeline, set()) == left, at
        assert stage_time.longest_remaining_s(model, cells, set(), {"c": at}, pipeline, set()) == left, at


def test_a_stages_waits_are_not_its_work_and_a_slot_bound_lab_is_bounded_by_its_boots() -> None:
    from domain.model import Cell, CellResult, StageRecord

    # a boot that waited 70 s for a guest slot, then held it 25 s: its own work is 27 s
    boot = StageRecord(
        "boot",
        "ok",
        97.0,
        timing={"wait for a core": {"seconds": 70.0}, "start": {"seconds": 1.0}, "console wait": {"seconds": 24.0}},
    )
    stages = [StageRecord("import", "ok", 4.0, timing={"wait for upload": {"seconds": 3.0}}), boot]
    model = stage_time.lab_model([CellResult(x, "esxi", "kvm", "p", [], stages) for x in "ab"])
    assert model.stage_s("boot", "kvm", "p") == 27.0
    assert model.stage_s("import", "kvm", "p") == 1.0
    assert model.slot_s("boot", "kvm", "p") == 25.0 and model.slot_s("import", "kvm", "p") == 0.0
    assert model.slot_bound
    pipeline = ["import", "boot"]
    cells = [Cell(x, "esxi", "kvm", "p", [], "") for x in "cdefgh"]
    work = stage_time.remaining_s(model, cells, set(), {}, pipeline, set())
    slot_work = stage_time.remaining_s(model, cells, set(), {}, pipeline, set(), slots_only=True)
    longest = stage_time.longest_remaining_s(model, cells, set(), {}, pipeline, set())
    assert (work, slot_work, longest) == (6 * 28.0, 6 * 25.0, 28.0)
    # six lanes on two guest slots: the six boots take three rounds of 25 s, not one of 28
    assert stage_time.eta_s(work, 6, longest) == 28.0
    assert stage_time.eta_s(work, 6, longest, slot_work, 2) == 75.0
    # a lab whose boots never waited for a slot (remote hosts) is not bounded by them
    free = stage_time.lab_model([CellResult(x, "esxi", "kvm", "p", [], [stages[0]]) for x in "ab"])
    assert not free.slot_bound
    # all six "in boot" (the status shows the stage, not the wait): two hold the slots, half done;
    # four still wait for theirs and have all of their boot left
    in_boot = {c.id: "boot" for c in cells}
    assert stage_time.remaining_s(model, cells, set(), in_boot, pipeline, set(), True, 2) == 2 * 12.5 + 4 * 25
    assert stage_time.remaining_s(model, cells, set(), in_boot, pipeline, set(), True) == 6 * 12.5
