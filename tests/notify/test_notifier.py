"""The outbox worker against a real store (SQLite in tmp_path) and real receivers on loopback."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from exposuremon.config.models import NotifyConfig
from exposuremon.metrics.collectors import Metrics
from exposuremon.model import (
    Event,
    EventType,
    Finding,
    FindingState,
    Severity,
    TargetState,
)
from exposuremon.notify.notifier import REMOVED, Notifier, NullNotifier, Tuning, channels_for_events
from exposuremon.notify.retry import Backoff
from exposuremon.store.database import Applied, Store, db_path, migrate
from exposuremon.store.outbox import Delivery
from tests.store.test_store import scan_of
from tests.support.daemon import wait_until
from tests.support.receivers import SECRET, Answer, Receiver

TUNING = Tuning(
    backoff=Backoff(base=0.2, cap=0.5, floor=0.05, retry_after=(0.05, 5.0)),
    time_limit=0.5,
    idle_poll=1.0,
    reminder_poll=0.1,
    error_pause=0.2,
)
_ports = itertools.count(1000)


def utcnow() -> dt.datetime:
    """The real clock (the worker sleeps in real time)."""
    return dt.datetime.now(dt.UTC)


def channel(name: str, kind: str, url: str, **kw: Any) -> NotifyConfig:
    """A [[notify]] entry as the config would hold it; fast unless the test sets a rate."""
    fields = {"name": name, "type": kind, "url": url, "rate": 50, **kw}
    return NotifyConfig.model_validate({k: v for k, v in fields.items() if v is not None})


def ev(target: str, kind: EventType, severity: Severity, port: int | None = None) -> Event:
    """An event observed now."""
    return Event(
        type=kind,
        severity=severity,
        target=target,
        observed_at=utcnow(),
        summary=f"{kind.value} {port}",
        port=port,
    )


Route = Callable[[Event], Iterable[str]]


async def apply_events(
    store: Store,
    target: str,
    events: Sequence[Event],
    route: Sequence[str] | Route,
    state: TargetState | None = None,
) -> Applied:
    """Apply one scan of `target` with these events (its stored state carried over)."""
    base = state or await store.load_state(target)
    return await store.apply(
        scan_of(target, utcnow()), base, events, list(base.findings.values()), route
    )


async def open_critical(store: Store, target: str, route: Sequence[str] | Route) -> Applied:
    """A scan that opens one critical finding on a fresh port, with its finding_opened event."""
    port = next(_ports)
    found = Finding(
        id=None,
        target=target,
        port=port,
        severity=Severity.CRITICAL,
        state=FindingState.OPEN,
        opened_at=utcnow(),
    )
    prev = await store.load_state(target)
    state = dataclasses.replace(prev, findings={**prev.findings, port: found})
    event = ev(target, EventType.FINDING_OPENED, Severity.CRITICAL, port)
    return await store.apply(scan_of(target, utcnow()), state, [event], [found], route)


async def rows_of(store: Store, channel: str | None = None) -> list[Delivery]:
    """Every outbox row (of one channel), oldest first."""
    found: list[Delivery] = []
    cursor = None
    for _ in range(100):
        page, cursor = await store.deliveries(channel=channel, limit=1000, cursor=cursor)
        found.extend(page)
        if cursor is None:
            break
    return sorted(found, key=lambda d: d.id)


def all_settled(store: Store, status: str = "sent") -> Callable[[], Any]:
    """A condition: nothing pending, and every row has `status`."""

    async def check() -> bool:
        rows = await rows_of(store)
        return bool(rows) and all(r.status == status for r in rows)

    return check


def counter(metrics: Metrics, channel: str, result: str) -> float:
    """The value of notifications_total{channel, result}."""
    value = metrics.registry.get_sample_value(
        "exposuremon_notifications_total", {"channel": channel, "result": result}
    )
    return value or 0.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store."""
    opened = await Store.open(tmp_path / "state")
    yield opened
    await opened.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The shared HTTP client session."""
    async with aiohttp.ClientSession() as s:
        yield s


@contextlib.asynccontextmanager
async def running(
    store: Store,
    session: aiohttp.ClientSession,
    channels: Sequence[NotifyConfig],
    **kw: Any,
) -> AsyncIterator[Notifier]:
    """A started notifier with short test timings, stopped afterwards."""
    kw.setdefault("metrics", Metrics())
    kw.setdefault("tuning", TUNING)
    notifier = Notifier(store, channels, session, rng=random.Random(1), clock=utcnow, **kw)
    notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()


# ---------------------------------------------------------------------------------- grouping


async def test_one_message_per_channel_for_one_scan(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """Three events of one scan reach each channel as one message naming all three."""
    events = [
        ev("r", EventType.REBOOT_SUSPECTED, Severity.WARNING),
        ev("r", EventType.FINDING_REOPENED, Severity.CRITICAL, 80),
        ev("r", EventType.FINDING_REOPENED, Severity.CRITICAL, 443),
    ]
    async with Receiver("webhook") as hook, Receiver("slack") as slack:
        applied = await apply_events(store, "r", events, ["hook", "chat"])
        metrics = Metrics()
        chans = [channel("hook", "webhook", hook.url), channel("chat", "slack", slack.url)]
        async with running(store, session, chans, metrics=metrics):
            await hook.wait_for(lambda r: len(r.delivered()) == 1, 10, "the webhook message")
            await slack.wait_for(lambda r: len(r.delivered()) == 1, 10, "the slack message")
            await wait_until(all_settled(store), 10, "every row sent")
        (req,) = hook.requests
        body = req.json()
        assert [e["id"] for e in body["events"]] == list(applied.event_ids)
        assert (body["target"], body["address"]) == ("r", "198.51.100.7")
        assert req.key == f"hook/{applied.scan_id}"
        assert len(slack.requests) == 1
        assert slack.requests[0].key == f"chat/{applied.scan_id}"
    rows = await rows_of(store)
    assert len(rows) == 6
    assert {(r.attempts, r.last_error, r.target) for r in rows} == {(1, None, "r")}
    assert all(r.sent_at is not None for r in rows)
    assert counter(metrics, "hook", "sent") == counter(metrics, "chat", "sent") == 1


async def test_events_are_routed_per_channel_by_severity_and_target(store: Store) -> None:
    """With a route, each event gets rows only for the channels that want it."""
    crit = NotifyConfig.model_validate(
        {
            "name": "pager",
            "type": "webhook",
            "url": "http://127.0.0.1:9/x",
            "min_severity": "critical",
        }
    )
    other = NotifyConfig.model_validate(
        {"name": "other", "type": "webhook", "url": "http://127.0.0.1:9/y", "targets": ["s"]}
    )

    def route(e: Event) -> list[str]:
        return [c.name for c in (crit, other) if c.wants(e.target, e.severity)]

    events = [
        ev("r", EventType.TARGET_UP, Severity.INFO),
        ev("r", EventType.PORT_OPENED, Severity.WARNING, 22),
        ev("r", EventType.FINDING_OPENED, Severity.CRITICAL, 23),
    ]
    applied = await apply_events(store, "r", events, route)
    rows = await rows_of(store)
    assert [(r.channel, r.event_id) for r in rows] == [("pager", applied.event_ids[2])]
    assert rows[0].dedup_key == f"pager/{applied.event_ids[2]}"


async def test_a_burst_of_200_events_over_20_targets_is_grouped_and_paced(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """200 events on 20 targets: 20 messages per channel, none faster than its rate allows."""
    async with Receiver("discord") as discord, Receiver("slack") as slack:
        chans = [
            channel("dc", "discord", discord.url, rate=None),  # the default: 5 per 2 s
            channel("sl", "slack", slack.url, rate="4/1s"),
        ]
        for t in range(20):
            name = f"router-{t:02d}"
            events = [
                ev(name, EventType.FINDING_OPENED, Severity.CRITICAL, port)
                for port in range(80, 90)
            ]
            await apply_events(store, name, events, ["dc", "sl"])
        async with running(store, session, chans):
            await discord.wait_for(lambda r: len(r.delivered()) == 20, 20, "20 discord messages")
            await slack.wait_for(lambda r: len(r.delivered()) == 20, 20, "20 slack messages")
            await wait_until(all_settled(store), 10, "every row sent")
    for receiver, count, period in ((discord, 5, 2.0), (slack, 4, 1.0)):
        assert len(receiver.requests) == 20  # one per target: grouped, and none repeated
        times = [r.at for r in receiver.requests]
        # Never more than `count` messages within one period (Discord: 5 per 2 s).
        for i in range(len(times) - count):
            assert times[i + count] - times[i] >= period - 0.05, (receiver.kind, i)
    assert len(await rows_of(store, "dc")) == 200


# ------------------------------------------------------------------------ failures, retries


async def test_500_then_success_is_delivered_once_with_one_delivery_id(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """Two server errors, then accepted: three requests with the same delivery id, one message."""
    async with Receiver("slack") as slack:
        slack.script(Answer(500), Answer(503))
        applied = await apply_events(
            store, "r", [ev("r", EventType.TARGET_DOWN, Severity.WARNING)], ["chat"]
        )
        metrics = Metrics()
        async with running(store, session, [channel("chat", "slack", slack.url)], metrics=metrics):
            await wait_until(all_settled(store), 15, "sent after two failures")
        assert [r.status for r in slack.requests] == [500, 503, 200]
        assert {r.key for r in slack.requests} == {f"chat/{applied.scan_id}"}
        assert len(slack.delivered()) == 1
    (row,) = await rows_of(store)
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)
    assert counter(metrics, "chat", "failed") == 2
    assert counter(metrics, "chat", "sent") == 1


async def test_a_failing_message_does_not_hold_back_newer_ones(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """While one message waits for its retry, a newer one (a critical reopen) goes out first."""
    async with Receiver("slack") as slack:
        slack.script(Answer(503, retry_after="1"))
        first = await apply_events(
            store, "a", [ev("a", EventType.TARGET_DOWN, Severity.WARNING)], ["chat"]
        )
        second = await apply_events(
            store, "b", [ev("b", EventType.FINDING_REOPENED, Severity.CRITICAL, 443)], ["chat"]
        )
        async with running(store, session, [channel("chat", "slack", slack.url)]):
            await wait_until(all_settled(store), 15, "both messages sent")
        keys = [(r.key, r.status) for r in slack.requests]
    assert keys == [
        (f"chat/{first.scan_id}", 503),
        (f"chat/{second.scan_id}", 200),
        (f"chat/{first.scan_id}", 200),
    ]


async def test_a_reload_retries_waiting_messages_at_once(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """After a failure the message waits out its backoff, unless a reload says it is fixed."""
    async with Receiver("slack") as slack:
        slack.script(Answer(500))
        await apply_events(store, "r", [ev("r", EventType.TARGET_DOWN, Severity.WARNING)], ["c"])
        chans = [channel("c", "slack", slack.url)]
        patient = dataclasses.replace(TUNING, backoff=Backoff(base=60, cap=120, floor=60))
        async with running(store, session, chans, tuning=patient) as notifier:

            async def failed_once() -> list[Delivery]:
                return [r for r in await rows_of(store) if r.attempts == 1]

            (row,) = await wait_until(failed_once, 10, "the failed attempt recorded")
            assert row.status == "pending"
            assert row.next_attempt_at > utcnow() + dt.timedelta(seconds=30)
            notifier.reconfigure(chans, None)  # what SIGHUP does
            await wait_until(all_settled(store), 10, "sent right after the reload")
        assert [r.status for r in slack.requests] == [500, 200]


async def test_429_retry_after_is_honoured(store: Store, session: aiohttp.ClientSession) -> None:
    """After a 429 with Retry-After: 1 the next request comes no sooner than a second later."""
    async with Receiver("discord") as discord:
        discord.script(Answer(429, retry_after="1"))
        await apply_events(store, "r", [ev("r", EventType.TARGET_DOWN, Severity.WARNING)], ["dc"])
        async with running(store, session, [channel("dc", "discord", discord.url)]):
            await wait_until(all_settled(store), 15, "sent after the pause")
        first, second = discord.requests
        assert first.status == 429
        assert second.at - first.at >= 1.0
        assert second.accepted


async def test_a_rate_limited_channel_pauses_every_message(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """A 429 stops the whole lane for the Retry-After, not only the message that got it."""
    async with Receiver("slack") as slack:
        slack.script(Answer(429, retry_after="1"))
        for target in ("a", "b", "c"):
            await apply_events(
                store, target, [ev(target, EventType.TARGET_UP, Severity.WARNING)], ["chat"]
            )
        async with running(store, session, [channel("chat", "slack", slack.url, rate=100)]):
            await wait_until(all_settled(store), 15, "all sent")
        times = [r.at for r in slack.requests]
        assert len(times) == 4
        assert times[1] - times[0] >= 1.0
        # The limited message waits for its retry time like any failed one: the others,
        # due since they were written, may go first.
        assert sorted(r.key or "" for r in slack.requests[1:]) == sorted(
            {r.key or "" for r in slack.requests}
        )


@pytest.mark.parametrize(("status", "text"), [(400, "invalid_payload"), (404, "no_service")])
async def test_a_permanent_error_is_a_dead_letter_and_the_lane_goes_on(
    store: Store, session: aiohttp.ClientSession, status: int, text: str
) -> None:
    """400/404: dead at once, with the error, counted; the next message is still delivered."""
    async with Receiver("slack") as slack:
        slack.script(Answer(status))
        bad = await apply_events(store, "a", [ev("a", EventType.TARGET_UP, Severity.INFO)], ["c"])
        good = await apply_events(store, "b", [ev("b", EventType.TARGET_UP, Severity.INFO)], ["c"])
        metrics = Metrics()
        with structlog.testing.capture_logs() as logs:
            async with running(store, session, [channel("c", "slack", slack.url)], metrics=metrics):
                await slack.wait_for(lambda r: len(r.delivered()) == 1, 10, "the good message")
                await wait_until(
                    lambda: _status_is(store, good.event_ids[0], "sent"), 10, "good sent"
                )
    dead, nxt = await store.deliveries(status="dead")
    assert nxt is None
    assert [(d.event_id, d.last_error, d.attempts) for d in dead] == [
        (bad.event_ids[0], f"HTTP {status}: {text}", 1)
    ]
    assert counter(metrics, "c", "dead") == 1
    assert any(e["event"] == "notification dead-lettered" for e in logs)
    assert SECRET not in repr(logs)


async def _status_is(store: Store, event_id: int, status: str) -> bool:
    rows = await rows_of(store)
    return any(r.event_id == event_id and r.status == status for r in rows)


async def test_a_timeout_is_retried_and_the_receiver_dedups(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """A receiver slower than the time limit gets the message twice; dedup shows it once."""
    async with Receiver("webhook") as hook:
        hook.script(Answer(delay=1.0))  # answers 200, but after the sender gave up
        await apply_events(store, "r", [ev("r", EventType.TARGET_UP, Severity.INFO)], ["h"])
        async with running(store, session, [channel("h", "webhook", hook.url)]):
            await wait_until(all_settled(store), 15, "sent on the second try")
            await hook.wait_for(lambda r: all(q.status for q in r.requests), 5, "both answered")
        assert len(hook.requests) == 2
        assert len(hook.accepted()) == 2  # at least once ...
        assert len(hook.delivered()) == 1  # ... and once after dedup on the delivery id
    (row,) = await rows_of(store)
    assert row.attempts == 2


async def test_connection_refused_until_the_receiver_comes_up(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """Nobody listening: retried (error kept, no secret) until the receiver starts."""
    hook = Receiver("webhook")
    await hook.start()
    url = hook.url
    await hook.stop()  # the port is known, nothing listens
    try:
        await apply_events(store, "r", [ev("r", EventType.TARGET_UP, Severity.INFO)], ["h"])
        async with running(store, session, [channel("h", "webhook", url)]):

            async def failed_twice() -> bool:
                (row,) = await rows_of(store)
                return row.attempts >= 2

            await wait_until(failed_twice, 10, "two refused attempts")
            (row,) = await rows_of(store)
            assert row.status == "pending"
            assert row.last_error is not None
            assert row.last_error.startswith(f"cannot connect to 127.0.0.1:{hook.port}")
            assert SECRET not in row.last_error
            await hook.start()
            await wait_until(all_settled(store), 10, "sent once the receiver is up")
        assert len(hook.delivered()) == 1
    finally:
        await hook.close()


async def test_past_the_retry_horizon_a_message_is_dead(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """A receiver failing longer than retry_horizon: the message is given up, saying why."""
    async with Receiver("ntfy", default=Answer(500)) as ntfy:
        await apply_events(store, "r", [ev("r", EventType.TARGET_UP, Severity.INFO)], ["n"])
        metrics = Metrics()
        chans = [channel("n", "ntfy", ntfy.url, retry_horizon="1s")]
        async with running(store, session, chans, metrics=metrics):
            await wait_until(all_settled(store, "dead"), 10, "dead after the horizon")
        assert len(ntfy.requests) >= 2
    (row,) = await rows_of(store)
    assert row.last_error is not None
    assert row.last_error.startswith(f"gave up after {row.attempts} attempts in 1s: HTTP 500")
    assert counter(metrics, "n", "dead") == 1


# ------------------------------------------------------------------------------ restarts


async def test_a_sent_message_is_never_sent_again(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """After a restart of the worker only what is still pending goes out."""
    async with Receiver("webhook") as hook:
        chans = [channel("h", "webhook", hook.url)]
        await apply_events(store, "a", [ev("a", EventType.TARGET_UP, Severity.INFO)], ["h"])
        async with running(store, session, chans):
            await hook.wait_for(lambda r: len(r.delivered()) == 1, 10, "first message")
            await wait_until(all_settled(store), 10, "sent")
        await apply_events(store, "b", [ev("b", EventType.TARGET_UP, Severity.INFO)], ["h"])
        async with running(store, session, chans):
            await hook.wait_for(lambda r: len(r.delivered()) == 2, 10, "second message")
            await wait_until(all_settled(store), 10, "sent")
        assert [r.json()["target"] for r in hook.requests] == ["a", "b"]


async def test_a_channel_removed_and_added_back_does_not_send_twice(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """Two quick reloads (channel out, then back) during a POST: one lane, one send."""
    async with Receiver("webhook") as hook:
        hook.script(Answer(hold=True))
        chan = channel("a", "webhook", hook.url)
        await apply_events(store, "t1", [ev("t1", EventType.TARGET_DOWN, Severity.WARNING)], ["a"])
        slow = dataclasses.replace(TUNING, time_limit=5.0)
        async with running(store, session, [chan], tuning=slow) as notifier:
            await hook.wait_for(lambda r: len(r.requests) == 1, 10, "the first POST, held")
            notifier.reconfigure([], None)
            notifier.reconfigure([chan], None)
            with pytest.raises(AssertionError):  # no second POST while the first is in flight
                await hook.wait_for(lambda r: len(r.requests) > 1, 1.0, "a duplicate POST")
            hook.release()
            await wait_until(all_settled(store), 10, "the message settled")
        assert [(r.key, r.status) for r in hook.requests] == [(hook.requests[0].key, 200)]


async def test_rows_of_removed_channels_go_dead(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """At start, and on a reload that drops a channel, its pending rows become dead letters."""
    async with Receiver("webhook") as hook:
        await apply_events(store, "r", [ev("r", EventType.TARGET_UP, Severity.INFO)], ["old"])
        keep, drop = channel("keep", "webhook", hook.url), channel("drop", "webhook", hook.url)
        metrics = Metrics()
        async with running(store, session, [keep, drop], metrics=metrics) as notifier:
            await wait_until(lambda: _status_is_for(store, "old", "dead"), 10, "rows of 'old' dead")
            hook.default = Answer(503)  # keep 'drop' busy retrying
            await apply_events(store, "s", [ev("s", EventType.TARGET_UP, Severity.INFO)], ["drop"])
            notifier.wake()
            await hook.wait_for(lambda r: len(r.requests) >= 1, 10, "drop tried")
            notifier.reconfigure([keep], None)
            await wait_until(
                lambda: _status_is_for(store, "drop", "dead"), 10, "rows of 'drop' dead"
            )
    by_channel = {r.channel: r for r in await rows_of(store)}
    assert by_channel["old"].last_error == REMOVED
    assert by_channel["drop"].last_error == REMOVED
    assert counter(metrics, "old", "dead") == 1


async def _status_is_for(store: Store, name: str, status: str) -> bool:
    rows = await rows_of(store, name)
    return bool(rows) and all(r.status == status for r in rows)


# ------------------------------------------------------------------------------ reminders


async def test_reminders_of_an_open_critical_finding_are_capped(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """remind_every 300 ms, remind_max 2: the finding's message, then exactly two reminders."""
    async with Receiver("webhook") as hook:
        chans = [channel("h", "webhook", hook.url, remind_every="300ms", remind_max=2)]
        applied = await open_critical(store, "r", ["h"])
        async with running(store, session, chans):
            await hook.wait_for(lambda r: len(r.delivered()) == 3, 10, "message + 2 reminders")
            await wait_until(all_settled(store), 10, "all sent")
            # Past another interval: still three (the cap holds).
            await wait_until(_reminder_pass_after(store, 0.6), 5, "a later reminder pass")
        bodies = [r.json() for r in hook.requests]
        assert [b["kind"] for b in bodies] == ["events", "reminder", "reminder"]
        (opened_event,) = applied.events
        for b in bodies:
            assert [e["id"] for e in b["events"]] == [opened_event.id]
    reminders = [r for r in await rows_of(store) if r.kind == "reminder"]
    assert [r.reminder for r in reminders] == [1, 2]
    # The second reminder is queued `remind_every` after the first. Their deliveries may come
    # closer together (a loaded machine delays the first one), so the queue times are compared.
    first, second = sorted(reminders, key=lambda r: r.created_at)
    assert (second.created_at - first.created_at).total_seconds() >= 0.25


def _reminder_pass_after(store: Store, seconds: float) -> Callable[[], Any]:
    deadline = utcnow() + dt.timedelta(seconds=seconds)

    async def check() -> bool:
        return utcnow() >= deadline and len(await rows_of(store)) == 3

    return check


async def test_acked_findings_get_no_reminder_until_the_ack_expires(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """An acked finding is quiet; when it is open again, reminders start over at once."""
    async with Receiver("slack") as slack:
        chans = [channel("c", "slack", slack.url, remind_every="200ms", remind_max=1)]
        applied = await open_critical(store, "r", ["c"])
        (fid,) = applied.finding_ids_by_port.values()
        async with running(store, session, chans):
            await slack.wait_for(lambda r: len(r.delivered()) == 2, 10, "message + 1 reminder")
            found = await store.finding(fid)
            assert found is not None
            until = utcnow() + dt.timedelta(hours=1)
            await store.save_ack(
                dataclasses.replace(found, state=FindingState.ACKED, ack_until=until)
            )
            # Let a reminder pass see it acked: its count starts over.
            await wait_until(_count_is(store, fid, 0), 5, "count reset by the ack")
            assert len(slack.requests) == 2
            await store.save_ack(dataclasses.replace(found, state=FindingState.OPEN))
            await slack.wait_for(lambda r: len(r.delivered()) == 3, 10, "reminder after expiry")


def _count_is(store: Store, finding_id: int, count: int) -> Callable[[], Any]:
    async def check() -> bool:
        assert store.path is not None  # a SQLite store
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            row = db.execute(
                "SELECT count FROM reminders WHERE finding_id = ?", (finding_id,)
            ).fetchone()
        return row is not None and row[0] == count

    return check


# ---------------------------------------------------------------------- notify-test, API


async def test_send_test_reports_success_or_the_exact_error(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """notify-test: None when accepted, else the error without the URL's secret."""
    async with Receiver("googlechat") as chat:
        good = channel("g", "googlechat", chat.url)
        bad = channel("b", "googlechat", chat.url.replace(SECRET, "revoked00000"))
        notifier = Notifier(store, [good, bad], session, Metrics(), tuning=TUNING)
        assert await notifier.send_test("g") is None
        assert chat.requests[0].json()["text"]
        error = await notifier.send_test("b")
        assert error is not None
        assert error.startswith("HTTP 404")
        assert "revoked" not in error
        assert await notifier.send_test("nope") == (
            "no [[notify]] channel named 'nope' (configured: b, g)"
        )
    assert await NullNotifier().send_test("g") == "notifications are not running"


async def test_a_missing_url_env_is_retried_with_a_clear_error(
    store: Store, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL's env var unset: the message waits, its error names the variable."""
    monkeypatch.delenv("EXPOSUREMON_TEST_HOOK", raising=False)
    chans = [
        NotifyConfig.model_validate(
            {"name": "h", "type": "webhook", "url_env": "EXPOSUREMON_TEST_HOOK"}
        )
    ]
    await apply_events(store, "r", [ev("r", EventType.TARGET_UP, Severity.INFO)], ["h"])
    async with running(store, session, chans):

        async def failed() -> bool:
            (row,) = await rows_of(store)
            return row.attempts >= 1

        await wait_until(failed, 10, "an attempt")
    (row,) = await rows_of(store)
    assert row.status == "pending"
    assert row.last_error == (
        "notify 'h'.url_env: environment variable EXPOSUREMON_TEST_HOOK is not set or empty"
    )


# A webhook URL secret that yarl rewrites before sending (`%2F` -> `/`, `%7E` -> `~`, `%41` -> `A`).
ENCODED_SECRET = "ab%2Bcd%2FSIGSECRET%7Ezz%41q"


async def test_an_echoed_url_as_sent_leaves_no_secret_in_errors_or_logs(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """A 404 page quoting the request line: last_error, the log and notify-test stay secret-free."""
    async with Receiver("webhook", echo=True) as hook:
        url = f"http://127.0.0.1:{hook.port}/hooks/in?sig={ENCODED_SECRET}"
        chan = channel("h", "webhook", url)
        await apply_events(store, "r", [ev("r", EventType.TARGET_UP, Severity.INFO)], ["h"])
        with structlog.testing.capture_logs() as logs:
            async with running(store, session, [chan]) as notifier:
                await wait_until(all_settled(store, "dead"), 10, "dead after the 404")
                tested = await notifier.send_test("h")
        echoed = [r.path for r in hook.requests]
    assert all("ab%2Bcd/SIGSECRET~zzAq" in path for path in echoed)  # the form that was sent
    (row,) = await rows_of(store)  # what GET /api/v1/notifications shows
    assert row.last_error is not None
    assert row.last_error.startswith("HTTP 404: Not Found: POST <redacted>")
    assert tested is not None
    assert tested.startswith("HTTP 404: Not Found: POST <redacted>")
    assert any(e["event"] == "notification dead-lettered" for e in logs)
    for text in (row.last_error, tested, repr(logs)):
        assert "SIGSECRET" not in text


async def test_discord_is_posted_with_wait_true_keeping_the_thread(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """Discord gets `?wait=true` (an unsaved message is then an error), `thread_id` kept."""
    async with Receiver("discord") as discord:
        chan = channel("dc", "discord", discord.url + "?thread_id=42")
        await apply_events(store, "r", [ev("r", EventType.TARGET_DOWN, Severity.WARNING)], ["dc"])
        async with running(store, session, [chan]):
            await wait_until(all_settled(store), 10, "sent")
        (req,) = discord.requests
    assert req.path.endswith("?thread_id=42&wait=true")
    assert req.status == 200  # with wait=true Discord answers with the saved message


async def test_a_large_webhook_group_arrives_in_parts_each_event_once(
    store: Store, session: aiohttp.ClientSession
) -> None:
    """2000 events (1.5 MB as one body, a 413 from nginx) go in parts under 256 KB, all sent."""
    long = "service banner " + "Ü" * 280
    events = [
        dataclasses.replace(ev("r", EventType.PORT_OPENED, Severity.WARNING, p), summary=long)
        for p in range(1, 2001)
    ]
    async with Receiver("webhook") as hook:  # answers 413 above 1 MiB, as nginx does
        applied = await apply_events(store, "r", events, ["h"])
        async with running(store, session, [channel("h", "webhook", hook.url)]):
            await wait_until(all_settled(store), 20, "every row sent")
        bodies = [r.json() for r in hook.requests]
        assert all(r.status == 200 and len(r.body) < 256_000 for r in hook.requests)
        assert len(hook.delivered()) == len(bodies) >= 6
    ids = [e["id"] for b in bodies for e in b["events"]]
    assert sorted(ids) == sorted(applied.event_ids)
    assert len(ids) == len(set(ids)) == 2000
    parts = len(bodies)
    key = f"h/{applied.scan_id}"
    assert [(b["part"], b["parts"], b["delivery_id"]) for b in bodies] == [
        (n, parts, f"{key}/part{n}of{parts}") for n in range(1, parts + 1)
    ]


async def test_a_webhook_retry_keeps_its_id_and_passes_the_standard_check(
    store: Store, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Standard Webhooks: every attempt has the delivery id as webhook-id and verifies."""
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    monkeypatch.setenv("EXPOSUREMON_TEST_SECRET", secret)
    async with Receiver("webhook", secret=secret, standard=True) as hook:
        hook.script(Answer(503))
        chan = channel("h", "webhook", hook.url, secret_env="EXPOSUREMON_TEST_SECRET")
        applied = await apply_events(
            store, "r", [ev("r", EventType.TARGET_UP, Severity.INFO)], ["h"]
        )
        async with running(store, session, [chan]):
            await wait_until(all_settled(store), 10, "sent after a 503")
        assert [r.status for r in hook.requests] == [503, 200]  # the 200 passed the check
        ids = {r.headers["webhook-id"] for r in hook.requests}
    assert ids == {f"h/{applied.scan_id}"}


async def test_deliveries_are_listed_newest_first_with_filters(store: Store) -> None:
    """Store.deliveries pages by id, filters by status and channel, and names bad input."""
    for name in ("a", "b", "c"):
        await apply_events(store, name, [ev(name, EventType.TARGET_UP, Severity.INFO)], ["x", "y"])
    page, cursor = await store.deliveries(limit=4)
    assert [d.id for d in page] == [6, 5, 4, 3]
    assert cursor == 3
    rest, cursor = await store.deliveries(limit=4, cursor=cursor)
    assert ([d.id for d in rest], cursor) == ([2, 1], None)
    only_y, _ = await store.deliveries(channel="y")
    assert {d.channel for d in only_y} == {"y"}
    assert [d.target for d in only_y] == ["c", "b", "a"]
    assert (await store.deliveries(status="dead"))[0] == []
    assert all(d.status == "pending" and d.kind == "event" for d in page)
    with pytest.raises(ValueError, match="status: 'lost' is not one of pending, sent, dead"):
        await store.deliveries(status="lost")
    with pytest.raises(ValueError, match="limit: 0 out of range"):
        await store.deliveries(limit=0)


# ------------------------------------------------------------------- routing (pure), schema


def test_router_sends_resolved_notices_and_context_where_the_finding_went() -> None:
    """A resolved notice follows its finding's severity; target-level events ride along."""
    pager = channel("pager", "webhook", "http://127.0.0.1:9/p", min_severity="critical")
    ops = channel("ops", "slack", "http://127.0.0.1:9/o")  # warning and up
    other = channel("other", "slack", "http://127.0.0.1:9/x", targets=["s"])
    done = Finding(
        id=7,
        target="r",
        port=8080,
        severity=Severity.CRITICAL,
        state=FindingState.RESOLVED,
        opened_at=utcnow(),
        resolved_at=utcnow(),
    )
    resolved = ev("r", EventType.FINDING_RESOLVED, Severity.INFO, 8080)
    closed = ev("r", EventType.PORT_CLOSED, Severity.INFO, 8080)
    up = ev("r", EventType.TARGET_UP, Severity.INFO)
    route = channels_for_events([pager, ops, other], [resolved, closed, up], [done])
    assert route(resolved) == ["pager", "ops"]
    assert route(closed) == []
    assert route(up) == ["pager", "ops"]  # context of a message that goes out anyway
    quiet = channels_for_events([pager, ops, other], [up, closed], [])
    assert quiet(up) == []  # nothing else to say: an info event alone stays unsent


async def test_a_0002_outbox_is_upgraded_to_event_deliveries(tmp_path: Path) -> None:
    """Rows written before reminders existed read back as event deliveries."""
    path = db_path(tmp_path)
    migrate(path, "0002")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO targets VALUES ('r', NULL, 'up', NULL, 0, NULL, '{}', 0, 0,"
            " NULL, NULL, '[]', '{}')"
        )
        db.execute(
            "INSERT INTO events VALUES (1, 'target_down', 'warning', 'r', NULL, 0, 'down', '{}',"
            " NULL, NULL)"
        )
        db.execute(
            "INSERT INTO outbox (channel, event_id, group_key, status, attempts,"
            " next_attempt_at, created_at, dedup_key) VALUES ('c', 1, '9', 'pending', 2, 5, 0,"
            " 'c/1')"
        )
    async with await Store.open(tmp_path) as store:
        (row,), _ = await store.deliveries()
        assert (row.kind, row.reminder, row.attempts, row.target) == ("event", None, 2, "r")
        found, due = await store.next_message("c", utcnow())
        assert found is not None
        assert due is None
        assert (found.delivery_id, found.address, found.is_reminder) == ("c/9", None, False)
