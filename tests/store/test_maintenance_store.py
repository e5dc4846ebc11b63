"""Maintenance windows in the store, on both dialects: ad-hoc windows, held rows, the end."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from exposuremon.model import Event, EventType, Severity, TargetState
from exposuremon.store import ReminderRule, Store
from tests.store.test_store import finding, scan_of
from tests.support.databases import Backend

CLOCK = dt.datetime(2026, 12, 5, 21, 0, tzinfo=dt.UTC)
T0 = CLOCK - dt.timedelta(minutes=5)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """A fresh store on each dialect, with a fixed clock."""
    opened = await Store.open(backend.where, clock=lambda: CLOCK)
    yield opened
    await opened.close()


def event(target: str, type_: EventType, port: int | None = None) -> Event:
    """An unsaved event of `target` at T0."""
    return Event(
        type=type_,
        severity=Severity.CRITICAL,
        target=target,
        observed_at=T0,
        summary=type_.value,
        port=port,
    )


async def test_ad_hoc_windows_are_kept_listed_and_ended_early(store: Store) -> None:
    """A window added comes back by id with its targets; ending it moves its end to now."""
    end = CLOCK + dt.timedelta(hours=2)
    one = await store.add_maintenance(["a", "b"], CLOCK, end, "firmware update")
    every = await store.add_maintenance(None, CLOCK + dt.timedelta(hours=1), end, "")
    listed = await store.maintenance_windows(ending_after=CLOCK)
    assert [(w.id, w.targets, w.reason) for w in listed] == [
        (one.id, ("a", "b"), "firmware update"),
        (every.id, None, ""),
    ]
    assert listed[0].ends_at == end
    now = CLOCK + dt.timedelta(minutes=30)
    ended = await store.end_maintenance(one.id, now)
    assert (ended.ends_at, ended.ended_early_at) == (now, now)
    # Not started yet: it ends before it starts, covering nothing.
    never = await store.end_maintenance(every.id, now)
    assert never.starts_at == never.ends_at == now
    assert await store.maintenance_windows(ending_after=now) == []
    assert len(await store.maintenance_windows()) == 2
    with pytest.raises(ValueError, match="already ended"):
        await store.end_maintenance(one.id, now)
    with pytest.raises(LookupError, match="#999 not found"):
        await store.end_maintenance(999, now)
    with pytest.raises(ValueError, match="end must be after start"):
        await store.add_maintenance(None, end, CLOCK, "")


async def test_held_rows_replace_the_outbox_and_the_finish_writes_one_summary(
    store: Store, backend: Backend
) -> None:
    """Held: no outbox rows; the finish writes the ended event and one message per channel
    with it and the events still true, and deletes the held rows, in one go."""
    started = await store.start_maintenance(
        [
            Event(
                EventType.MAINTENANCE_STARTED,
                Severity.INFO,
                "r",
                CLOCK,
                "m",
                details={"window": "api/1"},
            )
        ]
    )
    assert [e.type for e in started] == [EventType.MAINTENANCE_STARTED]
    # Recording it again (a second tick) writes nothing.
    assert await store.start_maintenance(started) == []
    assert await store.maintenance_open() == {"r": "api/1"}
    applied = await store.apply(
        scan_of("r", T0),
        TargetState(name="r"),
        [event("r", EventType.PORT_OPENED, 80), event("r", EventType.PORT_OPENED, 81)],
        [],
        ["chat", "pager"],
        hold=True,
    )
    assert await store.outbox_pending() == 0
    held = await store.held_notifications("r")
    assert [(h.channel, h.event.id) for h in held] == [
        ("chat", applied.event_ids[0]),
        ("pager", applied.event_ids[0]),
        ("chat", applied.event_ids[1]),
        ("pager", applied.event_ids[1]),
    ]
    # Held events survive a prune that would take delivered ones.
    await store.prune(CLOCK + dt.timedelta(days=1))
    assert len(await store.held_notifications("r")) == 4
    ended = Event(EventType.MAINTENANCE_ENDED, Severity.INFO, "r", CLOCK, "maintenance ended")
    saved = await store.finish_maintenance(
        ended, [h.id for h in held], {"chat": [applied.event_ids[0]], "pager": []}
    )
    assert saved.id is not None
    got = await backend.run("SELECT channel, event_id, group_key FROM outbox ORDER BY id")
    group = f"maintenance/r/{saved.id}"
    assert got == [
        ("chat", applied.event_ids[0], group),
        ("chat", saved.id, group),
        ("pager", saved.id, group),
    ]
    assert await store.held_notifications("r") == []
    assert await store.maintenance_open() == {}


async def test_targets_with_held_rows_but_no_record_still_need_an_end(store: Store) -> None:
    """Held rows of a target not recorded in maintenance (its window vanished) are named."""
    await store.apply(
        scan_of("q", T0),
        TargetState(name="q"),
        [event("q", EventType.PORT_OPENED, 80)],
        [],
        ["c"],
        hold=True,
    )
    assert await store.maintenance_open() == {"q": None}


async def test_no_reminders_while_the_target_is_in_maintenance(store: Store) -> None:
    """A critical open finding is not reminded of while its target is in maintenance; once
    the maintenance is finished, reminders are queued again."""
    opened = finding("r", 8080, severity=Severity.CRITICAL, opened_at=T0)
    state = TargetState(name="r", findings={8080: opened})
    await store.apply(
        scan_of("r", T0), state, [event("r", EventType.FINDING_OPENED, 8080)], [opened], []
    )
    start = Event(
        EventType.MAINTENANCE_STARTED, Severity.INFO, "r", T0, "m", details={"window": "api/1"}
    )
    await store.start_maintenance([start])
    rules = [ReminderRule("chat", dt.timedelta(minutes=1), 3)]
    later = CLOCK + dt.timedelta(hours=1)
    assert await store.enqueue_reminders(rules, later) == {}
    ended = Event(EventType.MAINTENANCE_ENDED, Severity.INFO, "r", CLOCK, "maintenance ended")
    await store.finish_maintenance(ended, [], {})
    assert await store.enqueue_reminders(rules, later) == {"chat": 1}
