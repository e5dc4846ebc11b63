"""The store on both dialects: real SQLite files (WAL) under tmp_path and real PostgreSQL
databases (a throwaway cluster), real drivers, real Alembic migrations.

Tests taking the `backend` fixture run once per dialect; the few about SQLite's own mechanics
(pragmas, file locks) take `tmp_path` and run on SQLite only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from exposuremon.model import (
    AdvisoryMatch,
    Event,
    EventType,
    Finding,
    FindingState,
    Fingerprint,
    Notable,
    Observation,
    Observed,
    PortFlap,
    PortRecord,
    ScanKind,
    Severity,
    TargetState,
    TargetStatus,
)
from exposuremon.scan.result import PortState, ScanResult
from exposuremon.store import schema as store_schema
from exposuremon.store.database import (
    ScanRecord,
    Store,
    StoreError,
    alembic_config,
    database_url,
    db_path,
    migrate,
    sqlite_engine,
)
from tests.support.databases import TABLES, Backend
from tests.support.records import scan_record_of

T0 = dt.datetime(2026, 11, 20, 9, 12, 3, 123456, tzinfo=dt.UTC)
CLOCK = dt.datetime(2026, 11, 26, 3, 14, 7, 654321, tzinfo=dt.UTC)
HEAD = "0012"


def at(minutes: float) -> dt.datetime:
    """T0 plus some minutes."""
    return T0 + dt.timedelta(minutes=minutes)


def micros(when: dt.datetime) -> int:
    """Microseconds since the epoch, as the store keeps times."""
    return store_schema.to_micros(when, "test")


def scan_of(
    target: str, when: dt.datetime, kind: ScanKind = ScanKind.QUICK, complete: bool = True
) -> ScanRecord:
    """A scan record finishing at `when`."""
    return ScanRecord(
        target=target,
        kind=kind,
        address="198.51.100.7",
        started=when - dt.timedelta(seconds=2),
        finished=when,
        complete=complete,
        ports_scanned=1000,
        open_count=2,
        closed_count=997,
        filtered_count=1,
        duration_s=2.0,
    )


def event(
    target: str,
    type_: EventType,
    when: dt.datetime,
    port: int | None = None,
    **kw: Any,
) -> Event:
    """An event with a summary naming its type."""
    return Event(
        type=type_,
        severity=kw.pop("severity", Severity.INFO),
        target=target,
        observed_at=when,
        summary=f"{type_.value} {port}",
        port=port,
        **kw,
    )


def finding(target: str, port: int, **kw: Any) -> Finding:
    """A new (unsaved) open finding."""
    fields: dict[str, Any] = {
        "id": None,
        "target": target,
        "port": port,
        "severity": Severity.WARNING,
        "state": FindingState.OPEN,
        "opened_at": T0,
    }
    return Finding(**(fields | kw))


def without_ids(state: TargetState) -> TargetState:
    """The state with every finding's id cleared (as detection hands new findings over)."""
    return dataclasses.replace(
        state,
        findings={p: dataclasses.replace(f, id=None) for p, f in state.findings.items()},
        resolved={p: dataclasses.replace(f, id=None) for p, f in state.resolved.items()},
    )


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run SQL on the database file from a separate plain sqlite3 connection."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


def counts(path: Path) -> dict[str, int]:
    """Row count of every table of a SQLite file."""
    return {t: rows(path, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def rich_state(name: str = "surgery-router") -> TargetState:
    """A target state using every field: ports with history, open/acked/resolved findings."""
    tls = Fingerprint(
        tls_sha256="ab" * 32,
        tls_subject="CN=router.example",
        tls_not_after=dt.datetime(2027, 1, 1, 12, tzinfo=dt.UTC),
        http_server="bintec",
        http_title="Login <Digitalisierungsbox>",
    )
    ports = {
        443: PortRecord(
            port=443,
            state=Observed.OPEN,
            first_seen=at(0),
            last_seen=at(60),
            last_change=at(50),
            times_opened=3,
            times_closed=2,
            times_reopened=2,
            first_open=at(0),
            last_open=at(60),
            closed_streak=0,
            fingerprint=tls,
            observed_at=at(59.5),
        ),
        80: PortRecord(
            port=80,
            state=Observed.CLOSED,
            first_seen=at(1),
            last_seen=at(60),
            last_change=at(55),
            times_opened=1,
            times_closed=1,
            first_open=at(1),
            last_open=at(40),
            closed_streak=2,
        ),
        22: PortRecord(
            port=22,
            state=Observed.OPEN,
            first_seen=at(5),
            last_seen=at(60),
            last_change=at(5),
            times_opened=1,
            first_open=at(5),
            last_open=at(60),
            fingerprint=Fingerprint(banner="SSH-2.0-dropbear_2019.78"),
        ),
        8080: PortRecord(8080, Observed.FILTERED, at(5), at(60), at(5)),
    }
    reopened = finding(
        name,
        443,
        severity=Severity.CRITICAL,
        opened_at=at(50),
        reopen_count=2,
        previous_resolved_at=at(30),
        fingerprint=tls,
    )
    acked = finding(
        name,
        22,
        state=FindingState.ACKED,
        opened_at=at(5),
        ack_until=at(60 * 24 * 7),
        ack_reason="jump host, until the VPN is up",
    )
    resolved = finding(name, 80, state=FindingState.RESOLVED, opened_at=at(1), resolved_at=at(55))
    return TargetState(
        name=name,
        address="198.51.100.7",
        status=TargetStatus.UP,
        status_since=at(45),
        ports=ports,
        findings={443: reopened, 22: acked},
        resolved={80: resolved},
        expected_refusing=True,
        last_reboot=at(44),
        last_scan={ScanKind.SENTINEL: at(60), ScanKind.QUICK: at(58), ScanKind.FULL: at(-600)},
        reopened_total=2,
        reboots_total=1,
        last_observed=at(60),
        anomaly_since=at(59),
        answered_at=at(59.7),
        silent_until=at(41),
        recent=(
            Notable(EventType.TARGET_DOWN, at(40), ""),
            Notable(EventType.REBOOT_SUSPECTED, at(44), "down then up"),
        ),
    )


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """A fresh store on each dialect, with a fixed clock."""
    opened = await Store.open(backend.where, clock=lambda: CLOCK)
    yield opened
    await opened.close()


# ------------------------------------------------------------------------------ opening


async def test_open_creates_a_wal_database_at_head(tmp_path: Path) -> None:
    """Opening creates state_dir and the file, migrated to head, in WAL mode, pragmas set."""
    store = await Store.open(tmp_path / "a" / "b")
    try:
        assert store.path == db_path(tmp_path / "a" / "b")
        assert rows(store.path, "PRAGMA journal_mode") == [("wal",)]
        assert rows(store.path, "SELECT version_num FROM alembic_version") == [(HEAD,)]
        async with store._engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 1,
            "foreign_keys": 1,
            "busy_timeout": 10_000,
        }
    finally:
        await store.close()


async def test_reopen_a_closed_store(backend: Backend) -> None:
    """State written before close is there after opening again, and ids continue."""
    async with await Store.open(backend.where) as first:
        applied = await first.apply(
            scan_of("r", T0), rich_state("r"), [event("r", EventType.TARGET_UP, T0)], [], []
        )
    async with await Store.open(backend.where) as again:
        assert await again.load_state("r") == applied.state
        more = await again.apply(
            scan_of("r", at(1)), applied.state, [event("r", EventType.PORT_OPENED, at(1))], [], []
        )
    assert more.scan_id > applied.scan_id
    assert more.event_ids[0] > applied.event_ids[0]


async def test_opening_an_up_to_date_store_needs_no_write_lock(tmp_path: Path) -> None:
    """While another process holds the write lock, an up-to-date store opens and reads."""
    async with await Store.open(tmp_path) as first:
        state = TargetState(name="r", last_scan={ScanKind.QUICK: T0})
        await first.apply(scan_of("r", T0), state, [], [], [])
    with contextlib.closing(sqlite3.connect(db_path(tmp_path), isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("DELETE FROM scans")
        async with await Store.open(tmp_path) as again:
            assert await again.last_scans() == {("r", ScanKind.QUICK): T0}
        other.execute("ROLLBACK")


async def test_unknown_target_loads_empty(store: Store) -> None:
    """A target never scanned has an empty state, and there are no targets yet."""
    assert await store.load_state("nobody") == TargetState(name="nobody")
    assert await store.load_states() == {}


def test_target_state_fields_are_all_persisted() -> None:
    """Every TargetState field has a home in the store (a new field needs a migration)."""
    stored_elsewhere = {"name", "ports", "findings", "resolved"}
    columns = set(store_schema.targets.c.keys()) | stored_elsewhere
    fields = {f.name for f in dataclasses.fields(TargetState)}
    assert fields - columns == set()
    assert {f.name for f in dataclasses.fields(PortRecord)} - set(
        store_schema.port_state.c.keys()
    ) == set()
    assert {f.name for f in dataclasses.fields(Finding)} - set(
        store_schema.findings.c.keys()
    ) == set()


# ----------------------------------------------------------------------------- round trip


async def test_apply_then_load_round_trips_a_rich_state(store: Store) -> None:
    """What apply stores, load_state returns exactly, with the new findings' ids filled in."""
    outcome = rich_state()
    applied = await store.apply(
        scan_of(outcome.name, at(60)),
        outcome,
        [],
        [*outcome.findings.values(), *outcome.resolved.values()],
        [],
    )
    loaded = await store.load_state(outcome.name)
    assert loaded == applied.state
    assert without_ids(loaded) == outcome
    assert {p: f.id for p, f in loaded.findings.items()} == {
        443: applied.finding_ids_by_port[443],
        22: applied.finding_ids_by_port[22],
    }
    assert loaded.resolved[80].id == applied.finding_ids_by_port[80]
    assert await store.load_states() == {outcome.name: loaded}
    # Applying the loaded state again changes nothing.
    again = await store.apply(scan_of(outcome.name, at(61)), loaded, [], [], [])
    assert again.state == loaded
    assert again.finding_ids_by_port == {}
    assert await store.load_state(outcome.name) == loaded


async def test_a_nul_in_text_is_stored_as_a_replacement_character(store: Store) -> None:
    """Text with a NUL or a lone surrogate in it (PostgreSQL's text can hold neither; a hostile
    host or an undecodable argument may bring one) is stored with U+FFFD in its place, on
    either dialect, and the write succeeds."""
    outcome = dataclasses.replace(rich_state(), address="198.51.100.7\x00evil\ud800")
    findings = [*outcome.findings.values(), *outcome.resolved.values()]
    await store.apply(scan_of(outcome.name, at(60)), outcome, [], findings, [])
    loaded = await store.load_state(outcome.name)
    assert loaded.address == "198.51.100.7\ufffdevil\ufffd"


async def test_times_in_other_offsets_are_stored_as_the_same_instant(store: Store) -> None:
    """An aware datetime in another offset comes back as the equal UTC instant."""
    cest = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=cest)
    rec = PortRecord(443, Observed.OPEN, when, when, when)
    state = TargetState(name="r", ports={443: rec}, status_since=when)
    await store.apply(scan_of("r", when), state, [], [], [])
    loaded = await store.load_state("r")
    assert loaded.ports[443].first_seen == when
    assert loaded.ports[443].first_seen.utcoffset() == dt.timedelta(0)
    assert loaded.status_since == when


async def test_naive_datetimes_are_rejected_naming_the_field(
    store: Store, backend: Backend
) -> None:
    """A naive datetime is an error that says which field holds it; nothing is stored."""
    naive = dt.datetime(2026, 11, 26, 3, 0)
    rec = PortRecord(443, Observed.OPEN, T0, naive, T0)
    with pytest.raises(ValueError, match=r"r\.ports\[443\]\.last_seen: naive datetime"):
        await store.apply(scan_of("r", T0), TargetState(name="r", ports={443: rec}), [], [], [])
    bad_scan = dataclasses.replace(scan_of("r", T0), started=naive)
    with pytest.raises(ValueError, match=r"scan of r\.started: naive"):
        await store.apply(bad_scan, TargetState(name="r"), [], [], [])
    assert await backend.counts() == dict.fromkeys(TABLES, 0)


utc_times = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)
opt_times = st.none() | utc_times
# No NUL and no lone surrogates: the store keeps them as U+FFFD
# (test_a_nul_in_text_is_stored_as_a_replacement_character).
texts = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=30
)
counters = st.integers(min_value=0, max_value=2**31 - 1)
fingerprints = st.none() | st.builds(
    Fingerprint,
    banner=st.none() | texts,
    tls_sha256=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    tls_subject=st.none() | texts,
    tls_not_after=opt_times,
    http_server=st.none() | texts,
    http_title=st.none() | texts,
    tls_issuer=st.none() | texts,
)
flaps = st.dictionaries(
    st.integers(1, 65535),
    st.builds(
        PortFlap,
        changes=st.lists(utc_times, max_size=4).map(tuple),
        since=opt_times,
        stable=st.integers(0, 100),
        episode_changes=counters,
        severity=st.sampled_from(Severity),
    ),
    max_size=3,
)
advisory_matches = st.dictionaries(
    texts,
    st.builds(
        AdvisoryMatch,
        since=utc_times,
        port=st.integers(1, 65535),
        severity=st.sampled_from(Severity),
        fingerprint=fingerprints.filter(lambda f: f is not None),
    ),
    max_size=3,
)


@st.composite
def target_states(draw: st.DrawFn, name: str) -> TargetState:
    """Any target state detection could hand over, findings unsaved."""
    ports = draw(st.lists(st.integers(1, 65535), unique=True, max_size=6))
    records = {
        p: PortRecord(
            port=p,
            state=draw(st.sampled_from(Observed)),
            first_seen=draw(utc_times),
            last_seen=draw(utc_times),
            last_change=draw(utc_times),
            times_opened=draw(counters),
            times_closed=draw(counters),
            times_reopened=draw(counters),
            first_open=draw(opt_times),
            last_open=draw(opt_times),
            closed_streak=draw(counters),
            fingerprint=draw(fingerprints),
            observed_at=draw(opt_times),
        )
        for p in ports
    }

    def findings_of(states: Sequence[FindingState]) -> dict[int, Finding]:
        chosen = draw(st.lists(st.integers(1, 65535), unique=True, max_size=3))
        return {
            p: Finding(
                id=None,
                target=name,
                port=p,
                severity=draw(st.sampled_from(Severity)),
                state=draw(st.sampled_from(states)),
                opened_at=draw(utc_times),
                resolved_at=draw(opt_times),
                reopen_count=draw(counters),
                previous_resolved_at=draw(opt_times),
                ack_until=draw(opt_times),
                ack_reason=draw(st.none() | texts),
                fingerprint=draw(fingerprints),
            )
            for p in chosen
        }

    return TargetState(
        name=name,
        address=draw(st.none() | texts),
        status=draw(st.sampled_from(TargetStatus)),
        status_since=draw(opt_times),
        ports=records,
        findings=findings_of([FindingState.OPEN, FindingState.ACKED]),
        resolved=findings_of([FindingState.RESOLVED]),
        expected_refusing=draw(st.booleans()),
        last_reboot=draw(opt_times),
        last_scan=draw(st.dictionaries(st.sampled_from(ScanKind), utc_times)),
        reopened_total=draw(counters),
        reboots_total=draw(counters),
        last_observed=draw(opt_times),
        anomaly_since=draw(opt_times),
        answered_at=draw(opt_times),
        silent_until=draw(opt_times),
        recent=tuple(
            draw(st.lists(st.builds(Notable, st.sampled_from(EventType), utc_times, texts)))
        ),
        flaps=draw(flaps),
        advisories=draw(advisory_matches),
    )


def test_round_trip_property(backend: Backend) -> None:
    """For any state, load_state returns what apply stored (one real store, many targets)."""
    names = (f"t{i}" for i in itertools.count())
    with asyncio.Runner() as runner:
        store = runner.run(Store.open(backend.where))

        @settings(max_examples=40, deadline=None)
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            name = next(names)
            outcome = data.draw(target_states(name))
            applied = runner.run(store.apply(scan_of(name, T0), outcome, [], [], ["chat"]))
            loaded = runner.run(store.load_state(name))
            assert loaded == applied.state
            assert without_ids(loaded) == outcome

        try:
            check()
        finally:
            runner.run(store.close())


# ---------------------------------------------------------------------- one transaction


async def test_a_scan_is_stored_with_the_vantage_it_was_made_from(
    store: Store, backend: Backend
) -> None:
    """`scans.vantage` is the record's vantage, "default" when none is given."""
    outcome = rich_state()
    applied = await store.apply(scan_of(outcome.name, at(60)), outcome, [], [], [])
    fra = dataclasses.replace(scan_of(outcome.name, at(61)), vantage="fra")
    await store.apply(fra, applied.state, [], [], [])
    rows = await backend.run("SELECT vantage FROM scans ORDER BY finished")
    assert rows == [("default",), ("fra",)]


async def test_a_failing_apply_stores_nothing_of_its_scan(store: Store, backend: Backend) -> None:
    """When an insert fails midway, no scan, state, finding, event or outbox row remains."""
    base = await store.apply(
        scan_of("r", T0), rich_state("r"), [event("r", EventType.TARGET_UP, T0)], [], ["chat"]
    )
    before = await backend.counts()
    changed = dataclasses.replace(
        base.state,
        address="203.0.113.9",
        findings={**base.state.findings, 8443: finding("r", 8443)},
    )
    events = [
        event("r", EventType.ADDRESS_CHANGED, at(1)),
        event("r", EventType.FINDING_OPENED, at(1), port=8443),
        # The last insert violates the foreign key to findings.
        event("r", EventType.PORT_CLOSED, at(1), port=80, finding_id=999_999),
    ]
    with pytest.raises(StoreError, match=r"(?i)foreign key"):
        await store.apply(scan_of("r", at(1)), changed, events, [finding("r", 8443)], ["chat"])
    assert await backend.counts() == before
    assert await store.load_state("r") == base.state
    assert await store.outbox_pending() == 1


async def test_every_event_has_its_outbox_rows(store: Store, backend: Backend) -> None:
    """Each event gets one pending row per channel, grouped by scan, due now."""
    events = [event("r", EventType.TARGET_UP, T0), event("r", EventType.PORT_OPENED, T0, 443)]
    applied = await store.apply(
        scan_of("r", T0), TargetState(name="r"), events, [], ["a", "b", "a"]
    )
    got = await backend.run(
        "SELECT channel, event_id, group_key, status, attempts, next_attempt_at, created_at,"
        " last_error, sent_at, dedup_key FROM outbox ORDER BY id",
    )
    now = micros(CLOCK)
    group = str(applied.scan_id)
    assert got == [
        (ch, eid, group, "pending", 0, now, now, None, None, f"{ch}/{eid}")
        for eid in applied.event_ids
        for ch in ("a", "b")
    ]
    assert await store.outbox_pending() == 4


async def test_mismatched_parts_are_rejected(store: Store, backend: Backend) -> None:
    """Events, findings or a scan of another target are errors naming the part."""
    state = TargetState(name="r")
    with pytest.raises(ValueError, match=r"scan.target 'x'"):
        await store.apply(scan_of("x", T0), state, [], [], [])
    with pytest.raises(ValueError, match=r"events\[0\].target 'x'"):
        await store.apply(scan_of("r", T0), state, [event("x", EventType.TARGET_UP, T0)], [], [])
    wrong = dataclasses.replace(state, findings={443: finding("r", 80)})
    with pytest.raises(ValueError, match=r"outcome_state.findings\[443\]"):
        await store.apply(scan_of("r", T0), wrong, [], [], [])
    assert await backend.counts() == dict.fromkeys(TABLES, 0)


async def test_a_stale_state_cannot_drop_an_active_finding(store: Store, backend: Backend) -> None:
    """An outcome lacking a stored active finding is refused rather than silently saved."""
    first = await store.apply(
        scan_of("r", T0),
        TargetState(name="r", findings={443: finding("r", 443)}),
        [],
        [finding("r", 443)],
        [],
    )
    before = await backend.counts()
    with pytest.raises(ValueError, match=r"lacks active findings stored \(port 443 #"):
        await store.apply(scan_of("r", at(1)), TargetState(name="r"), [], [], [])
    ghost = dataclasses.replace(first.state.findings[443], id=4242)
    haunted = dataclasses.replace(first.state, findings={443: ghost})
    with pytest.raises(ValueError, match="no such finding stored"):
        await store.apply(scan_of("r", at(1)), haunted, [], [], [])
    assert await backend.counts() == before


# ---------------------------------------------------------------------- findings and events


async def test_findings_get_ids_and_events_link_to_them(store: Store) -> None:
    """New findings get ids; port events without one link to the finding of their port."""
    opened = finding("r", 443, severity=Severity.CRITICAL)
    state = TargetState(name="r", findings={443: opened})
    events = [
        event("r", EventType.TARGET_UP, T0),
        event("r", EventType.PORT_OPENED, T0, 443),
        event("r", EventType.PORT_OPENED, T0, 22),
        event("r", EventType.FINDING_OPENED, T0, 443, severity=Severity.CRITICAL),
    ]
    first = await store.apply(scan_of("r", T0), state, events, [opened], ["chat"])
    fid = first.finding_ids_by_port[443]
    assert [e.finding_id for e in first.events] == [None, fid, None, fid]
    assert [e.id for e in first.events] == list(first.event_ids)
    stored, _ = await store.events(target="r")
    assert [(e.id, e.finding_id) for e in reversed(stored)] == [
        (e.id, e.finding_id) for e in first.events
    ]

    # Still open: a port event links to the active finding though nothing changed.
    second = await store.apply(
        scan_of("r", at(1)),
        first.state,
        [event("r", EventType.FINGERPRINT_CHANGED, at(1), 443)],
        [],
        [],
    )
    assert second.events[0].finding_id == fid
    assert second.finding_ids_by_port == {}

    # Resolved, and kept for reopen detection.
    done = dataclasses.replace(
        first.state.findings[443], state=FindingState.RESOLVED, resolved_at=at(2)
    )
    resolved_state = dataclasses.replace(first.state, findings={}, resolved={443: done})
    third = await store.apply(
        scan_of("r", at(2)),
        resolved_state,
        [event("r", EventType.FINDING_RESOLVED, at(2), 443)],
        [done],
        [],
    )
    assert third.events[0].finding_id == fid
    assert third.finding_ids_by_port == {443: fid}
    assert (await store.load_state("r")).resolved == {443: done}

    # Reopened: a new finding on the same port; the event links to the new one.
    again = finding("r", 443, opened_at=at(3), reopen_count=1, previous_resolved_at=at(2))
    reopened = dataclasses.replace(third.state, findings={443: again})
    fourth = await store.apply(
        scan_of("r", at(3)),
        reopened,
        [event("r", EventType.FINDING_REOPENED, at(3), 443)],
        [again],
        [],
    )
    new_id = fourth.finding_ids_by_port[443]
    assert new_id > fid
    assert fourth.events[0].finding_id == new_id
    loaded = await store.load_state("r")
    assert loaded.findings[443].id == new_id
    assert loaded.resolved[443].id == fid
    assert await store.finding(fid) == done
    assert await store.finding(9999) is None


async def test_a_resolved_finding_not_kept_for_reopen_is_not_loaded_as_such(
    store: Store,
) -> None:
    """A finding resolved outside `resolved` (port now expected) is stored but not reloaded."""
    first = await store.apply(
        scan_of("r", T0),
        TargetState(name="r", findings={80: finding("r", 80)}),
        [],
        [finding("r", 80)],
        [],
    )
    done = dataclasses.replace(
        first.state.findings[80], state=FindingState.RESOLVED, resolved_at=at(1)
    )
    await store.apply(scan_of("r", at(1)), TargetState(name="r"), [], [done], [])
    assert await store.load_state("r") == TargetState(name="r")
    assert await store.finding(done.id or 0) == done


async def test_event_details_are_stored_as_json(store: Store) -> None:
    """Datetimes become RFC 3339 UTC, enums their values, sets sorted lists; others refused."""
    details = {
        "at": at(0),
        "severity": Severity.CRITICAL,
        "kind": ScanKind.FULL,
        "ports": frozenset({443, 80}),
        "nested": {"t": (1, "x")},
        "fingerprint": Fingerprint(http_server="nginx"),
    }
    applied = await store.apply(
        scan_of("r", T0),
        TargetState(name="r"),
        [event("r", EventType.REBOOT_SUSPECTED, T0, details=details)],
        [],
        [],
    )
    expected = {
        "at": "2026-11-20T09:12:03.123456Z",
        "severity": "critical",
        "kind": "full",
        "ports": [80, 443],
        "nested": {"t": [1, "x"]},
        "fingerprint": {"http_server": "nginx"},
    }
    assert applied.events[0].details == expected
    assert (await store.events())[0][0].details == expected
    bad = event("r", EventType.TARGET_UP, T0, details={"x": [object()]})
    with pytest.raises(TypeError, match=r"details.x\[0\]: object cannot be stored"):
        await store.apply(scan_of("r", at(1)), TargetState(name="r"), [bad], [], [])


async def test_pagination_and_filters(store: Store) -> None:
    """Newest first, keyset cursors cover every row once; target/type/since/state filter."""
    for name, n in (("a", 15), ("b", 10)):
        events = [
            event(name, [EventType.PORT_OPENED, EventType.PORT_CLOSED][i % 2], at(i), port=i + 1)
            for i in range(n)
        ]
        await store.apply(scan_of(name, at(n)), TargetState(name=name), events, [], [])

    async def all_pages(limit: int, **filters: Any) -> list[list[int]]:
        pages, cursor = [], None
        for _ in range(100):
            page, cursor = await store.events(limit=limit, cursor=cursor, **filters)
            pages.append([e.id or 0 for e in page])
            if cursor is None:
                return pages
        raise AssertionError("pagination did not end")

    everything = [i for page in await all_pages(1000) for i in page]
    assert everything == sorted(everything, reverse=True)
    assert len(everything) == 25
    pages = await all_pages(10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == everything
    assert [len(p) for p in await all_pages(5)] == [5] * 5  # exact multiple: no empty page
    a_pages = await all_pages(7, target="a")
    assert [len(p) for p in a_pages] == [7, 7, 1]
    closed, _ = await store.events(type=EventType.PORT_CLOSED, target="b")
    assert len(closed) == 5
    assert {e.type for e in closed} == {EventType.PORT_CLOSED}
    recent, _ = await store.events(target="a", since=at(10))
    assert sorted(e.observed_at for e in recent) == [at(i) for i in range(10, 15)]
    with pytest.raises(ValueError, match=r"limit: 0 out of range"):
        await store.events(limit=0)

    state = TargetState(
        name="a",
        findings={p: finding("a", p, opened_at=at(p)) for p in range(1, 13)},
    )
    await store.apply(scan_of("a", at(20)), state, [], list(state.findings.values()), [])
    first, cursor = await store.findings(state=FindingState.OPEN, limit=5)
    assert [f.port for f in first] == [12, 11, 10, 9, 8]
    rest, end = await store.findings(state=FindingState.OPEN, limit=10, cursor=cursor)
    assert [f.port for f in rest] == [7, 6, 5, 4, 3, 2, 1]
    assert end is None
    assert await store.findings(target="b") == ([], None)
    assert await store.findings(state=FindingState.RESOLVED) == ([], None)
    since, _ = await store.findings(since=at(11))
    assert [f.port for f in since] == [12, 11]


async def test_last_scans_are_the_targets_own_times(store: Store) -> None:
    """Per target and kind, the last complete scan detection recorded, quiet ones included."""
    r = TargetState(name="r", last_scan={ScanKind.QUICK: at(5), ScanKind.FULL: at(3)})
    await store.apply(scan_of("r", at(5), ScanKind.QUICK), r, [], [], [])
    # An incomplete scan does not move the time (detection keeps it): the state says at(5).
    await store.apply(scan_of("r", at(9), ScanKind.QUICK, complete=False), r, [], [], [])
    s = TargetState(name="s", last_scan={ScanKind.SENTINEL: at(1)}, last_observed=at(1))
    await store.apply(scan_of("s", at(1), ScanKind.SENTINEL), s, [], [], [])
    # A quiet scan writes only its times, and no row of `scans`: it counts all the same.
    quiet = dataclasses.replace(s, last_scan={ScanKind.SENTINEL: at(7)}, last_observed=at(7))
    await store.touch([quiet])
    assert await store.last_scans() == {
        ("r", ScanKind.QUICK): at(5),
        ("r", ScanKind.FULL): at(3),
        ("s", ScanKind.SENTINEL): at(7),
    }


async def saved_open_finding(store: Store) -> Finding:
    """Target "r" with one open finding on 443, applied at T0; the finding as stored."""
    applied = await store.apply(
        scan_of("r", T0),
        TargetState(name="r", findings={443: finding("r", 443)}),
        [],
        [finding("r", 443)],
        [],
    )
    return applied.state.findings[443]


async def test_changed_since_names_the_targets_written_after_a_mark(store: Store) -> None:
    """Applies and acks mark a target changed, each with the stamp its write returned; writes
    of quiet scans' times do not; a mark ahead of the store (a restored backup) names every
    target."""
    names, mark = await store.changed_since(None)
    assert names == {}
    stored = await saved_open_finding(store)
    quiet = TargetState(name="q", last_scan={ScanKind.SENTINEL: T0}, last_observed=T0)
    applied = await store.apply(scan_of("q", T0, ScanKind.SENTINEL), quiet, [], [], [])
    names, mark = await store.changed_since(mark)
    assert set(names) == {"r", "q"}
    assert names["q"] == applied.stamp > names["r"]
    later = dataclasses.replace(quiet, last_scan={ScanKind.SENTINEL: at(1)}, last_observed=at(1))
    await store.touch([later])
    assert await store.changed_since(mark) == ({}, mark)
    acked = dataclasses.replace(
        stored, state=FindingState.ACKED, ack_until=at(60), ack_reason="known"
    )
    await store.save_ack(acked)
    names, newer = await store.changed_since(mark)
    assert set(names) == {"r"}
    assert newer > mark
    assert names["r"] == newer  # the ack's stamp: no apply of ours returned it
    names, _ = await store.changed_since(newer + 100)
    assert set(names) == {"r", "q"}


async def test_save_ack_persists_only_the_ack(store: Store) -> None:
    """An ack changes state, ack_until and ack_reason; other fields of the argument are ignored."""
    stored = await saved_open_finding(store)
    acked = dataclasses.replace(
        stored,
        state=FindingState.ACKED,
        ack_until=at(60 * 24),
        ack_reason="maintenance",
        severity=Severity.INFO,
        opened_at=at(99),
    )
    await store.save_ack(acked)
    expected = dataclasses.replace(
        stored, state=FindingState.ACKED, ack_until=at(60 * 24), ack_reason="maintenance"
    )
    assert await store.finding(stored.id or 0) == expected
    assert (await store.load_state("r")).findings == {443: expected}
    with pytest.raises(LookupError, match="finding #777 not found"):
        await store.save_ack(dataclasses.replace(acked, id=777))
    with pytest.raises(ValueError, match="not saved yet"):
        await store.save_ack(dataclasses.replace(acked, id=None))


async def test_an_ack_made_between_load_and_apply_stands(store: Store) -> None:
    """A scan applied from a state loaded before an `ack` does not undo that ack."""
    open_one = await saved_open_finding(store)
    loaded = await store.load_state("r")  # the daemon loads, then scans …
    acked = dataclasses.replace(
        open_one, state=FindingState.ACKED, ack_until=at(600), ack_reason="change window"
    )
    await store.save_ack(acked)  # … meanwhile the operator acks …
    await store.apply(scan_of("r", at(1)), loaded, [], [], [])  # … and the scan is applied
    assert (await store.finding(open_one.id or 0)) == acked


async def test_a_resolved_finding_cannot_be_acked(store: Store) -> None:
    """An ack racing the daemon's resolution loses: the finding stays resolved."""
    open_one = await saved_open_finding(store)
    resolved = dataclasses.replace(open_one, state=FindingState.RESOLVED, resolved_at=at(5))
    await store.apply(
        scan_of("r", at(5)), TargetState(name="r", resolved={443: resolved}), [], [resolved], []
    )
    acked = dataclasses.replace(open_one, state=FindingState.ACKED, ack_until=at(600))
    with pytest.raises(LookupError, match="resolved"):
        await store.save_ack(acked)
    assert (await store.finding(open_one.id or 0)) == resolved


async def test_touch_advances_only_times_and_never_back(store: Store) -> None:
    """touch() writes scan and last-seen times of quiet scans, never an older one."""
    rec = PortRecord(443, Observed.OPEN, T0, T0, T0, times_opened=1, first_open=T0, last_open=T0)
    base = TargetState(
        name="r", ports={443: rec}, last_observed=T0, last_scan={ScanKind.SENTINEL: T0}
    )
    await store.apply(scan_of("r", T0), base, [], [], [])
    later = dataclasses.replace(
        base,
        last_observed=at(5),
        last_scan={ScanKind.SENTINEL: at(5)},
        ports={443: dataclasses.replace(rec, last_seen=at(5), last_open=at(5))},
        reboots_total=99,  # not a time: touch must not write it
    )
    await store.touch([later])
    loaded = await store.load_state("r")
    assert loaded.last_observed == at(5)
    assert loaded.last_scan[ScanKind.SENTINEL] == at(5)
    assert loaded.ports[443].last_seen == at(5)
    assert loaded.ports[443].last_open == at(5)
    assert loaded.reboots_total == 0
    await store.touch([base])  # an older batch arriving late
    again = await store.load_state("r")
    assert again.last_observed == at(5)
    assert again.ports[443].last_seen == at(5)
    await store.touch([])  # nothing to do, no error


async def test_gauges_since_a_mark_hold_only_what_was_written_after_it(store: Store) -> None:
    """Applies and acks stamp a target's row, touches only its times; a mark asks for later ones."""
    open_one = await saved_open_finding(store)
    quiet = TargetState(name="q", last_observed=T0, last_scan={ScanKind.SENTINEL: T0})
    await store.apply(scan_of("q", T0), quiet, [], [], [])
    first = await store.gauges()
    assert first.complete
    assert set(first.rows) == {"r", "q"}
    assert first.rows["r"].findings == {"open": 1, "acked": 0, "resolved": 0}

    nothing = await store.gauges(first.mark)
    assert (nothing.complete, nothing.rows, nothing.times) == (False, {}, {})
    assert nothing.mark == first.mark

    later = dataclasses.replace(quiet, last_observed=at(1), last_scan={ScanKind.SENTINEL: at(1)})
    await store.touch([later])
    timed = await store.gauges(nothing.mark)
    assert timed.rows == {}
    assert timed.times == {"q": {"sentinel": micros(at(1))}}
    await store.touch([quiet])  # older: nothing advances, nothing is stamped after `timed`
    assert (await store.gauges(timed.mark)).times == {}

    acked = dataclasses.replace(
        open_one, state=FindingState.ACKED, ack_until=at(600), ack_reason="change window"
    )
    await store.save_ack(acked)
    after_ack = await store.gauges(timed.mark)
    assert set(after_ack.rows) == {"r"}
    assert after_ack.rows["r"].findings == {"open": 0, "acked": 1, "resolved": 0}
    assert after_ack.times == {}

    await store.apply(scan_of("q", at(2)), later, [], [], [])
    applied = await store.gauges(after_ack.mark)
    assert set(applied.rows) == {"q"}
    assert applied.rows["q"].last_scan == {"sentinel": micros(at(1))}
    assert applied.times == {"q": {"sentinel": micros(at(1))}}


async def test_a_mark_ahead_of_the_store_reads_it_all(store: Store) -> None:
    """A mark from another (newer) database, like a restored backup's reader, gets a full read."""
    await saved_open_finding(store)
    mark = (await store.gauges()).mark
    ahead = await store.gauges((mark[0] + 10, mark[1]))
    assert ahead.complete
    assert set(ahead.rows) == {"r"}


# ------------------------------------------------------------------------------- upkeep


async def test_prune_keeps_events_awaiting_delivery(store: Store, backend: Backend) -> None:
    """Old scans and events go; old events with pending outbox rows stay; new ones stay."""
    old, new = at(-60 * 24 * 100), at(0)
    state = TargetState(name="r")
    await store.apply(scan_of("r", old), state, [event("r", EventType.TARGET_UP, old)], [], [])
    pending = await store.apply(
        scan_of("r", old),
        state,
        [event("r", EventType.PORT_OPENED, old, 80), event("r", EventType.PORT_OPENED, old, 81)],
        [],
        ["chat"],
    )
    sent_id, kept_id = pending.event_ids
    await backend.run("UPDATE outbox SET status = 'sent' WHERE event_id = ?", sent_id)
    recent = await store.apply(
        scan_of("r", new), state, [event("r", EventType.PORT_CLOSED, new, 80)], [], []
    )
    removed = await store.prune(new - dt.timedelta(days=90))
    assert removed == {"scans": 2, "events": 2, "outbox": 1}
    left, _ = await store.events()
    assert [e.id for e in left] == [recent.event_ids[0], kept_id]
    assert await backend.run("SELECT id FROM scans") == [(recent.scan_id,)]
    assert await backend.run("SELECT scan_id FROM events WHERE id = ?", kept_id) == [(None,)]
    assert await store.outbox_pending() == 1
    assert await store.prune(new - dt.timedelta(days=90)) == {"scans": 0, "events": 0, "outbox": 0}


async def test_ids_are_never_reused_after_a_prune(store: Store, backend: Backend) -> None:
    """Event and scan ids keep growing after the newest rows were pruned."""
    state = TargetState(name="r")
    first = await store.apply(
        scan_of("r", T0), state, [event("r", EventType.TARGET_UP, T0)], [], []
    )
    await store.prune(at(1))
    assert (await backend.counts())["events"] == 0
    second = await store.apply(
        scan_of("r", at(2)), state, [event("r", EventType.TARGET_UP, at(2))], [], []
    )
    assert second.event_ids[0] > first.event_ids[0]
    assert second.scan_id > first.scan_id


async def test_readers_run_while_another_connection_writes(tmp_path: Path) -> None:
    """WAL: reads succeed during a write transaction and a write succeeds during a read."""
    async with await Store.open(tmp_path) as store:
        await readers_run_while_another_sqlite_connection_writes(store)


async def readers_run_while_another_sqlite_connection_writes(store: Store) -> None:
    """The SQLite part of the test above: another connection holds the write lock, then a
    read transaction."""
    assert store.path is not None
    base = await store.apply(scan_of("r", T0), rich_state("r"), [], [], [])
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE targets SET address = 'uncommitted' WHERE name = 'r'")
        loaded = await asyncio.gather(*(store.load_state("r") for _ in range(4)))
        assert all(state == base.state for state in loaded)
        other.execute("ROLLBACK")

        other.execute("BEGIN")
        assert other.execute("SELECT count(*) FROM scans").fetchone() == (1,)
        await store.apply(scan_of("r", at(1)), base.state, [], [], [])
        assert other.execute("SELECT count(*) FROM scans").fetchone() == (1,)  # its snapshot
        other.execute("COMMIT")
        assert other.execute("SELECT count(*) FROM scans").fetchone() == (2,)


async def test_concurrent_readers_see_whole_applies(store: Store) -> None:
    """Readers racing a big apply see the state before or after it, never half of it."""

    def ports(n: int) -> dict[int, PortRecord]:
        return {p: PortRecord(p, Observed.CLOSED, T0, T0, T0) for p in range(1, n + 1)}

    await store.apply(scan_of("r", T0), TargetState(name="r", ports=ports(100)), [], [], [])
    big = TargetState(name="r", ports=ports(5000))
    loop = asyncio.get_running_loop()
    writing = asyncio.create_task(store.apply(scan_of("r", at(1)), big, [], [], []))
    sizes: list[int] = []
    deadline = loop.time() + 30
    while not writing.done() and len(sizes) < 10_000 and loop.time() < deadline:
        sizes.append(len((await store.load_state("r")).ports))
    await writing
    assert sizes  # reads ran while the apply was in flight
    assert set(sizes) <= {100, 5000}
    assert len((await store.load_state("r")).ports) == 5000


def test_scan_record_summarises_results_and_observations() -> None:
    """A ScanRecord from an engine result or an observation counts ports by state."""
    table = bytearray(65536)
    table[22], table[80], table[443], table[8443] = (
        PortState.CLOSED,
        PortState.OPEN,
        PortState.FILTERED,
        PortState.UNKNOWN,
    )
    result = ScanResult("r", "198.51.100.7", [22, 80, 443, 8443], T0, at(1), False, bytes(table))
    assert ScanRecord.from_result(ScanKind.SENTINEL, result) == ScanRecord(
        "r", ScanKind.SENTINEL, "198.51.100.7", T0, at(1), False, 4, 1, 1, 1, 60.0
    )
    assert ScanRecord.from_result(ScanKind.SENTINEL, result, "nyc").vantage == "nyc"
    obs = Observation(
        "r",
        ScanKind.QUICK,
        "198.51.100.7",
        T0,
        at(1),
        True,
        {22: Observed.CLOSED, 80: Observed.OPEN, 81: Observed.OPEN},
        frozenset({80}),
    )
    assert scan_record_of(obs) == ScanRecord(
        "r", ScanKind.QUICK, "198.51.100.7", T0, at(1), True, 3, 2, 1, 0, 60.0
    )


# ---------------------------------------------------------------------------- migrations


@contextlib.contextmanager
def alembic_on(path: Path) -> Iterator[Any]:
    """An Alembic config bound to a transaction on the database file (foreign keys off, as
    the store migrates: the environment checks them before commit)."""
    engine = sqlite_engine(path, foreign_keys=False)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            yield config
    finally:
        engine.dispose()


async def test_migrations_build_exactly_the_schema_the_store_uses(backend: Backend) -> None:
    """Head of the migrations equals the store's table definitions (no autogenerate diff)."""
    await backend.migrate()
    engine = create_async_engine(database_url(backend.url), poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), store_schema.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def reset_sequences(backend: Backend, *tables: str) -> None:
    """After rows were inserted with explicit ids, let PostgreSQL's id sequences continue
    after them (SQLite's AUTOINCREMENT does so by itself)."""
    if backend.postgres:
        for table in tables:
            await backend.run(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )


async def test_an_older_schema_is_upgraded_and_keeps_its_rows(backend: Backend) -> None:
    """A database at revision 0001 with data is upgraded to head; every row stays readable."""
    await backend.migrate("0001")
    t = micros(T0)
    await backend.run(
        "INSERT INTO targets VALUES ('old', '198.51.100.7', 'up', ?, false, NULL, ?, 1, 0,"
        " ?, NULL, '[]', '{\"80\": 1}')",
        t,
        f'{{"quick": {t}}}',
        t,
    )
    await backend.run(
        "INSERT INTO scans VALUES (1, 'old', 'quick', '198.51.100.7', ?, ?, true, 1000,"
        " 1, 999, 0, 2.5)",
        t,
        t,
    )
    await backend.run(
        "INSERT INTO port_state VALUES ('old', 443, 'open', ?, ?, ?, 2, 1, 1, ?, ?, 0,"
        ' \'{"http_server": "bintec"}\')',
        *[t] * 5,
    )
    await backend.run(
        "INSERT INTO findings VALUES (1, 'old', 80, 'warning', 'resolved', ?, ?, 0, NULL,"
        " NULL, NULL, NULL)",
        t,
        t,
    )
    await backend.run(
        "INSERT INTO findings VALUES (2, 'old', 443, 'critical', 'open', ?, NULL, 1, ?,"
        " NULL, NULL, NULL)",
        t,
        t,
    )
    await backend.run(
        "INSERT INTO events VALUES (1, 'finding_reopened', 'critical', 'old', 443, ?,"
        " 'port 443/tcp open again', '{\"reopen_count\": 1}', 2, 1)",
        t,
    )
    await backend.run(
        "INSERT INTO outbox (channel, event_id, group_key, status, attempts,"
        " next_attempt_at, created_at) VALUES ('chat', 1, '1', 'pending', 0, ?, ?)",
        t,
        t,
    )
    await reset_sequences(backend, "scans", "findings", "events")
    before = await backend.counts()

    store = await Store.open(backend.where)
    try:
        assert await backend.run("SELECT version_num FROM alembic_version") == [(HEAD,)]
        assert await backend.counts() == before
        assert await backend.run("SELECT dedup_key FROM outbox") == [("chat/1",)]
        state = await store.load_state("old")
        assert state.status is TargetStatus.UP
        assert state.last_scan == {ScanKind.QUICK: T0}
        assert state.ports[443].fingerprint == Fingerprint(http_server="bintec")
        assert state.findings[443].id == 2
        assert state.findings[443].previous_resolved_at == T0
        assert state.resolved[80].id == 1
        (ev,), _ = await store.events()
        assert (ev.id, ev.finding_id, ev.details) == (1, 2, {"reopen_count": 1})
        assert await store.outbox_pending() == 1
        assert await store.last_scans() == {("old", ScanKind.QUICK): T0}
        assert await backend.run("SELECT changed_seq, times_seq FROM targets") == [(0, 0)]
        assert await backend.run(
            "SELECT vantage FROM scans UNION SELECT vantage FROM port_state"
        ) == [("default",)]
        assert await backend.run("SELECT id, shards FROM fleet") == [(1, 64)]
        gauges = await store.gauges()
        assert gauges.rows["old"].open_ports == ["443"]
        assert gauges.rows["old"].last_scan == {"quick": t}
        applied = await store.apply(
            scan_of("old", at(1)),
            state,
            [event("old", EventType.PORT_CLOSED, at(1), 443)],
            [],
            ["chat"],
        )
        assert applied.event_ids == (2,)
        assert applied.events[0].finding_id == 2
    finally:
        await store.close()


def test_downgrade_to_0001_and_back_keeps_rows(tmp_path: Path) -> None:
    """0002 can be undone and redone without losing outbox rows; below 0001 is refused."""
    path = tmp_path / "x.db"
    migrate(path, "0001")
    t = micros(T0)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO targets VALUES ('r', NULL, 'unknown', NULL, 0, NULL, '{}', 0, 0,"
            " NULL, NULL, '[]', '{}')"
        )
        db.execute(
            "INSERT INTO events VALUES (7, 'target_up', 'info', 'r', NULL, ?, 'up', '{}',"
            " NULL, NULL)",
            (t,),
        )
        db.execute(
            "INSERT INTO outbox (channel, event_id, group_key, status, attempts,"
            " next_attempt_at, created_at) VALUES ('a', 7, '1', 'sent', 1, ?, ?)",
            (t, t),
        )
    migrate(path)
    with alembic_on(path) as config:
        command.downgrade(config, "0001")
    assert rows(path, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert rows(path, "SELECT channel, event_id, status FROM outbox") == [("a", 7, "sent")]
    migrate(path)
    assert rows(path, "SELECT dedup_key FROM outbox") == [("a/7",)]
    with (
        pytest.raises(RuntimeError, match="refusing to downgrade below revision 0001"),
        alembic_on(path) as config,
    ):
        command.downgrade(config, "base")
    assert rows(path, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert counts(path)["outbox"] == 1


async def test_a_failed_upgrade_changes_nothing(backend: Backend) -> None:
    """An upgrade failing midway (0002's unique index) rolls back whole: 0001, rows kept."""
    await backend.migrate("0001")
    t = micros(T0)
    await backend.run(
        "INSERT INTO targets VALUES ('r', NULL, 'unknown', NULL, false, NULL, '{}', 0, 0,"
        " NULL, NULL, '[]', '{}')"
    )
    await backend.run(
        "INSERT INTO events VALUES (1, 'target_up', 'info', 'r', NULL, ?, 'up', '{}', NULL, NULL)",
        t,
    )
    for _ in range(2):  # two deliveries of one event to one channel: 0002 cannot index them
        await backend.run(
            "INSERT INTO outbox (channel, event_id, group_key, status, attempts,"
            " next_attempt_at, created_at) VALUES ('a', 1, '1', 'pending', 0, ?, ?)",
            t,
            t,
        )
    with pytest.raises(StoreError, match=r"schema migration failed.*(?i:unique)"):
        await Store.open(backend.where)
    assert await backend.run("SELECT version_num FROM alembic_version") == [("0001",)]
    with pytest.raises(sa.exc.DBAPIError, match="dedup_key"):
        await backend.run("SELECT dedup_key FROM outbox")
    assert (await backend.counts())["outbox"] == 2


async def test_a_newer_schema_is_refused_and_left_alone(backend: Backend) -> None:
    """A database from a newer version is not touched; the error names its revision."""
    await backend.migrate()
    await backend.run("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError, match=r"revision '0099' is unknown .* newer version"):
        await Store.open(backend.where)
    assert await backend.run("SELECT version_num FROM alembic_version") == [("0099",)]


def test_migrations_ship_with_the_package() -> None:
    """The migration scripts and the template live inside the package directory."""
    config = alembic_config()
    where = Path(config.get_main_option("script_location") or "")
    assert (where / "env.py").is_file()
    assert (where / "script.py.mako").is_file()
    assert sorted(p.name for p in (where / "versions").glob("0*.py")) == [
        "0001_initial.py",
        "0002_outbox_dedup_key.py",
        "0003_outbox_reminders.py",
        "0004_evidence_times.py",
        "0005_target_change_stamps.py",
        "0006_vantages_and_fleet.py",
        "0007_outbox_claims.py",
        "0008_scan_requests.py",
        "0009_vantage_health.py",
        "0010_vantage_records.py",
        "0011_maintenance_windows.py",
        "0012_flaps_and_advisories.py",
    ]
