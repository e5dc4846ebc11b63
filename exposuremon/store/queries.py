"""The store's transaction bodies: applying one scan's outcome, and loading target states.

Each function runs inside a transaction the caller (`exposuremon.store.Store`) opened; nothing
here commits. SQLAlchemy Core only, no dialect-specific SQL: upserts are read-then-write, which
is correct because the store has one writer.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from exposuremon.model import (
    Event,
    Finding,
    FindingState,
    PortRecord,
    Severity,
    TargetState,
    TargetStatus,
)
from exposuremon.store import schema

_CHUNK = 500  # bound on IN-list sizes (SQLite caps bound parameters per statement)


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """`items` in slices small enough for one IN list."""
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def check_outcome(state: TargetState, events: Sequence[Event], findings: Sequence[Finding]) -> None:
    """Reject an outcome whose parts do not belong together, naming the part."""
    name = state.name
    for i, event in enumerate(events):
        if event.target != name:
            raise ValueError(f"events[{i}].target {event.target!r} differs from {name!r}")
    for i, f in enumerate(findings):
        if f.target != name:
            raise ValueError(f"findings[{i}].target {f.target!r} differs from {name!r}")
    groups = (("findings", state.findings, True), ("resolved", state.resolved, False))
    for label, group, active in groups:
        for port, f in group.items():
            where = f"outcome_state.{label}[{port}]"
            if f.port != port or f.target != name:
                raise ValueError(f"{where}: holds the finding of {f.target}/{f.port}")
            if f.is_active != active:
                raise ValueError(f"{where}: state {f.state} does not belong in {label}")
    for port, rec in state.ports.items():
        if rec.port != port:
            raise ValueError(f"outcome_state.ports[{port}]: holds the record of port {rec.port}")


async def ensure_target(conn: AsyncConnection, state: TargetState) -> None:
    """Insert the target's row if it is new (findings and scans reference it)."""
    t = schema.targets
    exists = (await conn.execute(sa.select(t.c.name).where(t.c.name == state.name))).first()
    if exists is None:
        row = schema.target_row(dataclasses.replace(state, findings={}, resolved={}))
        await conn.execute(sa.insert(t).values(row))


async def update_target(conn: AsyncConnection, state: TargetState) -> None:
    """Write the target's row from a state whose findings all have ids."""
    t = schema.targets
    row = schema.target_row(state)
    del row["name"]
    await conn.execute(sa.update(t).where(t.c.name == state.name).values(row))


async def touch_times(conn: AsyncConnection, states: Sequence[TargetState], seq: int) -> None:
    """Advance targets' scan times and their ports' last-seen times; never move one back.

    Two statements for the whole batch (executemany): a minute of quiet scans of 10,000
    targets is one flush, and one statement per target held the writer for seconds.
    `seq` (from `next_stamp` of `targets.times_seq`) stamps the targets whose times advance.
    """
    t, p = schema.targets, schema.port_state
    targets, ports = [], []
    for state in states:
        row = schema.target_row(state)
        targets.append(
            {
                "k_name": state.name,
                "v_scan": row["last_scan"],
                "v_observed": row["last_observed"],
                "v_answered": row["answered_at"],
                "v_silent": row["silent_until"],
            }
        )
        for port, rec in state.ports.items():
            prow = schema.port_row(state.name, rec)
            ports.append(
                {
                    "k_target": state.name,
                    "k_port": port,
                    "v_seen": prow["last_seen"],
                    "v_open": prow["last_open"],
                    "v_observed": prow["observed_at"],
                }
            )
    if targets:
        observed: sa.BindParameter[int] = sa.bindparam("v_observed")
        stmt = (
            sa.update(t)
            .where(
                t.c.name == sa.bindparam("k_name"),
                sa.or_(t.c.last_observed.is_(None), t.c.last_observed < observed),
            )
            .values(
                last_scan=sa.bindparam("v_scan", type_=t.c.last_scan.type),
                last_observed=observed,
                answered_at=sa.bindparam("v_answered"),
                silent_until=sa.bindparam("v_silent"),
                times_seq=seq,
            )
        )
        await conn.execute(stmt, targets)
    if ports:
        stmt = (
            sa.update(p)
            .where(
                p.c.target == sa.bindparam("k_target"),
                p.c.port == sa.bindparam("k_port"),
                p.c.last_seen < sa.bindparam("v_seen"),
            )
            .values(
                last_seen=sa.bindparam("v_seen"),
                last_open=sa.bindparam("v_open"),
                observed_at=sa.bindparam("v_observed"),
            )
        )
        await conn.execute(stmt, ports)


async def sync_ports(conn: AsyncConnection, name: str, records: Mapping[int, PortRecord]) -> None:
    """Make the target's port_state rows equal `records`, writing only what changed."""
    t = schema.port_state
    rows = {port: schema.port_row(name, rec) for port, rec in records.items()}
    # The columns `port_row` writes (not the vantage, which every row keeps), so that an
    # unchanged port compares equal and is not rewritten.
    columns = [t.c[key] for key in schema.port_row_columns()]
    query = sa.select(*columns).where(t.c.target == name)
    stored = {r.port: dict(r._mapping) for r in await conn.execute(query)}
    inserts = [row for port, row in rows.items() if port not in stored]
    updates = [
        {**row, "k_target": name, "k_port": port}
        for port, row in rows.items()
        if port in stored and stored[port] != row
    ]
    gone = sorted(port for port in stored if port not in rows)
    if inserts:
        await conn.execute(sa.insert(t), inserts)
    if updates:
        stmt = sa.update(t).where(
            t.c.target == sa.bindparam("k_target"), t.c.port == sa.bindparam("k_port")
        )
        await conn.execute(stmt, updates)
    for chunk in chunks(gone):
        await conn.execute(sa.delete(t).where(t.c.target == name, t.c.port.in_(chunk)))


def _findings_to_save(state: TargetState, findings: Sequence[Finding]) -> list[Finding]:
    """The changed findings plus those in the outcome state, each once."""
    by_id: dict[int, Finding] = {}
    new: list[Finding] = []
    for f in [*findings, *state.findings.values(), *state.resolved.values()]:
        if f.id is None:
            if f not in new:
                new.append(f)
        elif by_id.setdefault(f.id, f) != f:
            raise ValueError(f"finding #{f.id}: findings and outcome_state hold different versions")
    return [*by_id.values(), *new]


async def save_findings(
    conn: AsyncConnection, state: TargetState, findings: Sequence[Finding]
) -> tuple[TargetState, dict[int, int]]:
    """Insert new findings and update changed ones.

    Returns the state with every finding's id filled in and, per port, the id of the finding
    this apply inserted or changed (an active one wins over a resolved one).
    """
    t = schema.findings
    todo = _findings_to_save(state, findings)
    stored: dict[int, dict[str, Any]] = {}
    for chunk in chunks([f.id for f in todo if f.id is not None]):
        for r in await conn.execute(sa.select(t).where(t.c.id.in_(chunk))):
            stored[r.id] = dict(r._mapping)
    ids: dict[Finding, int] = {}
    touched = list(findings)
    # Only what detection changed is written: a finding it left alone may have been acked by
    # another process (`exposuremon ack`) since the state was loaded, and that ack must stand.
    changed_ids = {f.id for f in findings if f.id is not None}
    updates, inserts = [], []
    for f in todo:
        row = schema.finding_row(f)
        if f.id is None:
            inserts.append((f, row))
            continue
        old = stored.get(f.id)
        if old is None or old["target"] != f.target:
            raise ValueError(f"finding #{f.id} of {f.target}/{f.port}: no such finding stored")
        ids[f] = f.id
        del old["id"]
        if old != row and f.id in changed_ids:
            updates.append({**row, "k_id": f.id})
            touched.append(f)
    if updates:
        await conn.execute(sa.update(t).where(t.c.id == sa.bindparam("k_id")), updates)
    if inserts:
        stmt = sa.insert(t).returning(t.c.id, sort_by_parameter_order=True)
        result = await conn.execute(stmt, [row for _, row in inserts])
        for (f, _), new_id in zip(inserts, result.scalars().all(), strict=True):
            ids[f] = new_id
    saved = dataclasses.replace(
        state,
        findings={p: dataclasses.replace(f, id=ids[f]) for p, f in state.findings.items()},
        resolved={p: dataclasses.replace(f, id=ids[f]) for p, f in state.resolved.items()},
    )
    await _check_active(conn, saved)
    changed: dict[int, int] = {}
    for f in sorted(touched, key=lambda f: (f.is_active, ids[f])):
        changed[f.port] = ids[f]
    return saved, changed


async def _check_active(conn: AsyncConnection, state: TargetState) -> None:
    """The active findings stored must be exactly those of the outcome state."""
    t = schema.findings
    query = sa.select(t.c.port, t.c.id).where(
        t.c.target == state.name, t.c.state.in_(schema.ACTIVE_STATES)
    )
    stored = {(r.port, r.id) for r in await conn.execute(query)}
    extra = stored - {(port, f.id) for port, f in state.findings.items()}
    if extra:
        text = ", ".join(f"port {port} #{fid}" for port, fid in sorted(extra))
        raise ValueError(
            f"outcome_state.findings of {state.name}: lacks active findings stored ({text}); "
            "resolve them, or evaluate the state the store returned"
        )


async def insert_events(
    conn: AsyncConnection,
    events: Sequence[Event],
    scan_id: int,
    state: TargetState,
    changed: Mapping[int, int],
) -> list[Event]:
    """Insert the events, linking each port event to that port's finding; returns them saved."""
    if not events:
        return []
    linked = []
    for e in events:
        finding_id = e.finding_id
        if finding_id is None and e.port is not None:
            finding_id = changed.get(e.port)
            if finding_id is None and e.port in state.findings:
                finding_id = state.findings[e.port].id
        linked.append(dataclasses.replace(e, finding_id=finding_id))
    rows = [schema.event_row(e, e.finding_id, scan_id) for e in linked]
    stmt = sa.insert(schema.events).returning(schema.events.c.id, sort_by_parameter_order=True)
    new_ids = (await conn.execute(stmt, rows)).scalars().all()
    return [
        dataclasses.replace(e, id=i, details=row["details"])
        for e, row, i in zip(linked, rows, new_ids, strict=True)
    ]


async def insert_vantage_event(conn: AsyncConnection, event: Event) -> Event:
    """Insert a vantage's event (no target, no scan); returns it saved."""
    if event.target is not None or event.vantage is None:
        raise ValueError(f"event {event.type}: a vantage's event names a vantage, no target")
    row = schema.event_row(event, None, None)
    stmt = sa.insert(schema.events).returning(schema.events.c.id)
    new_id = (await conn.execute(stmt, row)).scalar_one()
    return dataclasses.replace(event, id=int(new_id), details=row["details"])


Route = Callable[[Event], Iterable[str]]  # the channels an event goes to


async def insert_outbox(
    conn: AsyncConnection, events: Iterable[Event], route: Route, group: str, now: int
) -> None:
    """One pending delivery per event and each channel `route` names for it."""
    rows = [
        {
            "channel": channel,
            "event_id": e.id,
            "group_key": group,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "dedup_key": f"{channel}/{e.id}",
            "kind": "event",
        }
        for e in events
        for channel in dict.fromkeys(route(e))
    ]
    if rows:
        await conn.execute(sa.insert(schema.outbox), rows)


async def load_states(conn: AsyncConnection, name: str | None) -> dict[str, TargetState]:
    """Every target's state, or only `name`'s (call inside one transaction: one snapshot)."""
    return await _load_states(conn, None if name is None else [name])


async def load_states_of(conn: AsyncConnection, names: Collection[str]) -> dict[str, TargetState]:
    """The states of `names` that are stored (call inside one transaction: one snapshot)."""
    states: dict[str, TargetState] = {}
    for chunk in chunks(sorted(set(names))):
        states.update(await _load_states(conn, chunk))
    return states


async def _load_states(
    conn: AsyncConnection, names: Sequence[str] | None
) -> dict[str, TargetState]:
    """The states of `names` (at most one chunk of them), or of every target for None."""

    def only(table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.true() if names is None else table.c.target.in_(names)

    t, p, f = schema.targets, schema.port_state, schema.findings
    query = sa.select(t).where(sa.true() if names is None else t.c.name.in_(names))
    rows = {r.name: r._mapping for r in await conn.execute(query)}
    if not rows:
        return {}
    ports: dict[str, dict[int, PortRecord]] = {n: {} for n in rows}
    for r in await conn.execute(sa.select(p).where(only(p)).order_by(p.c.target, p.c.port)):
        ports[r.target][r.port] = schema.port_from_row(r._mapping)
    active: dict[str, dict[int, Finding]] = {n: {} for n in rows}
    query = sa.select(f).where(only(f), f.c.state.in_(schema.ACTIVE_STATES)).order_by(f.c.id)
    for r in await conn.execute(query):
        active[r.target][r.port] = schema.finding_from_row(r._mapping)
    wanted = {fid: n for n, row in rows.items() for fid in schema.resolved_ids(row).values()}
    by_id: dict[int, Finding] = {}
    for chunk in chunks(sorted(wanted)):
        for r in await conn.execute(sa.select(f).where(f.c.id.in_(chunk))):
            by_id[r.id] = schema.finding_from_row(r._mapping)
    states = {}
    for n, row in rows.items():
        resolved = {port: by_id[fid] for port, fid in schema.resolved_ids(row).items()}
        states[n] = schema.target_from_row(row, ports[n], active[n], resolved)
    return states


async def next_stamp(conn: AsyncConnection, column: sa.Column[int]) -> int:
    """One more than the largest stamp of `column` (`targets.changed_seq` or `times_seq`).

    Called by the writer inside its transaction: stamps only grow, so a reader that
    remembers the largest stamps of its snapshot misses no later write (targets are never
    deleted, which would let the largest stamp shrink).
    """
    largest = (await conn.execute(sa.select(sa.func.max(column)))).scalar()
    return int(largest or 0) + 1


async def stamp(conn: AsyncConnection, name: str, *, times: bool) -> int:
    """Mark the target as changed for the state gauges (and its scan times, if `times`).

    Returns the change stamp written, so that the writer can tell its own write from a later
    one of somebody else's (`Store.changed_since`).
    """
    t = schema.targets
    changed = await next_stamp(conn, t.c.changed_seq)
    values = {"changed_seq": changed}
    if times:
        values["times_seq"] = await next_stamp(conn, t.c.times_seq)
    await conn.execute(sa.update(t).where(t.c.name == name).values(values))
    return changed


async def changed_seq(conn: AsyncConnection, name: str) -> int | None:
    """The target's `changed_seq` (None: no row yet)."""
    t = schema.targets
    return (await conn.execute(sa.select(t.c.changed_seq).where(t.c.name == name))).scalar()


@dataclasses.dataclass(frozen=True, slots=True)
class TargetGauges:
    """What the state gauges show of one target, read in one snapshot."""

    status: str
    # Kind -> micros of the last complete scan. Left out of comparisons: it changes with every
    # scan, and the collector compares rows to see whether a target's other lines changed.
    last_scan: Mapping[str, int] = dataclasses.field(compare=False)
    reopened_total: int
    reboots_total: int
    open_ports: list[str] = dataclasses.field(default_factory=list)  # port numbers, as text
    unexpected: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # port, severity
    findings: dict[str, int] = dataclasses.field(default_factory=dict)  # state -> count
    flapping: list[str] = dataclasses.field(default_factory=list)  # ports in a flap episode
    # Of the active findings' ports (as text, in port order): those whose finding is a reopen,
    # and those whose finding is acknowledged. Per port, so that an alert can be exact.
    reopened_ports: list[str] = dataclasses.field(default_factory=list)
    acked_ports: list[str] = dataclasses.field(default_factory=list)


GaugeMark = tuple[int, int]  # the largest (changed_seq, times_seq) a snapshot saw


@dataclasses.dataclass(frozen=True, slots=True)
class GaugeSnapshot:
    """What the state gauges read: every target, or only those written after a mark.

    With `complete`, `rows` holds every stored target. Otherwise `rows` holds the targets
    stamped after the mark asked for (whole rows) and `times` the scan times of those whose
    times were written after it: what is absent is unchanged since that mark.
    """

    rows: dict[str, TargetGauges]
    times: dict[str, Mapping[str, int]]
    pending: int  # notification deliveries waiting (one count, cheap: always read)
    mark: GaugeMark  # pass it to the next read
    complete: bool


async def gauge_snapshot(conn: AsyncConnection, since: GaugeMark | None = None) -> GaugeSnapshot:
    """The state gauges' reading (call inside one transaction): all, or changes after `since`."""
    t, o = schema.targets, schema.outbox
    marks = sa.select(sa.func.max(t.c.changed_seq), sa.func.max(t.c.times_seq))
    changed, timed = (await conn.execute(marks)).one()
    mark = (int(changed or 0), int(timed or 0))
    # A mark ahead of the store means another database (a restored backup): read it all.
    complete = since is None or since[0] > mark[0] or since[1] > mark[1]
    query = _gauge_rows()
    if not complete:
        assert since is not None
        query = query.where(t.c.changed_seq > since[0])
    rows = await _gauges_of(conn, query)
    times: dict[str, Mapping[str, int]] = {}
    if not complete and since is not None and mark[1] > since[1]:
        # Scan times advance with every quiet scan: the main churn between scrapes, read
        # without the joins the other gauges need.
        query_times = sa.select(t.c.name, t.c.last_scan).where(t.c.times_seq > since[1])
        times = {name: last_scan or {} for name, last_scan in await conn.execute(query_times)}
    pending = await conn.execute(
        sa.select(sa.func.count()).select_from(o).where(o.c.status == "pending")
    )
    return GaugeSnapshot(rows, times, int(pending.scalar_one()), mark, complete)


def _gauge_rows() -> sa.Select[Any]:
    """One row per target, its ports and findings joined in SQL by correlated subqueries.

    Each subquery is an index search: a full read gets every open port of every target, and
    one query with a row per target costs half of one row per port over several queries.
    """
    t, p, f = schema.targets, schema.port_state, schema.findings
    open_ports = (
        sa.select(sa.func.aggregate_strings(sa.cast(p.c.port, sa.Text), ","))
        .where(p.c.target == t.c.name, p.c.state == "open")
        .scalar_subquery()
    )
    # port:severity:state:reopen_count, one per active finding (none of them holds a colon).
    pair = (
        sa.cast(f.c.port, sa.Text)
        + ":"
        + f.c.severity
        + ":"
        + f.c.state
        + ":"
        + sa.cast(f.c.reopen_count, sa.Text)
    )
    active = (
        sa.select(sa.func.aggregate_strings(pair, ","))
        .where(f.c.target == t.c.name, f.c.state.in_(schema.ACTIVE_STATES))
        .scalar_subquery()
    )
    counts = [
        sa.select(sa.func.count())
        .where(f.c.target == t.c.name, f.c.state == state.value)
        .scalar_subquery()
        for state in FindingState
    ]
    return sa.select(
        t.c.name,
        t.c.status,
        t.c.last_scan,
        t.c.reopened_total,
        t.c.reboots_total,
        open_ports,
        active,
        t.c.flaps,
        *counts,
    )


async def _gauges_of(conn: AsyncConnection, query: sa.Select[Any]) -> dict[str, TargetGauges]:
    targets = {}
    rows = await conn.execute(query)
    for name, status, last_scan, reopened, reboots, ports, pairs, flaps, *n in rows:
        # In port order: the aggregates' own order is unspecified (and differs by dialect).
        active = [] if not pairs else sorted((_active(x) for x in pairs.split(",")), key=_port)
        targets[name] = TargetGauges(
            status,
            last_scan or {},
            reopened,
            reboots,
            sorted(ports.split(","), key=int) if ports else [],
            [(port, severity) for port, severity, _, _ in active],
            {state.value: count for state, count in zip(FindingState, n, strict=True)},
            sorted((p for p, f in (flaps or {}).items() if f.get("since") is not None), key=int),
            [port for port, _, _, reopens in active if reopens],
            [port for port, _, state, _ in active if state == FindingState.ACKED.value],
        )
    return targets


def _port(active: tuple[str, str, str, bool]) -> int:
    return int(active[0])


def _active(text: str) -> tuple[str, str, str, bool]:
    """One active finding's aggregate: port, severity, state, and whether it is a reopen."""
    port, severity, state, reopens = text.split(":", 3)
    return port, severity, state, reopens not in ("", "0")


# -------------------------------------------------------------- target listings (page, API)


@dataclasses.dataclass(frozen=True, slots=True)
class FindingCounts:
    """A target's active findings: the open ones by severity and reopened, and the acked."""

    open: Mapping[Severity, int] = dataclasses.field(default_factory=dict)
    reopened: int = 0  # open ones that are reopened
    acked: int = 0

    @property
    def open_total(self) -> int:
        """Open (unacknowledged) findings of any severity."""
        return sum(self.open.values())


@dataclasses.dataclass(frozen=True, slots=True)
class TargetOverview:
    """What the status page needs to sort and count every target, without loading states.

    Built from small reads only: in a fleet of 10,000 most targets are up with every port
    record open and no finding, so only the exceptions are read row by row. A stored target
    not in `status` is up; one not in `stored` was never scanned.
    """

    stored: frozenset[str]
    status: Mapping[str, TargetStatus]  # the stored targets that are not up
    not_open: Mapping[str, frozenset[int]]  # ports with a record that is closed or filtered
    findings: Mapping[str, FindingCounts]  # targets with active findings


async def target_overview(conn: AsyncConnection) -> TargetOverview:
    """The overview of every stored target (call inside one transaction: one snapshot)."""
    t, p, f = schema.targets, schema.port_state, schema.findings
    # The names alone come from the primary key's index: no row of the wide table is read.
    stored = frozenset((await conn.execute(sa.select(t.c.name))).scalars())
    up = TargetStatus.UP.value
    status = {
        name: TargetStatus(value)
        for name, value in await conn.execute(
            sa.select(t.c.name, t.c.status).where(t.c.status != up)
        )
    }
    not_open: dict[str, set[int]] = {}
    for target, port in await conn.execute(
        sa.select(p.c.target, p.c.port).where(p.c.state != "open")
    ):
        not_open.setdefault(target, set()).add(port)
    query = sa.select(f.c.target, f.c.severity, f.c.state, f.c.reopen_count).where(
        f.c.state.in_(schema.ACTIVE_STATES)
    )
    tally: dict[str, tuple[dict[Severity, int], list[int]]] = {}
    for target, severity, state, reopen_count in await conn.execute(query):
        by_severity, other = tally.setdefault(target, ({}, [0, 0]))
        if state == FindingState.ACKED.value:
            other[1] += 1
            continue
        level = Severity.parse(severity)
        by_severity[level] = by_severity.get(level, 0) + 1
        other[0] += reopen_count > 0
    return TargetOverview(
        stored=stored,
        status=status,
        not_open={name: frozenset(ports) for name, ports in not_open.items()},
        findings={
            name: FindingCounts(by_severity, reopened, acked)
            for name, (by_severity, (reopened, acked)) in tally.items()
        },
    )


@dataclasses.dataclass(frozen=True, slots=True)
class TargetPage:
    """One page of a target listing in name order: the names, the stored states among them
    (a name without a state was never scanned) and the cursor of the next page."""

    names: tuple[str, ...]
    states: Mapping[str, TargetState]
    next: str | None


def page_after(
    ordered: Sequence[str], after: str | None, limit: int
) -> tuple[list[str], str | None]:
    """Up to `limit` names of the sorted `ordered` that come after `after`, and the next cursor.

    Keyset paging on the name: a page follows its cursor even when the cursor's own target has
    been removed meanwhile, and no target is skipped or repeated while others are added.
    """
    start = 0 if after is None else bisect.bisect_right(ordered, after)
    page = list(ordered[start : start + limit])
    more = start + limit < len(ordered)
    return page, (page[-1] if more and page else None)


async def target_page(
    conn: AsyncConnection,
    names: Collection[str],
    statuses: Collection[TargetStatus] | None,
    unscanned: bool,
    has_findings: bool | None,
    after: str | None,
    limit: int,
) -> TargetPage:
    """A page of `names` (in name order) filtered in SQL; see `Store.target_page`."""
    t, f = schema.targets, schema.findings
    wanted = set(names)
    if statuses is None and has_findings is None and unscanned:
        # Every wanted name qualifies: page over them and read only the page's rows (the
        # usual case, `?limit=100`, reads no other target at all).
        page, next_cursor = page_after(sorted(wanted), after, limit)
        states = await load_states_of(conn, page)
        return TargetPage(tuple(page), states, next_cursor)
    stored = frozenset((await conn.execute(sa.select(t.c.name))).scalars())
    if statuses is None and has_findings is None:
        chosen = wanted & stored
    else:
        query = sa.select(t.c.name)
        if statuses is not None:
            query = query.where(t.c.status.in_([TargetStatus(s).value for s in statuses]))
        if has_findings is not None:
            # An uncorrelated subquery: SQLite builds its list once, not once per target.
            with_findings = sa.select(f.c.target).where(f.c.state.in_(schema.ACTIVE_STATES))
            has = t.c.name.in_(with_findings)
            query = query.where(has if has_findings else ~has)
        chosen = wanted & set((await conn.execute(query)).scalars())
    if unscanned and not has_findings:  # never scanned: no status and no findings
        chosen |= wanted - stored
    page, next_cursor = page_after(sorted(chosen), after, limit)
    states = await load_states_of(conn, [n for n in page if n in stored])
    return TargetPage(tuple(page), states, next_cursor)
