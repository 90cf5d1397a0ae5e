"""What every command shares: exit codes, the Temporal connection with one-line errors, output
(text or JSON on stdout, messages on stderr), the human cell id, ``--fail-on``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crossvisor.client.connection import (  # noqa: F401 - the commands' shared names
    EXIT_CELLS,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    close_client,
    connect,
    rpc_error,
)
from crossvisor.client.steering import humanise  # noqa: F401 - refusals name cells as typed
from crossvisor.core.config import Settings
from domain.matrix import human_id  # noqa: F401 - the one cell form, shared by every command

# ----------------------------------------------------------------------------------- options


class CommandListHelp(argparse.HelpFormatter):
    """A command group's help: every subcommand's help line beside its name, even the longest
    (``concurrency``, ``clear-health``), instead of on a line of its own below it."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)
        # argparse measures subcommand names without their indent: the longest then lands one
        # column short of the help column and gets a line of its own. Start the measure wider.
        self._action_max_length = 18


def connection_options(p: argparse.ArgumentParser, top: bool = False) -> None:
    """--address / --namespace / --home, accepted before or after the command (SUPPRESS in
    subcommands so that an unset flag there does not overwrite one given before)."""
    d = None if top else argparse.SUPPRESS
    g = p.add_argument_group("connection")
    g.add_argument(
        "--address",
        default=d,
        metavar="HOST:PORT",
        help="Temporal frontend (default: CROSSVISOR_TEMPORAL_ADDRESS, TEMPORAL_ADDRESS, 127.0.0.1:17233)",
    )
    g.add_argument(
        "--namespace",
        default=d,
        help="Temporal namespace (default: CROSSVISOR_TEMPORAL_NAMESPACE, TEMPORAL_NAMESPACE, default)",
    )
    g.add_argument(
        "--home",
        default=d,
        metavar="DIR",
        help="the stack's home: result store, artifacts, local stack state (default: CROSSVISOR_HOME, a .state "
        "in this directory or a parent, else the one the last `crossvisor up` used)",
    )


def output_options(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    """-o json / --json: machine-readable output on stdout, nothing else there."""
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text for people, json for programs (JSON on stdout; messages go to stderr)",
    )
    if json_flag:
        p.add_argument("--json", dest="output", action="store_const", const="json", help="same as -o json")


def fail_on_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fail-on",
        metavar="GRADES",
        type=parse_fail_on,
        default=frozenset(),
        help="exit 3 when any cell ends with one of these grades, comma-separated (e.g. fail,error): for CI",
    )


GRADES = ("pass", "warn", "fail", "error", "skipped")


def parse_fail_on(text: str) -> frozenset[str]:
    names = {g.strip().lower() for g in text.split(",") if g.strip()}
    bad = sorted(names - set(GRADES))
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown grade(s) {bad or [text]}: choose from {', '.join(GRADES)}")
    return frozenset(names)


def fail_on_code(counts: dict[str, int], grades: frozenset[str]) -> int:
    """EXIT_CELLS when a named grade has cells, with a line on stderr saying which."""
    hit = {g: counts.get(g, 0) for g in sorted(grades) if counts.get(g, 0)}
    if hit:
        note("--fail-on: " + ", ".join(f"{n} {g}" for g, n in hit.items()))
        return EXIT_CELLS
    return EXIT_OK


def apply_connection(args: argparse.Namespace, settings: Settings) -> Settings:
    from pathlib import Path

    if getattr(args, "address", None):
        settings.temporal_address = args.address
    if getattr(args, "namespace", None):
        settings.temporal_namespace = args.namespace
    if getattr(args, "home", None):
        settings.home = Path(args.home).resolve()
    return settings


# ------------------------------------------------------------------------------------ output


def note(text: str) -> None:
    """A message for the operator: stderr, so that stdout stays machine-readable."""
    from crossvisor.core.redact import redact_text

    print(redact_text(text), file=sys.stderr, flush=True)


def emit_json(obj: Any) -> None:
    print(json.dumps(scrub(_plain(obj)), indent=1, default=str), flush=True)


def emit_json_line(obj: Any) -> None:
    print(json.dumps(scrub(_plain(obj)), default=str), flush=True)


def scrub(v: Any, key: str = "") -> Any:
    """Redaction for output documents: every string through the one redaction routine, a string
    under a secret-looking key masked whole; numbers stay numbers (a count named "pass" is no
    password)."""
    from crossvisor.core.redact import MASK, is_secret_key, redact_text

    if isinstance(v, dict):
        return {k: scrub(x, str(k)) for k, x in v.items()}
    if isinstance(v, list):
        return [scrub(x, key) for x in v]
    if isinstance(v, str):
        return MASK if key and v and is_secret_key(key) else redact_text(v)
    return v


def _plain(obj: Any) -> Any:
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


# ------------------------------------------------------------------------------------ cell ids

CELL_FORM = "SOURCE:TARGET:IMAGE"


def split_cell(text: str) -> list[str]:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise CliError(f"{text!r} is not a cell: write {CELL_FORM} (e.g. kvm:esxi-6.5:tiny-bios)", EXIT_INPUT)
    return parts


def to_cell_id(text: str) -> str:
    """``kvm:esxi-6.5:tiny-bios`` -> the campaign's internal id ``kvm--esxi-6-5--tiny-bios``. The
    internal form (as older releases printed it) is accepted as it is."""
    from domain.matrix import cell_id

    if ":" in text:
        return cell_id(*split_cell(text))
    if text.count("--") == 2:
        return text
    raise CliError(f"{text!r} is not a cell: write {CELL_FORM} (e.g. kvm:esxi-6.5:tiny-bios)", EXIT_INPUT)
