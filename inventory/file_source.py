"""The embedded default inventory: hosts in a YAML file, leases and health in a local state dir.

Same model and semantics as NetBox (selection keys, slots-aware leases, health marking), so a
campaign moves from a laptop to the lab by changing one line of its spec.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crossvisor.core.safe_read import InputFileError, parse_yaml, read_text_bounded
from domain.messages import InventoryDelta
from domain.model import DRIVERS, HYPERVISOR_KINDS, Host
from inventory.selection import check_select, matches
from inventory.source import InventoryError, InventorySource

MAX_INVENTORY_BYTES = 16 * 1024 * 1024  # ~80,000 hosts in flow style; a bound, not a target
MAX_INVENTORY_NODES = 2_000_000
UNHEALTHY_AFTER = 3  # consecutive failed health checks before a host is marked unhealthy


def host_from_record(rec: object, where: str) -> Host:
    if not isinstance(rec, dict):
        raise InventoryError(f"{where}: expected a mapping")
    for f in ("name", "kind", "endpoint"):
        if not rec.get(f):
            raise InventoryError(f"{where}: missing field {f!r}")
    kind = rec["kind"]
    if kind not in HYPERVISOR_KINDS:
        raise InventoryError(f"{where} ({rec['name']}): kind {kind!r} not one of {list(HYPERVISOR_KINDS)}")
    driver = rec.get("driver") or ("vsphere" if kind == "vsphere" else "libvirt")
    if driver not in DRIVERS:
        raise InventoryError(f"{where} ({rec['name']}): driver {driver!r} not one of {list(DRIVERS)}")
    known = {
        "name",
        "kind",
        "driver",
        "endpoint",
        "site",
        "version",
        "tags",
        "cpus",
        "memory_mib",
        "slots",
        "credentials_ref",
        "status",
        "custom",
    }
    extra = sorted(set(rec) - known)
    if extra:
        raise InventoryError(f"{where} ({rec['name']}): unknown fields {extra}")
    if "password" in str(rec.get("credentials_ref", "")).lower() and ":" not in str(rec.get("credentials_ref")):
        raise InventoryError(f"{where} ({rec['name']}): credentials_ref must be a reference (env:NAME or file:/path)")
    try:
        return Host(
            name=str(rec["name"]),
            kind=kind,
            driver=driver,
            endpoint=str(rec["endpoint"]),
            site=str(rec.get("site", "")),
            version=str(rec.get("version", "")),
            tags=[str(t) for t in rec.get("tags", [])],
            cpus=int(rec.get("cpus", 0)),
            memory_mib=int(rec.get("memory_mib", 0)),
            slots=int(rec.get("slots", 1)),
            credentials_ref=str(rec.get("credentials_ref", "")),
            status=str(rec.get("status", "active")),
            custom={str(k): str(v) for k, v in (rec.get("custom") or {}).items()},
            inventory_id=str(rec["name"]),
        )
    except (TypeError, ValueError, AttributeError):
        # not the exception text: int('hunter2') quotes the value, and this lands in history
        raise InventoryError(
            f"{where} ({rec['name']}): cpus, memory_mib and slots must be whole numbers, tags a list, custom a mapping"
        ) from None


def load_hosts(path: str | Path) -> dict[str, Host]:
    """Hosts of an inventory file by name. The read is bounded and typed (a regular UTF-8 file of
    at most ``MAX_INVENTORY_BYTES``; YAML without duplicate keys or alias bombs), and an error
    names the file, the line and the reason, never the content: the message of an activity's
    InventoryError lands in workflow history."""
    try:
        text = read_text_bounded(path, what="inventory", max_bytes=MAX_INVENTORY_BYTES)
        doc = parse_yaml(text, where=str(path), max_nodes=MAX_INVENTORY_NODES).data
    except InputFileError as e:
        raise InventoryError(str(e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), list):
        raise InventoryError(f"{path}: expected a mapping with a 'hosts' list")
    hosts: dict[str, Host] = {}
    for i, rec in enumerate(doc["hosts"]):
        h = host_from_record(rec, f"{path}: hosts.{i}")
        if h.name in hosts:
            raise InventoryError(f"{path}: hosts.{i}: duplicate host name {h.name!r}")
        hosts[h.name] = h
    return hosts


class FileInventory(InventorySource):
    def __init__(self, path: str | Path, state_dir: str | Path):
        self.path = Path(path)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._all = self._load()

    def _load(self) -> dict[str, Host]:
        return load_hosts(self.path)

    # -- state files (leases, health) are shared by every worker process on this machine --------
    @contextmanager
    def _state(self, name: str) -> Iterator[dict]:
        lock = self.state_dir / f"{name}.lock"
        with open(lock, "a") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            f = self.state_dir / f"{name}.json"
            data = json.loads(f.read_text()) if f.exists() else {}
            yield data
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, f)

    def _unhealthy(self) -> set[str]:
        with self._state("health") as h:
            return {n for n, v in h.items() if v.get("unhealthy")}

    def changes_since(self, selections: dict[str, dict[str, str]], cursor: str = "") -> InventoryDelta:
        """A file has no change feed: re-read it and answer with everything (``full=True``)."""
        self._all = self._load()
        return super().changes_since(selections, cursor)

    def hosts(self, select: dict[str, str] | None = None) -> list[Host]:
        select = select or {}
        check_select(select)
        bad = self._unhealthy()
        return [h for h in self._all.values() if h.status == "active" and h.name not in bad and matches(h, select)]

    def host(self, name: str) -> Host:
        try:
            return self._all[name]
        except KeyError:
            raise InventoryError(f"unknown host {name!r}") from None

    def acquire_lease(self, host: str, owner: str, note: str = "") -> bool:
        slots = self.host(host).slots
        with self._state("leases") as leases:
            owners = leases.setdefault(host, [])
            if owner in owners:
                return True
            if len(owners) >= slots:
                return False
            owners.append(owner)
            return True

    def release_lease(self, host: str, owner: str) -> None:
        with self._state("leases") as leases:
            owners = leases.get(host, [])
            if owner in owners:
                owners.remove(owner)
            if not owners:
                leases.pop(host, None)

    def leases(self) -> dict[str, str]:
        with self._state("leases") as leases:
            return {h: ",".join(o) for h, o in leases.items() if o}

    def release_owned_by(self, prefix: str) -> list[str]:
        """Release every lease whose owner starts with ``prefix`` (a dead campaign's leases)."""
        freed = []
        with self._state("leases") as leases:
            for h, owners in list(leases.items()):
                keep = [o for o in owners if not o.startswith(prefix)]
                if keep != owners:
                    freed.append(h)
                if keep:
                    leases[h] = keep
                else:
                    leases.pop(h)
        return freed

    def report_health(self, host: str, ok: bool, detail: str = "") -> None:
        self.host(host)
        with self._state("health") as health:
            rec = health.setdefault(host, {"failures": 0, "unhealthy": False, "detail": ""})
            if ok:
                rec["failures"] = 0
            else:
                rec["failures"] += 1
                rec["detail"] = detail[:500]
                if rec["failures"] >= UNHEALTHY_AFTER:
                    rec["unhealthy"] = True

    def is_unhealthy(self, host: str) -> bool:
        return host in self._unhealthy()

    def clear_health(self, host: str) -> None:
        with self._state("health") as health:
            health.pop(host, None)

    def snapshot(self) -> list[Host]:
        return list(self._all.values())
