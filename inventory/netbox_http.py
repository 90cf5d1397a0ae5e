"""A thin REST client for NetBox with crossvisor's error mapping.

Why not pynetbox for reads: its ``Record`` objects cost far more CPU than the HTTP itself on
large listings, and it hides the ``ETag``/``If-Match`` headers we need for compare-and-set
leases. pynetbox stays the tool for schema setup and tests.

Error contract (the token never appears in any message):
- unreachable / timeout / HTTP 5xx -> ``NetBoxUnavailable`` (an ``InfraFault``: Temporal retries it)
- HTTP 401/403                     -> ``NetBoxAuthError`` (an ``InventoryError``: not retryable)
- HTTP 400/404                     -> ``InventoryError`` with NetBox's own detail
- HTTP 412                         -> returned to the caller (compare-and-set lost a race)
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from crossvisor.core.errors import InfraFault
from crossvisor.core.safe_read import InputFileError, read_text_bounded
from inventory.source import InventoryError


class NetBoxUnavailable(InfraFault):
    """NetBox cannot answer right now (down, unreachable, 5xx). Transient: retried."""


class NetBoxAuthError(InventoryError):
    """NetBox refused the API token (401/403). Not retryable: fix the token or its permissions."""


def resolve_token(
    token: str | None = None,
    token_env: str = "NETBOX_TOKEN",
    token_file: str | None = None,
) -> str:
    """Explicit value, else env var ``token_env``, else the file ``token_file``/``$NETBOX_TOKEN_FILE``.

    A value written as the header spells it (``Token 0123...``, ``Bearer nbt_...``) is taken
    without its scheme word: the client adds the right one, and sending ``Token Token ...`` only
    earned a 401 with no hint. The file is read bounded, as a regular file (no FIFO, no /proc)."""
    if token:
        return _bare_token(token, "the token given")
    if value := os.environ.get(token_env, "").strip():
        return _bare_token(value, token_env)
    path = token_file or os.environ.get("NETBOX_TOKEN_FILE", "")
    if path:
        try:
            text = read_text_bounded(path, what="NetBox token file", max_bytes=MAX_TOKEN_FILE_BYTES)
        except InputFileError as exc:
            raise InventoryError(f"cannot read NetBox token file: {exc}") from None
        return _bare_token(text, f"NetBox token file {path}")
    raise InventoryError(f"no NetBox API token: set {token_env} or NETBOX_TOKEN_FILE (a file holding the token)")


MAX_TOKEN_FILE_BYTES = 4096  # a token is 40-100 characters
_SCHEME_WORD = re.compile(r"^(?:authorization\s*:\s*)?(?:token|bearer)(?:\s+|$)", re.IGNORECASE)


def _bare_token(value: str, where: str) -> str:
    token = _SCHEME_WORD.sub("", value.strip(), count=1).strip()
    if not token:
        raise InventoryError(f"{where}: holds no NetBox API token")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise InventoryError(f"{where}: the NetBox API token must be one word (no spaces or line breaks inside)")
    return token


def check_url(url: str) -> str:
    """NetBox's base URL as requests will use it, or an InventoryError saying how to write it:
    a scheme is required (requests' own error for a missing one is a library message), and a URL
    given with NetBox's ``/api`` suffix is taken without it (the client adds ``/api/``)."""
    raw = (url or "").strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        hint = f"; did you mean https://{raw}?" if raw and "://" not in raw else ""
        raise InventoryError(f"NetBox URL {raw!r} must start with http:// or https:// and name a host{hint}")
    path = parts.path.rstrip("/")
    if path.endswith("/api"):
        path = path[: -len("/api")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


class NetBoxHttp:
    def __init__(self, url: str, token: str, timeout: float = 15.0, workers: int = 4) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        self.workers = workers
        self._token = token
        self.session = requests.Session()
        # v2 tokens (nbt_<key>.<secret>) use Bearer; legacy v1 (40 hex chars) use Token.
        scheme = "Bearer" if token.startswith("nbt_") else "Token"
        self.session.headers.update(
            {
                "Authorization": f"{scheme} {token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            }
        )
        # Enough pooled connections for the parallel page fetches.
        adapter = HTTPAdapter(pool_maxsize=max(workers, 4))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"NetBoxHttp(url={self.url!r}, token='***')"

    def close(self) -> None:
        self.session.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        where = f"NetBox at {self.url}"
        try:
            resp = self.session.request(
                method,
                f"{self.url}/api/{path.lstrip('/')}",
                params=params,
                json=json,
                headers=headers,
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise NetBoxUnavailable(f"{where} is unreachable ({type(exc).__name__}) for {method} {path}") from None
        except requests.RequestException as exc:  # an invalid URL or header: configuration, not a fault
            raise InventoryError(f"{where}: cannot send {method} {path}: {type(exc).__name__}") from None
        code = resp.status_code
        if code in (401, 403):
            raise NetBoxAuthError(
                f"{where} refused the API token (HTTP {code}: {self._detail(resp)}); "
                "check NETBOX_TOKEN / NETBOX_TOKEN_FILE and the token's permissions"
            ) from None
        if code >= 500:
            raise NetBoxUnavailable(f"{where} failed with HTTP {code} for {method} {path}") from None
        if code in (400, 404, 409):
            raise InventoryError(f"{where} rejected {method} {path} (HTTP {code}): {self._detail(resp)}") from None
        return resp

    def _detail(self, resp: requests.Response) -> str:
        ctype = resp.headers.get("Content-Type", "")
        if "json" not in ctype:
            # an HTML page (a login page, a 404 page, a proxy's error) is no API answer: say what
            # it suggests instead of printing its markup
            return (
                f"the answer is {ctype.split(';')[0] or 'not JSON'}, not NetBox's API; is {self.url} "
                "NetBox's base URL (without /api), and is nothing in between rewriting it?"
            )
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if isinstance(body, dict) and "detail" in body:
            body = body["detail"]
        return self._scrub(str(body))[:300]

    def graphql(self, query: str) -> requests.Response:
        """POST a GraphQL query to ``/graphql/`` (same auth and error mapping as the REST calls); the
        caller reads ``data``/``errors`` from the response."""
        where = f"NetBox at {self.url}"
        try:
            resp = self.session.post(f"{self.url}/graphql/", json={"query": query}, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise NetBoxUnavailable(f"{where} is unreachable ({type(exc).__name__}) for POST /graphql/") from None
        if resp.status_code in (401, 403):
            raise NetBoxAuthError(f"{where} refused the API token for GraphQL (HTTP {resp.status_code})") from None
        if resp.status_code >= 500:
            raise NetBoxUnavailable(f"{where} failed with HTTP {resp.status_code} for POST /graphql/") from None
        return resp

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params).json()

    def list_all(self, path: str, params: dict[str, Any], page_size: int = 1000) -> list[dict]:
        """Every result of a list endpoint: the first page tells the count and the server's
        effective page size (MAX_PAGE_SIZE may cap ours), the rest is fetched in parallel."""
        first = self.get(path, {**params, "limit": page_size, "offset": 0})
        results: list[dict] = list(first["results"])
        step = len(results)
        if not step or first.get("next") is None:
            return results
        offsets = range(step, first["count"], step)

        def page(offset: int) -> list[dict]:
            return self.get(path, {**params, "limit": step, "offset": offset})["results"]

        if self.workers <= 1 or len(offsets) == 1:
            for off in offsets:
                results.extend(page(off))
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                for chunk in pool.map(page, offsets):
                    results.extend(chunk)
        # Offset paging under concurrent writes may repeat a row: keep the first of each id.
        seen: set[int] = set()
        unique = []
        for r in results:
            if r["id"] not in seen:
                seen.add(r["id"])
                unique.append(r)
        return unique
