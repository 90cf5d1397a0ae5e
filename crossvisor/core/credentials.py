"""Resolve credential *references* (``env:NAME``, ``file:/path``) into secrets, inside an activity.

Workflows and specs only carry references (see domain/model.py). The resolved value is wrapped in
``Secret`` whose repr/str never show it, so a logged object, an exception message or a traceback
with locals (rich, structlog) cannot leak it; call ``reveal()`` only at the API call site.
"""

from __future__ import annotations

import os

from crossvisor.core.errors import CredentialError
from crossvisor.core.redact import register_secret
from crossvisor.core.safe_read import InputFileError, read_text_bounded

MAX_SECRET_FILE_BYTES = 64 * 1024  # a password, a token, a PEM key: never more

# Files a *NetBox* value may name (credentials_ref file:..., custom fields pki_path, ssh_key,
# known_hosts) must sit under this directory: anyone who can edit a device in NetBox could otherwise
# make every worker read /etc/shadow or a private key and send it to a host of their choosing as a
# password. Specs and file inventories are the operator's own files and name files anywhere.
CREDENTIALS_DIR_ENV = "CROSSVISOR_CREDENTIALS_DIR"
DEFAULT_CREDENTIALS_DIR = "/etc/crossvisor/credentials"
FILE_FIELDS = ("pki_path", "ssh_key", "known_hosts")  # custom fields that name a file on the worker

__all__ = ["CredentialError", "Secret", "files_outside_credentials_dir", "resolve_secret"]


class Secret:
    __slots__ = ("_value", "ref")

    def __init__(self, value: str, ref: str = ""):
        self._value = value
        self.ref = ref  # the reference, safe to show

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(ref={self.ref!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(
        self,
    ):  # refuse pickling: a secret must never cross a Temporal boundary
        raise TypeError("Secret is not serialisable; pass the reference instead")


def resolve_secret(ref: str) -> Secret:
    """``env:NAME`` -> os.environ[NAME]; ``file:/path`` -> file content without trailing newline.

    ``""`` is an error (a driver that allows no password should not call this). Every resolved
    value is registered with ``crossvisor.core.redact``: from then on this process masks it in
    log lines, error messages and URIs, whatever its shape. A ``file:`` secret is read bounded
    (a regular file of at most 64 KiB, UTF-8), and no error quotes its content.
    """
    scheme, sep, rest = ref.partition(":")
    if not sep or not rest:
        raise CredentialError(f"credential reference {ref!r} is not of the form env:NAME or file:/path")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise CredentialError(f"credential reference {ref!r}: environment variable {rest} is not set")
    elif scheme == "file":
        try:
            value = read_text_bounded(rest, what="credential file", max_bytes=MAX_SECRET_FILE_BYTES).rstrip("\r\n")
        except InputFileError as e:
            raise CredentialError(f"credential reference {ref!r}: {e.reason}") from None
    else:
        raise CredentialError(f"credential reference {ref!r}: unknown scheme {scheme!r} (env, file)")
    if value == "":
        raise CredentialError(f"credential reference {ref!r} resolves to an empty secret")
    register_secret(value)
    return Secret(value, ref)


def credentials_dir() -> str:
    return os.environ.get(CREDENTIALS_DIR_ENV) or DEFAULT_CREDENTIALS_DIR


def files_outside_credentials_dir(credentials_ref: str, custom: dict[str, str], root: str) -> list[tuple[str, str]]:
    """(field, path) for every file an inventory record names outside ``root``.

    The path is resolved the way opening it would (``..`` and symbolic links followed), so a link
    under ``root`` that points elsewhere is outside too. Nothing is opened: only names are resolved.
    """
    named: list[tuple[str, str]] = []
    scheme, sep, rest = credentials_ref.partition(":")
    if sep and scheme == "file":
        named.append(("credentials_ref", rest))
    named += [(k, str(custom[k])) for k in FILE_FIELDS if custom.get(k)]
    base = os.path.realpath(root)
    outside = []
    for field, path in named:
        real = os.path.realpath(path) if os.path.isabs(path) else ""
        if not real or os.path.commonpath([base, real]) != base:
            outside.append((field, path))
    return outside
