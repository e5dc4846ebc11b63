"""Which `Host` headers the server answers: the guard against DNS rebinding (docs/api.md).

A web page on `attacker.example` whose name the attacker re-points at 127.0.0.1 can make the
operator's browser read the API (same origin, as far as the browser knows); only the `Host`
header still says `attacker.example`. So a request is served only when its Host names this
server: the host of `[http] listen`, the host of `public_url`, a name in `allowed_hosts`, the IP
address the client connected to (an IP literal cannot be rebound), or `localhost` when the client
connected over loopback. The port is not compared: behind a reverse proxy or with `listen` port
0 it says nothing, and the rebinding page differs in its name. Everything else is 421 JSON;
`/healthz` is exempt (load balancers probe it by any name, and it reveals nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from exposuremon.config import HttpConfig
from exposuremon.web.api import Handler, error, shown

EXEMPT_PATHS = frozenset({"/healthz"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::"})
# A DNS name as it may appear in Host (RFC 3986 reg-name, narrowed to what DNS can hold).
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,252})")
_PORT = re.compile(r"[0-9]{0,5}")


def host_name(value: str) -> str | None:
    """The host of a Host header value, normalised for comparison; None if malformed.

    Lower-cased, without the port and a trailing dot; IP addresses in canonical form, IPv6
    without brackets.
    """
    text = value.strip()
    if text.startswith("["):
        inside, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        try:
            name = str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    else:
        name, _, port = text.partition(":")
        name = name.lower().removesuffix(".")
        if not _NAME.fullmatch(name) or ".." in name:
            return None
        with contextlib.suppress(ValueError):  # a name, not an address
            name = str(ipaddress.IPv4Address(name))
    if not _PORT.fullmatch(port.removeprefix(":")):
        return None
    return name


def _address(text: str) -> str | None:
    """A socket address as Host would name it (IPv4 behind `::ffff:` unwrapped)."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@dataclasses.dataclass(frozen=True)
class HostPolicy:
    """The names one `[http]` section implies; `allows` adds the connection's own address."""

    names: frozenset[str]

    @classmethod
    def of(cls, http: HttpConfig) -> HostPolicy:
        """Names from `listen` (unless a wildcard), `public_url` and `allowed_hosts`."""
        names = set(http.allowed_hosts)
        listen = _address(http.host) or http.host.lower().removesuffix(".")
        if listen not in WILDCARDS:
            names.add(listen)
        if http.public_url is not None:
            public = urlsplit(http.public_url).hostname
            if public:
                names.add(_address(public) or public.removesuffix("."))
        return cls(frozenset(names))

    def allows(self, name: str, local: str | None) -> bool:
        """True when `name` (from `host_name`) names this server for a client that reached
        `local` (the connection's own IP address, None if unknown)."""
        if name in self.names:
            return True
        if local is None:
            return False
        if name == local:
            return True
        return name in LOOPBACK_NAMES and ipaddress.ip_address(local).is_loopback


def _local_address(request: web.Request) -> str | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and sockname:
        return _address(str(sockname[0]))
    return None


def host_guard(http: Callable[[], HttpConfig]) -> Middleware:
    """Middleware answering 400/421 JSON to a request whose Host does not name this server.

    `http` gives the `[http]` section in force (a reload may change `allowed_hosts`).
    """
    cache: dict[HttpConfig, HostPolicy] = {}

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        section = http()
        policy = cache.get(section)
        if policy is None:
            cache.clear()  # only the section in force is worth keeping
            policy = cache[section] = HostPolicy.of(section)
        local = _local_address(request)
        values = request.headers.getall("Host", [])
        if len(values) > 1:
            return error(400, "Host: given more than once")
        if not values or not values[0].strip():
            # HTTP/1.1 requires Host (RFC 9112 3.2); an HTTP/1.0 client without one addressed
            # the IP it connected to, and no browser (the rebinding vector) omits it.
            if request.version >= (1, 1):
                return error(400, "Host: missing; HTTP/1.1 requires it")
            return await handler(request)
        name = host_name(values[0])
        if name is None:
            return error(400, f"Host: malformed: {shown(values[0])}")
        if not policy.allows(name, local):
            return error(
                421,
                f"Host: {shown(name)} is not a name of this server; "
                "add it to [http] allowed_hosts if it is",
            )
        return await handler(request)

    return guard
