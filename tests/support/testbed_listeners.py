"""Listener process for the test bed: plain TCP, HTTP and TLS servers inside a router namespace.

Started by `tests/support/testbed.py` via
`ip netns exec NS python tests/support/testbed_listeners.py`. It
prints `{"ready": true}` once running, then takes one JSON command per stdin line and answers
each with one JSON line on stdout, only after the socket is bound (or closed), so the parent
never needs to sleep:

    {"op": "listen", "port": 80, "kind": "http", "server_header": "x", "title": "y"}
    {"op": "listen", "port": 443, "kind": "tls", "cert": "/path.pem", "key": "/path.key"}
    {"op": "listen", "port": 22, "kind": "tcp", "banner_b64": "U1NILTIuMA0K"}
    {"op": "unlisten", "port": 80}

EOF on stdin means the parent is gone or done: the process exits. Servers bind 0.0.0.0 so
that both the veth address and the delayed TUN address of the router reach them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

# A scanner sends bursts of connects; a short backlog would turn open ports into timeouts.
BACKLOG = 8192
# Bounded waits so that a silent client never pins a task forever.
IDLE_TIMEOUT = 10.0
REQUEST_TIMEOUT = 5.0
MAX_LIFETIME = 6 * 3600.0  # a backstop only: the parent closing stdin is the normal end
MAX_REQUEST = 16384
DEFAULT_SERVER = "emtb-httpd/1.0"
DEFAULT_TITLE = "Router login"


@dataclass
class Listener:
    port: int
    kind: str
    server: asyncio.Server
    writers: set[asyncio.StreamWriter] = field(default_factory=set)


def http_response(spec: dict[str, Any]) -> bytes:
    # The title is deliberately not escaped: tests feed hostile titles to check the notifier.
    title = spec.get("title") or DEFAULT_TITLE
    server = spec.get("server_header") or DEFAULT_SERVER
    body = f"<html><head><title>{title}</title></head><body>emtb</body></html>\n".encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Server: {server}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


async def serve_tcp(
    spec: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    banner = base64.b64decode(spec["banner_b64"]) if spec.get("banner_b64") else b""
    if banner:
        writer.write(banner)
        await writer.drain()
    # Hold the connection like a real service would, until the peer leaves or goes idle.
    for _ in range(1000):
        data = await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT)
        if not data:
            break


async def serve_http(
    spec: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    request = b""
    while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
        chunk = await asyncio.wait_for(reader.read(4096), REQUEST_TIMEOUT)
        if not chunk:
            return
        request += chunk
    writer.write(http_response(spec))
    await writer.drain()


class Listeners:
    def __init__(self) -> None:
        self.by_port: dict[int, Listener] = {}

    async def listen(self, cmd: dict[str, Any]) -> None:
        port = int(cmd["port"])
        kind = cmd.get("kind", "tcp")
        if port in self.by_port:
            await self.unlisten(port)
        if kind not in ("tcp", "http", "tls"):
            raise ValueError(f"unknown listener kind {kind!r}")
        ctx: ssl.SSLContext | None = None
        if kind == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cmd["cert"], cmd["key"])
        handler = serve_tcp if kind == "tcp" else serve_http
        writers: set[asyncio.StreamWriter] = set()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.add(writer)
            try:
                await handler(cmd, reader, writer)
            except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
                pass  # scanners reset connections mid-way; that is normal here
            finally:
                writers.discard(writer)
                writer.close()

        server = await asyncio.start_server(
            on_client,
            host="0.0.0.0",
            port=port,
            backlog=BACKLOG,
            ssl=ctx,
            ssl_handshake_timeout=REQUEST_TIMEOUT if ctx else None,
            reuse_address=True,
        )
        self.by_port[port] = Listener(port, kind, server, writers)

    async def unlisten(self, port: int) -> None:
        listener = self.by_port.pop(port, None)
        if listener is None:
            return
        listener.server.close()
        for writer in list(listener.writers):
            writer.transport.abort()

    async def close(self) -> None:
        for port in list(self.by_port):
            await self.unlisten(port)


def quiet_about_scanners(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Resets and failed handshakes from scanners are expected; keep stderr for real problems.
    if not isinstance(context.get("exception"), OSError | ssl.SSLError | TimeoutError):
        loop.default_exception_handler(context)


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_about_scanners)
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    listeners = Listeners()
    reply({"ready": True})
    end = loop.time() + MAX_LIFETIME
    try:
        while loop.time() < end:
            try:
                line = await asyncio.wait_for(reader.readline(), end - loop.time())
            except TimeoutError:
                break
            if not line:
                break
            try:
                cmd = json.loads(line)
                if cmd["op"] == "listen":
                    await listeners.listen(cmd)
                elif cmd["op"] == "unlisten":
                    await listeners.unlisten(int(cmd["port"]))
                elif cmd["op"] != "ping":
                    raise ValueError(f"unknown op {cmd['op']!r}")
                reply({"ok": True})
            except Exception as exc:
                reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        await listeners.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
