from domain import grading, matrix, prediction
from domain.model import CHECKS, Concurrency, Grade, GuestImage, Host, Platform, overall_grade
from domain.plan import CampaignPlan
from domain.scheduling import LabState, fifo_schedule, schedule, why_unschedulable
from domain.vm import DiskSpec, Hardware, NicSpec


def plan(**kw) -> CampaignPlan:
    return CampaignPlan(
        name="p",
        platforms=[
            Platform("a", "kvm", "libvirt"),
            Platform("b", "xen", "libvirt", nic_models=["netfront", "e1000"]),
            Platform("c", "vsphere", "vsphere"),
        ],
        images=[GuestImage("i1"), GuestImage("i2", firmware="efi")],
        **kw,
    )


def test_expand_all_ordered_pairs() -> None:
    cells = matrix.expand(plan())
    assert len(cells) == 3 * 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    assert all(c.source != c.target for c in cells)
    assert cells[0].checks == list(CHECKS)


def test_explicit_pairs_and_same_platform() -> None:
    assert len(matrix.expand(plan(pairs=[["a", "b"]]))) == 2
    assert len(matrix.expand(plan(include_same_platform=True))) == 9 * 2


def test_fingerprint_tracks_what_decides_the_result() -> None:
    p1, p2 = plan(), plan()
    p2.platforms[1].nic_models = ["netfront"]
    f1 = {c.id: c.fingerprint for c in matrix.expand(p1)}
    f2 = {c.id: c.fingerprint for c in matrix.expand(p2)}
    changed = {k for k in f1 if f1[k] != f2[k]}
    assert changed and all("b" in k.split("--")[:2] for k in changed)
    assert f1 == {c.id: c.fingerprint for c in matrix.expand(plan())}  # stable


def hw(**kw) -> Hardware:
    base = dict(
        cpus=2,
        memory_mib=512,
        disks=[DiskSpec("/d", "qcow2", capacity_bytes=1 << 20)],
        nics=[NicSpec("virtio")],
        firmware="bios",
        metadata={"k": "v"},
    )
    base.update(kw)
    return Hardware(**base)


def test_early_stop_grades() -> None:
    assert {r.grade for r in grading.after_stage_failure(["boots"], "provision", "x", {})} == {Grade.SKIPPED}
    assert {r.grade for r in grading.after_stage_failure(["boots"], "import", "x", {})} == {Grade.FAIL}
    assert {r.grade for r in grading.after_infra_error(["boots"], "convert", "x")} == {Grade.ERROR}
    assert overall_grade([Grade.PASS, Grade.FAIL, Grade.ERROR]) == Grade.ERROR
    assert overall_grade([Grade.SKIPPED]) == Grade.SKIPPED
    assert grading.merge(["boots", "nics"], [])[1].grade == Grade.SKIPPED


def test_predictions_from_declared_traits() -> None:
    esx65 = Platform("esx65", "vsphere", "vsphere", hardware_version="vmx-13", firmware=["bios", "efi"])
    esx8 = Platform("esx8", "vsphere", "vsphere", hardware_version="vmx-20")
    xen = Platform("xen", "xen", "libvirt", firmware=["bios"], nic_models=["netfront"])
    checks = ["boots", "nics", "metadata"]
    newer = {p.check: p for p in prediction.predict(checks, esx8, esx65, GuestImage("i"))}
    assert newer["boots"].grade == Grade.FAIL and "vmx-20 is newer than esx65" in newer["boots"].reason
    efi = {p.check: p for p in prediction.predict(checks, esx8, xen, GuestImage("i", firmware="efi"))}
    assert efi["boots"].grade == Grade.FAIL and efi["boots"].rule == "declared firmware"
    assert efi["metadata"].grade == Grade.PASS  # firmware says nothing about metadata
    mapped = {p.check: p for p in prediction.predict(checks, esx65, xen, GuestImage("i", nic_model="vmxnet3"))}
    assert mapped["nics"].grade == Grade.PASS and "mapped to netfront" in mapped["nics"].reason
    assert mapped["boots"].rule == "default"


def lab(n_per_kind: int = 2, slots: int = 1) -> tuple[dict, dict, dict]:
    hosts, ph = {}, {}
    for p, k in (("a", "kvm"), ("b", "xen"), ("c", "vsphere")):
        ph[p] = []
        for i in range(n_per_kind):
            h = Host(f"{p}{i}", k, "libvirt", "test:///default", slots=slots)
            hosts[h.name] = h
            ph[p].append(h.name)
    return hosts, ph, {"a": "kvm", "b": "xen", "c": "vsphere"}


def test_schedule_respects_slots_and_limits() -> None:
    hosts, ph, kinds = lab(n_per_kind=2, slots=1)
    cells = matrix.expand(plan())
    picks = schedule(cells, hosts, ph, kinds, LabState({}, {}, 0), Concurrency(max_cells=10))
    load: dict[str, int] = {}
    for a in picks:
        assert a.source_host != a.target_host
        for h in (a.source_host, a.target_host):
            load[h] = load.get(h, 0) + 1
    assert max(load.values()) <= 1
    # at most 3 (six single-slot hosts, two per cell)
    assert len(picks) >= 2
    assert len(schedule(cells, hosts, ph, kinds, LabState({}, {}, 0), Concurrency(max_cells=2))) == 2
    capped = schedule(cells, hosts, ph, kinds, LabState({}, {}, 0), Concurrency(max_cells=10, per_kind={"kvm": 1}))
    assert sum(1 for a in capped if a.source_host.startswith("a") or a.target_host.startswith("a")) <= 1


def test_schedule_skips_unavailable_and_busy_hosts() -> None:
    hosts, ph, kinds = lab(n_per_kind=1, slots=1)
    cells = [c for c in matrix.expand(plan()) if c.source == "a" and c.target == "b"]
    assert schedule(cells, hosts, ph, kinds, LabState({}, {}, 0), Concurrency(), unavailable=frozenset({"a0"})) == []
    assert schedule(cells, hosts, ph, kinds, LabState({"b0": 1}, {}, 1), Concurrency()) == []


def test_fifo_baseline_blocks_at_head() -> None:
    hosts, ph, kinds = lab(n_per_kind=1, slots=1)
    cells = [c for c in matrix.expand(plan()) if c.source == "a"]
    picks = fifo_schedule(cells, hosts, ph, kinds, LabState({"b0": 1}, {}, 1), Concurrency())
    assert picks == []  # head needs b0; FIFO does not look past it even though a->c could run
    assert schedule(cells, hosts, ph, kinds, LabState({"b0": 1}, {}, 1), Concurrency()) != []


def test_watchdog_names_why_nothing_can_start() -> None:
    hosts, ph, kinds = lab(n_per_kind=1, slots=1)
    cells = [c for c in matrix.expand(plan()) if c.source == "a" and c.target == "b"]
    assert why_unschedulable(cells, hosts, ph, kinds, Concurrency()) == ""  # schedulable
    capped = why_unschedulable(cells, hosts, ph, kinds, Concurrency(per_kind={"xen": 0}))
    assert capped == "2 pending cells: concurrency.per_kind caps xen at 0"
    gone = why_unschedulable(cells, hosts, ph, kinds, Concurrency(), unavailable=frozenset({"b0"}))
    assert "no host in service with a free slot for platform(s) b" in gone
    same = [c for c in matrix.expand(plan(include_same_platform=True)) if c.source == c.target == "a"]
    assert "needs two hosts of a, it has 1" in why_unschedulable(same, hosts, ph, kinds, Concurrency())
