"""Raw HTTP/1.x over real loopback sockets: requests no client library would send, and the
daemon's own `HttpServer` on a copy of the API story to send them to."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry

from exposuremon.store.database import Store
from exposuremon.web.app import DEFAULT_LIMITS, HttpServer, make_app
from exposuremon.web.connections import ConnectionLimits
from tests.support.apibed import StoreBackend, Story

ANSWER_TIMEOUT = 30.0  # seconds; only a hung server takes this long


@dataclasses.dataclass(frozen=True)
class Answer:
    """One HTTP answer as it came off the wire."""

    status: int
    headers: dict[str, str]  # lower-cased names; the last of repeated ones
    body: bytes

    def json(self) -> Any:
        """The body as JSON, after checking the content type says so."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


def parse_answer(data: bytes) -> Answer:
    """Split a whole answer (read to EOF) into status, headers and body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete answer head: {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


async def exchange(address: tuple[str, int], data: bytes) -> Answer:
    """Send `data` on a new connection, read until the server closes, parse the answer."""

    async def go() -> bytes:
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(data)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return parse_answer(await asyncio.wait_for(go(), ANSWER_TIMEOUT))


def request(path: str, host: str | None, *, version: str = "1.1", extra: str = "") -> bytes:
    """A GET with the given Host header (None: no Host header) that asks to close afterwards."""
    host_line = f"Host: {host}\r\n" if host is not None else ""
    return f"GET {path} HTTP/{version}\r\n{host_line}{extra}Connection: close\r\n\r\n".encode()


@contextlib.asynccontextmanager
async def serving(
    bed: Story, *, host: str = "127.0.0.1", limits: ConnectionLimits = DEFAULT_LIMITS
) -> AsyncIterator[tuple[HttpServer, StoreBackend]]:
    """The daemon's server class on the bed's store, bound to `host`, a free port."""
    async with await Store.open(bed.state_dir) as store:
        backend = StoreBackend(store, bed.config())
        server = HttpServer(make_app(CollectorRegistry(), backend), host, 0, limits)
        await server.start()
        try:
            yield server, backend
        finally:
            await server.stop()
