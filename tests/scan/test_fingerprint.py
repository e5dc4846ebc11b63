"""Service fingerprints: pure parsing of banners, HTTP and certificates, then real servers.

Network tests talk to asyncio servers on loopback started here, and (marked netns) to test-bed
routers. Every address goes through testbed_probe.check_target first: loopback or 198.18.0.0/15.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import shutil
import socket
import ssl
import subprocess
import time
import unicodedata
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon.model import Fingerprint
from exposuremon.scan.fingerprint import (
    BANNER_CHARS,
    TEXT_CHARS,
    banner_text,
    fingerprint,
    fingerprint_many,
    http_request,
    http_response_complete,
    parse_certificate,
    parse_http_response,
    sanitize_text,
)
from tests.support.loopback import open_fds
from tests.support.testbed import Router
from tests.support.testbed_probe import check_target

FAST = 1.2  # timeout for most looks: banner wait and TLS attempt 0.4 s each
SLACK = 0.5  # scheduling slack on top of a timeout


def assert_harmless(text: str | None, limit: int) -> None:
    """Bounded, and nothing a terminal or a renderer would interpret as a control."""
    if text is None:
        return
    assert len(text) <= limit
    assert "\x1b" not in text
    assert "\x9b" not in text
    bad = {ch for ch in text if ch != "\t" and unicodedata.category(ch) in ("Cc", "Cf", "Zl")}
    assert not bad, f"control characters kept: {bad!r}"


async def look(address: str, port: int, **kwargs: Any) -> Fingerprint:
    """fingerprint(), refusing any address outside loopback and the test-bed range."""
    check_target(address)
    return await fingerprint(address, port, **kwargs)


# -- pure: text --------------------------------------------------------------------------------


@given(st.text(max_size=2000), st.integers(min_value=2, max_value=300))
def test_sanitize_is_bounded_harmless_and_idempotent(text: str, limit: int) -> None:
    """Any text comes out bounded and without controls; sanitising again changes nothing."""
    out = sanitize_text(text, limit)
    assert_harmless(out, limit)
    assert sanitize_text(out, limit) == out


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200))
def test_sanitize_keeps_printable_ascii(text: str) -> None:
    """Ordinary printable text, markup and mentions included, passes through unchanged."""
    assert sanitize_text(text, 256) == text


def test_sanitize_strips_terminal_escapes_and_bidi() -> None:
    """ANSI colour/title sequences, bidi overrides and NULs go; the visible words stay."""
    text = "\x1b[1;31mred\x1b[0m \x1b]0;title\x07ok\u202etxt.exe\x00 \x9b2Jend"
    assert sanitize_text(text, 100) == "red ok txt.exe end"
    assert sanitize_text("x" * 300, 10) == "xxxxxxxxx…"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"SSH-2.0-OpenSSH_9.3\r\n", "SSH-2.0-OpenSSH_9.3"),
        (b"220-Welcome\r\n220-second line\r\n220 ready\r\n", "220-Welcome"),
        (b"\r\n\r\n  +OK POP3 ready\r\n", "+OK POP3 ready"),
        (b"220 caf\xc3\xa9 ready\r\n", "220 café ready"),
        (b"220 caf\xe9 ready\r\n", "220 café ready"),  # Latin-1 when not UTF-8
        (b"RFB 003.008\n", "RFB 003.008"),
        (b"partial without newline \xc3", "partial without newline"),  # cut mid-character
        (b"\r\n\x00\r\n", None),
    ],
)
def test_banner_text_examples(raw: bytes, expected: str | None) -> None:
    """A banner is its first non-blank line, decoded leniently and trimmed."""
    assert banner_text(raw) == expected


@given(st.binary(max_size=3000))
def test_banner_text_never_raises(raw: bytes) -> None:
    """Arbitrary bytes give a bounded, harmless banner or None."""
    assert_harmless(banner_text(raw), BANNER_CHARS)


# -- pure: HTTP --------------------------------------------------------------------------------


def test_parse_http_redirect_and_title() -> None:
    """Status, a case-insensitive Server header and an unescaped, collapsed title are read."""
    response = (
        b"HTTP/1.1 301 Moved Permanently\r\nsErVeR:  RouterOS  \r\nLocation: /login\r\n\r\n"
        b"<html><HEAD><Title lang=en>\n  Login &amp; more\n</TITLE></head>"
    )
    http = parse_http_response(response)
    assert http is not None
    assert (http.status, http.server, http.title) == (301, "RouterOS", "Login & more")


@pytest.mark.parametrize(
    ("response", "server", "title"),
    [
        (b"HTTP/1.0 200 OK\n\n<titlebar>x</titlebar><title>Real</title>", None, "Real"),
        (b"HTTP/1.1 200 OK\r\nServer: a\r\n\r\n<title>cut off", "a", None),
        (b"HTTP/1.1 200 OK\r\nServer: whole\r\nServ", "whole", None),  # truncated headers
        (b"HTTP/1.1 200 OK\r\nServer: half", None, None),  # an unfinished line is not trusted
        (b"HTTP/1.1 200 OK\r\n\r\n<title>&#8238;@everyone&#27; \x1b[2J</title>", None, "@everyone"),
        (b"HTTP/1.1 200 OK\r\nServer: \x1b]0;pwn\x07nginx\r\n\r\n", "nginx", None),
        (b"HTTP/1.1 200 OK\r\n\r\n<title></title>", None, None),
    ],
)
def test_parse_http_examples(response: bytes, server: str | None, title: str | None) -> None:
    """Headers and titles come from what was read, sanitised; partial values are not guessed."""
    http = parse_http_response(response)
    assert http is not None
    assert (http.server, http.title) == (server, title)


@pytest.mark.parametrize("data", [b"", b"SSH-2.0-x\r\n", b"* OK IMAP", b"HTTP/1.1 20", b"\x16\x03"])
def test_parse_http_rejects_non_http(data: bytes) -> None:
    """Anything that does not start with an HTTP status line is not HTTP."""
    assert parse_http_response(data) is None


@given(st.binary(max_size=2000))
def test_parse_http_never_raises(tail: bytes) -> None:
    """Any bytes after a status line parse without error into harmless, bounded text."""
    http = parse_http_response(b"HTTP/1.1 200 OK\r\n" + tail)
    assert http is not None
    assert_harmless(http.server, TEXT_CHARS)
    assert_harmless(http.title, TEXT_CHARS)
    http_response_complete(b"HTTP/1.1 200 OK\r\n" + tail)


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcd", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde", True),
        (b"HTTP/1.1 200 OK\r\n\r\n<html>", False),  # until EOF
        (b"HTTP/1.1 200 OK\r\n\r\n<title>t</title>", True),  # nothing more to learn
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", False),  # headers not finished
        (b"HTTP/1.1 20", False),  # maybe HTTP, wait for more
        (b"-ERR unknown command\r\n", True),  # not HTTP: its first line is all we keep
        (b"-ERR unknown", False),
    ],
)
def test_http_response_complete(data: bytes, complete: bool) -> None:
    """Reading stops once the body is complete or the title was seen, not before."""
    assert http_response_complete(data) is complete


def test_http_request_host_header() -> None:
    """Host names the target (IPv6 bracketed, port unless default); no redirect-prone extras."""
    assert http_request("198.18.1.2", 80, tls=False).startswith(
        b"GET / HTTP/1.1\r\nHost: 198.18.1.2\r\n"
    )
    assert b"Host: [::1]:8443\r\n" in http_request("::1", 8443, tls=True)
    assert b"Host: router.example\r\n" in http_request("router.example", 443, tls=True)
    request = http_request("::1", 443, tls=True)
    assert b"Connection: close\r\n" in request
    assert b"User-Agent: exposuremon\r\n" in request


# -- pure: certificates ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Self-signed certificates (PEM cert, key) made by openssl, by name."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make certificates")
    base = tmp_path_factory.mktemp("certs")
    specs = {
        "a": ("/CN=router.example/O=Ärzte GmbH", 30),
        "b": ("/CN=router.example/O=Ärzte GmbH", 30),  # same subject, new key: an update
        "far": ("/CN=far future", 40000),  # beyond 2049: GeneralizedTime
        "org": ("/OU=unit/O=Only Org", 30),
        "ou": ("/OU=just a unit", 30),
        "hostile": ("/CN=@everyone \u202e<script>x", 30),
        "old": ("/CN=old firmware", 30),  # RSA 1024 and SHA-1, as old routers serve
    }
    made = {}
    for name, (subject, days) in specs.items():
        cert, key = base / f"{name}.pem", base / f"{name}.key"
        key_args = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        if name == "old":
            key_args = ["rsa:1024", "-sha1"]
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", *key_args, "-nodes", "-days", str(days), "-utf8",
             "-subj", subject, "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        made[name] = (cert, key)
    return made


def der_of(cert: Path) -> bytes:
    """The DER form of a PEM certificate file."""
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("a", "CN=router.example, O=Ärzte GmbH"),
        ("far", "CN=far future"),
        ("org", "O=Only Org"),
        ("ou", None),
        ("hostile", "CN=@everyone <script>x"),
    ],
)
def test_parse_certificate_matches_cpython(
    certs: dict[str, tuple[Path, Path]], name: str, subject: str | None
) -> None:
    """Subject CN/O, issuer and notAfter agree with CPython's own certificate decoder."""
    cert = certs[name][0]
    info = parse_certificate(der_of(cert))
    assert info.subject == subject
    assert info.issuer == subject  # self-signed: its own issuer
    decoder = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decoder is None:
        pytest.skip("this Python has no ssl._ssl._test_decode_cert to compare with")
    decoded = decoder(str(cert))
    expiry = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), dt.UTC)
    assert info.not_after == expiry
    names = {k: v for rdn in decoded["subject"] for k, v in rdn}
    if "commonName" in names:
        assert info.subject is not None
        assert info.subject.startswith(f"CN={sanitize_text(names['commonName'], TEXT_CHARS)}")


def test_parse_certificate_time_forms(certs: dict[str, tuple[Path, Path]]) -> None:
    """UTCTime years wrap at 50 (RFC 5280); GeneralizedTime carries years past 2049."""
    far = parse_certificate(der_of(certs["far"][0])).not_after
    assert far is not None
    assert far.year > 2100
    near = parse_certificate(der_of(certs["a"][0])).not_after
    assert near is not None
    assert dt.timedelta(days=29) < near - dt.datetime.now(dt.UTC) < dt.timedelta(days=31)


@given(st.binary(max_size=600))
def test_parse_certificate_never_raises_on_junk(der: bytes) -> None:
    """Arbitrary bytes give an empty or partial CertInfo, never an exception."""
    info = parse_certificate(der)
    assert_harmless(info.subject, TEXT_CHARS)


@pytest.fixture(scope="module")
def sample_der(certs: dict[str, tuple[Path, Path]]) -> bytes:
    """A real certificate to damage."""
    return der_of(certs["a"][0])


@given(data=st.data())
def test_parse_certificate_survives_damage(sample_der: bytes, data: st.DataObject) -> None:
    """A real certificate cut short or with bytes flipped never makes the parser raise."""
    der = bytearray(sample_der[: data.draw(st.integers(0, len(sample_der)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if der:
            der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    assert_harmless(parse_certificate(bytes(der)).subject, TEXT_CHARS)


# -- loopback servers --------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Service"], Awaitable[None]]


class Service:
    """An asyncio server on loopback we own: counts connections, closes everything on exit."""

    def __init__(
        self, handler: Handler, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        self.handler, self.host, self.tls = handler, host, tls
        self.connections = 0
        self.requests: list[bytes] = []  # HTTP request heads received
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: list[BaseException] = []

    async def __aenter__(self) -> Service:
        self._server = await asyncio.start_server(self._client, self.host, 0, ssl=self.tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.ensure_future(self.handler(reader, writer, self))
        stopping = asyncio.ensure_future(self.stop.wait())
        self._tasks.update((handler, stopping))  # type: ignore[arg-type]
        try:
            await asyncio.wait({handler, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (handler, stopping):
                task.cancel()
            for result in await asyncio.gather(handler, stopping, return_exceptions=True):
                if isinstance(result, Exception) and not isinstance(
                    result, OSError | asyncio.IncompleteReadError
                ):
                    self._errors.append(result)  # a bug in the test server, not the client
            writer.transport.abort()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop.set()
        self._server.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        # Let aborted transports run connection_lost before the loop goes away.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._errors and exc is None:
            raise self._errors[0]

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The head of one HTTP request (kept in `requests`), or None for anything else."""
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"GET "):
            return None
        self.requests.append(head)
        return head


async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, svc: Service) -> None:
    """Accept and say nothing, ever; take whatever the client sends until it leaves."""
    for _ in range(1000):
        if not await reader.read(65536):
            return


def banner_server(data: bytes) -> Handler:
    """Send `data` at once, then hold the connection."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, svc: Service
    ) -> None:
        writer.write(data)
        await writer.drain()
        await svc.stop.wait()

    return handler


def http_server(response: bytes, *, hold: bool = False, stream: bytes = b"") -> Handler:
    """Answer a GET with `response`, then stream `stream` up to 8 MiB or hold the connection."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, svc: Service
    ) -> None:
        if await svc.read_request(reader) is None:
            return
        writer.write(response)
        await writer.drain()
        for _ in range((8 << 20) // max(1, len(stream)) if stream else 0):
            writer.write(stream)
            await writer.drain()  # blocks once the client stops reading
        if hold:
            await svc.stop.wait()

    return handler


def page(title: str, server: str = "test-httpd/1.0") -> bytes:
    """A complete small HTTP response with a title."""
    body = f"<html><head><title>{title}</title></head><body>hi</body></html>".encode()
    head = f"HTTP/1.1 200 OK\r\nServer: {server}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.fixture
def free_port() -> int:
    """A loopback port nobody listens on (bound and released; nothing else takes it here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- loopback: banners -------------------------------------------------------------------------


async def test_banner_service_is_read_and_ends_the_look() -> None:
    """A service that speaks first is identified by its first line, on one connection, at once."""
    async with Service(banner_server(b"SSH-2.0-OpenSSH_9.3\r\nextra\r\n")) as svc:
        started = time.monotonic()
        fp = await look("127.0.0.1", svc.port, timeout=3.0)
        elapsed = time.monotonic() - started
    assert fp == Fingerprint(banner="SSH-2.0-OpenSSH_9.3")
    assert svc.connections == 1
    assert elapsed < 0.5


async def test_ipv6_banner() -> None:
    """::1 works like 127.0.0.1."""
    try:
        svc_cm = Service(banner_server(b"220 v6 ready\r\n"), host="::1")
        svc = await svc_cm.__aenter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert (await look("::1", svc.port, timeout=FAST)).banner == "220 v6 ready"
    finally:
        await svc_cm.__aexit__(None, None, None)


@pytest.mark.parametrize(
    "junk",
    [
        bytes(range(256)) * 40,  # every byte value, a newline early on
        b"A" * 10240,  # 10 kB without any newline
    ],
)
async def test_hostile_banner_is_truncated_and_sanitised(junk: bytes) -> None:
    """Escapes and controls are gone, length is bounded; mentions and markup stay as plain text."""
    hostile = b"\x1b[2J\x1b]0;owned\x07@everyone <script>alert(1)</script>\xe2\x80\xae\x00" + junk
    async with Service(banner_server(hostile)) as svc:
        fp = await look("127.0.0.1", svc.port, timeout=FAST)
    assert fp.banner is not None
    assert fp.banner.startswith("@everyone <script>alert(1)</script>")  # escaping: the notifier
    assert_harmless(fp.banner, BANNER_CHARS)
    assert fp.tls_sha256 is None
    assert fp.http_server is None


async def test_non_http_answer_to_get_is_the_banner() -> None:
    """A silent service that answers our GET in its own protocol is identified by that answer."""

    async def redis_like(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, svc: Service
    ) -> None:
        if await reader.read(4096) == b"":
            return
        writer.write(b"-ERR unknown command 'GET'\r\n")
        await writer.drain()
        await svc.stop.wait()

    async with Service(redis_like) as svc:
        started = time.monotonic()
        fp = await look("127.0.0.1", svc.port, timeout=FAST)
        elapsed = time.monotonic() - started
    assert fp.banner == "-ERR unknown command 'GET'"
    assert elapsed < FAST - 0.2  # a whole first line that is not HTTP ends the read
    assert fp.http_server is None


# -- loopback: bounds --------------------------------------------------------------------------


async def test_tarpit_returns_within_timeout() -> None:
    """A port that accepts and never answers costs at most the timeout and teaches nothing."""
    async with Service(tarpit) as svc:
        started = time.monotonic()
        fp = await look("127.0.0.1", svc.port, timeout=0.9)
        elapsed = time.monotonic() - started
    assert fp.is_empty()
    assert elapsed < 0.9 + SLACK
    assert svc.connections == 3  # banner wait, TLS attempt, plain GET


async def test_closed_port_is_empty_at_once(free_port: int) -> None:
    """A refused connection ends the look immediately with an empty fingerprint."""
    started = time.monotonic()
    fp = await look("127.0.0.1", free_port, timeout=3.0)
    assert fp.is_empty()
    assert time.monotonic() - started < 0.3


@pytest.mark.parametrize(("max_bytes", "title"), [(1024, None), (4096, "Far down")])
async def test_huge_body_is_read_only_up_to_max_bytes(max_bytes: int, title: str | None) -> None:
    """An endless body is read up to max_bytes: a title beyond that is never seen, and no wait."""
    head = b"HTTP/1.1 200 OK\r\nServer: bulk/1\r\nContent-Type: text/html\r\n\r\n"
    first = head + b"<html><!--" + b"x" * 2000 + b"--><title>Far down</title>"
    handler = http_server(first, stream=b"<p>more</p>" * 6000)
    async with Service(handler) as svc:
        started = time.monotonic()
        fp = await look("127.0.0.1", svc.port, timeout=FAST, max_bytes=max_bytes)
        elapsed = time.monotonic() - started
    assert (fp.http_server, fp.http_title) == ("bulk/1", title)
    assert elapsed < FAST  # stopped at max_bytes (or the title), not at the timeout
    assert len(svc.requests) == 1


async def test_title_ends_reading_of_an_endless_page() -> None:
    """Once the title is in, the look stops reading even though the server never finishes."""
    head = b"HTTP/1.1 200 OK\r\nServer: slowpoke\r\n\r\n<title>Early</title>"
    async with Service(http_server(head, hold=True)) as svc:
        started = time.monotonic()
        fp = await look("127.0.0.1", svc.port, timeout=FAST)
        elapsed = time.monotonic() - started
    assert (fp.http_server, fp.http_title) == ("slowpoke", "Early")
    assert elapsed < FAST - 0.2


async def test_headers_learned_before_the_timeout_are_kept() -> None:
    """A server that stalls mid-page still leaves its Server header in the fingerprint."""
    head = b"HTTP/1.1 200 OK\r\nServer: staller\r\n\r\n<html><head><ti"
    async with Service(http_server(head, hold=True)) as svc:
        fp = await look("127.0.0.1", svc.port, timeout=0.9)
    assert (fp.http_server, fp.http_title) == ("staller", None)


@pytest.mark.parametrize("offsite", [True, False])
async def test_redirect_is_recorded_not_followed(offsite: bool) -> None:
    """A 301 is recorded as answered; neither its target nor the same server sees another GET."""
    async with Service(tarpit) as trap:
        location = f"http://127.0.0.1:{trap.port}/" if offsite else "/cgi-bin/login.cgi"
        response = (
            "HTTP/1.1 301 Moved Permanently\r\nServer: redirector/2\r\n"
            f"Location: {location}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        async with Service(http_server(response, hold=True)) as svc:
            fp = await look("127.0.0.1", svc.port, timeout=FAST)
    assert fp.http_server == "redirector/2"
    assert trap.connections == 0
    assert len(svc.requests) == 1
    assert svc.requests[0].startswith(b"GET / HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{svc.port}\r\n".encode() in svc.requests[0]


# -- loopback: TLS -----------------------------------------------------------------------------


def tls_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    """A server context serving `cert`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    return ctx


async def test_tls_certificate_and_http_over_tls(certs: dict[str, tuple[Path, Path]]) -> None:
    """Over TLS: the certificate's hash, subject and expiry, and the page's Server and title."""
    handler = http_server(page("Secure login", "tls-httpd/3"))
    async with Service(handler, tls=tls_context(certs["a"])) as svc:
        fp = await look("127.0.0.1", svc.port, timeout=FAST)
    assert fp.tls_sha256 == hashlib.sha256(der_of(certs["a"][0])).hexdigest()
    assert fp.tls_subject == "CN=router.example, O=Ärzte GmbH"
    assert fp.tls_not_after == parse_certificate(der_of(certs["a"][0])).not_after
    assert (fp.http_server, fp.http_title) == ("tls-httpd/3", "Secure login")
    assert fp.banner is None
    assert svc.requests[0].startswith(b"GET / HTTP/1.1\r\n")


async def test_identity_stable_until_the_certificate_changes(
    certs: dict[str, tuple[Path, Path]],
) -> None:
    """Two looks at an unchanged service agree; a new certificate (a firmware update) differs."""
    ctx = tls_context(certs["a"])
    async with Service(http_server(page("Login")), tls=ctx) as svc:
        first = await look("127.0.0.1", svc.port, timeout=FAST)
        second = await look("127.0.0.1", svc.port, timeout=FAST)
        ctx.load_cert_chain(*certs["b"])  # same subject, new key: only the hash tells
        third = await look("127.0.0.1", svc.port, timeout=FAST)
    assert first.identity() == second.identity()
    assert first.identity() != third.identity()
    assert third.tls_sha256 == hashlib.sha256(der_of(certs["b"][0])).hexdigest()
    assert third.tls_subject == first.tls_subject


async def test_old_firmware_tls10_is_fingerprinted(certs: dict[str, tuple[Path, Path]]) -> None:
    """A TLS 1.0-only server with a 1024-bit RSA, SHA-1 certificate still gives its certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 is, deliberately
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("AES128-SHA:@SECLEVEL=0")
        ctx.load_cert_chain(*certs["old"])
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL cannot serve TLS 1.0: {exc}")
    async with Service(http_server(page("Old")), tls=ctx) as svc:
        fp = await look("127.0.0.1", svc.port, timeout=FAST)
    assert fp.tls_sha256 == hashlib.sha256(der_of(certs["old"][0])).hexdigest()
    assert (fp.tls_subject, fp.http_title) == ("CN=old firmware", "Old")


async def test_server_name_is_sent_as_sni_and_host(certs: dict[str, tuple[Path, Path]]) -> None:
    """With server_name, the handshake carries it as SNI and the request names it as Host."""
    seen: list[str | None] = []
    ctx = tls_context(certs["a"])

    def record(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name)

    ctx.sni_callback = record
    async with Service(http_server(page("x")), tls=ctx) as svc:
        await look("127.0.0.1", svc.port, timeout=FAST, server_name="router.example")
        await look("127.0.0.1", svc.port, timeout=FAST)
    assert seen == ["router.example", None]  # an IP address is never sent as SNI
    assert f"Host: router.example:{svc.port}\r\n".encode() in svc.requests[0]


# -- loopback: many ports, hygiene, errors -----------------------------------------------------


async def test_fingerprint_many_bounds_concurrency(free_port: int) -> None:
    """Each distinct port gets one entry; four 0.45 s tarpits two at a time take two rounds."""
    async with (
        Service(tarpit) as a,
        Service(tarpit) as b,
        Service(tarpit) as c,
        Service(tarpit) as d,
        Service(banner_server(b"SSH-2.0-x\r\n")) as ssh,
    ):
        ports = [a.port, b.port, a.port, c.port, d.port, ssh.port, free_port]
        started = time.monotonic()
        many = await fingerprint_many("127.0.0.1", ports, timeout=0.45, concurrency=2)
        elapsed = time.monotonic() - started
    # Each tarpit look lasts its whole timeout, so two at a time cannot finish in one round.
    assert 2 * 0.45 <= elapsed < 2 * 0.45 + SLACK
    assert list(many) == sorted(set(ports))
    assert many[ssh.port].banner == "SSH-2.0-x"
    assert all(many[p].is_empty() for p in (a.port, b.port, c.port, d.port, free_port))
    assert await fingerprint_many("127.0.0.1", []) == {}


async def test_no_descriptor_leak(certs: dict[str, tuple[Path, Path]], free_port: int) -> None:
    """Looks at every kind of service, including cut-short ones, leave no socket open."""
    before = open_fds()
    async with (
        Service(tarpit) as pit,
        Service(http_server(page("t")), tls=tls_context(certs["a"])) as tls,
        Service(http_server(page("t"))) as plain,
    ):
        ports = [pit.port, tls.port, plain.port, free_port]
        await fingerprint_many("127.0.0.1", ports, timeout=0.6)
    for _ in range(5):  # aborted transports close on the next loop iterations
        await asyncio.sleep(0)
    assert open_fds() == before


async def test_cancellation_propagates() -> None:
    """Cancelling a look is not swallowed as a network error."""
    async with Service(tarpit) as svc:
        task = asyncio.create_task(look("127.0.0.1", svc.port, timeout=5.0))
        for _ in range(200):  # until the look has connected; bounded
            if svc.connections:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "port 0 out of range"),
        ({"port": 70000}, "port 70000 out of range"),
        ({"timeout": 0.0}, "timeout must be"),
        ({"timeout": float("nan")}, "timeout must be"),
        ({"max_bytes": 0}, "max_bytes must be"),
        ({"address": "127.0.0.1\r\nX: y"}, "address"),
        ({"server_name": "a b"}, "server_name"),
        ({"server_name": "a..b"}, "server_name 'a..b' is not a valid host name"),
    ],
)
async def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    """Bad input raises ValueError naming the argument, before any connection."""
    args: dict[str, Any] = {"address": "127.0.0.1", "port": 80} | kwargs
    with pytest.raises(ValueError, match=message):
        await fingerprint(args.pop("address"), args.pop("port"), **args)


async def test_bad_concurrency_is_named() -> None:
    """fingerprint_many rejects a concurrency below one and bad ports by name."""
    with pytest.raises(ValueError, match="concurrency"):
        await fingerprint_many("127.0.0.1", [80], concurrency=0)
    with pytest.raises(ValueError, match="port 65536"):
        await fingerprint_many("127.0.0.1", [80, 65536])


# -- test-bed routers --------------------------------------------------------------------------


@pytest.mark.netns
async def test_router_services_and_firmware_update(router: Router) -> None:
    """SSH banner, HTTP and TLS of a router are told apart; only a new cert changes an identity."""
    router.listen(22, "tcp", banner=b"SSH-2.0-OpenSSH_9.3\r\n")
    router.listen(80, "http", server_header="RouterOS", title="Login")
    router.listen(443, "tls", server_header="RouterOS", title="Secure Login")
    router.set_policy("reject", {22: "accept", 80: "accept", 443: "accept", 8443: "prohibit"})
    router.save_boot_state()
    ports = [22, 80, 443, 8443, 8444]
    check_target(router.addr)

    first = await fingerprint_many(router.addr, ports, timeout=FAST)
    assert first[22] == Fingerprint(banner="SSH-2.0-OpenSSH_9.3")
    assert first[80] == Fingerprint(http_server="RouterOS", http_title="Login")
    tls = first[443]
    assert tls.tls_sha256 == router.cert_sha256(443)
    assert tls.tls_subject == f"CN=emtb router {router.index} firmware 1"
    assert tls.tls_not_after is not None
    assert (tls.http_server, tls.http_title) == ("RouterOS", "Secure Login")
    assert first[8443].is_empty()
    assert first[8444].is_empty()

    again = await fingerprint_many(router.addr, ports, timeout=FAST)
    assert {p: f.identity() for p, f in again.items()} == {
        p: f.identity() for p, f in first.items()
    }

    await asyncio.to_thread(router.reboot, 0.0, True)  # a firmware update
    after = await fingerprint_many(router.addr, [22, 80, 443], timeout=FAST)
    assert after[22].identity() == first[22].identity()
    assert after[80].identity() == first[80].identity()
    assert after[443].tls_sha256 == router.cert_sha256(443) != tls.tls_sha256
    assert after[443].identity() != tls.identity()
    assert after[443].tls_subject == f"CN=emtb router {router.index} firmware 2"
