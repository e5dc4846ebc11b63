"""The HTTP server: health, readiness, metrics, the status page and the JSON API.

aiohttp, bound to `[http] listen` (127.0.0.1:9810 by default). The service passes itself in as
the `Backend` the handlers read from, so handlers stay thin. Every error is JSON
`{"error": "..."}`: routing's 404/405 too, and anything unexpected becomes a 500 without a
traceback in the body (the traceback goes to the log).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from exposuremon.logs import get_logger
from exposuremon.metrics import scrape_handler
from exposuremon.store import StoreError
from exposuremon.web import status_page
from exposuremon.web.api import MAX_BODY, Api, Backend, Handler, error
from exposuremon.web.connections import ConnectionLimits, Listener
from exposuremon.web.hosts import host_guard

if TYPE_CHECKING:
    from exposuremon.metrics import StateCollector

# The page loads nothing from anywhere (no scripts, no external assets); say so to the browser,
# so that even an escaping mistake could not run a script from a scanned host's banner.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"


class _QuietParseErrors(logging.Filter):
    """A malformed request (a scanner, a bot) is one warning line, not a traceback per request."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = (
                "malformed HTTP request from %s (%s)",
                (
                    peer,
                    type(exc).__name__,
                ),
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# aiohttp's protocol errors (bad request lines, oversized headers) are logged here.
PROTOCOL_LOG = logging.getLogger("exposuremon.http")
PROTOCOL_LOG.addFilter(_QuietParseErrors())


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn routing errors and crashes into JSON errors; add headers every answer carries."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep what the client needs (Allow on 405); the body becomes ours.
        keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        response = error(exc.status, _reason(request, exc), keep)
    except asyncio.CancelledError:
        raise
    except Exception:
        get_logger().exception(
            "HTTP handler failed", method=request.method, path=request.path[:200]
        )
        response = error(500, "internal error")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _reason(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "not found"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method[:16]} not allowed here (allowed: {allowed})"
    if exc.status == 413:
        return f"body: larger than {MAX_BODY} bytes"
    return (exc.reason or "error").lower()


def make_app(
    registry: CollectorRegistry,
    backend: Backend,
    *,
    state: StateCollector | None = None,
) -> web.Application:
    """The aiohttp application, reading from `backend` (the running service).

    `state` (the store-backed state metrics) is read before each /metrics scrape and added to
    what prometheus-client serves from `registry`.
    """

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop runs.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        reason = backend.not_ready()
        # A degraded vantage stays ready (200): the node scans on and guards its targets from
        # its own outage; the detail says so (docs/api.md).
        health = backend.vantage_health()
        detail = {}
        if health is not None:
            name, degraded = health
            detail = {"vantage": {"name": name, "status": "degraded" if degraded else "up"}}
        if reason is None:
            return web.json_response({"status": "ready"} | detail)
        return web.json_response({"status": "not ready", "reason": reason} | detail, status=503)

    async def page(request: web.Request) -> web.Response:
        query = status_page.parse_query(request.query)
        try:
            html = await status_page.render_status(backend.store, backend.config, query=query)
        except StoreError as exc:
            get_logger().error("store failed serving the status page", error=str(exc))
            return error(503, "the database is unavailable; see the daemon's log")
        response = web.Response(text=html, content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # json_errors outermost: the host guard's refusals get the same headers as every answer.
    app = web.Application(
        middlewares=[json_errors, host_guard(lambda: backend.config.http)],
        client_max_size=MAX_BODY,
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    scrape = (
        make_aiohttp_handler(registry)
        if state is None
        else scrape_handler(registry, state.refresh, state.render)
    )

    async def metrics(request: web.Request) -> web.StreamResponse:
        try:
            return await scrape(request)
        except StoreError as exc:  # the state metrics read the store: no half answer
            get_logger().error("store failed serving /metrics", error=str(exc))
            return error(503, "the database is unavailable; see the daemon's log")

    app.router.add_get("/metrics", metrics)  # the one /metrics route
    app.router.add_get("/", page)
    app.router.add_routes(Api(backend).routes())
    return app


DEFAULT_LIMITS = ConnectionLimits()


class HttpServer:
    """Start/stop wrapper around an aiohttp runner bound to one host and port.

    Connections go through `connections.Listener`: header and keep-alive timeouts, a cap on
    open connections and JSON answers to oversized heads (`limits`, docs/api.md "Limits").
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        limits: ConnectionLimits = DEFAULT_LIMITS,
    ) -> None:
        self._runner = web.AppRunner(app, access_log=None, logger=PROTOCOL_LOG)
        self._host, self._port = host, port
        self._limits = limits
        self._server: asyncio.Server | None = None
        self.listener: Listener | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        """Bind and serve; port 0 picks a free port (see `bound`)."""
        await self._runner.setup()
        assert self._runner.server is not None
        self.listener = Listener(self._runner.server, self._limits, PROTOCOL_LOG)
        # Our own listening socket (not a TCPSite): its protocol factory is the Listener.
        self._server = await asyncio.get_running_loop().create_server(
            self.listener, self._host, self._port, backlog=128
        )
        if self._server.sockets:
            name = self._server.sockets[0].getsockname()
            self.bound = (str(name[0]), int(name[1]))

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.close()  # accept no more; the runner ends the open connections
        await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
