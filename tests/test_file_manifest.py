"""The manifest of a guest's files: the commands the SSH channel runs (here on a real directory
with the machine's own GNU find and md5sum), the artifact, and the comparison that fails ``disks``
for a file changed underneath the guest while a file the guest wrote is only listed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from domain import file_manifest, grading
from domain.model import Grade
from domain.stage_io import AppProbe, GuestDisk, GuestObservation


def _take(root: Path) -> file_manifest.Manifest:
    out = subprocess.run(
        ["sh", "-s"], input=file_manifest.script(str(root)), capture_output=True, text=True, check=True
    )
    got = file_manifest.parse(out.stdout)
    assert got is not None, out.stdout[-500:] + out.stderr
    return file_manifest.read(got.render())  # through the artifact, as verify reads it


def _tree(root: Path) -> None:
    for rel, body in {
        "etc/fstab": "UUID=1234 / ext4 defaults 0 1\n",
        "etc/hostname": "golden\n",
        "usr/bin/app": "#!/bin/sh\necho app\n",
        "srv/data/orders.db": "x" * 5000,
        "var/log/syslog": "boot 1\n",
        "tmp/scratch": "t\n",
        "name with spaces.txt": "ok\n",
    }.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)


def test_a_file_changed_underneath_the_guest_fails_disks_and_one_it_wrote_is_listed(tmp_path: Path) -> None:
    root = tmp_path / "guest"
    _tree(root)
    before = _take(root)
    assert str(root / "etc/fstab") in before.files and str(root / "name with spaces.txt") in before.files
    churned = (str(root / "var/log"), str(root / "tmp"))
    assert not [p for p in before.files if p.startswith(churned)]  # what every boot churns

    db = root / "srv/data/orders.db"
    st = db.stat()
    db.write_text("x" * 4999 + "y")  # one byte flipped, size and mtime as before: not the guest's doing
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    (root / "etc/hostname").write_text("golden-moved\n")  # the guest wrote it
    os.utime(root / "etc/hostname", (st.st_mtime + 100, st.st_mtime + 100))
    (root / "var/log/syslog").write_text("boot 2\n")
    (root / "etc/new.conf").write_text("new\n")
    diff = file_manifest.compare(before, _take(root))

    assert diff.corrupt == [str(db)] and diff.changed == [str(root / "etc/hostname")]
    assert diff.missing == [] and diff.added == 1 and diff.compared == len(before.files)
    why, ev = file_manifest.verdict(diff)
    assert (
        why
        == f"1 of {diff.compared} files differ from the source with their modification time unchanged (changed underneath the guest): {db}"
    )
    assert ev["files_changed_by_guest"] == str(root / "etc/hostname")


def test_a_file_gone_on_the_target_fails_and_agreeing_files_pass(tmp_path: Path) -> None:
    root = tmp_path / "guest"
    _tree(root)
    before = _take(root)
    assert file_manifest.verdict(file_manifest.compare(before, _take(root)))[0] == ""
    (root / "usr/bin/app").unlink()
    why, ev = file_manifest.verdict(file_manifest.compare(before, _take(root)))
    assert why == f"1 files of the source are gone on the target: {root / 'usr/bin/app'}"


def test_disks_is_graded_on_the_files_after_the_marker(tmp_path: Path) -> None:
    diff = file_manifest.ManifestDiff(compared=900, corrupt=["/usr/lib/libc.so.6"])
    marker = "63726f7373"
    guest = GuestObservation(
        reached_init=True,
        root_dev="/dev/vda1",
        root_mode="rw",
        channels=["ssh"],
        disks=[GuestDisk("vda", 1, "virtio_blk", marker)],
    )
    o = grading.Observed(None, guest, AppProbe(), marker, None, guest, AppProbe(), files=diff)
    [disks] = grading.grade_observed(["disks"], o)
    assert disks.grade == Grade.FAIL and disks.reason.startswith("1 of 900 files differ from the source")
    assert disks.evidence["channel"] == "ssh" and disks.evidence["files_corrupt"] == "/usr/lib/libc.so.6"
    o.files = file_manifest.ManifestDiff(compared=900, changed=["/etc/hostname"])
    [disks] = grading.grade_observed(["disks"], o)
    assert disks.grade == Grade.PASS and disks.evidence["files_changed_by_guest"] == "/etc/hostname"


def test_a_guest_without_gnu_tools_says_so() -> None:
    assert file_manifest.parse("MANIFEST-NONE no GNU find/md5sum\n") is None


def test_the_ssh_channel_writes_the_manifest_and_counts_its_files(tmp_path: Path) -> None:
    from activities.channels import ssh

    root = tmp_path / "guest"
    _tree(root)
    seen = GuestObservation()
    out = tmp_path / "target-console.files.gz"
    # the login's place taken by this machine's own shell, reading the same commands on stdin
    ssh.take_manifest(["sh", "-s"], out, seen, script=file_manifest.script(str(root)))
    assert seen.manifest_note == "" and seen.manifest_artifact == str(out)
    assert seen.manifest_files == len(file_manifest.read(out.read_bytes()).files) == 5
    ssh.take_manifest(["sh", "-c", "echo 'MANIFEST-NONE no GNU find/md5sum'"], out, seen)
    assert seen.manifest_note == "no manifest of the guest's files: MANIFEST-NONE no GNU find/md5sum"


def test_a_guest_printing_without_end_is_cut_off_not_read_into_memory(tmp_path: Path, monkeypatch) -> None:
    from activities.channels import ssh

    monkeypatch.setattr(ssh, "MANIFEST_MAX_BYTES", 1 << 20)
    seen = GuestObservation()
    ssh.take_manifest(["sh", "-c", "cat >/dev/null; echo MANIFEST-BEGIN; yes 'S 1 1 /x'"], tmp_path / "m.gz", seen)
    assert seen.manifest_note == "no manifest of the guest's files: more than 1 MiB" and not seen.manifest_artifact
