"""The JSON API under /api/v1 (docs/architecture.md "Interfaces"): bodies are contracts.

Request parsing is pure functions that return values or raise `BadRequest` naming the field,
so every rule is tested without an event loop; handlers only glue parsing, the `Backend`
(the running service) and the shared JSON views together. Any input, however hostile, gets a
4xx JSON answer `{"error": "..."}`, never a 500.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from aiohttp import web

from exposuremon import acks
from exposuremon.config import TOKEN_ENV, Config, ConfigError
from exposuremon.fleet import fleet_view
from exposuremon.logs import get_logger
from exposuremon.model import (
    DeliveryStatus,
    EventType,
    Finding,
    FindingState,
    ScanKind,
    TargetState,
    TargetStatus,
)
from exposuremon.schedule import MaintenanceWindow, ad_hoc_times, showing
from exposuremon.store import MAX_PAGE, Store, StoreError
from exposuremon.units import parse_duration, utcnow
from exposuremon.web.views import (
    NEVER_SCANNED,
    deliveries_page,
    events_page,
    finding_json,
    findings_page,
    fleet_json,
    maintenance_json,
    status_json,
    target_status_json,
    targets_page,
)

PREFIX = "/api/v1"
MAX_VALUE = 256  # longest query value accepted: names are 64, times ~35
MAX_BODY = 64 * 1024
MAX_CURSOR = 2**63 - 1  # SQLite integer ids
# Target names as config.py accepts them (A-Z a-z 0-9 . _ -, 1-64 characters).
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_UINT = re.compile(r"[0-9]{1,19}")
FINDING_STATES = ("open", "acked", "resolved", "all")
FINDINGS_PARAMS = frozenset({"target", "state", "since", "limit", "cursor"})
EVENTS_PARAMS = frozenset({"target", "type", "since", "limit", "cursor"})
NOTIFICATIONS_PARAMS = frozenset({"status", "channel", "limit", "cursor"})
TARGETS_PARAMS = frozenset({"status", "has_findings", "limit", "cursor"})
TARGET_STATUSES = (*(s.value for s in TargetStatus), NEVER_SCANNED)
ACK_KEYS = frozenset({"until", "reason"})
MAINTENANCE_KEYS = frozenset({"targets", "start", "end", "duration", "reason"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Backend(Protocol):
    """What the handlers need from the running daemon (implemented by `Service`)."""

    @property
    def store(self) -> Store:
        """The open store."""
        ...

    @property
    def config(self) -> Config:
        """The config in force (replaced on reload)."""
        ...

    async def scan_now(self, target: str) -> bool:
        """Schedule a quick scan of `target` now (on the node holding it, in a fleet); False
        when no such target is configured."""
        ...

    async def ack(self, finding_id: int, until: dt.datetime, reason: str) -> Finding:
        """Acknowledge a finding; LookupError if unknown, ValueError if resolved."""
        ...

    def not_ready(self) -> str | None:
        """None when ready, else why not."""
        ...

    def vantage_health(self) -> tuple[str, bool] | None:
        """This node's vantage and whether it is degraded (None: not judged yet)."""
        ...

    def connection_rate(self, target: str) -> float | None:
        """New connections/s the target accepts, where scans found it limits them; else None."""
        ...

    def maintenance_changed(self) -> None:
        """A maintenance window was added or ended: act on it now, not at the next look."""
        ...


class BadRequest(ValueError):
    """A request parameter or body field is wrong; the message starts with its name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def shown(text: str, limit: int = 64) -> str:
    """Untrusted text quoted for an error message, cut to `limit` characters."""
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


# -- pure parsing ------------------------------------------------------------------------------


def single_params(query: Iterable[tuple[str, str]], allowed: frozenset[str]) -> dict[str, str]:
    """Each query parameter once, every one of them known; BadRequest naming the first culprit."""
    params: dict[str, str] = {}
    for key, value in query:
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(shown(key), f"unknown parameter (known: {known})")
        if key in params:
            raise BadRequest(key, "given more than once")
        if len(value) > MAX_VALUE:
            raise BadRequest(key, f"longer than {MAX_VALUE} characters")
        params[key] = value
    return params


def parse_limit(text: str) -> int:
    """A page size, 1 to MAX_PAGE."""
    if _UINT.fullmatch(text) is None or not 1 <= int(text) <= MAX_PAGE:
        raise BadRequest("limit", f"must be an integer from 1 to {MAX_PAGE}, got {shown(text)}")
    return int(text)


def parse_cursor(text: str) -> int:
    """The `next` value of a previous page."""
    if _UINT.fullmatch(text) is None or not 1 <= int(text) <= MAX_CURSOR:
        raise BadRequest("cursor", f"must be the `next` value of a page, got {shown(text)}")
    return int(text)


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """RFC 3339 time (UTC unless it says otherwise), or a duration (`24h`) meaning now minus it."""
    try:
        return now - dt.timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    except OverflowError:
        raise BadRequest("since", f"duration {shown(text)} is too long") from None
    try:
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            "since",
            f"{shown(text)} is neither an RFC 3339 time (2026-11-26T03:14:07Z) "
            "nor a duration (24h)",
        ) from None


def parse_target_name(text: str, field: str = "target") -> str:
    """A syntactically valid target name (whether it exists is the caller's question)."""
    if _NAME.fullmatch(text) is None:
        raise BadRequest(field, f"not a target name (A-Z a-z 0-9 . _ -, 1-64): {shown(text)}")
    return text


def parse_finding_state(text: str) -> FindingState | None:
    """`open`, `acked`, `resolved`, or `all` (None: no filter)."""
    if text not in FINDING_STATES:
        raise BadRequest("state", f"must be one of {', '.join(FINDING_STATES)}, got {shown(text)}")
    return None if text == "all" else FindingState(text)


def parse_event_type(text: str) -> EventType:
    """An event type such as `finding_reopened`."""
    try:
        return EventType(text)
    except ValueError:
        known = ", ".join(t.value for t in EventType)
        raise BadRequest("type", f"must be one of {known}, got {shown(text)}") from None


def parse_finding_id(text: str) -> int:
    """A finding id from the path."""
    if _UINT.fullmatch(text) is None or not 1 <= int(text) <= MAX_CURSOR:
        raise BadRequest("id", f"must be a finding id (a positive integer), got {shown(text)}")
    return int(text)


@dataclasses.dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters and position of a findings or events listing."""

    target: str | None = None
    since: dt.datetime | None = None
    limit: int = 100
    cursor: int | None = None
    state: FindingState | None = None
    type: EventType | None = None
    status: str | None = None  # notifications: pending, sent or dead
    channel: str | None = None


def _list_query(params: Mapping[str, str], now: dt.datetime) -> ListQuery:
    return ListQuery(
        target=parse_target_name(params["target"]) if "target" in params else None,
        since=parse_since(params["since"], now) if "since" in params else None,
        limit=parse_limit(params["limit"]) if "limit" in params else 100,
        cursor=parse_cursor(params["cursor"]) if "cursor" in params else None,
    )


def parse_findings_query(query: Iterable[tuple[str, str]], now: dt.datetime) -> ListQuery:
    """`GET /api/v1/findings` parameters: target, state, since, limit, cursor."""
    params = single_params(query, FINDINGS_PARAMS)
    state = parse_finding_state(params["state"]) if "state" in params else None
    return dataclasses.replace(_list_query(params, now), state=state)


def parse_events_query(query: Iterable[tuple[str, str]], now: dt.datetime) -> ListQuery:
    """`GET /api/v1/events` parameters: target, type, since, limit, cursor."""
    params = single_params(query, EVENTS_PARAMS)
    kind = parse_event_type(params["type"]) if "type" in params else None
    return dataclasses.replace(_list_query(params, now), type=kind)


def parse_notifications_query(query: Iterable[tuple[str, str]]) -> ListQuery:
    """`GET /api/v1/notifications` parameters: status, channel, limit, cursor."""
    params = single_params(query, NOTIFICATIONS_PARAMS)
    status = params.get("status")
    if status is not None and status not in set(DeliveryStatus):
        known = ", ".join(DeliveryStatus)
        raise BadRequest("status", f"must be one of {known}, got {shown(status)}")
    channel = params.get("channel")
    if channel is not None and _NAME.fullmatch(channel) is None:
        raise BadRequest(
            "channel", f"not a channel name (A-Z a-z 0-9 . _ -, 1-64): {shown(channel)}"
        )
    return ListQuery(
        limit=parse_limit(params["limit"]) if "limit" in params else 100,
        cursor=parse_cursor(params["cursor"]) if "cursor" in params else None,
        status=status,
        channel=channel,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class TargetsQuery:
    """Filters and position of a targets listing; `limit` None: every target, config order."""

    status: str | None = None  # a TargetStatus value or NEVER_SCANNED
    has_findings: bool | None = None
    limit: int | None = None
    cursor: str | None = None


def parse_targets_query(query: Iterable[tuple[str, str]]) -> TargetsQuery:
    """`GET /api/v1/targets` parameters: status, has_findings, limit, cursor.

    Paging starts with `limit` or `cursor` (then `limit` defaults to 100); without either the
    answer is every configured target, as before paging existed.
    """
    params = single_params(query, TARGETS_PARAMS)
    status = params.get("status")
    if status is not None and status not in TARGET_STATUSES:
        known = ", ".join(TARGET_STATUSES)
        raise BadRequest("status", f"must be one of {known}, got {shown(status)}")
    has_findings = None
    if "has_findings" in params:
        text = params["has_findings"]
        if text not in ("true", "false"):
            raise BadRequest("has_findings", f"must be true or false, got {shown(text)}")
        has_findings = text == "true"
    cursor = params.get("cursor")
    if cursor is not None and _NAME.fullmatch(cursor) is None:
        raise BadRequest("cursor", f"must be the `next` value of a page, got {shown(cursor)}")
    paging = "limit" in params or cursor is not None
    limit = parse_limit(params["limit"]) if "limit" in params else (100 if paging else None)
    return TargetsQuery(status=status, has_findings=has_findings, limit=limit, cursor=cursor)


def parse_ack_body(raw: bytes, now: dt.datetime) -> tuple[dt.datetime, str]:
    """`{"until": "24h" | RFC 3339, "reason": "..."}` → (expiry, reason), as `exposuremon ack`."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("body", 'must be JSON: {"until": "24h", "reason": "..."}') from None
    if not isinstance(doc, dict):
        raise BadRequest("body", 'must be a JSON object: {"until": "24h", "reason": "..."}')
    for key in doc:
        if key not in ACK_KEYS:
            raise BadRequest(shown(key), "unknown key (known: reason, until)")
    until, reason = doc.get("until"), doc.get("reason")
    if not isinstance(until, str):
        raise BadRequest("until", "required: a duration (24h) or an RFC 3339 time, as a string")
    if not isinstance(reason, str):
        raise BadRequest("reason", "required: why this exposure is accepted, as a string")
    if len(until) > MAX_VALUE:
        raise BadRequest("until", f"longer than {MAX_VALUE} characters")
    try:
        # The same rule as `exposuremon ack --reason` (acks.py): length, no control or format
        # characters, not empty.
        checked = acks.check_reason(reason)
    except ValueError as exc:
        raise BadRequest("reason", str(exc)) from None
    try:
        return acks.parse_until(until, now), checked
    except ValueError as exc:
        raise BadRequest("until", str(exc)) from None


@dataclasses.dataclass(frozen=True, slots=True)
class MaintenanceRequest:
    """A `POST /api/v1/maintenance` body, checked."""

    targets: tuple[str, ...] | None  # None: every target
    start: dt.datetime
    end: dt.datetime
    reason: str


def parse_maintenance_body(
    raw: bytes, now: dt.datetime, known: Iterable[str]
) -> MaintenanceRequest:
    """`{"targets": [...], "start": RFC 3339, "end": RFC 3339 | "duration": "2h", "reason"}`.

    `targets` (default: every target) must name configured targets; `start` defaults to now;
    exactly one of `end` and `duration`; `reason` is required (the rule of acks' reasons).
    """
    example = '{"targets": ["router"], "duration": "2h", "reason": "firmware update"}'
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("body", f"must be JSON: {example}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body", f"must be a JSON object: {example}")
    for key in doc:
        if key not in MAINTENANCE_KEYS:
            known_keys = ", ".join(sorted(MAINTENANCE_KEYS))
            raise BadRequest(shown(key), f"unknown key (known: {known_keys})")
    texts: dict[str, str | None] = {}
    for key in ("start", "end", "duration"):
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            raise BadRequest(key, "must be a string")
        if value is not None and len(value) > MAX_VALUE:
            raise BadRequest(key, f"longer than {MAX_VALUE} characters")
        texts[key] = value
    targets = doc.get("targets")
    names: tuple[str, ...] | None = None
    if targets is not None:
        if not isinstance(targets, list) or not targets:
            raise BadRequest(
                "targets",
                "must be a non-empty list of target names (leave it out for every target)",
            )
        configured = set(known)
        for i, name in enumerate(targets):
            if not isinstance(name, str) or name not in configured:
                what = shown(name) if isinstance(name, str) else "not a string"
                raise BadRequest(f"targets[{i}]", f"no target named {what}")
        names = tuple(dict.fromkeys(targets))
    reason = doc.get("reason")
    if not isinstance(reason, str):
        raise BadRequest("reason", "required: why the targets are in maintenance, as a string")
    try:
        checked = acks.check_reason(reason)
    except ValueError as exc:
        raise BadRequest("reason", str(exc)) from None
    try:
        start, end = ad_hoc_times(texts["start"], texts["end"], texts["duration"], now)
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise BadRequest(field, problem) from None
    return MaintenanceRequest(names, start, end, checked)


def parse_window_id(text: str) -> int:
    """An ad-hoc window's id: `3` or `api/3` (config windows are ended in the config)."""
    number = text.removeprefix("api/")
    if _UINT.fullmatch(number) is None or not 1 <= int(number) <= MAX_CURSOR:
        raise BadRequest(
            "id",
            f"must be the id of a window added by the API or the CLI (api/N), got {shown(text)}; "
            "[[maintenance]] windows of the config end when the config says",
        )
    return int(number)


NO_TOKEN = (
    "the API's POST endpoints are disabled: no API token is configured; "
    f"set [http] token_file in the config or the {TOKEN_ENV} environment variable"
)


def check_bearer(header: str | None, token: str | None) -> tuple[int, str] | None:
    """None when `Authorization` carries the token, else (status, reason): 403 without a token."""
    if token is None:
        return 403, NO_TOKEN
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, "missing Authorization: Bearer <token>"
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may carry anything.
    if not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    ):
        return 401, "wrong token"
    return None


# -- handlers ----------------------------------------------------------------------------------


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON error answer `{"error": message}`."""
    return web.json_response({"error": message}, status=status, headers=headers)


class Api:
    """The /api/v1 handlers on one backend."""

    def __init__(self, backend: Backend, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._backend = backend
        self._clock = clock
        self._log = get_logger()

    def routes(self) -> list[web.RouteDef]:
        """Every /api/v1 route."""
        return [
            web.get(f"{PREFIX}/targets", self._guard(self.targets)),
            web.get(f"{PREFIX}/targets/{{name}}", self._guard(self.target)),
            web.get(f"{PREFIX}/findings", self._guard(self.findings)),
            web.get(f"{PREFIX}/events", self._guard(self.events)),
            web.get(f"{PREFIX}/notifications", self._guard(self.notifications)),
            web.get(f"{PREFIX}/fleet", self._guard(self.fleet)),
            web.post(f"{PREFIX}/targets/{{name}}/scan", self._guard(self.scan, auth=True)),
            web.post(f"{PREFIX}/findings/{{id}}/ack", self._guard(self.ack, auth=True)),
            web.get(f"{PREFIX}/maintenance", self._guard(self.maintenance)),
            web.post(f"{PREFIX}/maintenance", self._guard(self.add_maintenance, auth=True)),
            web.post(
                f"{PREFIX}/maintenance/{{id:.+}}/end",
                self._guard(self.end_maintenance, auth=True),
            ),
        ]

    def _guard(self, handler: Handler, *, auth: bool = False) -> Handler:
        """Authorise (POST), then map parse and store failures to JSON errors."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if auth:
                refused = self._authorise(request)
                if refused is not None:
                    return refused
            try:
                response = await handler(request)
            except BadRequest as exc:
                return error(400, str(exc))
            except StoreError as exc:
                self._log.error(
                    "store failed serving the API", path=request.path[:200], error=str(exc)
                )
                return error(503, "the database is unavailable; see the daemon's log")
            return response

        return guarded

    def _authorise(self, request: web.Request) -> web.Response | None:
        try:
            token = self._backend.config.http.api_token()
        except ConfigError as exc:
            # Names the file or variable and why it is unusable; never the token itself.
            return error(503, f"the API token cannot be read: {'; '.join(exc.errors)}")
        refused = check_bearer(request.headers.get("Authorization"), token)
        if refused is None:
            return None
        status, reason = refused
        headers = {"WWW-Authenticate": 'Bearer realm="exposuremon"'} if status == 401 else None
        return error(status, reason, headers)

    async def targets(self, request: web.Request) -> web.Response:
        """`GET /api/v1/targets`: configured targets; a page of them with `limit`/`cursor`."""
        page = parse_targets_query(request.query.items())
        config = self._backend.config
        store = self._backend.store
        if page.limit is None:  # the unpaged answer of old: every target, config order
            body = status_json(config.targets, await store.load_states())
            if page.status is not None or page.has_findings is not None:
                body["targets"] = [
                    t
                    for t in body["targets"]
                    if (page.status is None or t["status"] == page.status)
                    and (
                        page.has_findings is None
                        or (t["findings"]["open"] + t["findings"]["acked"] > 0) == page.has_findings
                    )
                ]
            return web.json_response(body)
        never = page.status == NEVER_SCANNED
        found = await store.target_page(
            [t.name for t in config.targets],
            statuses=None if page.status is None else () if never else [TargetStatus(page.status)],
            unscanned=page.status is None or never,
            has_findings=page.has_findings,
            after=page.cursor,
            limit=page.limit,
        )
        by_name = {t.name: t for t in config.targets}
        rows = [(by_name[n], found.states.get(n)) for n in found.names]
        return web.json_response(targets_page(rows, found.next))

    async def target(self, request: web.Request) -> web.Response:
        """`GET /api/v1/targets/{name}`: one configured target."""
        single_params(request.query.items(), frozenset())
        name = request.match_info["name"]
        target = next((t for t in self._backend.config.targets if t.name == name), None)
        if target is None:
            return error(404, f"no target named {shown(name)}")
        state = await self._backend.store.load_state(name)
        never = state == TargetState(name=name)  # what the store answers for no row at all
        body = target_status_json(target, None if never else state)
        rate = self._backend.connection_rate(name)
        body["accepted_connection_rate"] = None if rate is None else round(rate, 1)
        return web.json_response(body)

    async def findings(self, request: web.Request) -> web.Response:
        """`GET /api/v1/findings`: newest first, filtered, one page."""
        page = parse_findings_query(request.query.items(), self._clock())
        store = self._backend.store
        rows, next_cursor = await store.findings(
            target=page.target,
            state=page.state,
            since=page.since,
            limit=page.limit,
            cursor=page.cursor,
        )
        return web.json_response(findings_page(rows, await store.load_states(), next_cursor))

    async def events(self, request: web.Request) -> web.Response:
        """`GET /api/v1/events`: newest first, filtered, one page."""
        page = parse_events_query(request.query.items(), self._clock())
        rows, next_cursor = await self._backend.store.events(
            target=page.target,
            type=page.type,
            since=page.since,
            limit=page.limit,
            cursor=page.cursor,
        )
        return web.json_response(events_page(rows, next_cursor))

    async def notifications(self, request: web.Request) -> web.Response:
        """`GET /api/v1/notifications`: outbox rows (dead letters too), newest first."""
        page = parse_notifications_query(request.query.items())
        rows, next_cursor = await self._backend.store.deliveries(
            status=page.status, channel=page.channel, limit=page.limit, cursor=page.cursor
        )
        return web.json_response(deliveries_page(rows, next_cursor))

    async def fleet(self, request: web.Request) -> web.Response:
        """`GET /api/v1/fleet`: every node, vantage and shard lease, from one snapshot."""
        single_params(request.query.items(), frozenset())
        snapshot = await self._backend.store.fleet_snapshot()
        view = fleet_view(snapshot, self._backend.config.fleet.lease_ttl)
        return web.json_response(fleet_json(view))

    async def scan(self, request: web.Request) -> web.Response:
        """`POST /api/v1/targets/{name}/scan`: a quick scan now; 202 once scheduled."""
        single_params(request.query.items(), frozenset())
        name = request.match_info["name"]
        reason = self._backend.not_ready()
        if reason is not None:
            return error(503, f"not ready: {reason}")
        try:
            scheduled = await self._backend.scan_now(name)
        except StoreError as exc:  # a fleet node passing the scan on to the target's node
            self._log.error("could not pass the scan on", target=name, error=str(exc))
            return error(503, "the database is unavailable; see the daemon's log")
        if not scheduled:
            return error(404, f"no target named {shown(name)}")
        return web.json_response(
            {"target": name, "kind": ScanKind.QUICK.value, "status": "scheduled"}, status=202
        )

    async def ack(self, request: web.Request) -> web.Response:
        """`POST /api/v1/findings/{id}/ack`: acknowledge an active finding until a time."""
        single_params(request.query.items(), frozenset())
        finding_id = parse_finding_id(request.match_info["id"])
        now = self._clock()
        until, reason = parse_ack_body(await request.read(), now)
        try:
            acked = await self._backend.ack(finding_id, until, reason)
        except LookupError as exc:
            return error(404, str(exc))
        except ValueError as exc:  # resolved meanwhile, or the expiry passed while waiting
            return error(409, str(exc))
        state = await self._backend.store.load_state(acked.target)
        return web.json_response({"finding": finding_json(acked, state.address)})

    async def maintenance(self, request: web.Request) -> web.Response:
        """`GET /api/v1/maintenance`: the windows in force or to come, and who is in one."""
        single_params(request.query.items(), frozenset())
        now = self._clock()
        config = self._backend.config
        stored = await self._backend.store.maintenance_windows(ending_after=now)
        windows = config.maintenance_windows() + tuple(
            MaintenanceWindow.ad_hoc(w.id, w.targets, w.starts_at, w.ends_at, w.reason)
            for w in stored
        )
        shown_windows = [showing(w, now) for w in windows]
        names = [t.name for t in config.targets]
        inside = sorted(
            n for n in names if any(s.active and s.window.applies_to(n) for s in shown_windows)
        )
        return web.json_response(
            {
                "windows": [
                    maintenance_json(s) for s in shown_windows if s.end is None or s.end > now
                ],
                "in_maintenance": inside,
            }
        )

    async def add_maintenance(self, request: web.Request) -> web.Response:
        """`POST /api/v1/maintenance`: add an ad-hoc window (kept in the store); 201."""
        single_params(request.query.items(), frozenset())
        now = self._clock()
        known = [t.name for t in self._backend.config.targets]
        body = parse_maintenance_body(await request.read(), now, known)
        stored = await self._backend.store.add_maintenance(
            body.targets, body.start, body.end, body.reason
        )
        self._backend.maintenance_changed()
        window = MaintenanceWindow.ad_hoc(
            stored.id, stored.targets, stored.starts_at, stored.ends_at, stored.reason
        )
        return web.json_response({"window": maintenance_json(showing(window, now))}, status=201)

    async def end_maintenance(self, request: web.Request) -> web.Response:
        """`POST /api/v1/maintenance/{id}/end`: end an ad-hoc window now."""
        single_params(request.query.items(), frozenset())
        window_id = parse_window_id(request.match_info["id"])
        now = self._clock()
        try:
            stored = await self._backend.store.end_maintenance(window_id, now)
        except LookupError as exc:
            return error(404, str(exc))
        except ValueError as exc:
            return error(409, str(exc))
        self._backend.maintenance_changed()
        window = MaintenanceWindow.ad_hoc(
            stored.id, stored.targets, stored.starts_at, stored.ends_at, stored.reason
        )
        return web.json_response({"window": maintenance_json(showing(window, now))})
