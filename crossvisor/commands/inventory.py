"""``crossvisor inventory``: which hosts a spec's platforms select, who holds which lease, and
returning a repaired host to service."""

from __future__ import annotations

from crossvisor.commands.common import EXIT_OK, CommandListHelp, emit_json, output_options
from crossvisor.core.config import Settings


def register(sub) -> None:
    inv = sub.add_parser(
        "inventory", help="hosts, leases and health of a spec's inventory", formatter_class=CommandListHelp
    ).add_subparsers(dest="sub", required=True, metavar="COMMAND")
    x = inv.add_parser("hosts", help="the healthy hosts each platform of a spec selects")
    x.add_argument("spec", help="campaign spec whose inventory to read (file: or netbox)")
    output_options(x)
    x = inv.add_parser("leases", help="who holds which host")
    x.add_argument("spec", help="campaign spec whose inventory to read (file: or netbox)")
    output_options(x)
    ch = inv.add_parser("clear-health", help="return a host marked unhealthy to service")
    ch.add_argument("spec", help="campaign spec whose inventory holds the host")
    ch.add_argument("host", help="host name")


def dispatch(a, settings: Settings) -> int:
    from crossvisor.spec import load_spec
    from inventory.factory import open_inventory

    if getattr(a, "output", "text") != "json":
        from crossvisor import netbox_cli  # text: NetBox-aware (device labels, why a platform has no host)

        return netbox_cli.run_inventory(a, settings)
    plan = load_spec(a.spec)
    source = open_inventory(plan.inventory, settings.home, plan.netbox)
    if a.sub == "hosts":
        found = {p.name: source.hosts({**p.select, "kind": p.kind}) for p in plan.platforms}
        if a.output == "json":
            emit_json(
                {
                    p: [{"name": h.name, "endpoint": h.endpoint, "kind": h.kind, "slots": h.slots} for h in hosts]
                    for p, hosts in found.items()
                }
            )
            return EXIT_OK
        for p, hosts in found.items():
            print(
                f"{p}: " + (", ".join(f"{h.name} ({h.endpoint}, slots {h.slots})" for h in hosts) or "no healthy host")
            )
    elif a.sub == "leases":
        leases = dict(sorted(source.leases().items()))
        if a.output == "json":
            emit_json(leases)
            return EXIT_OK
        for host, owners in leases.items():
            print(f"{host}: {owners}")
    else:
        source.clear_health(a.host)
        print(f"{a.host}: back in service")
    return EXIT_OK
