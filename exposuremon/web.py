"""The HTTP server: health, readiness and metrics now; the JSON API and status page join later.

aiohttp, bound to `[http] listen` (127.0.0.1:9810 by default). The service passes in what
the handlers need (a readiness check, the metrics registry), so handlers stay thin.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler


def make_app(registry: CollectorRegistry, is_ready: Callable[[], str | None]) -> web.Application:
    """The aiohttp application; `is_ready` returns None when ready, else the reason it is not."""

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop runs.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        reason = is_ready()
        if reason is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready", "reason": reason}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


class HttpServer:
    """Start/stop wrapper around an aiohttp runner bound to one host and port."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host, self._port = host, port
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        """Bind and serve; port 0 picks a free port (see `bound`)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            name = sockets[0].getsockname()
            self.bound = (str(name[0]), int(name[1]))

    async def stop(self) -> None:
        """Stop serving and release the port."""
        await self._runner.cleanup()
