"""The ``crossvisor`` command line: ``crossvisor --help`` lists the commands, ``crossvisor
COMMAND --help`` their arguments. Command groups live in ``crossvisor/commands/`` (one module
each, ``register(subparsers)`` + ``dispatch(args, settings)``); ``GROUPS`` below is the one place
they are plugged in.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys

from crossvisor.commands.common import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    CliError,
    apply_connection,
    connection_options,
)
from crossvisor.core.config import Settings

# Command groups, in help order. A group module has register(subparsers) and
# dispatch(args, settings) -> int (or a coroutine giving one). A module that cannot be imported
# (an optional group not installed) is left out of the command line.
GROUPS = [
    "crossvisor.commands.stack",  # demo, up, down, worker, validate
    "crossvisor.commands.campaign",  # campaign ...
    "crossvisor.commands.results",  # report, serve
    "crossvisor.commands.inventory",  # inventory ...
    "crossvisor.netbox_cli",  # netbox ... (optional)
    "crossvisor.commands.completion",  # completion bash|zsh
]
OPTIONAL_GROUPS = {"crossvisor.netbox_cli"}

# errors that are the operator's input, not a failure of the command
INPUT_ERRORS = ("SpecError", "InventoryError", "ValueError", "Refused")


def _exit(code: int) -> None:
    # sdk-python#300: a process that held a Temporal client can crash at interpreter exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        mine = v("crossvisor")
    except PackageNotFoundError:
        mine = "unknown"
    try:
        sdk = v("temporalio")
    except PackageNotFoundError:
        sdk = "?"
    return f"crossvisor {mine} (temporalio {sdk}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES)
    ap = argparse.ArgumentParser(
        prog="crossvisor",
        description="Hypervisor-interoperability test campaigns on Temporal. "
        "Cells are named SOURCE:TARGET:IMAGE (e.g. kvm:esxi-6.5:tiny-bios).",
        epilog=f"exit codes:\n{codes}\n\nenvironment: CROSSVISOR_HOME, CROSSVISOR_TEMPORAL_ADDRESS / TEMPORAL_ADDRESS, "
        "CROSSVISOR_TEMPORAL_NAMESPACE / TEMPORAL_NAMESPACE, CROSSVISOR_LOG_FORMAT (json|console|auto); "
        "see README 'Using it'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=version(), help="print the version and exit")
    connection_options(ap, top=True)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name in GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if name in OPTIONAL_GROUPS and e.name == name:
                continue
            raise
        before = set(sub.choices)
        module.register(sub)
        for cmd in set(sub.choices) - before:
            sub.choices[cmd].set_defaults(_group=module)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = build_parser()
    a = ap.parse_args(argv)
    a._root = ap
    settings = Settings()
    code = run(a, settings)
    _exit(code)


def run(a: argparse.Namespace, settings: Settings) -> int:
    from crossvisor.core.config import find_home

    if not os.environ.get("CROSSVISOR_HOME") and not getattr(a, "home", None):
        # a stack is started where it is asked for: another checkout's recorded home is for the
        # commands that look at a stack, not for the ones that start one
        settings.home, a.home_source = find_home(recorded_ok=getattr(a, "cmd", "") not in ("up", "demo"))
    else:
        a.home_source = "CROSSVISOR_HOME" if os.environ.get("CROSSVISOR_HOME") else "--home"
    apply_connection(a, settings)
    try:
        result = a._group.dispatch(a, settings)
        if inspect.isawaitable(result):
            result = asyncio.run(_finish(result))
        return int(result or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `crossvisor ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CliError as e:
        _error(str(e))
        return e.code
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear line and a non-zero exit
        # one line per problem, secrets masked (every secret this process resolved, and anything
        # credential-shaped); a spec refusal is exit 2 and happens before any connection
        _error(str(e) or type(e).__name__)
        return EXIT_INPUT if type(e).__name__ in INPUT_ERRORS else EXIT_ERROR


async def _finish(coro):
    try:
        return await coro
    finally:
        from crossvisor.commands.common import close_client

        close_client()


def _error(text: str) -> None:
    from crossvisor.core.redact import redact_text

    print(f"crossvisor: error: {redact_text(text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
