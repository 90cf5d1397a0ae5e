"""``crossvisor serve``: a read-only web UI on loopback.

Campaigns come from the campaign client (``crossvisor.client.campaigns``, the one ``campaign list``
uses): Temporal's visibility, live progress from the campaign's ``progress`` query, counts of
finished ones from their result, full cell results from the result store; the pages are the
report's own pieces (``crossvisor.report``) with links to routes instead of anchors, plus console
and artifact downloads and links to the Temporal Web UI and the Grafana dashboard.

Starlette + uvicorn: small, well kept, and async like the Temporal client, so a page awaits its
queries on the same event loop instead of a thread per request. Read-only by construction: every
method but GET and HEAD is answered 405 before routing, nothing here sends a signal, update or
start to Temporal, and every string shown passes ``report.scrub``. Loopback only: the bind address
is checked, and a Host header that is not a loopback name is refused (DNS rebinding).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from crossvisor import report
from crossvisor.client.campaigns import CampaignRow, Campaigns
from crossvisor.core.config import Settings
from domain.model import CampaignResult, CellResult

STATIC_DIR = Path(__file__).resolve().parent / "web" / "static"
DEFAULT_PORT = 17290
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
LIST_LIMIT = 200  # newest campaigns on the index page
TEXT_SUFFIXES = (".log", ".txt", ".json", ".xml", ".ovf", ".mf", ".yaml", ".yml", ".csv")
MAX_TEXT_BYTES = 32 * 1024 * 1024

SECURITY_HEADERS = {
    # the UI's own stylesheet and script only; style attributes carry chart widths
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ServeError(ValueError):
    pass


def check_loopback(host: str) -> str:
    """The bind address, if it is a loopback one; anything else is refused (the UI has no login)."""
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ServeError(f"serve: --host {host!r} is not a loopback address; the read-only UI binds to 127.0.0.0/8 only")


class ReadOnly:
    """ASGI middleware: GET and HEAD only (405 with Allow for anything else, before routing), and
    the security headers on every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            resp = PlainTextResponse(
                "crossvisor serve is read-only: GET and HEAD only\n", 405, headers={"Allow": "GET, HEAD"}
            )
            await self._with_headers(resp, scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _with_headers(self, resp: Response, scope, receive, send) -> None:
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        await resp(scope, receive, send)


# ----------------------------------------------------------------------------------------- pages


def _q(text: str) -> str:
    return quote(text, safe="")


def links_for(cid: str) -> report.Links:
    base = f"/campaigns/{_q(cid)}"
    return report.Links(
        cell=lambda cell_id: f"{base}/cells/{_q(cell_id)}",
        artifact=lambda cell, name: (
            f"{base}/cells/{_q(cell.cell_id)}/artifacts/{_q(name)}"
            if report.safe_relative(cell.artifacts.get(name, ""))
            else None
        ),
        console=lambda cell: f"{base}/cells/{_q(cell.cell_id)}/console.txt" if report.distinct_consoles(cell) else None,
    )


def _e(text: object) -> str:
    return report.escape(text)


def _layout(settings: Settings, title: str, body: str, *, scripts: bool = False) -> HTMLResponse:
    ui = settings.temporal_ui_url.rstrip("/")
    grafana = settings.grafana_url.rstrip("/")
    head = "<link rel='stylesheet' href='/static/crossvisor.css'>" + (
        "<script src='/static/live.js' defer></script>" if scripts else ""
    )
    nav = (
        "<header class='top'><a class='brand' href='/'>crossvisor</a><a href='/'>campaigns</a>"
        f"<a href='{_e(ui)}/namespaces/{_q(settings.temporal_namespace)}/workflows' rel='noreferrer'>Temporal UI</a>"
        f"<a href='{_e(grafana)}/d/crossvisor' rel='noreferrer'>Grafana</a>"
        "<span class='muted small'>read-only</span></header>"
    )
    return HTMLResponse(report.html_page(title, f"{nav}<main>{body}</main>", head=head))


def _progress_html(p: dict[str, Any] | None, url: str, status: str) -> str:
    """A progress bar the page's script refreshes from ``url`` (JSON) while the campaign runs."""
    if p is None:
        inner = "<span class='muted small'>progress unknown (no worker answered the query)</span>"
        return f"<div class='live' data-progress-url='{_e(url)}' data-status='{_e(status)}'>{inner}</div>"
    c = p.get("counts", {})
    total = max(int(c.get("total", 0)), 1)
    segs = "".join(
        f"<i class='p-{k}' data-k='{k}' style='width:{100 * int(c.get(k, 0)) / total:.2f}%'></i>"
        for k in ("pass", "warn", "fail", "error", "skipped", "running")
    )
    counts = " &middot; ".join(
        f"{k} <b data-count='{k}'>{int(c.get(k, 0))}</b>"
        for k in ("done", "total", "running", "pass", "warn", "fail", "error", "skipped")
    )
    return (
        f"<div class='live' data-progress-url='{_e(url)}' data-status='{_e(status)}'>"
        f"<div class='progress'>{segs}</div><div class='small'>{counts}"
        f"{' &middot; <b>paused</b>' if p.get('paused') else ''}</div></div>"
    )


def index_html(settings: Settings, rows: list[CampaignRow]) -> str:
    if not rows:
        return "<h1>Campaigns</h1><p>No campaign in Temporal yet: <code>crossvisor campaign start SPEC</code>.</p>"
    out = [
        "<h1>Campaigns</h1><table id='campaigns'><tr><th>campaign</th><th>spec</th><th>status</th><th>started</th>"
        "<th>took</th><th>progress</th><th></th></tr>"
    ]
    for r in rows:
        href = f"/campaigns/{_q(r.campaign_id)}"
        took = report.span_seconds(r.started_at, r.closed_at)
        # running: the live bar the script refreshes; finished: the same bar with its final counts
        shown = r.progress if r.workflow_status == "running" else ({"counts": r.counts} if r.counts else None)
        progress = (
            _progress_html(shown, f"/api/campaigns/{_q(r.campaign_id)}/progress", r.workflow_status)
            if shown is not None or r.workflow_status == "running"
            else ""
        )
        cells = [
            f"<a href='{_e(href)}'>{_e(r.campaign_id)}</a>",
            _e(r.name),
            _e(r.status),
            f"<time datetime='{_e(r.started_at)}'>{_e(report.human_time(r.started_at))}</time>",
            report.human_duration(took) if took is not None else "",
            progress,
        ]
        link = f"<td class='small'><a href='{_e(_workflow_url(settings, r.campaign_id))}' rel='noreferrer'>workflow</a></td>"
        row = "".join(f"<td>{c}</td>" for c in cells)
        out.append(f"<tr data-campaign='{_e(r.campaign_id)}' data-status='{_e(r.workflow_status)}'>{row}{link}</tr>")
    out.append("</table>")
    return "".join(out)


def _workflow_url(settings: Settings, campaign_id: str) -> str:
    """The campaign's workflow in the Temporal Web UI."""
    ui = settings.temporal_ui_url.rstrip("/")
    return f"{ui}/namespaces/{_q(settings.temporal_namespace)}/workflows/{_q(campaign_id)}"


def campaign_links_html(settings: Settings, res: CampaignResult) -> str:
    cid = _q(res.campaign_id)
    ui = _workflow_url(settings, res.campaign_id)
    grafana = f"{settings.grafana_url.rstrip('/')}/d/crossvisor?var-campaign={_q(res.name)}"
    return (
        "<p class='small' id='links'>"
        f"<a href='{_e(ui)}' rel='noreferrer' data-link='temporal'>workflow in the Temporal UI</a> &middot; "
        f"<a href='{_e(grafana)}' rel='noreferrer' data-link='grafana'>Grafana dashboard</a> &middot; download "
        f"<a href='/campaigns/{cid}/report.html' download>report (HTML)</a>, "
        f"<a href='/campaigns/{cid}/report.junit.xml' download>JUnit</a>, "
        f"<a href='/campaigns/{cid}/report.json' download>JSON</a></p>"
    )


def _not_found(settings: Settings, what: str) -> HTMLResponse:
    resp = _layout(settings, "not found", f"<h1>Not found</h1><p>{_e(what)}</p><p><a href='/'>all campaigns</a></p>")
    resp.status_code = 404
    return resp


def _unavailable(settings: Settings, err: Exception) -> HTMLResponse:
    body = (
        "<h1>Temporal is not reachable</h1>"
        f"<p>{_e(settings.temporal_address)} (namespace {_e(settings.temporal_namespace)}): {_e(type(err).__name__)}: "
        f"{_e(str(err)[:500])}</p><p>Start the stack with <code>crossvisor up</code>, or set CROSSVISOR_TEMPORAL_ADDRESS.</p>"
    )
    resp = _layout(settings, "Temporal not reachable", body)
    resp.status_code = 503
    return resp


def _is_not_found(err: Exception) -> bool:
    from temporalio.service import RPCError, RPCStatusCode

    return isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND


def create_app(settings: Settings, client=None) -> Starlette:
    """The web UI. ``client``: a connected Temporal client (tests, embedding); by default one is
    opened from ``settings`` on first use."""
    campaigns = Campaigns(settings, client)

    async def guarded(request: Request, fn) -> Response:
        try:
            return await fn()
        except Exception as err:  # noqa: BLE001 - every failure is a page that says what failed
            if _is_not_found(err):
                return _not_found(settings, f"no campaign {request.path_params.get('cid', '')!r} in Temporal")
            return _unavailable(settings, err)

    async def index(request: Request) -> Response:
        async def page():
            rows = await campaigns.list(limit=LIST_LIMIT)
            return _layout(settings, "crossvisor campaigns", index_html(settings, rows), scripts=True)

        return await guarded(request, page)

    async def campaign(request: Request) -> Response:
        cid = request.path_params["cid"]

        async def page():
            t = time.monotonic()
            res = await campaigns.load(cid)
            compare = request.query_params.get("compare", "auto")
            previous = None
            if compare == "auto":
                previous = await campaigns.previous(res)
            elif compare not in ("", "none"):
                previous = await campaigns.load(compare)
            live = ""
            if res.status not in ("completed", "cancelled", "failed", "terminated", "timed_out"):
                p = await campaigns.progress(cid)
                live = "<h2>Progress</h2>" + _progress_html(
                    p["progress"], f"/api/campaigns/{_q(cid)}/progress", p["workflow_status"]
                )
            body = "<p class='back'><a href='/'>&larr; all campaigns</a></p>" + report.campaign_body(
                res, links_for(cid), previous, after_header=campaign_links_html(settings, res) + live
            )
            body += f"<p class='muted small'>rendered in {time.monotonic() - t:.2f} s</p>"
            return _layout(settings, f"{res.name or cid}: crossvisor", body, scripts=bool(live))

        return await guarded(request, page)

    async def _cell(cid: str, cell_id: str) -> tuple[CampaignResult, CellResult | None]:
        res = await campaigns.load(cid)
        return res, next((c for c in res.cells if c.cell_id == cell_id), None)

    async def cell(request: Request) -> Response:
        cid, cell_id = request.path_params["cid"], request.path_params["cell_id"]

        async def page():
            res, found = await _cell(cid, cell_id)
            if found is None:
                return _not_found(settings, f"campaign {cid} has no cell {cell_id}")
            ids = [c.cell_id for c in res.cells]
            i = ids.index(cell_id)
            links = links_for(cid)
            nav = [f"<a href='/campaigns/{_q(cid)}'>&larr; {_e(res.name or cid)} matrix</a>"]
            if i > 0:
                nav.append(f"<a href='{_e(links.cell(ids[i - 1]))}' rel='prev'>previous cell</a>")
            if i + 1 < len(ids):
                nav.append(f"<a href='{_e(links.cell(ids[i + 1]))}' rel='next'>next cell</a>")
            body = f"<p class='back'>{' &middot; '.join(nav)}</p>" + report.cell_detail_html(found, links, heading="h1")
            return _layout(settings, f"{cell_id}: crossvisor", body)

        return await guarded(request, page)

    async def console(request: Request) -> Response:
        cid, cell_id = request.path_params["cid"], request.path_params["cell_id"]

        async def page():
            _, found = await _cell(cid, cell_id)
            if found is None:
                return PlainTextResponse("no such cell\n", 404)
            parts = [f"== {', '.join(checks)} ==\n{text}\n" for checks, text in report.distinct_consoles(found)]
            if not parts:
                return PlainTextResponse("this cell recorded no console excerpt\n", 404)
            return PlainTextResponse(
                report.scrub("\n".join(parts)),
                headers={"Content-Disposition": f'attachment; filename="{cell_id}.console.txt"'},
            )

        return await guarded(request, page)

    async def artifact(request: Request) -> Response:
        cid, cell_id, name = (request.path_params[k] for k in ("cid", "cell_id", "name"))

        async def page():
            _, found = await _cell(cid, cell_id)
            rel = report.safe_relative(found.artifacts.get(name, "")) if found else None
            if rel is None:
                return PlainTextResponse("no such artifact\n", 404)
            home = settings.home.resolve()
            path = (home / rel).resolve()
            if not path.is_relative_to(home) or not path.is_file():
                return PlainTextResponse(f"artifact {name} is not on this machine (under {rel})\n", 404)
            filename = path.name.replace('"', "")
            disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
            if path.suffix.lower() in TEXT_SUFFIXES and path.stat().st_size <= MAX_TEXT_BYTES:
                # text goes through redaction like every page; binary packages are served as stored
                text = path.read_bytes().decode("utf-8", "replace")
                return PlainTextResponse(report.scrub(text), headers=disposition)
            return FileResponse(path, headers=disposition)

        return await guarded(request, page)

    async def download(request: Request) -> Response:
        cid, fmt = request.path_params["cid"], request.path_params["fmt"]
        renders = {
            "html": (report.render_html, "text/html; charset=utf-8"),
            "junit.xml": (report.render_junit, "application/xml"),
            "json": (report.render_json, "application/json"),
        }
        if fmt not in renders:
            return _not_found(settings, f"no report format {fmt}")

        async def page():
            res = await campaigns.load(cid)
            fn, media = renders[fmt]
            headers = {"Content-Disposition": f'attachment; filename="{cid}.{fmt}"'}
            return Response(fn(res), media_type=media, headers=headers)

        return await guarded(request, page)

    async def api_campaigns(request: Request) -> Response:
        try:
            rows = await campaigns.list(limit=LIST_LIMIT)
        except Exception as err:  # noqa: BLE001
            return JSONResponse({"error": report.scrub(f"{type(err).__name__}: {err}")}, 503)
        return JSONResponse([dataclasses.asdict(r) for r in rows])

    async def api_progress(request: Request) -> Response:
        try:
            return JSONResponse(await campaigns.progress(request.path_params["cid"]))
        except Exception as err:  # noqa: BLE001
            status = 404 if _is_not_found(err) else 503
            return JSONResponse({"error": report.scrub(f"{type(err).__name__}: {err}")}, status)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/api/campaigns", api_campaigns),
        Route("/api/campaigns/{cid}/progress", api_progress),
        Route("/campaigns/{cid}", campaign),
        Route("/campaigns/{cid}/report.{fmt:path}", download),
        Route("/campaigns/{cid}/cells/{cell_id}", cell),
        Route("/campaigns/{cid}/cells/{cell_id}/console.txt", console),
        Route("/campaigns/{cid}/cells/{cell_id}/artifacts/{name:path}", artifact),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ReadOnly), Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES))],
    )
    app.state.campaigns = campaigns
    return app


async def run(settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT, sock=None) -> None:
    """Serve until interrupted. ``sock``: an already bound socket (tests bind port 0)."""
    import uvicorn

    host = check_loopback(host)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,  # a browser's open connections never hold up Ctrl-C for long
    )
    server = uvicorn.Server(config)
    if sock is None:
        print(f"crossvisor serve: http://{host}:{port}/ (read-only; Ctrl-C stops)", flush=True)
    await server.serve(sockets=[sock] if sock is not None else None)
