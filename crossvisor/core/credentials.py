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

__all__ = ["CredentialError", "Secret", "resolve_secret"]


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
