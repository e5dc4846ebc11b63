"""The notification outbox's queries: listing deliveries, taking the next message, settling it.

Functions run inside a transaction `exposuremon.store.Store` opened; nothing here commits.
A *message* is every pending row of one channel with one `group_key`: the events of one
target from one scan (group key = scan id), or one target's reminders from one reminder pass
(group key `reminder/<target>/<micros>`). All rows of a message are settled together, so a
message is delivered whole or not at all, and its delivery id `<channel>/<group_key>` is the
same on every attempt, also after a crash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from exposuremon.model import DeliveryStatus, Event, EventType, Severity
from exposuremon.store import schema
from exposuremon.store.queries import chunks

KINDS = ("event", "reminder")
_OPENING = (EventType.FINDING_OPENED.value, EventType.FINDING_REOPENED.value)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: one event (or reminder of a finding) for one channel."""

    id: int
    channel: str
    event_id: int
    group_key: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    dedup_key: str | None
    target: str = ""
    kind: str = "event"  # "event" | "reminder"
    reminder: int | None = None  # for reminders: 1 for the first of this finding and channel


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: the pending rows of one (channel, group) with their events."""

    channel: str
    group_key: str
    target: str
    address: str | None
    rows: tuple[Delivery, ...]
    events: tuple[Event, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        """The outbox row ids, settled together."""
        return tuple(r.id for r in self.rows)

    @property
    def delivery_id(self) -> str:
        """Stable across attempts and restarts: receivers deduplicate on it."""
        return f"{self.channel}/{self.group_key}"

    @property
    def is_reminder(self) -> bool:
        """Whether this is a reminder of open findings rather than new events."""
        return any(r.kind == "reminder" for r in self.rows)

    @property
    def reminder_count(self) -> int:
        """The highest reminder number among the rows (0 for events)."""
        return max((r.reminder or 0 for r in self.rows), default=0)

    @property
    def created_at(self) -> dt.datetime:
        """When the oldest row was written: the retry horizon counts from here."""
        return min(r.created_at for r in self.rows)

    @property
    def attempts(self) -> int:
        """Attempts made so far."""
        return max(r.attempts for r in self.rows)


@dataclasses.dataclass(frozen=True, slots=True)
class ReminderRule:
    """One channel's reminder settings: critical open findings of its targets."""

    channel: str
    every: dt.timedelta
    max_count: int
    targets: tuple[str, ...] | None = None  # None: every target


def check_status(status: str | None) -> DeliveryStatus | None:
    """`status` as a delivery status (or None); ValueError naming the field."""
    if status is None:
        return None
    try:
        return DeliveryStatus(status)
    except ValueError:
        known = ", ".join(DeliveryStatus)
        raise ValueError(f"status: {status!r} is not one of {known}") from None


def deliveries_query(status: str | None, channel: str | None) -> sa.Select[Any]:
    """Outbox rows with their event's target, filtered; the caller pages by `outbox.id`."""
    o, e = schema.outbox, schema.events
    query = sa.select(o, e.c.target).join(e, e.c.id == o.c.event_id)
    if check_status(status) is not None:
        query = query.where(o.c.status == status)
    if channel is not None:
        query = query.where(o.c.channel == channel)
    return query


def delivery_from_row(row: Mapping[str, Any]) -> Delivery:
    """A `Delivery` from a row of `deliveries_query`."""
    return Delivery(
        id=row["id"],
        channel=row["channel"],
        event_id=row["event_id"],
        group_key=row["group_key"],
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=schema.from_micros(row["next_attempt_at"]),
        last_error=row["last_error"],
        created_at=schema.from_micros(row["created_at"]),
        sent_at=schema.opt_datetime(row["sent_at"]),
        dedup_key=row["dedup_key"],
        target=row["target"],
        kind=row["kind"],
        reminder=row["reminder"],
    )


def _pending(channel: str) -> sa.ColumnElement[bool]:
    o = schema.outbox
    return sa.and_(o.c.status == DeliveryStatus.PENDING, o.c.channel == channel)


async def retry_now(conn: AsyncConnection, now: int) -> int:
    """Make every pending row waiting for a retry due at `now`; how many were."""
    o = schema.outbox
    stmt = (
        sa.update(o)
        .where(o.c.status == DeliveryStatus.PENDING, o.c.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    return (await conn.execute(stmt)).rowcount


async def next_due(conn: AsyncConnection, channel: str) -> dt.datetime | None:
    """When the channel's earliest pending row is due (None: nothing pending)."""
    o = schema.outbox
    query = sa.select(sa.func.min(o.c.next_attempt_at)).where(_pending(channel))
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else schema.from_micros(value)


async def next_message(conn: AsyncConnection, channel: str, now: int) -> Outgoing | None:
    """The channel's earliest-due message at `now`, whole; None when none is due."""
    o, e = schema.outbox, schema.events
    head = (
        sa.select(o.c.group_key)
        .where(_pending(channel), o.c.next_attempt_at <= now)
        # Earliest due first: a message waiting for its retry does not hold back newer ones
        # (a receiver refusing one payload must not delay a critical alert for a day).
        .order_by(o.c.next_attempt_at, o.c.id)
        .limit(1)
    )
    group = (await conn.execute(head)).scalar_one_or_none()
    if group is None:
        return None
    query = deliveries_query(None, None).where(_pending(channel), o.c.group_key == group)
    rows = [delivery_from_row(r._mapping) for r in await conn.execute(query.order_by(o.c.id))]
    event_ids = sorted({r.event_id for r in rows})
    event_rows: list[schema.Row] = []
    for chunk in chunks(event_ids):
        event_rows.extend(
            r._mapping for r in await conn.execute(sa.select(e).where(e.c.id.in_(chunk)))
        )
    event_rows.sort(key=lambda r: r["id"])
    events = tuple(schema.event_from_row(r) for r in event_rows)
    target = rows[0].target
    scan_ids = [r["scan_id"] for r in event_rows if r["scan_id"] is not None]
    return Outgoing(
        channel=channel,
        group_key=group,
        target=target,
        address=await _address(conn, target, None if group.startswith("reminder/") else scan_ids),
        rows=tuple(rows),
        events=events,
    )


async def _address(conn: AsyncConnection, target: str, scan_ids: list[int] | None) -> str | None:
    """The address the scan saw (the target's current one for reminders or pruned scans)."""
    if scan_ids:
        query = sa.select(schema.scans.c.address).where(schema.scans.c.id == scan_ids[0])
        found = (await conn.execute(query)).scalar_one_or_none()
        if found:
            return str(found)
    query = sa.select(schema.targets.c.address).where(schema.targets.c.name == target)
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else str(value)


async def settle(
    conn: AsyncConnection,
    ids: Sequence[int],
    status: str,
    now: int,
    next_attempt_at: int | None = None,
    error: str | None = None,
) -> int:
    """Record one attempt of a message: sent, failed (pending again) or dead; rows settled."""
    o = schema.outbox
    values: dict[str, Any] = {"attempts": o.c.attempts + 1, "last_error": error}
    settled = check_status(status)
    if settled is DeliveryStatus.SENT:
        values.update(status=settled.value, sent_at=now)
    elif settled is DeliveryStatus.DEAD:
        values.update(status=settled.value)
    else:
        values.update(next_attempt_at=now if next_attempt_at is None else next_attempt_at)
    done = 0
    # Only pending rows: a row settled once (by an earlier run) is never changed again.
    for chunk in chunks(list(ids)):
        result = await conn.execute(
            sa.update(o)
            .where(o.c.id.in_(chunk), o.c.status == DeliveryStatus.PENDING)
            .values(values)
        )
        done += result.rowcount
    return done


async def retire(conn: AsyncConnection, active: Sequence[str], error: str) -> dict[str, int]:
    """Mark pending rows of channels not in `active` dead; count them per channel."""
    o = schema.outbox
    gone = sa.and_(o.c.status == DeliveryStatus.PENDING, o.c.channel.not_in(list(active)))
    query = sa.select(o.c.channel, sa.func.count()).where(gone).group_by(o.c.channel)
    counts = {str(ch): int(n) for ch, n in await conn.execute(query)}
    if counts:
        await conn.execute(
            sa.update(o).where(gone).values(status=DeliveryStatus.DEAD.value, last_error=error)
        )
    return counts


async def enqueue_reminders(
    conn: AsyncConnection, rules: Sequence[ReminderRule], now: int
) -> dict[str, int]:
    """Queue the reminders due at `now`, one message per channel and target; count per channel.

    A reminder is due for a critical open finding when `every` has passed since it opened or
    since its last reminder on that channel, and fewer than `max_count` were sent. A finding
    seen acknowledged gets a fresh count, so one whose acknowledgement expires is announced
    again at once.
    """
    f, r = schema.findings, schema.reminders
    # Acked findings: forget their reminders (only rows that need it, to write little).
    acked = sa.select(f.c.id).where(f.c.state == "acked")
    await conn.execute(
        sa.update(r)
        .where(r.c.finding_id.in_(acked), sa.or_(r.c.count > 0, r.c.last_at.is_not(None)))
        .values(count=0, last_at=None)
    )
    counts: dict[str, int] = {}
    for rule in rules:
        every = rule.every // dt.timedelta(microseconds=1)
        mine = r.c.channel == rule.channel
        last = sa.func.coalesce(r.c.last_at, 0)
        base = sa.case((f.c.opened_at > last, f.c.opened_at), else_=last)
        query = (
            sa.select(f.c.id, f.c.target, sa.func.coalesce(r.c.count, 0).label("sent"))
            .select_from(f.outerjoin(r, sa.and_(r.c.finding_id == f.c.id, mine)))
            .where(
                f.c.state == "open",
                f.c.severity == Severity.CRITICAL.label,
                sa.func.coalesce(r.c.count, 0) < rule.max_count,
                base + every <= now,
            )
            .order_by(f.c.id)
        )
        if rule.targets is not None:
            query = query.where(f.c.target.in_(list(rule.targets)))
        due = (await conn.execute(query)).all()
        if not due:
            continue
        events = await _opening_events([row.id for row in due], conn)
        rows, upserts = [], []
        for row in due:
            event_id = events.get(row.id)
            if event_id is None:  # its events were pruned: nothing left to point at
                continue
            n = row.sent + 1
            rows.append(
                {
                    "channel": rule.channel,
                    "event_id": event_id,
                    "group_key": f"reminder/{row.target}/{now}",
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "dedup_key": f"{rule.channel}/reminder/{row.id}/{now}",
                    "kind": "reminder",
                    "reminder": n,
                }
            )
            upserts.append({"finding_id": row.id, "channel": rule.channel, "n": n})
        if rows:
            await conn.execute(sa.insert(schema.outbox), rows)
            await _save_reminders(conn, upserts, now)
            counts[rule.channel] = len(rows)
    return counts


async def _opening_events(finding_ids: Sequence[int], conn: AsyncConnection) -> dict[int, int]:
    """Per finding, the newest event that opened or reopened it (else its newest event)."""
    e = schema.events
    out: dict[int, int] = {}
    for chunk in chunks(list(finding_ids)):
        query = (
            sa.select(e.c.finding_id, e.c.type, sa.func.max(e.c.id))
            .where(e.c.finding_id.in_(chunk))
            .group_by(e.c.finding_id, e.c.type)
        )
        best: dict[int, tuple[bool, int]] = {}
        for fid, kind, eid in await conn.execute(query):
            rank = (kind in _OPENING, int(eid))
            if fid not in best or rank > best[fid]:
                best[fid] = rank
        out.update({fid: eid for fid, (_, eid) in best.items()})
    return out


async def _save_reminders(conn: AsyncConnection, upserts: list[dict[str, Any]], now: int) -> None:
    r = schema.reminders
    for item in upserts:
        key = sa.and_(r.c.finding_id == item["finding_id"], r.c.channel == item["channel"])
        result = await conn.execute(sa.update(r).where(key).values(count=item["n"], last_at=now))
        if result.rowcount == 0:
            await conn.execute(
                sa.insert(r).values(
                    finding_id=item["finding_id"],
                    channel=item["channel"],
                    count=item["n"],
                    last_at=now,
                )
            )
