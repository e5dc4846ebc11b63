"""Real webhook receivers on 127.0.0.1 that answer like Slack, Discord, Teams, Google Chat, ntfy.

Each `Receiver` is an aiohttp server on a free loopback port with a secret-looking URL path,
as the real services hand out. It checks the body the way its service does (a Slack message
needs `text` or `blocks`, ...), answers with that service's success and error bodies, and
records every request. Tests script the answers per request (status, Retry-After, a delay, or
holding the request until released), and read what was delivered with deduplication on the
delivery header, as a receiver honouring it would.

Like the real services: Discord answers 204 without `?wait=true` and 200 with the saved message
with it; a body over `max_body` (nginx's default `client_max_body_size`, 1 MiB) is a 413; a
signed webhook receiver can also check the Standard Webhooks headers with the reference library
(`standard=True`); `echo=True` makes the 404 page quote the request line, as some servers do.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import standardwebhooks
from aiohttp import web

from exposuremon.notify.formats import DELIVERY_HEADER, SIGNATURE_HEADER, sign

KINDS = ("slack", "discord", "msteams", "googlechat", "ntfy", "webhook")
# The secret part of each service's URL: tests check it never shows up in logs or errors.
SECRET = "XXSECRETXX9f3a7c"
PATHS = {
    "slack": f"/services/T0001/B0001/{SECRET}",
    "discord": f"/api/webhooks/1234567890/{SECRET}",
    "msteams": f"/workflows/abc123/triggers/manual/paths/invoke?api-version=1&sig={SECRET}",
    "googlechat": f"/v1/spaces/AAAA/messages?key=KEY0&token={SECRET}",
    "ntfy": f"/alerts-{SECRET}",  # the topic; messages are POSTed as JSON to "/"
    "webhook": f"/hook/{SECRET}",
}
HOLD_LIMIT = 60.0  # a held request is answered after this long at the latest
NGINX_MAX_BODY = 1024 * 1024  # nginx's default client_max_body_size


@dataclasses.dataclass(frozen=True)
class Answer:
    """How to answer one request: `status` 0 means the service's normal success."""

    status: int = 0
    retry_after: str | None = None
    delay: float = 0.0  # seconds before answering (longer than the sender's timeout: a timeout)
    hold: bool = False  # answer only when the test calls `release()`
    body: str | None = None  # None: what the service says for this status


@dataclasses.dataclass
class Received:
    """One request as the receiver saw it, and what it answered (None: not yet)."""

    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None

    @property
    def key(self) -> str | None:
        """The delivery id the sender put in the dedup header."""
        return self.headers.get(DELIVERY_HEADER)

    @property
    def accepted(self) -> bool:
        """Answered with a 2xx: the service would have posted the message."""
        return self.status is not None and 200 <= self.status <= 299

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class Receiver:
    """One emulated webhook endpoint; `await start()` before use, `await close()` after."""

    def __init__(
        self,
        kind: str,
        *,
        default: Answer | None = None,
        secret: str | None = None,
        standard: bool = False,
        echo: bool = False,
        max_body: int = NGINX_MAX_BODY,
        hosts: tuple[str, ...] = ("127.0.0.1",),
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown receiver kind {kind!r}")
        self.kind = kind
        self.secret = secret  # webhook: requests must carry its HMAC signature
        self.standard = standard  # webhook with secret: and valid Standard Webhooks headers
        self.echo = echo  # the 404 page quotes the request line (and so the URL as sent)
        self.max_body = max_body
        # The addresses it listens on (one port on each): 127.0.0.1, or the root-side ends of
        # test-bed veths for senders in other network namespaces (tests/support/vantages.py).
        self.hosts = hosts
        self.default = default or Answer()
        self.requests: list[Received] = []
        self._script: collections.deque[Answer] = collections.deque()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    # -- control ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on each of `hosts` (a free port, the same on all); the webhook URL to
        configure (on the first host)."""
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        for host in self.hosts:
            site = web.TCPSite(self._runner, host, self.port)
            await site.start()
            self.port = int(self._runner.addresses[0][1])
        return self.url

    @property
    def url(self) -> str:
        """The webhook URL (secret path included)."""
        return self.url_on(self.hosts[0])

    def url_on(self, host: str) -> str:
        """The webhook URL on one of `hosts`."""
        if host not in self.hosts:
            raise ValueError(f"the receiver does not listen on {host}")
        return f"http://{host}:{self.port}{PATHS[self.kind]}"

    def script(self, *answers: Answer) -> None:
        """Answer the next requests like this, in order; then `default`."""
        self._script.extend(answers)

    def release(self) -> None:
        """Answer every held request (and any held later) now."""
        self._release.set()

    async def stop(self) -> None:
        """Stop listening (connections are refused) but keep the record; `start()` resumes."""
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        """Stop for good."""
        await self.stop()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reading ---------------------------------------------------------------------------

    def delivered(self) -> dict[str, Received]:
        """The first accepted request per delivery id: what the chat shows after dedup."""
        out: dict[str, Received] = {}
        for req in self.requests:
            if req.accepted and req.key is not None:
                out.setdefault(req.key, req)
        return out

    def accepted(self) -> list[Received]:
        """Every accepted request, duplicates included (what a receiver without dedup shows)."""
        return [r for r in self.requests if r.accepted]

    async def wait_for(self, check: Callable[[Receiver], bool], within: float, what: str) -> None:
        """Wait until `check(self)` holds after some request came or was answered."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: check(self))
        except TimeoutError:
            raise AssertionError(
                f"{self.kind} receiver: not within {within}s: {what} "
                f"(got {[(r.key, r.status) for r in self.requests]})"
            ) from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the service -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            rec = Received(time.monotonic(), request.path_qs, dict(request.headers), b"", 413)
            self.requests.append(rec)
            await self._notify()
            return web.Response(status=413, text="413 Request Entity Too Large")
        rec = Received(time.monotonic(), request.path_qs, dict(request.headers), body)
        self.requests.append(rec)
        await self._notify()
        answer = self._script.popleft() if self._script else self.default
        if answer.hold:
            try:
                async with asyncio.timeout(HOLD_LIMIT):
                    await self._release.wait()
            except TimeoutError:
                pass
        if answer.delay:
            await asyncio.sleep(answer.delay)  # the behaviour under test: a slow receiver
        if not self._known_path(request, body):
            response = self._not_found(request)
        elif answer.status == 0 and self.secret and not self._signed(request, body):
            response = self._error(401, "bad signature")
        elif answer.status == 0:
            problem = self._invalid(body, request)
            response = self._error(400, problem) if problem else self._success(body, request)
        else:
            response = self._error(answer.status, answer.body)
        if answer.retry_after is not None:
            response.headers["Retry-After"] = answer.retry_after
        rec.status = response.status
        await self._notify()
        return response

    def _signed(self, request: web.Request, body: bytes) -> bool:
        """The signature headers check out with this receiver's secret."""
        assert self.secret is not None
        if request.headers.get(SIGNATURE_HEADER) != sign(body, self.secret):
            return False
        if not self.standard:
            return True
        key: str | bytes = self.secret
        if not self.secret.startswith("whsec_"):
            key = self.secret.encode("utf-8", "surrogateescape")
        try:  # the reference library, with its 5-minute timestamp tolerance
            standardwebhooks.Webhook(key).verify(body, dict(request.headers), json_parse=False)
        except standardwebhooks.webhooks.WebhookVerificationError:
            return False
        return True

    def _known_path(self, request: web.Request, body: bytes) -> bool:
        """Whether the request reached this webhook (ntfy: JSON to "/" naming our topic)."""
        path = request.path_qs
        if self.kind == "discord":  # the query is options (wait, thread_id), not the address
            return request.raw_path.partition("?")[0] == PATHS["discord"]
        if self.kind != "ntfy" or path != "/":
            return path == PATHS[self.kind]
        try:
            return bool(json.loads(body).get("topic") == PATHS["ntfy"][1:])
        except (ValueError, AttributeError):
            return True  # a bad body is a 400, below

    def _invalid(self, body: bytes, request: web.Request) -> str | None:
        """Why the service would reject this body (None: fine)."""
        if self.kind == "ntfy" and request.path != "/":
            return None if body.strip() else "message empty"  # a plain-text publish
        try:
            data = json.loads(body)
        except ValueError:
            return "invalid JSON"
        if not isinstance(data, dict):
            return "not a JSON object"
        need = {
            "slack": ("text", "blocks"),
            "discord": ("content", "embeds"),
            "msteams": ("attachments", "type"),
            "googlechat": ("text", "cardsV2", "cards"),
            "ntfy": ("message", "title"),
            "webhook": ("events",),
        }[self.kind]
        if self.kind == "webhook":  # a test message has no events, but the list is there
            return (
                None
                if isinstance(data.get("events"), list) and data.get("version") == 1
                else ("needs version 1 and an events list")
            )
        if not any(data.get(k) for k in need):
            return f"needs one of {', '.join(need)}"
        too_long = len(str(data.get("content") or "")) > 2000 or len(data.get("embeds") or []) > 10
        if self.kind == "discord" and too_long:
            return "content over 2000 characters or more than 10 embeds"
        return None

    def _success(self, body: bytes, request: web.Request) -> web.Response:
        if self.kind == "slack":
            return web.Response(status=200, text="ok")
        if self.kind == "discord":
            if request.query.get("wait") == "true":  # the message as saved
                return web.json_response({"id": str(len(self.requests)), "type": 0})
            return web.Response(status=204)
        if self.kind == "msteams":
            return web.Response(status=202)
        if self.kind == "googlechat":
            return web.json_response({"name": f"spaces/AAAA/messages/{len(self.requests)}"})
        if self.kind == "ntfy":
            return web.json_response(
                {"id": f"m{len(self.requests)}", "time": int(time.time()), "event": "message"}
            )
        return web.json_response({"ok": True})

    def _not_found(self, request: web.Request) -> web.Response:
        if self.echo:  # the request line as it arrived: the URL as the client sent it
            v = request.version
            line = f"{request.method} {request.raw_path} HTTP/{v.major}.{v.minor}"
            return web.Response(status=404, text=f"Not Found: {line}")
        if self.kind == "discord":
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        if self.kind == "slack":
            return web.Response(status=404, text="no_service")
        return self._error(404, None)

    def _error(self, status: int, body: str | None) -> web.Response:
        if body is not None:
            return web.Response(status=status, text=body)
        if self.kind == "slack":
            text = {400: "invalid_payload", 403: "invalid_token", 404: "no_service"}
            text |= {410: "channel_is_archived", 429: "rate_limited"}
            return web.Response(status=status, text=text.get(status, "internal_error"))
        if self.kind == "discord":
            if status == 429:
                data: dict[str, Any] = {
                    "message": "You are being rate limited.",
                    "retry_after": 1.0,
                    "global": False,
                }
            else:
                data = {"message": f"{status}: error", "code": 50006 if status == 400 else 0}
            return web.json_response(data, status=status)
        if self.kind == "googlechat":
            names = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
            err = {"code": status, "message": "error", "status": names.get(status, "INTERNAL")}
            return web.json_response({"error": err}, status=status)
        if self.kind == "ntfy":
            data = {"code": status * 100 + 1, "http": status, "error": "error"}
            if status == 429:
                data["error"] = "limit reached: too many requests"
            return web.json_response(data, status=status)
        if self.kind == "msteams":
            err = {"code": "TriggerInputSchemaMismatch" if status == 400 else "Error"}
            return web.json_response({"error": err}, status=status)
        return web.json_response({"error": f"status {status}"}, status=status)
