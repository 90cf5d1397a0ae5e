"""HTTP file transfers next to the SOAP API: datastore ``/folder`` access and NFC lease uploads.

Streams in chunks (never loads a disk into memory) and authenticates with the SOAP session cookie,
so no password is ever put in a URL or header here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import requests

from drivers.base import InfraFault

CHUNK = 1 << 20
_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.*)$")


def split_ds_path(ds_path: str) -> tuple[str, str]:
    """``"[LocalDS_0] vm/disk.vmdk"`` -> ``("LocalDS_0", "vm/disk.vmdk")``."""
    m = _DS_PATH.match(ds_path)
    if not m:
        raise ValueError(f"not a datastore path: {ds_path!r}")
    return m.group("ds"), m.group("path")


def folder_url(base_url: str, dc_name: str, ds_path: str) -> str:
    """vSphere datastore file URL: ``<scheme>://<host>/folder/<path>?dcPath=<dc>&dsName=<ds>``."""
    ds, path = split_ds_path(ds_path)
    parts = urlsplit(base_url)
    query = urlencode({"dcPath": dc_name, "dsName": ds})
    return f"{parts.scheme}://{parts.netloc}/folder/{quote(path)}?{query}"


class HttpSession:
    def __init__(self, cookie: str, verify: bool | str = True, timeout_s: float = 300.0):
        self._s = requests.Session()
        self._s.verify = verify
        # pyVmomi's stub cookie looks like 'vmware_soap_session="..."; Path=/; ...'; send the pair only.
        self._s.headers["Cookie"] = cookie.split(";", 1)[0]
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._s.close()

    def upload(
        self,
        url: str,
        path: Path,
        method: str = "PUT",
        content_type: str = "application/octet-stream",
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Stream ``path`` to ``url``; ``progress(sent, total)`` is called about once a second."""
        total = path.stat().st_size
        headers = {"Content-Type": content_type, "Content-Length": str(total)}
        try:
            with open(path, "rb") as fh:
                # A sized file-like body: requests streams it with Content-Length (a generator
                # is sent chunked, which vcsim's NFC handler rejects).
                body = _ProgressReader(fh, total, progress)
                r = self._s.request(method, url, data=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as e:
            raise InfraFault(f"{method} {_safe(url)}: {type(e).__name__}: {e}") from None
        if r.status_code >= 300:
            raise InfraFault(f"{method} {_safe(url)}: HTTP {r.status_code} {r.reason}")
        if progress:
            progress(total, total)
        return total

    def download(self, url: str, dest: Path) -> int:
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._s.get(url, stream=True, timeout=self.timeout_s) as r:
                if r.status_code >= 300:
                    raise InfraFault(f"GET {_safe(url)}: HTTP {r.status_code} {r.reason}")
                n = 0
                with open(tmp, "wb") as fh:
                    for chunk in r.iter_content(CHUNK):
                        fh.write(chunk)
                        n += len(chunk)
            tmp.replace(dest)  # a retried export never sees a half-downloaded disk
            return n
        except requests.RequestException as e:
            raise InfraFault(f"GET {_safe(url)}: {type(e).__name__}: {e}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def size(self, url: str) -> int | None:
        """Size of a datastore file (None = missing)."""
        try:
            r = self._s.head(url, timeout=self.timeout_s)
        except requests.RequestException as e:
            raise InfraFault(f"HEAD {_safe(url)}: {type(e).__name__}: {e}") from None
        if r.status_code == 404:
            return None
        if r.status_code >= 300:
            raise InfraFault(f"HEAD {_safe(url)}: HTTP {r.status_code} {r.reason}")
        return int(r.headers.get("Content-Length", "0"))


class _ProgressReader:
    def __init__(self, fh, total: int, progress: Callable[[int, int], None] | None):
        self._fh, self._total, self._progress = fh, total, progress
        self._sent, self._last = 0, time.monotonic()

    def __len__(self) -> int:
        return self._total

    def read(self, n: int = -1) -> bytes:
        chunk = self._fh.read(CHUNK if n is None or n < 0 else n)
        self._sent += len(chunk)
        now = time.monotonic()
        if self._progress and now - self._last >= 1.0:
            self._progress(self._sent, self._total)
            self._last = now
        return chunk


def _safe(url: str) -> str:
    # URLs here never carry credentials, but strip any userinfo defensively before logging.
    p = urlsplit(url)
    return p._replace(netloc=p.hostname + (f":{p.port}" if p.port else "")).geturl() if p.hostname else url
