"""The declared-service channel: ask the service the operator declared on their image
(``app: {tcp: PORT}`` or ``app: {http: {port, path, expect}}``) through the guest's own network,
reached through the port the host forwards to the guest."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable

from domain.model import ServiceProbe
from domain.stage_io import AppProbe
from drivers.base import Driver

CHANNEL = "service-probe"
# QEMU's user-mode forward accepts every connection itself and closes it when the guest refuses:
# a connection that stays open (or sends a banner) this long is the guest's service answering.
HOLD_S = 5.0


def _tcp_once(host: str, port: int) -> tuple[bool, str]:
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(HOLD_S)
        try:
            data = s.recv(256)
        except TimeoutError:
            return True, "the connection stayed open (no banner)"
        if not data:
            return False, "the forward closed the connection: nothing listens on the guest's port"
        return True, data.decode(errors="replace").strip()[:120]


def _http_once(host: str, port: int, probe: ServiceProbe) -> tuple[bool, str]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", probe.path)
        resp = conn.getresponse()
        resp.read(2048)
        ok = resp.status == probe.expect
        return ok, f"HTTP {resp.status} for GET {probe.path} (expected {probe.expect})"
    finally:
        conn.close()


def probe(drv: Driver, name: str, svc: ServiceProbe, beat: Callable[[str], None], timeout_s: float = 20.0) -> AppProbe:
    addr = drv.guest_port(name, svc.port)
    if addr is None:
        return AppProbe(attempted=False, detail=f"{type(drv).__name__} offers no path to a guest port", channel=CHANNEL)
    host, port = addr
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        beat("service-probe")
        try:
            ok, what = _tcp_once(host, port) if svc.kind == "tcp" else _http_once(host, port, svc)
            if ok:
                return AppProbe(True, True, f"{svc.describe()} answered: {what}", what, channel=CHANNEL)
            last = what
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return AppProbe(True, False, f"{svc.describe()} did not answer via {host}:{port} ({last})", channel=CHANNEL)
