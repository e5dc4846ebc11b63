"""Maintenance windows' queries: ad-hoc windows, held notifications, targets in maintenance.

Functions run inside a transaction `exposuremon.store.Store` opened; nothing here commits.
What is true during a window (docs/architecture.md "Maintenance windows"): a scan's events
are saved as always, and the rows the outbox would have got go to `maintenance_held`
instead (`hold`). When the target's window ends, `finish` writes its `maintenance_ended`
event and the summary message's outbox rows, and deletes the held rows it summed up, in one
transaction: a crash before it leaves them held, after it they are in the outbox.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from exposuremon.model import DeliveryStatus, Event, TargetState
from exposuremon.store import queries, schema
from exposuremon.store.queries import Route, chunks


@dataclasses.dataclass(frozen=True, slots=True)
class AdHocWindow:
    """A maintenance window added by the API or the CLI (kept in the store)."""

    id: int
    targets: tuple[str, ...] | None  # None: every target
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str
    created_at: dt.datetime
    ended_early_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class HeldNotification:
    """One held row: an event that would have gone to `channel`."""

    id: int
    channel: str
    event: Event


def window_from_row(row: schema.Row) -> AdHocWindow:
    """An `AdHocWindow` from its row."""
    targets = row["targets"]
    return AdHocWindow(
        id=row["id"],
        targets=None if targets is None else tuple(str(t) for t in targets),
        starts_at=schema.from_micros(row["starts_at"]),
        ends_at=schema.from_micros(row["ends_at"]),
        reason=row["reason"],
        created_at=schema.from_micros(row["created_at"]),
        ended_early_at=schema.opt_datetime(row["ended_early_at"]),
    )


async def add_window(
    conn: AsyncConnection,
    targets: Sequence[str] | None,
    start: dt.datetime,
    end: dt.datetime,
    reason: str,
    now: dt.datetime,
) -> AdHocWindow:
    """Insert an ad-hoc window; returns it with its id."""
    w = schema.maintenance_windows
    values = {
        "targets": None if targets is None else list(targets),
        "starts_at": schema.to_micros(start, "start"),
        "ends_at": schema.to_micros(end, "end"),
        "reason": reason,
        "created_at": schema.to_micros(now, "now"),
        "ended_early_at": None,
    }
    new_id = (await conn.execute(sa.insert(w).values(values).returning(w.c.id))).scalar_one()
    return window_from_row({**values, "id": int(new_id)})


async def windows(conn: AsyncConnection, ending_after: dt.datetime | None) -> list[AdHocWindow]:
    """Ad-hoc windows that end after `ending_after` (every one for None), by start."""
    w = schema.maintenance_windows
    query = sa.select(w).order_by(w.c.starts_at, w.c.id)
    if ending_after is not None:
        query = query.where(w.c.ends_at > schema.to_micros(ending_after, "ending_after"))
    return [window_from_row(r._mapping) for r in await conn.execute(query)]


async def end_window(conn: AsyncConnection, window_id: int, now: dt.datetime) -> AdHocWindow:
    """End an ad-hoc window at `now`; LookupError if unknown, ValueError if already over."""
    w = schema.maintenance_windows
    row = (await conn.execute(sa.select(w).where(w.c.id == window_id))).first()
    if row is None:
        raise LookupError(f"maintenance window #{window_id} not found")
    window = window_from_row(row._mapping)
    if window.ends_at <= now:
        raise ValueError(f"maintenance window #{window_id} already ended at {window.ends_at}")
    at = schema.to_micros(now, "now")
    # One not started yet ends before it starts: it never covers anything.
    values = {"ends_at": at, "ended_early_at": at}
    if window.starts_at > now:
        values["starts_at"] = at
    await conn.execute(sa.update(w).where(w.c.id == window_id).values(values))
    return window_from_row({**row._mapping, **values})


async def hold(conn: AsyncConnection, events: Iterable[Event], route: Route, now: int) -> None:
    """Hold the rows the outbox would have got (one per saved event and channel)."""
    rows = [
        {"target": e.target, "channel": channel, "event_id": e.id, "held_at": now}
        for e in events
        for channel in dict.fromkeys(route(e))
    ]
    if rows:
        await conn.execute(sa.insert(schema.maintenance_held), rows)


async def open_targets(conn: AsyncConnection) -> dict[str, str | None]:
    """Targets recorded as in maintenance (-> window key), and those with held rows (-> None
    unless recorded): every target whose maintenance has an end still to process."""
    a, h = schema.maintenance_active, schema.maintenance_held
    out: dict[str, str | None] = {
        str(t): None for t in (await conn.execute(sa.select(h.c.target).distinct())).scalars()
    }
    out.update({str(t): str(w) for t, w in await conn.execute(sa.select(a.c.target, a.c.window))})
    return out


async def start(conn: AsyncConnection, events: Sequence[Event], now: int) -> list[Event]:
    """Record targets entering maintenance: their `maintenance_started` events (one per
    target, `details.window` the window's key) and rows in `maintenance_active`; targets
    already recorded are left alone. Returns the events saved."""
    a = schema.maintenance_active
    names = [e.target for e in events]
    known: set[str] = set()
    for chunk in chunks(names):
        known.update(
            str(t)
            for t in (
                await conn.execute(sa.select(a.c.target).where(a.c.target.in_(chunk)))
            ).scalars()
        )
    fresh = [e for e in events if e.target not in known]
    if not fresh:
        return []
    for e in fresh:
        await queries.ensure_target(conn, TargetState(name=_target_of(e)))
    await conn.execute(
        sa.insert(a),
        [{"target": e.target, "window": str(e.details.get("window")), "since": now} for e in fresh],
    )
    return await _insert_events(conn, fresh)


async def held(conn: AsyncConnection, target: str) -> list[HeldNotification]:
    """The target's held rows with their events, oldest first."""
    h, e = schema.maintenance_held, schema.events
    query = (
        sa.select(h.c.id.label("held_id"), h.c.channel, e)
        .join(e, e.c.id == h.c.event_id)
        .where(h.c.target == target)
        .order_by(h.c.id)
    )
    return [
        HeldNotification(r.held_id, r.channel, schema.event_from_row(r._mapping))
        for r in await conn.execute(query)
    ]


async def finish(
    conn: AsyncConnection,
    ended: Event,
    held_ids: Sequence[int],
    send: Mapping[str, Sequence[int]],
    now: int,
) -> Event:
    """End a target's maintenance: save `ended`, queue the summary message (per channel of
    `send`: `ended` and the events named, one outbox group), delete the held rows summed up
    and the target's `maintenance_active` row. Returns `ended` saved."""
    name = _target_of(ended)
    await queries.ensure_target(conn, TargetState(name=name))
    (saved,) = await _insert_events(conn, [ended])
    group = f"maintenance/{name}/{saved.id}"
    rows = [
        {
            "channel": channel,
            "event_id": event_id,
            "group_key": group,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "dedup_key": f"{channel}/{event_id}",
            "kind": "event",
        }
        for channel, ids in send.items()
        for event_id in (*ids, saved.id)
    ]
    if rows:
        await conn.execute(sa.insert(schema.outbox), rows)
    h = schema.maintenance_held
    for chunk in chunks(list(held_ids)):
        await conn.execute(sa.delete(h).where(h.c.id.in_(chunk)))
    a = schema.maintenance_active
    await conn.execute(sa.delete(a).where(a.c.target == name))
    return saved


async def _insert_events(conn: AsyncConnection, events: Sequence[Event]) -> list[Event]:
    rows = [schema.event_row(e, None, None) for e in events]
    stmt = sa.insert(schema.events).returning(schema.events.c.id, sort_by_parameter_order=True)
    ids = (await conn.execute(stmt, rows)).scalars().all()
    return [
        dataclasses.replace(e, id=i, details=row["details"])
        for e, row, i in zip(events, rows, ids, strict=True)
    ]


def _target_of(event: Event) -> str:
    """A maintenance event's target (only a vantage's events have none)."""
    if event.target is None:
        raise ValueError(f"{event.type.value}: a maintenance event needs a target")
    return event.target
