"""Slow, idle and too many clients, oversized heads: web/connections.py over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exposuremon.web.app import HttpServer
from exposuremon.web.connections import ConnectionLimits
from tests.support.apibed import Story, build_story
from tests.support.daemon import wait_until
from tests.support.rawhttp import exchange, parse_answer, request, serving

DEADLINE = 20.0  # seconds: far above every timeout under test, so a loaded machine passes
TRICKLE_EVERY = 0.05  # seconds between two bytes of a trickling client


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """The API story store, built once; tests serve copies."""
    return build_story(tmp_path_factory.mktemp("story"))


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connections(address: tuple[str, int], count: int) -> AsyncIterator[list[Stream]]:
    """`count` open client connections, all closed afterwards."""
    opened: list[Stream] = []
    try:
        for _ in range(count):
            opened.append(await asyncio.open_connection(*address))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()
        for _, writer in opened:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes the connection; what it sent before."""
    try:
        return await asyncio.wait_for(reader.read(), DEADLINE)
    except ConnectionResetError:
        return b""


async def served(server: HttpServer) -> bool:
    """True when a fresh client gets /healthz answered."""
    assert server.bound is not None
    try:
        answer = await exchange(server.bound, request("/healthz", "localhost"))
    except (ConnectionError, AssertionError):
        return False
    return answer.status == 200


async def trickle_until_closed(stream: Stream, payload: bytes) -> bool:
    """Send `payload` one byte at a time; True once the server has closed the connection."""
    reader, writer = stream
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    for byte in payload:  # bounded: the payload, and the deadline
        if reader.at_eof() or loop.time() > end:
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return True
        # Pacing is the behaviour under test (a slow client), not a stand-in for a condition.
        try:
            await asyncio.wait_for(reader.read(1), TRICKLE_EVERY)
        except TimeoutError:
            continue
        except ConnectionError:  # a reset is the server closing too (it refused us at the cap)
            return True
    return reader.at_eof()


ENDLESS_HEAD = b"GET /api/v1/targets HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 5000


async def test_trickling_client_is_disconnected(story: Story, tmp_path: Path) -> None:
    """A client trickling its request head is closed after the header timeout, unanswered."""
    limits = ConnectionLimits(header_timeout=0.5)
    async with serving(story.copy(tmp_path), limits=limits) as (server, _):
        assert server.bound is not None
        assert server.listener is not None
        listener = server.listener
        async with connections(server.bound, 1) as [stream]:
            started = time.monotonic()
            assert await trickle_until_closed(stream, ENDLESS_HEAD)
            assert time.monotonic() - started < DEADLINE
        await wait_until(lambda: _true(not listener.live), DEADLINE, "connection forgotten")


async def test_idle_keepalive_connection_is_closed(story: Story, tmp_path: Path) -> None:
    """After an answer, a connection that sends nothing more is closed at the keep-alive
    timeout."""
    limits = ConnectionLimits(keepalive_timeout=0.5)
    async with serving(story.copy(tmp_path), limits=limits) as (server, _):
        assert server.bound is not None
        async with connections(server.bound, 1) as [(reader, writer)]:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            data = await closed_by_server(reader)
            answer = parse_answer(data)
            assert answer.status == 200
            assert answer.headers.get("connection", "keep-alive").lower() != "close"


async def test_connection_flood_is_capped(story: Story, tmp_path: Path) -> None:
    """Beyond the cap new connections get 503 JSON and are closed; once the flood ends, a
    normal client is served."""
    cap = 8
    limits = ConnectionLimits(max_connections=cap, header_timeout=60.0)
    async with serving(story.copy(tmp_path), limits=limits) as (server, _):
        assert server.bound is not None
        assert server.listener is not None
        listener = server.listener
        async with connections(server.bound, cap) as held:
            await wait_until(lambda: _true(len(listener.live) == cap), DEADLINE, "cap reached")
            async with connections(server.bound, 3 * cap) as flood:
                answers = [await closed_by_server(reader) for reader, _ in flood]
            refused = [parse_answer(a) for a in answers if a]
            assert refused, "no refused connection got an answer"
            for answer in refused:
                assert answer.status == 503
                assert answer.json() == {"error": "too many connections; try again later"}
            assert len(listener.live) == cap
            assert listener.refused == 3 * cap
            assert not await served(server)
            assert len(held) == cap
        await wait_until(lambda: served(server), DEADLINE, "a client served after the flood")


async def test_three_hundred_tricklers(story: Story, tmp_path: Path) -> None:
    """300 connections trickling heads: the cap refuses most, the timeout frees the rest,
    and a normal client is served afterwards."""
    limits = ConnectionLimits(header_timeout=1.0, max_connections=64)
    async with serving(story.copy(tmp_path), limits=limits) as (server, _):
        assert server.bound is not None
        assert server.listener is not None
        async with connections(server.bound, 300) as streams:
            results = await asyncio.gather(
                *(trickle_until_closed(s, ENDLESS_HEAD) for s in streams)
            )
        assert all(results)
        listener = server.listener
        await wait_until(lambda: _true(not listener.live), DEADLINE, "all connections freed")
        assert listener.refused >= 300 - 64
        await wait_until(lambda: served(server), DEADLINE, "a client served afterwards")


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        (
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
            414,
            "URL: longer than 8190 bytes",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
            431,
            "header field: longer than 8192 bytes",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-" + b"c" * 9000 + b": 1\r\n\r\n",
            431,
            "header field: longer than 8192 bytes",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: localhost\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
            + b"\r\n",
            431,
            "headers: more than 100",
        ),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n", 400, "malformed HTTP request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "malformed HTTP request"),
    ],
)
async def test_oversized_and_malformed_heads_get_json(
    story: Story, tmp_path: Path, raw: bytes, status: int, error: str
) -> None:
    """An oversized URL (414), header field or header count (431), or a malformed head (400)
    is answered in JSON and the connection closed."""
    async with serving(story.copy(tmp_path)) as (server, _):
        assert server.bound is not None
        answer = await exchange(server.bound, raw)
        assert answer.status == status, answer
        assert answer.json() == {"error": error}
        assert answer.headers["x-content-type-options"] == "nosniff"


async def _true(value: bool) -> bool:
    return value
