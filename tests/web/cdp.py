"""Headless Debian Chromium driven over the DevTools protocol (a websocket, no browser download).

One browser per ``Chromium`` context; ``page()`` opens a tab that records console errors, uncaught
exceptions and failed loads (CSP violations, 404s arrive as Log entries) so a test can assert that
a page rendered cleanly, then navigate, click like a person (mouse events at an element's centre),
evaluate JavaScript and take screenshots.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class CDPError(RuntimeError):
    pass


class Page:
    def __init__(self, ws_url: str, timeout: float):
        self._conn = connect(ws_url, max_size=256 * 1024 * 1024, open_timeout=timeout)
        self.ws = self._conn.__enter__()
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    # -- protocol ------------------------------------------------------------------------------
    def call(self, method: str, **params: Any) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float | None = None, since: int = 0) -> dict:
        """The first ``method`` event at or after index ``since`` of the recorded events."""
        deadline = time.monotonic() + (timeout or self.timeout)
        idx = since
        while True:
            while idx < len(self.events):
                if self.events[idx].get("method") == method:
                    return self.events[idx]
                idx += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout or self.timeout} s")
            self.events.append(json.loads(self.ws.recv(timeout=left)))

    # -- what a test uses ------------------------------------------------------------------------
    def goto(self, url: str) -> float:
        """Navigate and wait for the load event; returns seconds from request to load + a frame."""
        mark = len(self.events)
        t = time.monotonic()
        res = self.call("Page.navigate", url=url)
        if res.get("errorText"):
            raise CDPError(f"navigate {url}: {res['errorText']}")
        self.wait_event("Page.loadEventFired", since=mark)
        self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))", await_promise=True)
        return time.monotonic() - t

    def eval(self, expression: str, await_promise: bool = False) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in res:
            raise CDPError(f"{expression[:80]}: {res['exceptionDetails'].get('text')} {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """Scroll the element into view and click its centre with real mouse events."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise CDPError(f"no element {selector}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click_and_wait(self, selector: str, event: str = "Page.loadEventFired") -> None:
        mark = len(self.events)
        self.click(selector)
        self.wait_event(event, since=mark)
        self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))", await_promise=True)

    def screenshot(self, path: Path, full_page: bool = True, width: int = 1400) -> Path:
        height = 900
        if full_page:
            height = int(self.eval("Math.ceil(document.documentElement.scrollHeight)") or 900)
        height = min(height, 16000)  # Chromium's capture limit; long pages are cut, not failed
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        try:
            data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)["data"]
        finally:
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def screenshot_element(self, selector: str, path: Path, max_height: int = 4000) -> Path:
        """Just one element (its box in page coordinates, cut at ``max_height``)."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'start'});"  # content-visibility:auto paints only what is near the viewport
            " const r = e.getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()"
        )
        if box is None:
            raise CDPError(f"no element {selector}")
        x, y, w, h = box
        self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))", await_promise=True)
        clip = {"x": x, "y": y, "width": max(w, 1), "height": max(min(h, max_height), 1), "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + json.dumps(p.get("args", []))[:500])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", "")[:500] + " " + p["entry"].get("url", ""))
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append("load failed: " + p.get("errorText", ""))
        return out

    def requests(self) -> list[str]:
        return [ev["params"]["request"]["url"] for ev in self.events if ev.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        self._conn.__exit__(None, None, None)


class Chromium:
    """``with Chromium() as browser: page = browser.page()``; the browser's process group is
    killed by its own PID on exit (Chromium forks zygote and renderer helpers)."""

    def __init__(self, width: int = 1400, height: int = 900, timeout: float = 60):
        if CHROMIUM is None:
            raise RuntimeError("chromium not installed (deploy/install-system.sh with CROSSVISOR_FULL=1)")
        self.width, self.height, self.timeout = width, height, timeout
        self.profile = tempfile.mkdtemp(prefix="cv-chromium-")
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.pages: list[Page] = []

    def __enter__(self) -> Chromium:
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.timeout
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        else:
            raise TimeoutError("chromium did not open its DevTools port")
        # keep reading stderr so a chatty browser never blocks on a full pipe
        import threading

        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # type: ignore[union-attr]
        return self

    def page(self) -> Page:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            target = json.loads(r.read())
        page = Page(target["webSocketDebuggerUrl"], self.timeout)
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.pages.append(page)
        return page

    def __exit__(self, *exc: object) -> None:
        for p in self.pages:
            try:
                p.close()
            except Exception:  # noqa: BLE001 - the browser is going away anyway
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
