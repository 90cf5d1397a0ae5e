"""Data integrity a person can read: a manifest of the guest's own files (path, modification time,
size, MD5) taken over SSH on the source and again on the target, compared file by file. Pure.

A file whose content differs while its modification time is the one it had on the source was not
written through the guest's file system: its bytes changed underneath (a conversion, a copy, the
storage), and ``disks`` fails naming it. A file with a new modification time was written by the
guest itself, by a shutdown, or by a remedy: listed as changed, not a failure. The paths that
every boot rewrites or deletes (logs, caches, temporary files) are left out.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

# Everything on the root file system and /boot (each -xdev: no /proc, /sys, /dev, /run or other
# mounts), minus what any boot churns. GNU find and md5sum (coreutils): every systemd
# distribution has them. Read-only: prints, writes nothing in the guest.
PRUNED = ("/tmp", "/var/tmp", "/var/log", "/var/cache", "/var/lib/systemd", "/var/spool", "/lost+found", "/swapfile")


def script(root: str = "/") -> str:
    """The manifest's commands: ``root`` and, where they are file systems of their own, its /boot
    and /boot/efi (each -xdev)."""
    prune = " -o ".join(f"-path {root.rstrip('/')}{p}" for p in PRUNED)
    base = root.rstrip("/")
    return f"""
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
command -v md5sum >/dev/null && find / -maxdepth 0 -printf '' 2>/dev/null || {{ echo "MANIFEST-NONE no GNU find/md5sum"; exit 0; }}
echo "MANIFEST-BEGIN"
for r in {root} {base}/boot {base}/boot/efi; do
  [ "$r" = {root} ] || mountpoint -q "$r" 2>/dev/null || continue
  find "$r" -xdev \\( {prune} \\) -prune -o -type f -printf 'S %T@ %s %p\\n'
  find "$r" -xdev \\( {prune} \\) -prune -o -type f -print0 | xargs -0 -r md5sum 2>/dev/null | sed 's/^/H /'
done
echo "MANIFEST-END"
"""


SCRIPT = script()

SHOWN = 12  # file names kept per list in the evidence


@dataclass
class Manifest:
    files: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # path -> (md5, mtime, size)

    def render(self) -> bytes:
        """The artifact: one ``md5 mtime size path`` line per file, gzip'd (tens of thousands of lines)."""
        text = "".join(f"{h} {m} {s} {p}\n" for p, (h, m, s) in sorted(self.files.items()))
        return gzip.compress(text.encode(errors="surrogateescape"), mtime=0)


def parse(output: str) -> Manifest | None:
    """The manifest printed by :data:`SCRIPT`, or None when it did not run to its end."""
    if "MANIFEST-END" not in output:
        return None
    stat: dict[str, tuple[str, int]] = {}
    sums: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("S "):
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[2].isdigit():
                stat[parts[3]] = (parts[1].split(".")[0], int(parts[2]))
        elif line.startswith("H ") and len(line) > 36 and line[2:34].isalnum():
            # md5sum escapes odd names with a leading backslash: those few are left out
            if line[1:2] == " " and line[2:3] != "\\" and line[34:36] == "  ":
                sums[line[36:]] = line[2:34]
    return Manifest({p: (h, stat[p][0], stat[p][1]) for p, h in sums.items() if p in stat})


def read(blob: bytes) -> Manifest:
    files = {}
    for line in gzip.decompress(blob).decode(errors="surrogateescape").splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2].isdigit():
            files[parts[3]] = (parts[0], parts[1], int(parts[2]))
    return Manifest(files)


@dataclass
class ManifestDiff:
    compared: int = 0  # files present on both sides
    corrupt: list[str] = field(default_factory=list)  # content differs, modification time unchanged
    changed: list[str] = field(default_factory=list)  # written on the target side (new mtime)
    missing: list[str] = field(default_factory=list)  # on the source, not on the target
    added: int = 0  # on the target only


def compare(source: Manifest, target: Manifest) -> ManifestDiff:
    d = ManifestDiff()
    for path, (h, mtime, size) in sorted(source.files.items()):
        got = target.files.get(path)
        if got is None:
            d.missing.append(path)
            continue
        d.compared += 1
        if got[0] == h:
            continue
        if got[1] == mtime and got[2] == size:
            d.corrupt.append(path)
        else:
            d.changed.append(path)
    d.added = len(set(target.files) - set(source.files))
    return d


def _names(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def verdict(d: ManifestDiff) -> tuple[str, dict[str, str]]:
    """("" when the files agree, else the one-line cause) and the evidence."""
    ev = {
        "files_compared": str(d.compared),
        "files_changed_by_guest": _names(d.changed) or "-",
        "files_new_on_target": str(d.added),
    }
    if d.corrupt:
        ev["files_corrupt"] = _names(d.corrupt)
        return (
            f"{len(d.corrupt)} of {d.compared} files differ from the source with their modification time "
            f"unchanged (changed underneath the guest): {_names(d.corrupt)}",
            ev,
        )
    if d.missing:
        ev["files_missing"] = _names(d.missing)
        return f"{len(d.missing)} files of the source are gone on the target: {_names(d.missing)}", ev
    return "", ev
