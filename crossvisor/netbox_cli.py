"""CLI commands for the inventory: ``crossvisor netbox check|init`` and ``crossvisor inventory ...``.

crossvisor netbox check SPEC     can a campaign run on this NetBox? what is missing, which devices
                                 are skipped and why (each reason once, with the fix); exit 1 if not
crossvisor netbox init [SPEC]    create what crossvisor needs (idempotent, reuses existing objects)
crossvisor inventory hosts SPEC  which hosts each platform selects; exit 1 when one selects none
crossvisor inventory leases SPEC | clear-health SPEC HOST

Wiring in ``crossvisor/cli.py``: ``register(sub)`` adds the ``netbox`` group, ``dispatch(args,
settings)`` runs it and the ``inventory`` group, ``check_plan(plan, spec)`` runs from ``validate``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crossvisor.core.config import Settings

MAX_LISTED = 10  # devices named per line before "and N more"


def register(sub: Any) -> None:
    nb = sub.add_parser("netbox", help="check and prepare a NetBox for crossvisor").add_subparsers(
        dest="sub", required=True
    )
    c = nb.add_parser(
        "check", help="can a campaign run on this NetBox? lists what is missing and why hosts are skipped"
    )
    c.add_argument("spec", help="campaign spec (inventory: netbox; optional netbox: mapping block)")
    i = nb.add_parser("init", help="create the roles, custom fields, tags and cluster types crossvisor needs")
    i.add_argument("spec", nargs="?", help="campaign spec whose mapping and platform kinds to prepare for")


async def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.cmd == "inventory":
        return run_inventory(args, settings)
    if args.sub == "check":
        return check_plan(_netbox_plan(args.spec), args.spec)
    return init(args.spec)


def _netbox_plan(spec: str):
    from crossvisor.spec import SpecError, load_spec

    plan = load_spec(spec)
    if plan.inventory != "netbox":
        raise SpecError(f"{spec}: inventory is {plan.inventory!r}, not netbox: nothing to check in NetBox")
    return plan


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_LISTED
    return ", ".join(items[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def _out(line: str = "") -> None:
    print(line, flush=True)


# --- netbox check ---------------------------------------------------------------------------------


def check_plan(plan, spec: str) -> int:
    """Print the NetBox check for a plan; 0 when the campaign can run, 1 when it cannot."""
    from inventory.factory import open_netbox
    from inventory.netbox_check import check_netbox

    inv = open_netbox(plan.netbox)
    try:
        rep = check_netbox(inv, [(p.name, p.kind, dict(p.select)) for p in plan.platforms], spec)
    finally:
        inv.close()
    print_report(rep, spec)
    return 0 if rep.ok else 1


def print_report(rep, spec: str) -> None:
    _out(f"NetBox {rep.url} (NetBox {rep.version}); mapping from {', '.join(rep.sources)}")
    _out(f"hosts are devices with {rep.selects}")
    if rep.cluster_types:
        _out(
            "cluster types: "
            + ", ".join(f"{n} ({s}) -> {k or 'not a hypervisor'}" for n, s, k in sorted(rep.cluster_types))
        )
    else:
        _out("cluster types: none")
    for f in sorted(rep.findings, key=lambda f: f.level != "error"):
        _out(f"{'ERROR' if f.level == 'error' else 'warn '}  {f.what}")
        if f.fix:
            _out(f"       fix: {f.fix}")
    _out(
        f"devices: {rep.candidates} candidates, {len(rep.hosts)} usable as hosts, {len(rep.skipped)} skipped"
        + (":" if rep.skipped else "")
    )
    for reason, fix, labels in rep.skip_groups():
        _out(f"  skipped ({len(labels)}): {reason}")
        _out(f"       devices: {_listed(labels)}")
        _out(f"       fix: {fix}")
    for nm in rep.near_misses:
        _out(f"  almost ({len(nm.labels)}): in hypervisor clusters, but role {nm.role!r} is not a host role")
        _out(f"       devices: {_listed(nm.labels)}")
        give = f"role {rep.host_role}" if rep.host_role else "the mapping's tags"
        _out(f"       fix: give them {give} if they are hypervisor hosts, or set netbox.roles: [{nm.role}]")
    _out("platforms:")
    for p in rep.platforms:
        sel = f", select {p.select}" if p.select else ""
        if p.hosts:
            _out(f"  {p.name} (kind {p.kind}{sel}): {len(p.hosts)} hosts: {_listed([h.name for h in p.hosts])}")
        else:
            _out(f"  {p.name} (kind {p.kind}{sel}): ERROR no host selected: {p.reason}")
    if rep.ok:
        _out("result: ready: a campaign can run on this NetBox")
    else:
        n = len(rep.errors) + sum(1 for p in rep.platforms if not p.hosts)
        _out(
            f"result: NOT READY ({n} problem{'s' if n > 1 else ''}): fix them, then run `crossvisor netbox check {spec}` again"
        )


# --- netbox init ----------------------------------------------------------------------------------


def init(spec: str | None) -> int:
    from domain.model import HYPERVISOR_KINDS
    from inventory.factory import open_netbox
    from inventory.netbox_schema import init_schema

    plan = _netbox_plan(spec) if spec else None
    inv = open_netbox(plan.netbox if plan else None)
    kinds = sorted({p.kind for p in plan.platforms}) if plan else list(HYPERVISOR_KINDS)
    _out(f"NetBox {inv.url}: mapping from {', '.join(inv.mapping.sources)}")
    try:
        res = init_schema(inv.http, inv.mapping, kinds, on_action=lambda a: _out(f"  {a}"))
    finally:
        inv.close()
    kept = len(res.actions) - len(res.changed) - len(res.conflicts)
    _out(f"init: {len(res.changed)} created or extended, {kept} already there, {len(res.conflicts)} conflicts")
    if spec:
        _out(f"next: `crossvisor netbox check {spec}`")
    return 1 if res.conflicts else 0


# --- inventory hosts | leases | clear-health --------------------------------------------------------


def run_inventory(a: argparse.Namespace, settings: Settings) -> int:
    from crossvisor.spec import load_spec
    from inventory.factory import open_inventory

    plan = load_spec(a.spec)
    if a.sub == "hosts" and plan.inventory == "netbox":
        return _netbox_hosts(plan, a.spec)
    source = open_inventory(plan.inventory, settings.home, plan.netbox)
    if a.sub == "hosts":
        code = 0
        for p in plan.platforms:
            hosts = source.hosts({**p.select, "kind": p.kind})
            if hosts:
                _out(f"{p.name}: " + ", ".join(f"{h.name} ({h.endpoint}, slots {h.slots})" for h in hosts))
            else:
                sel = f" and selection {p.select}" if p.select else ""
                print(f"{p.name}: no host selected: none of kind {p.kind}{sel} is in service", file=sys.stderr)
                code = 1
        return code
    if a.sub == "leases":
        rows = sorted(source.leases().items(), key=lambda kv: (source.label(kv[0]), kv[0]))
        for key, owners in rows:
            label = source.label(key)
            _out(f"{label}: {owners}" if label == key else f"{label} (#{key}): {owners}")
        return 0
    key = source.resolve(a.host)
    source.clear_health(key)
    label = source.label(key)
    _out(f"{label}: back in service" if label == key else f"{label} (#{key}): back in service")
    return 0


def _netbox_hosts(plan, spec: str) -> int:
    """``inventory hosts`` on NetBox: the check's platform view, each skip reason once."""
    from inventory.factory import open_netbox
    from inventory.netbox_check import check_netbox

    inv = open_netbox(plan.netbox)
    try:
        rep = check_netbox(inv, [(p.name, p.kind, dict(p.select)) for p in plan.platforms], spec)
    finally:
        inv.close()
    code = 0
    for p in rep.platforms:
        if p.hosts:
            _out(f"{p.name}: " + ", ".join(f"{h.name} ({h.endpoint}, slots {h.slots})" for h in p.hosts))
        else:
            print(f"{p.name}: no host selected: {p.reason}", file=sys.stderr)
            code = 1
    for f in rep.errors:
        print(f"error: {f.what}" + (f"; fix: {f.fix}" if f.fix else ""), file=sys.stderr)
    for reason, fix, labels in rep.skip_groups():
        print(f"skipped {len(labels)} device(s): {reason}: {_listed(labels)}; fix: {fix}", file=sys.stderr)
    if code or rep.errors:
        print(f"details: crossvisor netbox check {spec}", file=sys.stderr)
    return 1 if code or rep.errors else 0
