"""What every command shares: exit codes, the Temporal connection with one-line errors, output
(text or JSON on stdout, messages on stderr), the human cell id, ``--fail-on``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crossvisor.core.config import Settings

# exit codes (documented in `crossvisor --help` and README "Using it")
EXIT_OK = 0
EXIT_ERROR = 1  # the command failed (campaign not found, server error, ...)
EXIT_INPUT = 2  # bad input: usage, spec, argument, or a request the campaign refused
EXIT_CELLS = 3  # --fail-on: cells ended with one of the named grades
EXIT_UNAVAILABLE = 4  # no Temporal server at the address
EXIT_INTERRUPTED = 130

EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_ERROR, "the command failed (campaign not found, server error)"),
    (
        EXIT_INPUT,
        "bad input: usage, spec, argument, or a steering request the campaign refused (the reason is printed)",
    ),
    (EXIT_CELLS, "--fail-on: cells ended with one of the named grades (watch, start --wait, report)"),
    (EXIT_UNAVAILABLE, "no Temporal server answers at the address"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


class CliError(Exception):
    """One line for the operator, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------- options


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


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


# ------------------------------------------------------------------------------------ cell ids

CELL_FORM = "SOURCE:TARGET:IMAGE"


def human_id(source: str, target: str, image: str) -> str:
    """The one form operators type and see: platform and image names as the spec spells them."""
    return f"{source}:{target}:{image}"


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


def humanise(message: str, typed: dict[str, str]) -> str:
    """A refusal names cells by internal id: show them as the operator typed them."""
    for internal, human in typed.items():
        if internal != human:
            message = message.replace(f"'{internal}'", f"'{human}'")
    return message


# ---------------------------------------------------------------------------------- temporal

_CLIENT: Any = None


def unreachable(settings: Settings, detail: str = "") -> CliError:
    local = settings.temporal_address.startswith(("127.", "localhost"))
    hint = (
        "start the local stack with `crossvisor up`, or point --address / TEMPORAL_ADDRESS at your server"
        if local
        else "check --address / TEMPORAL_ADDRESS and that the server is up"
    )
    return CliError(f"no Temporal server at {settings.temporal_address}: {hint}", EXIT_UNAVAILABLE)


async def connect(settings: Settings):
    """One client per process; a server that does not answer is one line naming the address."""
    global _CLIENT
    if _CLIENT is None:
        from crossvisor.core.temporal_client import connect as _connect

        try:
            _CLIENT = await _connect(settings)
        except RuntimeError as e:
            if "connect" in str(e).lower():
                raise unreachable(settings, str(e)) from None
            raise
        except OSError as e:
            raise unreachable(settings, str(e)) from None
    return _CLIENT


def rpc_error(e: Exception, settings: Settings, cid: str = "") -> CliError:
    """Temporal RPC errors as one line: not found, namespace missing, server gone."""
    from temporalio.service import RPCError, RPCStatusCode

    if isinstance(e, RPCError):
        if e.status == RPCStatusCode.NOT_FOUND:
            if "namespace" in e.message.lower():
                return CliError(
                    f"namespace {settings.temporal_namespace!r} does not exist on {settings.temporal_address}"
                )
            return CliError(
                f"no campaign {cid!r} in namespace {settings.temporal_namespace} at {settings.temporal_address} "
                "(`crossvisor campaign list` shows the campaigns)"
            )
        if e.status == RPCStatusCode.UNAVAILABLE:
            return unreachable(settings, e.message)
        return CliError(f"Temporal: {e.message}")
    return CliError(str(e))


def close_client() -> None:
    global _CLIENT
    _CLIENT = None
