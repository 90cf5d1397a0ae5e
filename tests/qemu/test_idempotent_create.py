"""A stage that creates a VM is idempotent per attempt of its cell, on the real libvirtd.

What a killed worker leaves behind is a call already queued in libvirtd: its define lands after
the worker is gone, maybe after the next attempt looked for the VM. The next attempt must adopt
that VM when it is the cell's own (its recorded owner), and refuse, naming it, one that is not.
No guest is started: defines cost ~0.01 s here.
"""

from __future__ import annotations

import subprocess
import uuid

import libvirt
import pytest

from crossvisor.core.errors import NameTaken
from domain.vm import OWNER_KEY, DiskSpec, NicSpec, VmSpec
from drivers.libvirt.driver import LibvirtDriver

pytestmark = pytest.mark.qemu

URI = "qemu:///system"


@pytest.fixture
def drivers(libvirt_conn, tmp_path):
    """A factory of drivers on one test pool (each driver one attempt's connection); every domain
    and the pool are removed at the end."""
    pool = f"cvg-test-idem-{uuid.uuid4().hex[:6]}"
    made: list[LibvirtDriver] = []

    def make() -> LibvirtDriver:
        d = LibvirtDriver(URI, state_dir=tmp_path / "state", pool=pool, pool_path=str(tmp_path / "pool"))
        made.append(d)
        return d

    yield make
    cleaner = make()
    for name in cleaner.list_vms("cvg-test-idem"):
        cleaner.destroy(name)
    cleaner.storage.remove_pool()
    for d in made:
        d.close()


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk0.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def _spec(name: str, disk, owner: str) -> VmSpec:
    return VmSpec(
        name=name,
        cpus=1,
        memory_mib=64,
        disks=[DiskSpec(str(disk), "qcow2", "virtio", 0)],
        nics=[NicSpec("virtio")],
        owner=owner,
    )


def _uuid(name: str) -> str:
    c = libvirt.open(URI)
    try:
        return c.lookupByName(name).UUIDString()
    finally:
        c.close()


def test_a_define_that_an_earlier_attempt_left_is_adopted(drivers, disk):
    name = f"cvg-test-idem-{uuid.uuid4().hex[:6]}-src"
    owner = "campaign-a/cell-1"
    # attempt 1 (the worker that was killed): its define reached libvirtd
    drivers().provision(_spec(name, disk, owner))
    first = _uuid(name)

    hw = drivers().provision(_spec(name, disk, owner))  # attempt 2: adopts, no "already exists"

    assert _uuid(name) == first, "the VM was made again instead of adopted"
    assert OWNER_KEY not in hw.metadata, "who owns the VM is crossvisor's record, not an observation"
    assert hw.cpus == 1 and len(hw.disks) == 1


def test_a_define_that_lands_while_the_next_attempt_places_its_disks_is_adopted(drivers, disk):
    # the interleaving of the issue: attempt 2 finds no VM, uploads its overlay, and meanwhile the
    # dead worker's queued define lands; attempt 2's define then meets "already exists"
    name = f"cvg-test-idem-{uuid.uuid4().hex[:6]}-tgt"
    owner = "campaign-a/cell-2"
    late = drivers()
    attempt = drivers()
    place = attempt.storage.place
    landed: list[str] = []

    def place_then_late_define(vm, index, d):
        placed = place(vm, index, d)
        late.conn.defineXML(late.domain_xml(_spec(name, disk, owner), late._disk_sources(_spec(name, disk, owner))))
        landed.append(_uuid(name))
        return placed

    attempt.storage.place = place_then_late_define
    attempt.provision(_spec(name, disk, owner))

    assert landed, "the late define did not happen inside the attempt"
    assert _uuid(name) == landed[0]  # the late VM is the cell's VM now


def test_a_vm_of_that_name_that_is_not_the_cells_own_is_refused_naming_it(drivers, disk):
    name = f"cvg-test-idem-{uuid.uuid4().hex[:6]}-src"
    drivers().provision(_spec(name, disk, "campaign-b/cell-9"))  # another campaign's
    foreign = _uuid(name)

    with pytest.raises(NameTaken, match=rf"domain '{name}' already exists .* belongs to 'campaign-b/cell-9'"):
        drivers().provision(_spec(name, disk, "campaign-a/cell-1"))

    other = f"cvg-test-idem-{uuid.uuid4().hex[:6]}-src"
    drivers().provision(_spec(other, disk, ""))  # made by hand: no owner record at all
    with pytest.raises(NameTaken, match=rf"domain '{other}' .* carries no crossvisor owner record"):
        drivers().provision(_spec(other, disk, "campaign-a/cell-1"))
    assert _uuid(name) == foreign, "the foreign VM must be left as it was"


def test_a_foreign_vm_in_a_late_define_race_is_refused_too(drivers, disk):
    name = f"cvg-test-idem-{uuid.uuid4().hex[:6]}-tgt"
    late = drivers()
    attempt = drivers()
    place = attempt.storage.place

    def place_then_foreign_define(vm, index, d):
        placed = place(vm, index, d)
        late.provision(_spec(name, disk, "someone-else"))
        return placed

    attempt.storage.place = place_then_foreign_define
    with pytest.raises(NameTaken, match=name):
        attempt.provision(_spec(name, disk, "campaign-a/cell-3"))


def test_a_lifecycle_snapshot_an_earlier_attempt_took_is_not_a_failure(drivers, disk):
    name = f"cvg-test-idem-{uuid.uuid4().hex[:6]}-tgt"
    drv = drivers()
    drv.provision(_spec(name, disk, "campaign-a/cell-4"))
    drv.snapshot(name, "crossvisor-lifecycle")
    drivers().snapshot(name, "crossvisor-lifecycle")  # the retried stage: no "snapshot refused" grade
    assert drv.conn.lookupByName(name).snapshotListNames(0) == ["crossvisor-lifecycle"]


def test_two_attempts_of_one_provision_at_once_both_end_with_the_one_vm(drivers, disk):
    # after a server restart a second attempt may start while the first still runs in the same
    # worker: both upload the overlay and define; neither may fail on the other's objects
    import threading

    name = f"cvg-test-idem-{uuid.uuid4().hex[:6]}-src"
    owner = "campaign-a/cell-5"
    a, b = drivers(), drivers()
    # the image's layers on the host already (another cell's): shared content volumes have a wait
    # of their own for concurrent uploads; what is raced here is the VM's overlay and its define
    a.provision(_spec(f"{name}-other", disk, "campaign-a/cell-0"))
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def attempt(drv):
        start.wait()
        try:
            drv.provision(_spec(name, disk, owner))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=attempt, args=(d,)) for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert a.list_vms(name) == [name, f"{name}-other"]
    assert a.storage.vol(f"{name}-disk0.qcow2") is not None  # the VM's disk is there
