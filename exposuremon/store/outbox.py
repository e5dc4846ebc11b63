"""The notification outbox's queries: listing deliveries, taking the next message, settling it.

Functions run inside a transaction `exposuremon.store.Store` opened; nothing here commits.
A *message* is every pending row of one channel with one `group_key`: the events of one
target from one scan (group key = scan id), or one target's reminders from one reminder pass
(group key `reminder/<target>/<micros>`). All rows of a message are settled together, so a
message is delivered whole or not at all, and its delivery id `<channel>/<group_key>` is the
same on every attempt, also after a crash.

Several processes (the nodes of a fleet) may deliver one outbox. A node takes a message under
a row lease (`next_message` with a node name): its rows get the node, a fresh claim token and
an end (`claimed_until`, microseconds by the database's clock). While the claim lasts no other
node sees the message; once it ran out (the node died or stalled mid-flight) any node may take
it and sends it with the same delivery id. A settle that shows the claim's token writes only
while the rows still carry it. On PostgreSQL the rows are taken with `FOR UPDATE SKIP LOCKED`;
SQLite's single writer serialises the takers anyway. The same transaction books the send in
the channel's rate window (`rate_windows`, locked first), so every node paces by one window.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
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


# A rate window's booking (`notify.ratelimit.Window.reserve` in microseconds): the booked send
# times (oldest first) and the database's now -> when this send may go, and the times to keep.
Pace = Callable[[Sequence[float], float], tuple[float, list[float]]]
# Seconds a claim lasts beyond the rate window's wait, by default (the notifier passes its own,
# longer than a delivery attempt may take: see `notify.notifier.Tuning.claim`).
CLAIM_FOR = 60.0
# Candidate messages looked at per take: a message locked or taken by another node meanwhile
# is passed over for the next one.
_CANDIDATES = 8


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """The lease under which one node delivers one message."""

    node: str
    token: str  # this claim's own: a later claim of the same rows (by any node) has another
    until: int  # when it ends: microseconds by the database's clock
    wait: float = 0.0  # seconds from the claim until the rate window lets the message go


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: the pending rows of one (channel, group) with their events."""

    channel: str
    group_key: str
    target: str
    address: str | None
    rows: tuple[Delivery, ...]
    events: tuple[Event, ...]
    claim: Claim | None = None  # None: only looked at (`next_message` without a node)

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
        target=row["target"] or "",  # "": a vantage's event (no target)
        kind=row["kind"],
        reminder=row["reminder"],
    )


def _pending(channel: str) -> sa.ColumnElement[bool]:
    o = schema.outbox
    return sa.and_(o.c.status == DeliveryStatus.PENDING, o.c.channel == channel)


async def retry_now(conn: AsyncConnection, now: int) -> int:
    """Make every pending row waiting for a retry due at `now`, and end every channel's pause;
    how many rows were waiting."""
    o = schema.outbox
    stmt = (
        sa.update(o)
        .where(o.c.status == DeliveryStatus.PENDING, o.c.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    waiting = (await conn.execute(stmt)).rowcount
    # Pauses receivers asked for end too: the operator says the channel is fixed.
    w = schema.rate_windows
    await conn.execute(sa.update(w).where(w.c.paused_until.is_not(None)).values(paused_until=None))
    return waiting


def db_now(conn: AsyncConnection) -> sa.ColumnElement[int]:
    """The database's clock in microseconds since the epoch, as a SQL expression.

    PostgreSQL's `clock_timestamp()` (the server's clock, the same for every node); SQLite's
    `julianday('now')` (milliseconds), the clock of the one host every process of a SQLite
    store runs on.
    """
    if conn.dialect.name == "postgresql":
        epoch = sa.func.extract("epoch", sa.func.clock_timestamp())
        return sa.cast(epoch * 1_000_000, sa.BigInteger)
    return sa.cast((sa.func.julianday("now") - 2440587.5) * 86_400_000_000.0, sa.BigInteger)


async def read_db_now(conn: AsyncConnection) -> int:
    """The database's clock now, in microseconds."""
    return int((await conn.execute(sa.select(db_now(conn)))).scalar_one())


def _free(db: int) -> sa.ColumnElement[bool]:
    """Rows no live claim holds: never claimed, settled claims, or claims that ran out."""
    o = schema.outbox
    return sa.or_(o.c.claimed_until.is_(None), o.c.claimed_until <= db)


def _locking(conn: AsyncConnection, query: sa.Select[Any], *, skip: bool) -> sa.Select[Any]:
    """`query` FOR UPDATE (SKIP LOCKED when `skip`) on PostgreSQL; SQLite has no row locks."""
    if conn.dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=skip)


async def next_due(conn: AsyncConnection, channel: str, now: int, db: int) -> int | None:
    """Microseconds from `now` until the channel's next message can be taken (None: nothing
    pending): its retry time, or the end of another node's claim on it (by the database's
    clock `db`). 0 or less: due now but locked by another transaction for the moment."""
    o = schema.outbox
    free = (
        await conn.execute(
            sa.select(sa.func.min(o.c.next_attempt_at)).where(_pending(channel), _free(db))
        )
    ).scalar_one_or_none()
    # A claimed row was due when it was claimed: it is next due when its claim ends.
    held = (
        await conn.execute(
            sa.select(sa.func.min(o.c.claimed_until)).where(_pending(channel), sa.not_(_free(db)))
        )
    ).scalar_one_or_none()
    waits = [int(free) - now] if free is not None else []
    waits += [int(held) - db] if held is not None else []
    return min(waits) if waits else None


async def next_message(
    conn: AsyncConnection,
    channel: str,
    now: int,
    claim: Claim | None = None,
    claim_for: int = 0,
    pace: Pace | None = None,
) -> tuple[Outgoing | None, int | None]:
    """The channel's earliest-due message at `now` that no live claim holds, whole; and when
    none is, microseconds until one may be (see `next_due`; None: nothing pending).

    With a `claim` (node and token) the message is taken: its rows are claimed until the
    database's now plus the rate window's wait (`pace`, booked here) plus `claim_for`
    microseconds, and the returned message carries the claim with `until` and `wait` set.
    Without one it is only looked at. The caller's transaction must be a write transaction.
    """
    o = schema.outbox
    window = await _lock_window(conn, channel) if claim is not None and pace else None
    db = await read_db_now(conn)
    ids: list[int] = []
    group: str | None = None
    for _ in range(_CANDIDATES):
        head = (
            sa.select(o.c.group_key)
            .where(_pending(channel), o.c.next_attempt_at <= now, _free(db))
            # Earliest due first: a message waiting for its retry does not hold back newer
            # ones (a receiver refusing one payload must not delay a critical alert for a day).
            .order_by(o.c.next_attempt_at, o.c.id)
            .limit(1)
        )
        # A message another node is taking or settling right now is passed over, not waited for.
        group = (
            await conn.execute(_locking(conn, head, skip=claim is not None))
        ).scalar_one_or_none()
        if group is None:
            break
        if claim is None:
            break  # only looking: no rows to lock
        # All rows of the message, locked in id order (settles lock in the same order).
        rows = _locking(
            conn,
            sa.select(o.c.id, o.c.claimed_until)
            .where(_pending(channel), o.c.group_key == group)
            .order_by(o.c.id),
            skip=False,
        )
        found = (await conn.execute(rows)).all()
        if found and all(until is None or until <= db for _, until in found):
            ids = [int(i) for i, _ in found]
            break
        group = None  # taken by another node while this one waited for its rows: next one
    if group is None or (claim is not None and not ids):
        return None, await next_due(conn, channel, now, db)
    taken: Claim | None = None
    if claim is not None:
        wait = 0
        if window is not None and pace is not None:
            sent, paused = window
            at, kept = pace(sent, float(max(db, paused or 0)))
            wait = max(0, math.ceil(at) - db)
            await conn.execute(
                sa.update(schema.rate_windows)
                .where(schema.rate_windows.c.channel == channel)
                .values(sent=[math.ceil(t) for t in kept])
            )
        taken = dataclasses.replace(claim, until=db + wait + claim_for, wait=wait / 1e6)
        for chunk in chunks(ids):
            await conn.execute(
                sa.update(o)
                .where(o.c.id.in_(chunk))
                .values(claimed_by=taken.node, claim=taken.token, claimed_until=taken.until)
            )
    return await _load_message(conn, channel, group, taken), None


async def _load_message(
    conn: AsyncConnection, channel: str, group: str, claim: Claim | None
) -> Outgoing:
    """The pending rows of one message with their events and the address scanned."""
    o, e = schema.outbox, schema.events
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
    target = rows[0].target  # None: a vantage's event, no target (and no address)
    scan_ids = [r["scan_id"] for r in event_rows if r["scan_id"] is not None]
    scans = None if group.startswith("reminder/") else scan_ids
    return Outgoing(
        channel=channel,
        group_key=group,
        target=target or "",
        address=None if target is None else await _address(conn, target, scans),
        rows=tuple(rows),
        events=events,
        claim=claim,
    )


async def _lock_window(conn: AsyncConnection, channel: str) -> tuple[list[float], int | None]:
    """The channel's rate window (booked sends, pause end), its row locked until commit;
    created empty when the channel has none yet. Every taker of the channel waits here, so
    bookings in one window are made one at a time across the fleet."""
    w = schema.rate_windows
    query = _locking(
        conn, sa.select(w.c.sent, w.c.paused_until).where(w.c.channel == channel), skip=False
    )
    row = (await conn.execute(query)).first()
    if row is None:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        await conn.execute(insert(w).values(channel=channel, sent=[]).on_conflict_do_nothing())
        row = (await conn.execute(query)).one()
    return [float(t) for t in row.sent or []], row.paused_until


async def channel_of(conn: AsyncConnection, row_id: int) -> str | None:
    """The channel of an outbox row (None: no such row)."""
    o = schema.outbox
    query = sa.select(o.c.channel).where(o.c.id == row_id)
    value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else str(value)


async def pause_window(conn: AsyncConnection, channel: str, seconds: float) -> int:
    """Hold every node's sends to `channel` for `seconds` from the database's now (a receiver's
    Retry-After); a longer pause already set is kept. Returns when the pause ends (µs)."""
    _, paused = await _lock_window(conn, channel)
    until = max(await read_db_now(conn) + math.ceil(seconds * 1e6), paused or 0)
    w = schema.rate_windows
    await conn.execute(sa.update(w).where(w.c.channel == channel).values(paused_until=until))
    return until


async def release(
    conn: AsyncConnection, *, token: str | None = None, node: str | None = None
) -> int:
    """End the claims with `token` (one message), or every claim of `node` (a node starting
    again: its earlier process is gone), on rows still pending; rows released."""
    o = schema.outbox
    if (token is None) == (node is None):
        raise ValueError("release: give exactly one of token and node")
    held = o.c.claim == token if token is not None else o.c.claimed_by == node
    stmt = (
        sa.update(o)
        .where(held, o.c.status == DeliveryStatus.PENDING)
        .values(claimed_by=None, claim=None, claimed_until=None)
    )
    return (await conn.execute(stmt)).rowcount


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
    claim: str | None = None,
) -> int:
    """Record one attempt of a message: sent, failed (pending again) or dead; rows settled.

    With `claim` (the token `next_message` gave) only rows still under that claim change: when
    another node took the message over after the claim ran out, nothing is written (0). The
    claim ends with the settle either way: a failed message is free for any node at its retry.
    """
    o = schema.outbox
    values: dict[str, Any] = {
        "attempts": o.c.attempts + 1,
        "last_error": error,
        "claimed_by": None,
        "claim": None,
        "claimed_until": None,
    }
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
        where = [o.c.id.in_(chunk), o.c.status == DeliveryStatus.PENDING]
        if claim is not None:
            where.append(o.c.claim == claim)
        # Rows locked in id order first, as a taker locks them: no deadlock between the two.
        await conn.execute(
            _locking(conn, sa.select(o.c.id).where(*where).order_by(o.c.id), skip=False)
        )
        result = await conn.execute(sa.update(o).where(*where).values(values))
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
    since its last reminder on that channel, and fewer than `max_count` were sent; not while
    its target is in a maintenance window. A finding
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
        # A target in a maintenance window is not reminded of: its notifications are held.
        query = query.where(f.c.target.not_in(sa.select(schema.maintenance_active.c.target)))
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
