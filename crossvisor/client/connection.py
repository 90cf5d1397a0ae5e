"""The Temporal connection every campaign client call shares: one client per process and server
(address and namespace), and its failures as one line for the operator (``CliError``, with the exit
code the CLI returns)."""

from __future__ import annotations

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


# keyed by (address, namespace): a process that talks to a second server (``serve`` embedded in
# tests, a program using the client) must not be handed the first server's connection
_CLIENTS: dict[tuple[str, str], Any] = {}


def unreachable(settings: Settings, detail: str = "") -> CliError:
    local = settings.temporal_address.startswith(("127.", "localhost"))
    hint = (
        "start the local stack with `crossvisor up`, or point --address / TEMPORAL_ADDRESS at your server"
        if local
        else "check --address / TEMPORAL_ADDRESS and that the server is up"
    )
    return CliError(f"no Temporal server at {settings.temporal_address}: {hint}", EXIT_UNAVAILABLE)


async def connect(settings: Settings):
    """One client per process and server; a server that does not answer is one line naming the address."""
    key = (settings.temporal_address, settings.temporal_namespace)
    if key not in _CLIENTS:
        from crossvisor.core.temporal_client import connect as _connect

        try:
            _CLIENTS[key] = await _connect(settings)
        except RuntimeError as e:
            if "connect" in str(e).lower():
                raise unreachable(settings, str(e)) from None
            raise
        except OSError as e:
            raise unreachable(settings, str(e)) from None
    return _CLIENTS[key]


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
    _CLIENTS.clear()
