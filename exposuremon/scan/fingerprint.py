"""Light, bounded fingerprints of open TCP services: banner, TLS certificate, HTTP header/title.

A look at one port takes at most three short connections, all to the address given:

1. Connect and wait up to `min(1 s, timeout/3)` for a banner: SSH, FTP, SMTP, POP3 … speak
   first. A banner ends the look.
2. Otherwise a TLS handshake (within `timeout/3`) on a new connection, without verification:
   we fingerprint, we do not trust. The certificate gives SHA-256, subject (CN, O) and expiry;
   then one `GET / HTTP/1.1` over it for the `Server` header and the `<title>`.
3. If TLS fails, the same `GET` in plain text.

Everything runs under one `asyncio.timeout(timeout)` and reads at most `max_bytes` per
connection. Network errors never raise: the look returns whatever it learned (possibly an empty
`Fingerprint`). Redirects are recorded (the 3xx's own header and title), never followed.
Text from the service is hostile input: it is decoded leniently, stripped of terminal escapes and
control/format characters (\\t excepted) and truncated, so it is safe to log and to compare.
Escaping for chat formats (`@everyone`, markup) is the notifier's job, not ours.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import html
import math
import re
import ssl
import unicodedata
from collections.abc import Iterable, Iterator

from exposuremon.model import Fingerprint

BANNER_CHARS = 256  # longest banner kept
TEXT_CHARS = 200  # longest title, Server header or certificate subject kept
BANNER_WAIT_MAX = 1.0  # services that speak first do so at once
BANNER_READ = 1024  # bytes read for a banner: enough for 256 characters of UTF-8
CLOSE_WAIT = 1.0  # an aborted transport reports connection_lost within a loop iteration or two
USER_AGENT = "exposuremon"
# OpenSSL's SSL_OP_LEGACY_SERVER_CONNECT (0x4 in 1.1 and 3.x); Python names it only from 3.12.
_OP_LEGACY_SERVER_CONNECT = 0x4

# CSI (ESC [ … final), OSC (ESC ] … BEL or ST), two-byte ESC sequences, and 8-bit CSI.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -~]?|\x9b[0-?]*[ -/]*[@-~]?"
)
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? +(\d{3})(?:[ \t]|\r?\n|$)")
_NO_BODY_STATUS = (204, 304)


@dataclasses.dataclass(frozen=True, slots=True)
class CertInfo:
    """What a certificate says about itself (fields None when absent or unparsable)."""

    subject: str | None = None  # e.g. "CN=router.example, O=Example GmbH"
    not_after: dt.datetime | None = None
    issuer: str | None = None  # the same fields of the issuer (advisories match on it)


@dataclasses.dataclass(frozen=True, slots=True)
class HttpLook:
    """The parts of an HTTP response that fingerprint a service."""

    status: int
    server: str | None = None
    title: str | None = None


# -- pure helpers: text ------------------------------------------------------------------------


def sanitize_text(text: str, limit: int) -> str:
    """Drop terminal escapes and control/format characters (keep \\t), collapse, truncate."""
    text = _ANSI.sub("", text[: limit * 8])  # bounded work on hostile input
    kept = "".join(
        " " if ch != "\t" and unicodedata.category(ch) in _DROP_CATEGORIES else ch for ch in text
    )
    kept = re.sub(" {2,}", " ", kept).strip()
    if len(kept) > limit:
        kept = kept[: limit - 1].rstrip() + "…"
    return kept


def decode_lenient(data: bytes) -> str:
    """UTF-8 when it is (tolerating a character cut off at the end), else Latin-1."""
    try:
        # An incremental decoder holds back an incomplete last character instead of failing.
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return data.decode("latin-1")


def banner_end(data: bytes) -> int | None:
    """End of the first line with visible content (after its newline), or None if not yet."""
    first_visible = next((i for i, b in enumerate(data) if b > 0x20 and b != 0x7F), None)
    if first_visible is None:
        return None
    newline = data.find(b"\n", first_visible)
    return None if newline < 0 else newline + 1


def banner_text(data: bytes) -> str | None:
    """The banner as kept in a Fingerprint: its first line, decoded and sanitised."""
    end = banner_end(data)
    text = sanitize_text(decode_lenient(data[:end] if end else data[:BANNER_READ]), BANNER_CHARS)
    return text or None


# -- pure helpers: HTTP ------------------------------------------------------------------------


def _split_head(data: bytes) -> tuple[bytes, int | None]:
    """(header block, body offset); the offset is None while the headers are incomplete."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep)
        if at >= 0:
            return data[:at], at + len(sep)
    # Incomplete: only whole header lines count.
    return data[: data.rfind(b"\n") + 1], None


def _headers(head: bytes) -> Iterator[tuple[bytes, bytes]]:
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            yield name.strip().lower(), value.strip()


def _find_title(body: bytes) -> bytes | None:
    low = body.lower()
    start = low.find(b"<title")
    # Skip look-alikes such as <titlebar>; every step moves forward, so this ends.
    while start >= 0 and low[start + 6 : start + 7] not in (b">", b" ", b"\t", b"\r", b"\n", b"/"):
        start = low.find(b"<title", start + 1)
    if start < 0:
        return None
    open_end = low.find(b">", start)
    close = low.find(b"</title", open_end) if open_end >= 0 else -1
    return body[open_end + 1 : close] if close >= 0 else None


def parse_http_response(data: bytes) -> HttpLook | None:
    """Status, `Server` and `<title>` of a (possibly truncated) response; None if not HTTP."""
    match = _STATUS_LINE.match(data)
    if match is None:
        return None
    head, body_at = _split_head(data)
    server = next((value for name, value in _headers(head) if name == b"server"), None)
    raw_title = _find_title(data[body_at:]) if body_at is not None else None
    title = None
    if raw_title is not None:
        # Unescape before sanitising: &#27; is an escape character too.
        unescaped = html.unescape(decode_lenient(raw_title))
        title = sanitize_text(" ".join(unescaped.split()), TEXT_CHARS) or None
    server_text = sanitize_text(decode_lenient(server), TEXT_CHARS) if server else None
    return HttpLook(int(match[1]), server_text or None, title)


def http_response_complete(data: bytes) -> bool:
    """True once reading more cannot improve the fingerprint (title seen or body complete)."""
    match = _STATUS_LINE.match(data)
    if match is None:
        # Not HTTP: once its first line is in, that line is all the fingerprint keeps.
        return banner_end(data) is not None
    head, body_at = _split_head(data)
    if body_at is None:
        return False
    status = int(match[1])
    body = data[body_at:]
    if status in _NO_BODY_STATUS or _find_title(body) is not None:
        return True
    headers = dict(_headers(head))
    if headers.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
        return body.endswith(b"0\r\n\r\n")
    length = headers.get(b"content-length", b"")
    return length.isdigit() and len(body) >= int(length)


def http_request(host: str, port: int, *, tls: bool) -> bytes:
    """The one request we send: `GET /` with `Connection: close`, asking for nothing else."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    if port != (443 if tls else 80):
        host = f"{host}:{port}"
    try:
        host_bytes = host.encode("ascii")
    except UnicodeEncodeError:
        host_bytes = host.encode("idna")
    return (
        b"GET / HTTP/1.1\r\nHost: " + host_bytes + b"\r\n"
        b"User-Agent: " + USER_AGENT.encode() + b"\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n"
    )


# -- pure helpers: certificates ----------------------------------------------------------------


class _DerError(ValueError):
    pass


_OID_CN = b"\x55\x04\x03"  # 2.5.4.3
_OID_O = b"\x55\x04\x0a"  # 2.5.4.10
_STRING_CODECS = {0x0C: "utf-8", 0x1E: "utf-16-be", 0x1C: "utf-32-be"}  # else Latin-1
_UTC_TIME = re.compile(rb"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?Z")
_GENERALIZED_TIME = re.compile(rb"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:\.\d+)?Z?")


def _der(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `pos`, within `end`."""
    if pos + 2 > end:
        raise _DerError("truncated")
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise _DerError("multi-byte tag")  # never used by the fields we read
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > end:
            raise _DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise _DerError("truncated")
    return tag, pos, pos + length


def _der_children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    pos = start
    while pos < end:  # every element is at least two bytes long, so this ends
        tag, content, after = _der(data, pos, end)
        yield tag, content, after
        pos = after


def _der_time(tag: int, raw: bytes) -> dt.datetime | None:
    pattern = _UTC_TIME if tag == 0x17 else _GENERALIZED_TIME if tag == 0x18 else None
    match = pattern.fullmatch(raw) if pattern else None
    if match is None:
        return None
    year = int(match[1])
    if tag == 0x17:
        year += 1900 if year >= 50 else 2000  # RFC 5280 4.1.2.5.1
    month, day, hour, minute, second = (int(g) for g in match.groups(b"0")[1:6])
    try:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError:
        return None


def _der_string(data: bytes, tag: int, start: int, end: int) -> str:
    return data[start:end].decode(_STRING_CODECS.get(tag, "latin-1"), errors="replace")


def _subject(data: bytes, start: int, end: int) -> str | None:
    found: dict[bytes, str] = {}
    for _set_tag, set_start, set_end in _der_children(data, start, end):
        for _seq_tag, seq_start, seq_end in _der_children(data, set_start, set_end):
            attrs = list(_der_children(data, seq_start, seq_end))
            if len(attrs) < 2 or attrs[0][0] != 0x06:
                continue
            oid = data[attrs[0][1] : attrs[0][2]]
            if oid in (_OID_CN, _OID_O) and oid not in found:
                found[oid] = _der_string(data, *attrs[1])
    labels = (("CN", _OID_CN), ("O", _OID_O))
    parts = [f"{label}={found[oid]}" for label, oid in labels if oid in found]
    return sanitize_text(", ".join(parts), TEXT_CHARS) or None


def parse_certificate(der: bytes) -> CertInfo:
    """Subject CN/O, issuer CN/O and notAfter of an X.509 certificate in DER; never raises."""
    not_after = None
    try:
        tag, start, end = _der(der, 0, len(der))
        if tag != 0x30:
            return CertInfo()
        tag, start, end = _der(der, start, end)  # tbsCertificate
        if tag != 0x30:
            return CertInfo()
        fields = list(_der_children(der, start, end))
        if fields and fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject, ...
        if len(fields) < 5 or fields[3][0] != 0x30 or fields[4][0] != 0x30:
            return CertInfo()
        issuer = _subject(der, fields[2][1], fields[2][2]) if fields[2][0] == 0x30 else None
        times = list(_der_children(der, fields[3][1], fields[3][2]))
        if len(times) == 2:
            tag, start, end = times[1]
            not_after = _der_time(tag, der[start:end])
        return CertInfo(_subject(der, fields[4][1], fields[4][2]), not_after, issuer)
    except _DerError:
        return CertInfo(None, not_after)


# -- the look ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Look:
    """What a look learned so far; a timeout at any point keeps it."""

    banner: bytearray = dataclasses.field(default_factory=bytearray)
    cert_der: bytes | None = None
    response: bytearray = dataclasses.field(default_factory=bytearray)

    def result(self) -> Fingerprint:
        banner = banner_text(bytes(self.banner)) if self.banner else None
        http = parse_http_response(bytes(self.response)) if self.response else None
        if http is None and banner is None and self.response:
            # Answered our GET, but not in HTTP: that answer identifies the service.
            banner = banner_text(bytes(self.response))
        sha = cert = None
        if self.cert_der:
            sha = hashlib.sha256(self.cert_der).hexdigest()
            cert = parse_certificate(self.cert_der)
        return Fingerprint(
            banner=banner,
            tls_sha256=sha,
            tls_subject=cert.subject if cert else None,
            tls_not_after=cert.not_after if cert else None,
            tls_issuer=cert.issuer if cert else None,
            http_server=http.server if http else None,
            http_title=http.title if http else None,
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Old router firmware speaks old TLS with weak ciphers; we only look, so accept all of it.
    with contextlib.suppress(ValueError, ssl.SSLError):
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with contextlib.suppress(ssl.SSLError):
        # Anonymous suites excluded: a server preferring one would show us no certificate.
        ctx.set_ciphers("ALL:!aNULL:@SECLEVEL=0")
    ctx.options |= _OP_LEGACY_SERVER_CONNECT
    return ctx


async def _close(writer: asyncio.StreamWriter) -> None:
    # Abort rather than close: a graceful TLS shutdown can wait 30 s on a silent peer.
    writer.transport.abort()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(CLOSE_WAIT):
            await writer.wait_closed()


async def _read_banner(
    reader: asyncio.StreamReader, into: bytearray, wait: float, limit: int
) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while len(into) < limit and banner_end(bytes(into)) is None:
                chunk = await reader.read(limit - len(into))
                if not chunk:
                    return
                into += chunk


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    look: _Look,
    max_bytes: int,
) -> None:
    writer.write(request)
    await writer.drain()
    while len(look.response) < max_bytes and not http_response_complete(bytes(look.response)):
        chunk = await reader.read(max_bytes - len(look.response))
        if not chunk:
            return
        look.response += chunk


async def _run(
    look: _Look, address: str, port: int, budget: float, max_bytes: int, server_name: str | None
) -> None:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        wait = min(BANNER_WAIT_MAX, budget / 3)
        await _read_banner(reader, look.banner, wait, min(BANNER_READ, max_bytes))
    finally:
        await _close(writer)
    if look.banner:
        return
    host = server_name or address
    try:
        # A plain service may sit on a ClientHello forever: keep time for the plain GET.
        async with asyncio.timeout(budget / 3):
            reader, writer = await asyncio.open_connection(
                address, port, ssl=_tls_context(), server_hostname=server_name
            )
    except ConnectionRefusedError:
        return  # gone since the first connection
    except OSError:  # includes ssl.SSLError and our TimeoutError: not TLS
        tls = False
    else:
        tls = True
    if not tls:
        reader, writer = await asyncio.open_connection(address, port)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            look.cert_der = ssl_object.getpeercert(binary_form=True)
        await _exchange(reader, writer, http_request(host, port, tls=tls), look, max_bytes)
    finally:
        await _close(writer)


def _check_port(port: int) -> None:
    if not 0 < port <= 65535:
        raise ValueError(f"port {port} out of range 1-65535")


def _check_options(address: str, timeout: float, max_bytes: int, server_name: str | None) -> None:
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, not {max_bytes!r}")
    for what, host in (("address", address), ("server_name", server_name)):
        if host is None:
            continue
        # The host ends up in a request header (and SNI): no room for CR/LF or spaces.
        if not host or any(ch.isspace() or ord(ch) < 0x21 for ch in host):
            raise ValueError(f"{what} {host!r} is empty or contains whitespace/control characters")
        if what == "server_name" or not host.isascii():
            try:
                host.encode("idna")
            except UnicodeError as exc:
                raise ValueError(f"{what} {host!r} is not a valid host name: {exc}") from None


async def fingerprint(
    address: str,
    port: int,
    *,
    timeout: float = 3.0,  # noqa: ASYNC109 - a budget split between steps, enforced inside
    max_bytes: int = 4096,
    server_name: str | None = None,
) -> Fingerprint:
    """Look at one open port within `timeout` seconds; network errors give what was learned."""
    _check_port(port)
    _check_options(address, timeout, max_bytes, server_name)
    look = _Look()
    with contextlib.suppress(OSError, EOFError):  # OSError covers TimeoutError and SSLError
        async with asyncio.timeout(timeout):
            await _run(look, address, port, timeout, max_bytes, server_name)
    return look.result()


async def fingerprint_many(
    address: str,
    ports: Iterable[int],
    *,
    timeout: float = 3.0,  # noqa: ASYNC109 - per port, passed on to fingerprint()
    concurrency: int = 8,
    max_bytes: int = 4096,
    server_name: str | None = None,
) -> dict[int, Fingerprint]:
    """Fingerprint every port, at most `concurrency` at a time; one entry per distinct port."""
    wanted = sorted(set(ports))
    for port in wanted:
        _check_port(port)
    _check_options(address, timeout, max_bytes, server_name)
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
    results: dict[int, Fingerprint] = {}
    queue = iter(wanted)

    async def worker() -> None:
        # Workers pull from one iterator: no task per port, however many ports are open.
        for port in queue:
            results[port] = await fingerprint(
                address, port, timeout=timeout, max_bytes=max_bytes, server_name=server_name
            )

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(wanted))):
            group.create_task(worker())
    return {port: results[port] for port in wanted}
