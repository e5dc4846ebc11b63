"""Connection limits for the HTTP listener: slow and idle clients, floods, oversized heads.

aiohttp has a keep-alive timeout but nothing that ends a client trickling its first request
head byte by byte, no cap on connections, and answers a parse error (an oversized URL or
header) in plain text. This module is the narrow seam around aiohttp's `RequestHandler` (the
asyncio protocol of one connection) that adds them; `HttpServer` (app.py) binds the listener
with `Listener` as its protocol factory. docs/api.md "Limits" lists the values.

- Header timeout: a connection must deliver its first complete request head (up to the blank
  line) within `header_timeout` of being accepted, else it is closed without an answer.
- Keep-alive timeout (aiohttp's own): an idle connection, or one trickling a later request
  head, is closed `keepalive_timeout` after its previous answer.
- Connection cap: beyond `max_connections` open connections, a new one gets a 503 JSON answer
  and is closed at once, so a flood costs one descriptor per connection only for an instant.
- Oversized or malformed heads: a JSON error (414 URL, 431 header field or count, 400 other).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold or send; defaults and their reasons in docs/api.md "Limits"."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    max_connections: int = 64
    max_url: int = 8190  # aiohttp's default request-line limit
    # Must differ from max_url: aiohttp reports both as LineTooLong, told apart by the limit.
    max_field: int = 8192
    max_headers: int = 100


def _json_answer(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON error body that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n\r\n"
    )
    return head.encode() + body


class Listener:
    """The protocol factory of one listening socket: it counts and limits its connections."""

    def __init__(
        self, server: web.Server, limits: ConnectionLimits, logger: logging.Logger
    ) -> None:
        self.server = server
        self.limits = limits
        self.logger = logger
        self.live: set[_Connection] = set()
        self.refused = 0  # connections turned away at the cap, since start
        self._at_cap = False
        self._handler_args: dict[str, Any] = {
            "keepalive_timeout": limits.keepalive_timeout,
            "max_line_size": limits.max_url,
            "max_field_size": limits.max_field,
            "max_headers": limits.max_headers,
            "access_log": None,
            "logger": logger,
        }

    def __call__(self) -> _Connection:
        return _Connection(self, **self._handler_args)

    def admit(self, connection: _Connection) -> bool:
        """Count `connection` in, or False when the cap is reached (logged once per episode)."""
        if len(self.live) >= self.limits.max_connections:
            self.refused += 1
            if not self._at_cap:
                self._at_cap = True
                self.logger.warning(
                    "HTTP connection limit (%d) reached: refusing new connections",
                    self.limits.max_connections,
                )
            return False
        self.live.add(connection)
        return True

    def release(self, connection: _Connection) -> None:
        """Count `connection` out."""
        self.live.discard(connection)
        if self._at_cap and len(self.live) < self.limits.max_connections:
            self._at_cap = False
            self.logger.info("HTTP connections below the limit again (%d refused)", self.refused)


_REFUSED = _json_answer(503, "Service Unavailable", "too many connections; try again later")


class _Connection(RequestHandler):
    """aiohttp's handler of one connection, with the header timeout and the cap around it."""

    def __init__(self, listener: Listener, **handler_args: Any) -> None:
        super().__init__(listener.server, loop=asyncio.get_running_loop(), **handler_args)
        self._listener = listener
        self._admitted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._listener.admit(self):
            # Never handed to aiohttp: a short answer, then the descriptor is freed.
            stream = cast(asyncio.Transport, transport)
            stream.write(_REFUSED)
            stream.close()
            return
        self._admitted = True
        super().connection_made(transport)
        timeout = self._listener.limits.header_timeout
        self._head_timer = asyncio.get_running_loop().call_later(timeout, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._head_timer is not None:
            # The head ends at the first blank line; keep the last 3 bytes for a split CRLFCRLF.
            seen = self._head_tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._head_timer.cancel()
                self._head_timer = None
            else:
                self._head_tail = seen[-3:]
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._listener.release(self)
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self.logger.debug("closing a connection that sent no complete request head in time")
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp logs and builds a plain-text answer; the log line stays, the answer is ours.
        super().handle_error(request, status, exc, message)
        limits = self._listener.limits
        if isinstance(exc, LineTooLong) and exc.args[1:2] == (limits.max_url,):
            status, text = 414, f"URL: longer than {limits.max_url} bytes"
        elif isinstance(exc, LineTooLong):
            status, text = 431, f"header field: longer than {limits.max_field} bytes"
        elif isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
            status, text = 431, f"headers: more than {limits.max_headers}"
        elif status < 500:
            text = "malformed HTTP request"
        else:
            text = "internal error"
        response = web.json_response({"error": text}, status=status)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        response.force_close()
        return response
