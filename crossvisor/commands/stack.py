"""``crossvisor demo | up | down | worker | validate``: the local stack and the spec check."""

from __future__ import annotations

import os
import sys

from crossvisor.commands.common import EXIT_INPUT, EXIT_OK, emit_json, note, output_options
from crossvisor.core.config import Settings


def register(sub) -> None:
    from crossvisor.commands.common import connection_options

    d = sub.add_parser("demo", help="run the example campaign on the embedded local stack, then print the matrix")
    d.add_argument("--spec", help="campaign spec (default: the packaged examples/demo.yaml)")
    connection_options(d)
    u = sub.add_parser(
        "up",
        help="start what the embedded default needs: this machine's libvirtd, the local Temporal dev server "
        "(with its Web UI) and a worker; prints their addresses",
    )
    connection_options(u)
    u.add_argument(
        "--no-libvirtd",
        action="store_true",
        help="do not start this machine's libvirtd (every host of the lab is elsewhere)",
    )
    dn = sub.add_parser("down", help="stop the local stack")
    connection_options(dn)
    w = sub.add_parser("worker", help="run a worker in the foreground (python -m worker)")
    connection_options(w)
    w.add_argument("--metrics-port", type=int, help="crossvisor metrics port (default CROSSVISOR_METRICS_PORT, 9464)")
    w.add_argument(
        "--sdk-metrics-port", type=int, help="Temporal SDK metrics port (default CROSSVISOR_SDK_METRICS_PORT, 9465)"
    )
    w.add_argument("--site", help="the site this worker serves (default CROSSVISOR_SITE; none: every host)")
    w.add_argument(
        "--metrics-host",
        default=os.environ.get("CROSSVISOR_METRICS_HOST", "127.0.0.1"),
        help="address the metrics endpoints bind (default 127.0.0.1)",
    )
    v = sub.add_parser("validate", help="validate a campaign spec without running it (connects only with --hosts)")
    v.add_argument("spec", help="campaign spec (YAML)")
    v.add_argument(
        "--hosts",
        action="store_true",
        help="also ask each source host for the templates the spec's template: images name "
        "(campaign start does this too)",
    )
    output_options(v)


def stack_up(settings: Settings) -> dict:
    from crossvisor import stack
    from crossvisor.core.config import record_home

    stack.temporal_up(settings)
    added = stack.ensure_search_attributes(settings)
    pid = stack.worker_up(settings)
    record_home(settings.home)
    ui = stack.ui_url(settings) if stack.ui_port(settings) else ""
    return {
        "temporal": settings.temporal_address,
        "ui": ui,
        "worker_pid": pid,
        "home": str(settings.home),
        "added": added,
    }


async def dispatch(a, settings: Settings) -> int:
    from crossvisor import stack

    if a.cmd == "demo":
        from crossvisor.core.resources import example

        return await demo(settings, a.spec or str(example("demo.yaml")))
    if a.cmd == "up":
        if not a.no_libvirtd:
            # the embedded default's hosts are this machine's libvirtd: without it the first
            # campaign finds its hosts unreachable; refused here, naming what is missing
            stack.libvirt_up(settings)
            print("libvirt  qemu:///system")
        up = stack_up(settings)
        print(f"temporal {up['temporal']} (namespace {settings.temporal_namespace})")
        if up["ui"]:
            print(f"web ui   {up['ui']}")
        print(f"worker   pid {up['worker_pid']}, metrics http://127.0.0.1:{settings.metrics_port}/metrics")
        print(f"home     {up['home']}")
        return EXIT_OK
    if a.cmd == "down":
        print("stopped: " + (", ".join(stack.down(settings)) or "nothing"))
        return EXIT_OK
    if a.cmd == "validate":
        from crossvisor.spec import load_spec
        from domain.matrix import expand

        plan = load_spec(a.spec)  # reads only the spec and the files it names; never connects
        cells = expand(plan)
        netbox = plan.inventory == "netbox"
        if a.output == "json":
            emit_json({"spec": a.spec, "ok": True, "name": plan.name, "cells": len(cells)})
        elif netbox:
            # not "ok" yet: whether it can run is the NetBox check's result line, printed last
            print(f"{a.spec}: spec valid, {len(cells)} cells; checking NetBox:")
        else:
            print(f"{a.spec}: ok, {len(cells)} cells")
        if netbox:  # the spec is fine; can it run on this NetBox?
            from crossvisor import netbox_cli

            rc = netbox_cli.check_plan(plan, a.spec)
            if rc != EXIT_OK:
                return rc
        if a.hosts:
            return _validate_templates(plan, a.spec, settings)
        return EXIT_OK
    # worker: its own program (python -m worker); the CLI only hands it its settings
    env = dict(
        os.environ,
        CROSSVISOR_METRICS_HOST=a.metrics_host,
        CROSSVISOR_HOME=str(settings.home),
        CROSSVISOR_TEMPORAL_ADDRESS=settings.temporal_address,
        CROSSVISOR_TEMPORAL_NAMESPACE=settings.temporal_namespace,
    )
    if a.metrics_port:
        env["CROSSVISOR_METRICS_PORT"] = str(a.metrics_port)
    if a.sdk_metrics_port:
        env["CROSSVISOR_SDK_METRICS_PORT"] = str(a.sdk_metrics_port)
    if a.site is not None:
        env["CROSSVISOR_SITE"] = a.site
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "worker"], env)
    return EXIT_OK  # not reached


def _validate_templates(plan, spec: str, settings: Settings) -> int:
    from crossvisor.client.templates import check_templates

    found = check_templates(plan, settings.home)
    for line in found.found:
        print(f"{spec}: {line}: found")
    for line in found.unchecked:
        print(f"{spec}: template not checked: {line}")
    for line in found.missing:
        print(f"{spec}: {line}", file=sys.stderr)
    return EXIT_INPUT if found.missing else EXIT_OK


def floor_line(settings: Settings, cid: str) -> str:
    """The run's wall time against its CPU floor (the CPU of its builds, births, boots and
    conversions over the cores), from the execution log: how close to the machine it ran."""
    from activities.execlog import ExecutionLog
    from domain import stage_time

    times = stage_time.stage_times(ExecutionLog(settings.home / "executions.jsonl").read(), cid)
    fl = stage_time.floor(times, os.cpu_count() or 1)
    if not times:
        return "time: no stage ran (every cell reused an earlier result)"
    return (
        f"time: wall {fl.wall_s:.0f} s; CPU floor {fl.floor_s:.0f} s ({fl.cpu_s:.0f} CPU s of builds, births, "
        f"boots and conversions / {fl.cores} cores); wall / floor {fl.ratio:.2f}  "
        f"(per stage: .venv/bin/python bench/cell_time.py --home {settings.home})"
    )


async def demo(settings: Settings, spec: str) -> int:
    from crossvisor import stack
    from crossvisor.client.starting import start_campaign
    from crossvisor.commands.results import render_matrix, report_result, write_reports
    from crossvisor.commands.watching import follow

    print(f"crossvisor demo: state in {settings.home}", flush=True)
    stack.libvirt_up(settings)  # the demo's hypervisors: this machine's libvirtd + QEMU
    up = stack_up(settings)
    print(f"temporal dev server: {up['temporal']} (sqlite {settings.home / 'temporal.db'})", flush=True)
    if up["ui"]:
        print(f"temporal web ui: {up['ui']}", flush=True)
    print(
        f"worker: pid {up['worker_pid']}, metrics http://127.0.0.1:{settings.metrics_port}/metrics, "
        f"log {settings.home / 'run/worker.log'}",
        flush=True,
    )
    cid, started, why = await start_campaign(settings, spec, None, note)
    print(f"campaign {cid}: {'started' if started else why + ' (finished cells are not redone)'}", flush=True)
    await follow(settings, cid)
    res = await report_result(settings, cid)
    render_matrix(res)
    paths = write_reports(
        res,
        str(settings.home / "reports/demo.html"),
        str(settings.home / "reports/demo.junit.xml"),
        str(settings.home / "reports/demo.json"),
        home=settings.home,
    )
    print("reports: " + ", ".join(paths))
    print(floor_line(settings, cid))
    print("browse it: crossvisor serve  (http://127.0.0.1:17290/, read-only)")
    print("stop the local stack with: crossvisor down")
    return EXIT_OK
