"""Hostile input against every endpoint: never a 500, never a traceback, API errors in JSON.

Hypothesis builds paths from percent-encoded text and raw bytes (invalid UTF-8, NUL, `..`,
very long and repeated parameters) and sends them through a real aiohttp server on the story
store, with and without the API token; a table adds request lines no client library would send.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from yarl import URL

from exposuremon.config.fields import TOKEN_ENV
from exposuremon.store.database import Store
from exposuremon.web.app import HttpServer, make_app
from tests.support.apibed import TOKEN, StoreBackend, Story, build_story

FUZZ = settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HOSTILE_TEXT = [
    "",
    "..",
    ".",
    "%2e%2e",
    "%2e%2e%2f%2e%2e",
    "%00",
    "a%00b",
    "%ff%fe",
    "%C0%AE",
    "%ED%A0%80",
    "%",
    "%zz",
    "a%2Fb",
    "-1",
    "0",
    "1e9",
    "NaN",
    "9" * 400,
    "x" * 3000,
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "office",
    "1",
    "24h",
    "2026-11-26T03:14:07Z",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00%2B01:00",
    "%E2%80%AE",
]
MAX_LINE = 8190 - len("GET  HTTP/1.1")  # aiohttp's limit on the request line
PARAMS = ["target", "state", "type", "since", "limit", "cursor", "status", "channel", "name[]"]
GET_PATHS = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/targets",
    "/api/v1/targets/{}",
    "/api/v1/findings",
    "/api/v1/events",
    "/api/v1/notifications",
    "/api/v1/fleet",
    "/api/v1/{}",
    "/{}",
    "/api/v1/targets/{}/scan",
]
POST_PATHS = ["/api/v1/targets/{}/scan", "/api/v1/findings/{}/ack", "/api/v1/findings", "/{}"]


def encoded(text: str) -> str:
    """Text percent-encoded as UTF-8 (lone surrogates too)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# A path segment or query value: encoded text, encoded raw bytes, or a hand-picked nasty one.
pieces = st.one_of(
    st.text(max_size=60).map(encoded),
    st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="")),
    st.sampled_from(HOSTILE_TEXT),
)
queries = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), pieces), pieces), max_size=5).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)
auth_headers = st.sampled_from(
    [
        {},
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + "A" * 2000},
        {"Authorization": "Bearer \u00ff\u00fe"},
    ]
)
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["24h", "0s", "7d", "2099-01-01", "2001-01-01", "9" * 40 + "d", "\x00"]),
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["until", "reason", "x"]), json_values, max_size=3).map(
        lambda d: json.dumps(d).encode()
    ),
    st.sampled_from([b"[" * 5000, b'{"until": "24h", "reason": "ok"}', b"\xff" * 10, b"null"]),
)


@dataclasses.dataclass
class Harness:
    """Two servers on the story store (API token configured or not) driven from sync tests."""

    loop: asyncio.AbstractEventLoop
    with_token: TestClient[Any, Any]
    without_token: TestClient[Any, Any]
    server: HttpServer  # the daemon's own server class, on the store with a token

    def call(
        self, method: str, path: str, *, token: bool = True, **kwargs: Any
    ) -> tuple[int, str, str]:
        """Send one request with the path bytes exactly as given; status, content type, body."""
        client = self.with_token if token else self.without_token

        async def go() -> tuple[int, str, str]:
            async with client.request(method, URL(path, encoded=True), **kwargs) as resp:
                return resp.status, resp.content_type, await resp.text(errors="replace")

        return self.loop.run_until_complete(asyncio.wait_for(go(), 30))


def check(path: str, status: int, content_type: str, body: str) -> None:
    """The rules every answer keeps."""
    assert status < 500, (path, status, body[:500])
    assert "Traceback" not in body
    assert 'File "' not in body
    if len(path) > MAX_LINE:
        # Refused by aiohttp's parser before any handler runs: plain text, but still a 400.
        assert status in (400, 414), (status, body[:200])
        return
    if path.startswith("/api/") or status >= 400:
        assert content_type == "application/json", (path, status, body[:200])
        doc = json.loads(body)
        assert isinstance(doc, dict)
        if status >= 400:
            assert isinstance(doc["error"], str)
            assert doc["error"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The two servers, with their own event loop (Hypothesis tests are synchronous)."""
    base = tmp_path_factory.mktemp("fuzz")
    story = build_story(base / "story")
    token_file = base / "token"
    token_file.write_text(TOKEN)
    beds = [
        story.copy(_mkdir(base / "with"), http=f'token_file = "{token_file}"'),
        story.copy(_mkdir(base / "without")),
    ]
    saved = os.environ.pop(TOKEN_ENV, None)
    loop = asyncio.new_event_loop()
    stores: list[Store] = []
    clients: list[TestClient[Any, Any]] = []
    servers: list[HttpServer] = []

    async def start(bed: Story) -> tuple[TestClient[Any, Any], StoreBackend]:
        store = await Store.open(bed.state_dir)
        stores.append(store)
        backend = StoreBackend(store, bed.config())
        client: TestClient[Any, Any] = TestClient(
            TestServer(make_app(CollectorRegistry(), backend))
        )
        await client.start_server()
        clients.append(client)
        return client, backend

    try:
        (with_token, backend), (without_token, _) = (
            loop.run_until_complete(start(b)) for b in beds
        )
        servers.append(HttpServer(make_app(CollectorRegistry(), backend), "127.0.0.1", 0))
        loop.run_until_complete(servers[0].start())
        yield Harness(loop, with_token, without_token, servers[0])
    finally:
        for client in clients:
            loop.run_until_complete(client.close())
        for server in servers:
            loop.run_until_complete(server.stop())
        for store in stores:
            loop.run_until_complete(store.close())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        if saved is not None:
            os.environ[TOKEN_ENV] = saved


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@FUZZ
@given(template=st.sampled_from(GET_PATHS), segment=pieces, query=queries)
@example(template="/api/v1/findings", segment="", query="limit=1&limit=2&cursor=-5")
@example(template="/api/v1/events", segment="", query="since=" + "9" * 300 + "d")
@example(template="/api/v1/targets/{}", segment="..%2f..%2fetc%2fpasswd", query="")
def test_get_never_fails(harness: Harness, template: str, segment: str, query: str) -> None:
    """GET with any path segment and query: a 2xx/4xx answer; errors are JSON on API paths."""
    path = template.format(segment) + (f"?{query}" if query else "")
    check(path, *harness.call("GET", path))


@FUZZ
@given(
    template=st.sampled_from(POST_PATHS),
    segment=pieces,
    query=queries,
    headers=auth_headers,
    body=bodies,
    token=st.booleans(),
)
@example(
    template="/api/v1/findings/{}/ack",
    segment="1",
    query="",
    headers={"Authorization": f"Bearer {TOKEN}"},
    body=b'{"until": "9999-12-31T23:59:59-05:00", "reason": "x"}',
    token=True,
)
def test_post_never_fails(
    harness: Harness,
    template: str,
    segment: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    token: bool,
) -> None:
    """POST with any path, credentials and body: never a 500; refused without the token."""
    path = template.format(segment) + (f"?{query}" if query else "")
    status, content_type, text = harness.call("POST", path, token=token, headers=headers, data=body)
    check(path, status, content_type, text)
    if len(path) > MAX_LINE:
        return
    if not token and path.startswith("/api/v1/") and status not in (404, 405):
        assert status == 403, (path, status, text)
    if token and headers.get("Authorization") != f"Bearer {TOKEN}" and status not in (404, 405):
        assert status == 401, (path, status, text)


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /api/v1/targets/\x00 HTTP/1.1",
        b"GET /api/v1/findings?limit=\x01\x02 HTTP/1.1",
        b"GET /api/v1/targets/a b HTTP/1.1",
        b"GET /api/v1/targets/\xff\xfe HTTP/1.1",
        b"GET " + b"/api/v1/findings?" + b"limit=1&" * 2000 + b" HTTP/1.1",
        b"GET ../../etc/passwd HTTP/1.1",
        b"GET * HTTP/1.1",
        b"BREW /api/v1/findings HTTP/1.1",
        b"GET /api/v1/findings HTTP/9.9",
    ],
)
def test_malformed_request_lines(
    harness: Harness, request_line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Request lines no client library sends: 4xx JSON, no traceback in the answer or the log."""
    assert harness.server.bound is not None
    host, port = harness.server.bound

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return await reader.read(65536)
        finally:
            writer.close()
            await writer.wait_closed()

    answer = harness.loop.run_until_complete(asyncio.wait_for(exchange(), 30))
    status_line = answer.split(b"\r\n", 1)[0]
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), answer[:300]
    assert b"Traceback" not in answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head, answer[:300]
    assert json.loads(body)["error"]
    assert not [r for r in caplog.records if r.exc_info], caplog.text
