"""The one secret-redaction routine: logs, the CLI's error line, reports and URIs all go through it.

Three kinds of secret are masked:

- values under keys that name a secret (``password``, ``db_pass``, ``api_key``, ``Authorization``,
  ``secret_sauce``...), whatever the value looks like;
- values that look like credentials under any key or inside free text: NetBox v2 tokens
  (``nbt_<key>.<secret>``), ``Token``/``Bearer``/``Basic`` credentials and ``Authorization``
  headers (NetBox v1 tokens travel as ``Token <40 hex>``), ``user:password@`` in any URL (libvirt
  ``esx://root:pw@host/`` included), ``password=...`` / ``token: ...`` pairs, PEM private keys;
- exact values this process resolved as secrets (``register_secret``; ``crossvisor.core.credentials``
  registers every secret it resolves), wherever they appear, whatever their shape.

Registration is per process: a worker masks what its activities resolved, the CLI what it resolved.
A bare 40-hex string is deliberately *not* masked: SHA-1 digests of OVA manifests look the same.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MASK = "[REDACTED]"

# Keys whose values are secrets. Letter boundaries keep "passed", "bypass_cache", "author" innocent;
# "credentials_ref" holds a reference (env:NAME, file:/path), which is reproducibility data.
_SECRET_KEY = re.compile(
    r"pass(?:word|wd|phrase)?(?![a-z])"
    r"|secret|token|api[_-]?key|private[_-]?key|access[_-]?key"
    r"|credential(?!s?[_-]?ref)"
    r"|(?<![a-z])auth(?:orization|[_-]?token)?(?![a-z])"
    r"|cookie|(?<![a-z])session(?:[_-]?(?:id|key))?(?![a-z])",
    re.IGNORECASE,
)
# Authorization headers in free text: "Authorization: Bearer x", "authorization=Token abc".
_AUTH_HEADER = re.compile(
    r"(?P<key>\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)"
    r"(?:(?P<scheme>bearer|basic|token|negotiate|digest|apikey)\s+)?[^\s'\",;]+",
    re.IGNORECASE,
)
# "Bearer abc...", "Token 0123...": credentials after an auth scheme word, even without a header name.
_SCHEME_CRED = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# "password=hunter2", "db_pass: x", '"api_key": "x"' inside free text (JSON, YAML, query strings, argv).
_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w.-]*?(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|access[_-]?key)"
    r"(?:[_.-][\w.-]*)?)(?P<sep>['\"]?\s*[=:]\s*)(?P<q>['\"]?)(?P<val>(?!\[REDACTED\])[^\s'\",;&]+)",
    re.IGNORECASE,
)
# user:password@ in any URL; greedy up to the last "@" before the path, as urlsplit reads it.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]*):[^/\s]*@", re.IGNORECASE)
_TOKEN_SHAPES = re.compile(
    r"nbt_[A-Za-z0-9]+\.[A-Za-z0-9]+"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    re.DOTALL,
)

MIN_REGISTERED = 4  # shorter values would mask innocent text everywhere ("1", "abc")
_lock = threading.Lock()
_registered: set[str] = set()
_by_length: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole


def register_secret(value: object) -> None:
    """Remember a resolved secret: from now on this process masks it wherever it appears.

    Accepts a ``crossvisor.core.credentials.Secret`` (anything with ``reveal()``) or a string. Values
    shorter than ``MIN_REGISTERED`` characters are not registered (they would mask innocent
    text); the key and shape rules still apply to them."""
    global _by_length
    if hasattr(value, "reveal"):
        value = value.reveal()
    if not isinstance(value, str) or len(value) < MIN_REGISTERED:
        return
    # the value as a repr or JSON would escape it (quotes, backslashes), and each long line of a
    # multi-line secret (a PEM key) on its own
    parts = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    parts |= {p.strip() for p in value.splitlines() if len(p.strip()) >= MIN_REGISTERED}
    with _lock:
        if parts <= _registered:
            return
        _registered.update(parts)
        _by_length = tuple(sorted(_registered, key=len, reverse=True))


def registered_count() -> int:
    """How many exact values are registered (for tests and diagnostics; never the values)."""
    return len(_registered)


def is_secret_key(key: object) -> bool:
    """True when a key (log field, evidence key, custom field) names a secret."""
    return bool(_SECRET_KEY.search(str(key)))


def redact_text(text: str) -> str:
    """``text`` with every registered secret and every credential-looking value replaced by ``MASK``."""
    if not text:
        return text
    for value in _by_length:
        if value in text:
            text = text.replace(value, MASK)
    text = _TOKEN_SHAPES.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['key']}{m['scheme'] + ' ' if m['scheme'] else ''}{MASK}", text)
    text = _SCHEME_CRED.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _KEY_VALUE.sub(_mask_key_value, text)


# Words that say whether a secret is there, not what it is: "token: set", "password: missing",
# "next token: found" (a YAML parser's message). Masking them hid the very diagnosis the line
# gave. A secret that happens to be one of these words is still masked once it is registered.
_STATUS_WORDS = frozenset(
    "set unset found missing none null nil present absent given empty required optional provided "
    "configured yes no true false ok valid invalid expired refused rejected unknown redacted hidden".split()
)


def _mask_key_value(m: re.Match) -> str:
    # A grade count ('"pass": 6' in a rendered log line, like redact_value's "pass": 6) is not a
    # credential: the bare word "pass" before an unquoted whole number stays. "db_pass: 1234",
    # "password=1234" and '"pass": "1234"' are still masked.
    if m["key"].lower() == "pass" and not m["q"] and m["val"].isdigit():
        return m[0]
    if m["val"].lower() in _STATUS_WORDS:
        return m[0]
    return f"{m['key']}{m['sep']}{m['q']}{MASK}"


def redact_uri(uri: str) -> str:
    """A URI (libvirt, vCenter, NetBox) without the password of its userinfo or any other secret."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # malformed netloc (e.g. a bad port): fall back to the text rules
        password = None
        parts = None
    if parts is not None and password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        uri = parts._replace(netloc=f"{user}:{MASK}@{hostport}").geturl()
    return redact_text(uri)


def redact_mapping(values: Mapping[Any, Any]) -> dict[str, str]:
    """String mapping (evidence, custom fields): values under secret-named keys become ``MASK``,
    every other key and value goes through ``redact_text``."""
    return {redact_text(str(k)): MASK if is_secret_key(k) else redact_text(str(v)) for k, v in values.items()}


def _plain_number(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float)


def redact_value(value: Any, _depth: int = 0) -> Any:
    """Any JSON-like value (a structlog event, a record): strings redacted, mappings by key,
    lists and tuples item by item, numbers and None as they are. Any other object (an exception,
    a dataclass) becomes its redacted ``repr``: that is what a JSON renderer would print, and
    redacting the text before rendering sees the secret before JSON escapes its quotes."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if _depth > 20:  # a cycle or an absurdly deep structure: render it, then redact the text
        return redact_text(repr(value))
    if isinstance(value, Mapping):
        # a number or a flag is never a secret, whatever its key ("pass": 6 is a count of grades)
        return {
            k: MASK if is_secret_key(k) and not _plain_number(v) else redact_value(v, _depth + 1)
            for k, v in value.items()
        }
    if type(value) in (list, tuple):
        return type(value)(redact_value(v, _depth + 1) for v in value)
    return redact_text(repr(value))
