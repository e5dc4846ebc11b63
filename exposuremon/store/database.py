"""Persistence: SQLite (WAL) under `state_dir`, or PostgreSQL; schema kept current by Alembic.

One writer: each scan result is applied in one transaction that writes the scan, the target's
new state, its findings, the events and the notification outbox rows together, so a crash never
leaves an event without its notification or the reverse. Readers (API, metrics) run
concurrently (SQLite: WAL; PostgreSQL: MVCC, one REPEATABLE READ snapshot per read). Only the
engine setup and the write lock know the dialect; queries are SQLAlchemy Core.

Writers are serialised twice: within the process by an asyncio lock, and across processes by
the database: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's transaction-scoped advisory lock taken
as a write transaction's first statement (READ COMMITTED, so each statement after it sees what
the writer before committed). The read-then-write upserts and the change stamps rely on that.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import os
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from exposuremon.model import (
    DeliveryStatus,
    Event,
    EventType,
    Finding,
    FindingState,
    ScanKind,
    TargetState,
    TargetStatus,
)
from exposuremon.store import leases, outbox, queries, schema
from exposuremon.units import utcnow

if TYPE_CHECKING:
    from exposuremon.scan import ScanResult

DB_FILE = "exposuremon.db"
# The async driver behind `postgresql://` URLs (bench/store_bench.py measured both).
POSTGRES_DRIVER = "asyncpg"
POSTGRES_DRIVERS = ("asyncpg", "psycopg")
# Advisory lock keys (one 64-bit space per database): "emon" + a purpose.
_WRITER_LOCK = 0x656D6F6E_00000001
_MIGRATION_LOCK = 0x656D6F6E_00000002
MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_RETENTION = dt.timedelta(days=90)
MAX_PAGE = 1000
_BUSY_TIMEOUT_MS = 10_000
# PostgreSQL ends a session that sits idle inside a transaction this long, releasing its
# locks. The store's transactions take milliseconds; one left open is a node stopped in the
# middle of a write (SIGSTOP, a VM freeze), which would otherwise hold the writers' lock, and
# every other node's writes would wait for it until it ran again.
IDLE_IN_TRANSACTION_MS = 5_000
_BEGIN = "exposuremon_begin"  # execution option: the statement that opens a transaction


class StoreError(RuntimeError):
    """The database failed or refused an operation (locked, corrupt, schema too new)."""


class FencedWrite(StoreError):
    """A write made under a shard lease that has moved on (another node or epoch, or expired
    by the database's clock): nothing was written. `fences` are the stale ones."""

    def __init__(self, what: str, fences: Collection[leases.Fence]) -> None:
        self.fences = tuple(sorted(fences, key=lambda f: (f.vantage, f.shard)))
        named = "; ".join(leases.describe_fence(f) for f in self.fences)
        super().__init__(f"{what}: refused, the lease moved on ({named})")


@dataclasses.dataclass(frozen=True, slots=True)
class ScanRecord:
    """One scan of one target as the `scans` table keeps it."""

    target: str
    kind: ScanKind
    address: str
    started: dt.datetime
    finished: dt.datetime
    complete: bool
    ports_scanned: int
    open_count: int
    closed_count: int
    filtered_count: int
    duration_s: float
    vantage: str = schema.DEFAULT_VANTAGE  # the vantage point it was made from

    @classmethod
    def from_result(
        cls, kind: ScanKind, result: ScanResult, vantage: str = schema.DEFAULT_VANTAGE
    ) -> ScanRecord:
        """Summarise a scan engine result made from `vantage`."""
        counts = result.counts
        return cls(
            target=result.target,
            kind=kind,
            address=result.address,
            started=result.started,
            finished=result.finished,
            complete=result.complete,
            ports_scanned=len(result.ports),
            open_count=counts["open"],
            closed_count=counts["closed"],
            filtered_count=counts["filtered"],
            duration_s=result.duration,
            vantage=vantage,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """What `Store.apply` saved: ids, and the state and events as stored (ids filled in)."""

    scan_id: int
    event_ids: tuple[int, ...]
    finding_ids_by_port: Mapping[int, int]  # the findings this apply inserted or changed
    state: TargetState  # the outcome state with the new findings' ids: keep this one
    events: tuple[Event, ...] = ()  # with `id` and `finding_id` set


def db_path(state_dir: Path) -> Path:
    """The database file under `state_dir`."""
    return state_dir / DB_FILE


def database_url(where: Path | str) -> sa.URL:
    """The async SQLAlchemy URL of a store: a `Path` is a state directory (SQLite file under
    it); a string is `sqlite:///FILE` or `postgresql://...` (mapped to `POSTGRES_DRIVER`; an
    explicit `postgresql+asyncpg://` or `postgresql+psycopg://` is kept). ValueError otherwise,
    never echoing the URL (it may hold a password)."""
    if isinstance(where, Path):
        return sa.URL.create("sqlite+aiosqlite", database=str(db_path(where)))
    try:
        url = sa.make_url(where)
    except sa.exc.ArgumentError:
        raise ValueError("not a database URL (postgresql://... or sqlite:///FILE)") from None
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "sqlite" and url.drivername in ("sqlite", "sqlite+aiosqlite"):
        if not url.database or url.database == ":memory:":
            raise ValueError("a sqlite URL needs a file: sqlite:///FILE")
        return url.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        if "+" not in url.drivername:
            return url.set(drivername=f"postgresql+{POSTGRES_DRIVER}")
        if driver in POSTGRES_DRIVERS:
            return url
        raise ValueError(
            f"postgresql driver {driver!r} is not one of {', '.join(POSTGRES_DRIVERS)}"
        )
    raise ValueError("only postgresql:// and sqlite:/// database URLs are supported")


def postgres_engine(url: sa.URL, **options: Any) -> AsyncEngine:
    """An async engine on a PostgreSQL URL that honours every libpq parameter in it.

    SQLAlchemy hands asyncpg the URL's query as keyword arguments, which asyncpg refuses for
    libpq's own (`sslmode`, `sslrootcert`, `passfile`, ...); asyncpg reads them all from a
    connection string, so it gets the URL as one. psycopg takes them as they are.
    """
    if url.get_driver_name() != "asyncpg":
        if "options" not in url.query:  # a URL's own libpq `options` are left as they are
            setting = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
            options["connect_args"] = {"options": setting, **options.get("connect_args", {})}
        return create_async_engine(url, **options)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    session = {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)}
    connect_args = {"server_settings": session, **options.pop("connect_args", {}), "dsn": dsn}
    return create_async_engine("postgresql+asyncpg://", connect_args=connect_args, **options)


def describe_url(url: sa.URL) -> str:
    """A database URL safe to log or show: no password, and no value of a query parameter
    that may hold one (libpq also takes `password=` and `sslpassword=` there)."""
    query = {
        key: ("<redacted>" if "password" in key.lower() or "secret" in key.lower() else value)
        for key, value in url.query.items()
    }
    return url.set(query=query).render_as_string(hide_password=True)


def is_postgres(url: sa.URL) -> bool:
    """Whether the URL names a PostgreSQL database."""
    return url.get_backend_name() == "postgresql"


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # busy_timeout first, so that switching to WAL waits for other processes' locks.
    cursor = dbapi_connection.cursor()
    for pragma in (
        f"busy_timeout = {_BUSY_TIMEOUT_MS}",
        "journal_mode = WAL",
        "synchronous = NORMAL",
        "foreign_keys = ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_begin(conn: sa.Connection) -> None:
    # The driver's own BEGIN is disabled (isolation_level=None) because it skips SELECTs and
    # DDL; writers take the write lock up front so they never fail upgrading a read lock.
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN, "BEGIN"))


def setup_sqlite(engine: sa.Engine) -> None:
    sa.event.listen(engine, "connect", _on_connect)
    sa.event.listen(engine, "begin", _on_begin)


def sqlite_engine(path: Path) -> sa.Engine:
    """A synchronous engine on the database file with the store's settings (for migrations)."""
    engine = sa.create_engine(
        sa.URL.create("sqlite", database=str(path)),
        connect_args={"isolation_level": None},
        poolclass=sa.NullPool,
    )
    setup_sqlite(engine)
    return engine


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migrations (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(where: Path | str, revision: str = "head") -> None:
    """Upgrade the database to `revision` in one transaction (a SQLite file is created when
    missing). `where` is a SQLite file's path or a database URL (see `database_url`); call it
    outside an event loop (PostgreSQL's migration runs on the async driver)."""
    if isinstance(where, str):
        url = database_url(where)
        if is_postgres(url):
            asyncio.run(migrate_postgres(url, revision))
            return
        where = Path(url.database or "")
    _migrate_sqlite(where, revision)


def _migrate_sqlite(path: Path, revision: str) -> None:
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    engine = sqlite_engine(path)
    try:
        # An up-to-date database (the usual case, also for CLI commands while the daemon
        # writes) is only read; an upgrade holds the write lock from its first statement.
        with engine.connect() as conn:
            current = _current_revisions(script, conn, path)
        if revision == "head" and current == set(script.get_heads()):
            return
        with engine.execution_options(**{_BEGIN: "BEGIN IMMEDIATE"}).begin() as conn:
            _upgrade(conn, config, script, revision, path)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{path}: schema migration failed: {exc}") from exc
    finally:
        engine.dispose()


def _upgrade(
    conn: sa.Connection, config: Config, script: ScriptDirectory, revision: str, shown: object
) -> None:
    """Upgrade on `conn` inside its transaction, after refusing a revision from the future."""
    _current_revisions(script, conn, shown)
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


async def migrate_postgres(url: sa.URL, revision: str = "head") -> None:
    """Upgrade a PostgreSQL database to `revision` in one transaction.

    Processes starting at the same instant on an empty database (a fleet's nodes) each take a
    transaction-scoped advisory lock first: one migrates, the others then find it at head
    and do nothing. An up-to-date database is only read, without the lock.
    """
    shown = describe_url(url)
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    engine = postgres_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(lambda c: _current_revisions(script, c, shown))
        if revision == "head" and current == set(script.get_heads()):
            return
        async with engine.begin() as conn:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            await conn.run_sync(lambda c: _upgrade(c, config, script, revision, shown))
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{shown}: schema migration failed: {exc}") from exc
    except OSError as exc:
        # Unreachable server, a TLS file not there: the URL (password hidden) says which.
        raise StoreError(f"{shown}: cannot connect: {exc.strerror or exc}") from exc
    finally:
        await engine.dispose()


# Findings say which ports of which routers are open: owner-only, whatever the umask (outside
# systemd it is usually 022, which would make them world-readable). SQLite gives the -wal and
# -shm files the mode of the database file, so creating that one 0600 covers all three.
DIR_MODE, FILE_MODE = 0o700, 0o600


def _prepare(path: Path) -> None:
    directory = path.parent
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=DIR_MODE)
    except FileExistsError:
        pass  # an existing directory keeps the mode its owner gave it (e.g. StateDirectoryMode=)
    else:
        os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, FILE_MODE)  # os.open's mode is masked by the umask too
        finally:
            os.close(fd)
    migrate(path)


def _current_revisions(script: ScriptDirectory, conn: sa.Connection, shown: object) -> set[str]:
    """The database's revisions; refuses one from a newer exposuremon, which this must not touch."""
    current = set(MigrationContext.configure(conn).get_current_heads())
    for rev in current:
        try:
            known = script.get_revision(rev) is not None
        except CommandError:
            known = False
        if not known:
            raise StoreError(
                f"{shown}: schema revision {rev!r} is unknown to this exposuremon (newest known "
                f"{script.get_current_head()!r}); it was written by a newer version"
            )
    return current


async def lock_postgres_writers(conn: AsyncConnection) -> None:
    """Wait for, then hold until commit, the lock every PostgreSQL writer of the store takes
    first: other processes' writers wait here, as SQLite's BEGIN IMMEDIATE makes them."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_WRITER_LOCK)))


@contextlib.contextmanager
def errors(what: str) -> Iterator[None]:
    """SQLAlchemy's errors as StoreError, prefixed with what was being done."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{what}: {exc}") from exc


class Store:
    """The daemon's database. Open with `await Store.open(state_dir)`; close when done."""

    def __init__(
        self,
        engine: AsyncEngine,
        path: Path | None,
        clock: Callable[[], dt.datetime] = utcnow,
        *,
        shown: str | None = None,
    ) -> None:
        self._engine = engine
        self.postgres = is_postgres(engine.url)
        if self.postgres:
            # One snapshot per read (READ COMMITTED would give one per statement); writers
            # stay READ COMMITTED: their snapshot must follow the lock they wait for.
            self._reader = engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            self._writer = engine.execution_options(isolation_level="READ COMMITTED")
        else:
            self._reader = engine
            self._writer = engine.execution_options(**{_BEGIN: "BEGIN IMMEDIATE"})
        self._write_lock = asyncio.Lock()
        self._clock = clock
        self.path = path  # the SQLite file; None on PostgreSQL
        # What logs and errors call the database: the SQLite file, or the URL without secrets.
        self.location = shown or (str(path) if path is not None else describe_url(engine.url))

    @classmethod
    async def open(cls, where: Path | str, *, clock: Callable[[], dt.datetime] = utcnow) -> Store:
        """Create or upgrade the database and open it.

        `where` is a state directory (the SQLite file under it) or a database URL
        (`sqlite:///FILE`, `postgresql://...`; see `database_url`).
        """
        url = database_url(where)
        if is_postgres(url):
            await migrate_postgres(url)
            return cls(postgres_engine(url), None, clock, shown=describe_url(url))
        path = Path(url.database or "")
        # Alembic is synchronous; keep the event loop free while it runs.
        await asyncio.to_thread(_prepare, path)
        engine = create_async_engine(url, connect_args={"isolation_level": None})
        setup_sqlite(engine.sync_engine)
        return cls(engine, path, clock)

    async def close(self) -> None:
        """Close every connection (the WAL is checkpointed by the last one)."""
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _read(self, what: str) -> AsyncIterator[AsyncConnection]:
        # One transaction per read, so a multi-query read sees one snapshot.
        with errors(what):
            async with self._reader.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _write(self, what: str) -> AsyncIterator[AsyncConnection]:
        with errors(what):
            async with self._write_lock, self._writer.begin() as conn:
                if self.postgres:
                    await lock_postgres_writers(conn)
                yield conn

    @contextlib.asynccontextmanager
    async def _row_write(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A write transaction that locks only the rows it touches (shard leases, an outbox
        message and its channel's rate window, scan requests). On PostgreSQL without the
        store-wide writer lock: a lease renewal or a delivery must not queue behind other
        nodes' scan results. On SQLite the one writer as ever."""
        if not self.postgres:
            async with self._write(what) as conn:
                yield conn
            return
        with errors(what):
            async with self._writer.begin() as conn:
                yield conn

    # ---------------------------------------------------------------------- fleet leases

    async def request_scan(self, vantage: str, shard: int, target: str, kind: ScanKind) -> None:
        """Leave an on-demand scan of `target` (in `shard`) for the node of `vantage` holding it."""
        row = {
            "vantage": vantage,
            "shard": shard,
            "target": target,
            "kind": kind.value,
            "requested_at": schema.to_micros(self._clock(), "clock"),
        }
        async with self._row_write(f"request a {kind} scan of {target}") as conn:
            await conn.execute(sa.insert(schema.scan_requests).values(row))

    async def take_scan_requests(
        self, vantage: str, shards: Collection[int]
    ) -> list[tuple[str, ScanKind]]:
        """Take (delete) the scan requests of `vantage` in `shards`, oldest first."""
        if not shards:
            return []
        t = schema.scan_requests
        taken = (
            sa.delete(t)
            .where(t.c.vantage == vantage, t.c.shard.in_(sorted(shards)))
            .returning(t.c.id, t.c.target, t.c.kind)
        )
        async with self._row_write(f"take scan requests of vantage {vantage}") as conn:
            rows = (await conn.execute(taken)).all()
        known = {kind.value: kind for kind in ScanKind}
        return [(r.target, known[r.kind]) for r in sorted(rows) if r.kind in known]

    async def fleet_shards(self) -> int:
        """How many shards targets hash into (fixed when the database was created)."""
        async with self._read("read the shard count") as conn:
            return await leases.fleet_shards(conn)

    async def heartbeat(
        self, node: str, vantage: str, version: str, config_hash: str, *, restart: bool = False
    ) -> int:
        """Record that `node` is alive: its row's `last_seen` becomes the db clock's now
        (returned, microseconds). `started_at` is kept, unless the row is new or `restart`."""
        async with self._row_write(f"heartbeat of node {node}") as conn:
            return await leases.heartbeat(conn, node, vantage, version, config_hash, restart)

    async def lease_view(self, vantage: str) -> leases.LeaseView:
        """The vantage's leases and every node, with the db clock's now, in one snapshot."""
        async with self._read(f"read the leases of vantage {vantage}") as conn:
            return await leases.lease_view(conn, vantage)

    async def fleet_snapshot(self) -> leases.FleetSnapshot:
        """Every vantage's leases and every node, with the shard count and the db clock's
        now, in one snapshot (the fleet view: `GET /api/v1/fleet`, `exposuremon fleet
        status`)."""
        async with self._read("read the fleet") as conn:
            return await leases.fleet_snapshot(conn)

    async def acquire(
        self,
        vantage: str,
        node: str,
        take: Collection[int],
        renew: Mapping[int, int],
        ttl: float,
    ) -> leases.Acquired:
        """Take the shards `take` where free or expired (new epoch), renew `renew` (shard ->
        epoch) where still this node's under that epoch and unexpired; each lease then
        expires `ttl` seconds after the db clock's now. One transaction. Returns what this
        node holds now (see `leases.acquire`)."""
        if not 0 < ttl <= 3600:
            raise ValueError(f"ttl: {ttl} s out of range (0-3600]")
        ttl_micros = round(ttl * 1_000_000)
        async with self._row_write(f"acquire leases of node {node}") as conn:
            if self.postgres:
                # A renewal waits at most a third of the lease for a row lock; then it fails
                # and the round is retried, rather than the lease lapsing while it waits.
                wait_ms = max(1, ttl_micros // 3000)
                await conn.execute(sa.text(f"SET LOCAL lock_timeout = {int(wait_ms)}"))
            shards = await leases.fleet_shards(conn)
            return await leases.acquire(conn, vantage, node, take, renew, ttl_micros, shards)

    async def release_shards(
        self, vantage: str, node: str, shards: Collection[int], *, leave: bool = False
    ) -> int:
        """Expire this node's leases of `shards` now (epochs kept), so that another node may
        take them at once; how many were still this node's. `leave` (a node stopping): its
        `nodes` row is deleted as well, so that the others stop counting it as live."""
        async with self._row_write(f"release leases of node {node}") as conn:
            return await leases.release(conn, vantage, node, shards, leave)

    async def _check_fences(
        self, conn: AsyncConnection, what: str, fences: Collection[leases.Fence]
    ) -> None:
        stale = await leases.stale_fences(conn, fences)
        if stale:
            raise FencedWrite(what, stale)

    # ---------------------------------------------------------------------------- state

    async def load_state(self, target: str) -> TargetState:
        """The stored state of `target`; an empty state when it was never scanned."""
        async with self._read(f"load state of {target}") as conn:
            states = await queries.load_states(conn, target)
        return states.get(target, TargetState(name=target))

    async def load_states(self) -> dict[str, TargetState]:
        """The stored state of every target ever scanned (removed ones keep their history)."""
        async with self._read("load states") as conn:
            return await queries.load_states(conn, None)

    async def states_of(self, names: Collection[str]) -> dict[str, TargetState]:
        """The stored states of `names` (the never scanned ones are left out), in one snapshot."""
        async with self._read(f"load states of {len(names)} targets") as conn:
            return await queries.load_states_of(conn, names)

    async def target_overview(self) -> queries.TargetOverview:
        """Every stored target's status, not-open port records and findings, read lightly."""
        async with self._read("overview of targets") as conn:
            return await queries.target_overview(conn)

    async def target_page(
        self,
        names: Collection[str],
        *,
        statuses: Collection[TargetStatus] | None = None,
        unscanned: bool = True,
        has_findings: bool | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> queries.TargetPage:
        """One page of the targets `names` (the configured ones), in name order.

        Filters run in SQL on the stored rows: `statuses` (None: any), `has_findings` (an
        active finding, open or acked; None: either). `unscanned` includes the names without
        a stored row (never scanned: no status, no findings). The page starts after the name
        `after` (the previous page's `next`); only its targets' full states are loaded.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit: {limit} out of range (1-{MAX_PAGE})")
        async with self._read("list targets") as conn:
            return await queries.target_page(
                conn, names, statuses, unscanned, has_findings, after, limit
            )

    async def apply(
        self,
        scan: ScanRecord,
        outcome_state: TargetState,
        events: Sequence[Event],
        findings: Sequence[Finding],
        channels: Sequence[str] | queries.Route,
        *,
        fence: leases.Fence | None = None,
    ) -> Applied:
        """Save one scan's result in one transaction: scan, state, findings, events, outbox.

        With a `fence` (fleet mode), the write is made only while that lease is current: else
        it raises `FencedWrite` and writes nothing. Without one, no lease is looked at.

        `findings` are the ones detection created (id None) or changed; the state's findings
        are saved too when they differ from the stored ones. Port events without a finding id
        are linked to that port's finding. `channels` names the notification channels of
        every event, or is a function naming them per (saved) event. Returns what was stored,
        ids filled in.
        """
        route = channels if callable(channels) else (lambda _e, names=tuple(channels): names)
        name = outcome_state.name
        if scan.target != name:
            raise ValueError(f"scan.target {scan.target!r} differs from outcome_state {name!r}")
        queries.check_outcome(outcome_state, events, findings)
        scan_row = _scan_row(scan)
        now = schema.to_micros(self._clock(), "clock")
        what = f"apply {scan.kind} scan of {name}"
        async with self._write(what) as conn:
            if fence is not None:
                await self._check_fences(conn, what, (fence,))
            await queries.ensure_target(conn, outcome_state)
            result = await conn.execute(sa.insert(schema.scans).values(scan_row))
            scan_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await queries.sync_ports(conn, name, outcome_state.ports)
            state, changed = await queries.save_findings(conn, outcome_state, findings)
            await queries.update_target(conn, state)
            await queries.stamp(conn, name, times=True)
            saved = await queries.insert_events(conn, events, scan_id, state, changed)
            await queries.insert_outbox(conn, saved, route, str(scan_id), now)
        return Applied(
            scan_id=scan_id,
            event_ids=tuple(e.id for e in saved if e.id is not None),
            finding_ids_by_port=changed,
            state=state,
            events=tuple(saved),
        )

    async def touch(
        self,
        states: Sequence[TargetState],
        *,
        fences: Mapping[str, leases.Fence] | None = None,
    ) -> int:
        """Record only the passage of time (scan and last-seen times) of quiet scans.

        For states that differ from the stored ones in nothing else (see
        `detect.only_time_advanced`); a time already newer in the store is kept.

        With `fences` (fleet mode: target name -> the lease its scan ran under), the states
        whose lease moved on, or that have no fence, are dropped and the rest written in the
        same transaction; returns how many were dropped (0 without `fences`). A batch spans
        many shards, and one lost shard must not cost the others their times.
        """
        if not states:
            return 0
        async with self._write(f"touch {len(states)} targets") as conn:
            refused = 0
            if fences is not None:
                wanted = {fences[s.name] for s in states if s.name in fences}
                stale = await leases.stale_fences(conn, wanted)
                kept = [s for s in states if s.name in fences and fences[s.name] not in stale]
                refused = len(states) - len(kept)
                states = kept
            if states:
                # One stamp for the whole batch: readers ask for rows stamped after their last.
                seq = await queries.next_stamp(conn, schema.targets.c.times_seq)
                await queries.touch_times(conn, states, seq)
            return refused

    async def last_scans(self) -> dict[tuple[str, ScanKind], dt.datetime]:
        """When each target's last complete scan of each kind finished (quiet ones included).

        Read from the targets' own times, one row per target: a grouping over `scans` would
        walk every scan kept for the retention, seconds at 10,000 targets, at every start.
        """
        t = schema.targets
        async with self._read("last scans") as conn:
            rows = (await conn.execute(sa.select(t.c.name, t.c.last_scan))).all()
        return {
            (name, ScanKind(kind)): schema.from_micros(micros)
            for name, times in rows
            for kind, micros in (times or {}).items()
        }

    # ---------------------------------------------------------------------- findings/events

    async def findings(
        self,
        *,
        target: str | None = None,
        state: FindingState | None = None,
        since: dt.datetime | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> tuple[list[Finding], int | None]:
        """Findings newest first (opened at or after `since`); returns the next page's cursor."""
        t = schema.findings
        query = sa.select(t)
        if target is not None:
            query = query.where(t.c.target == target)
        if state is not None:
            query = query.where(t.c.state == FindingState(state).value)
        if since is not None:
            query = query.where(t.c.opened_at >= schema.to_micros(since, "since"))
        rows, next_cursor = await self._page(query, t.c.id, limit, cursor, "list findings")
        return [schema.finding_from_row(r) for r in rows], next_cursor

    async def events(
        self,
        *,
        target: str | None = None,
        type: EventType | None = None,
        since: dt.datetime | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> tuple[list[Event], int | None]:
        """Events newest first (observed at or after `since`); returns the next page's cursor."""
        t = schema.events
        query = sa.select(t)
        if target is not None:
            query = query.where(t.c.target == target)
        if type is not None:
            query = query.where(t.c.type == EventType(type).value)
        if since is not None:
            query = query.where(t.c.observed_at >= schema.to_micros(since, "since"))
        rows, next_cursor = await self._page(query, t.c.id, limit, cursor, "list events")
        return [schema.event_from_row(r) for r in rows], next_cursor

    async def _page(
        self,
        query: sa.Select[Any],
        id_col: sa.ColumnElement[int],
        limit: int,
        cursor: int | None,
        what: str,
    ) -> tuple[list[Mapping[str, Any]], int | None]:
        # Keyset pagination: stable while new rows arrive, unlike OFFSET.
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit: {limit} out of range (1-{MAX_PAGE})")
        if cursor is not None:
            query = query.where(id_col < cursor)
        query = query.order_by(id_col.desc()).limit(limit + 1)
        async with self._read(what) as conn:
            rows = [r._mapping for r in await conn.execute(query)]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1]["id"]
        return rows, None

    async def finding(self, finding_id: int) -> Finding | None:
        """One finding by id, or None."""
        query = sa.select(schema.findings).where(schema.findings.c.id == finding_id)
        async with self._read(f"load finding #{finding_id}") as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else schema.finding_from_row(row._mapping)

    async def save_ack(self, finding: Finding) -> None:
        """Persist an acknowledgement (state, ack_until, ack_reason) and nothing else."""
        if finding.id is None:
            raise ValueError(f"finding {finding.target}/{finding.port}: not saved yet (no id)")
        row = schema.finding_row(finding)
        values = {k: row[k] for k in ("state", "ack_until", "ack_reason")}
        t = schema.findings
        # A finding the daemon resolved meanwhile stays resolved: an ack is for open ones.
        stmt = sa.update(t).where(t.c.id == finding.id, t.c.state != "resolved").values(values)
        async with self._write(f"save ack of finding #{finding.id}") as conn:
            result = await conn.execute(stmt)
            if result.rowcount == 0:
                raise LookupError(f"finding #{finding.id} not found, or resolved")
            # The target's findings{state} gauges change: the next scrape re-reads it.
            target = sa.select(t.c.target).where(t.c.id == finding.id)
            await queries.stamp(conn, (await conn.execute(target)).scalar_one(), times=False)

    # ------------------------------------------------------------------------- upkeep

    async def prune(self, older_than: dt.datetime) -> dict[str, int]:
        """Delete scans and events older than the cutoff; events awaiting delivery stay."""
        cut = schema.to_micros(older_than, "older_than")
        o, e = schema.outbox, schema.events
        pending = sa.select(o.c.event_id).where(o.c.status == DeliveryStatus.PENDING)
        old = sa.and_(e.c.observed_at < cut, e.c.id.not_in(pending))
        async with self._write("prune") as conn:
            # Delivered or dead outbox rows go with their events (they reference them).
            outbox_n = await conn.execute(
                sa.delete(o).where(o.c.event_id.in_(sa.select(e.c.id).where(old)))
            )
            # An event whose last pending row was settled meanwhile (settles do not take the
            # writer lock on PostgreSQL) still has its rows: it stays until the next prune.
            referenced = sa.select(o.c.event_id)
            events_n = await conn.execute(sa.delete(e).where(old, e.c.id.not_in(referenced)))
            scans_n = await conn.execute(
                sa.delete(schema.scans).where(schema.scans.c.finished < cut)
            )
        return {
            "scans": scans_n.rowcount,
            "events": events_n.rowcount,
            "outbox": outbox_n.rowcount,
        }

    async def gauges(self, since: queries.GaugeMark | None = None) -> queries.GaugeSnapshot:
        """What the state metrics show: every target's gauges, or those changed after `since`.

        `since` is the `mark` of an earlier snapshot (of this database); see `GaugeSnapshot`.
        """
        async with self._read("read gauges") as conn:
            return await queries.gauge_snapshot(conn, since)

    async def changed_since(self, mark: int | None) -> tuple[frozenset[str], int]:
        """Targets whose state was written after `mark` (a scan's apply, an ack), and the new mark.

        `mark` is what an earlier call returned; None asks only for the current mark. Writes
        of scan times alone (`touch`) do not count: they change no state a scan starts from.
        """
        t = schema.targets
        async with self._read("targets changed") as conn:
            newest = (await conn.execute(sa.select(sa.func.max(t.c.changed_seq)))).scalar()
            current = int(newest or 0)
            if mark is None or current == mark:
                return frozenset(), current
            # A mark ahead of the store (a restored backup): every target may have changed.
            since = mark if mark < current else -1
            rows = await conn.execute(sa.select(t.c.name).where(t.c.changed_seq > since))
            return frozenset(rows.scalars()), current

    async def outbox_pending(self) -> int:
        """How many notification deliveries are waiting."""
        query = sa.select(sa.func.count()).select_from(schema.outbox)
        query = query.where(schema.outbox.c.status == DeliveryStatus.PENDING)
        async with self._read("count outbox") as conn:
            return int((await conn.execute(query)).scalar_one())

    # ---------------------------------------------------- notification outbox (outbox.py)

    async def deliveries(
        self,
        *,
        status: str | None = None,
        channel: str | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> tuple[list[outbox.Delivery], int | None]:
        """Outbox rows newest first (dead letters: status="dead"); returns the next cursor."""
        query = outbox.deliveries_query(status, channel)
        rows, nxt = await self._page(query, schema.outbox.c.id, limit, cursor, "list deliveries")
        return [outbox.delivery_from_row(r) for r in rows], nxt

    async def next_message(
        self,
        channel: str,
        now: dt.datetime,
        *,
        node: str | None = None,
        claim_for: float = outbox.CLAIM_FOR,
        pace: outbox.Pace | None = None,
    ) -> tuple[outbox.Outgoing | None, dt.datetime | None]:
        """The channel's oldest message due at `now` that no node holds, else when the next
        one may be taken (its retry time, or when another node's claim on it ends).

        With `node` the message is taken under a claim (`Outgoing.claim`): no other node gets
        it until `claim.until`, the database's now plus the rate window's wait (`pace` books
        the send in the channel's shared window, in microseconds) plus `claim_for` seconds.
        Settle it with `settle(..., claim=out.claim)`, or `release` it. Without `node` the
        message is only looked at (tools, tests).
        """
        now_us = schema.to_micros(now, "now")
        claim = None
        if node is not None:
            claim = outbox.Claim(node=node, token=secrets.token_hex(8), until=0)
        async with self._row_write(f"next message for {channel}") as conn:
            found, due = await outbox.next_message(
                conn, channel, now_us, claim, math.ceil(claim_for * 1e6), pace
            )
        if found is not None or due is None:
            return found, None
        return None, now + dt.timedelta(microseconds=due)

    async def settle(
        self,
        ids: Sequence[int],
        status: str,
        now: dt.datetime,
        next_attempt_at: dt.datetime | None = None,
        error: str | None = None,
        *,
        claim: outbox.Claim | None = None,
        pause: float | None = None,
    ) -> int:
        """Record one attempt of a message's rows (see `outbox.settle`); rows changed.

        With `claim` (the message's, from `next_message`) nothing is written unless the rows
        still carry it: 0 means another node took the message over after the claim ran out.
        `pause` (seconds, a receiver's Retry-After) holds every node's sends to the channel.
        """
        at, now_us = (
            schema.opt_micros(next_attempt_at, "next_attempt_at"),
            schema.to_micros(now, "now"),
        )
        token = None if claim is None else claim.token
        async with self._row_write(f"settle {len(ids)} deliveries as {status}") as conn:
            if pause is not None and ids:
                # The window's row first, as a taker locks it: no deadlock between the two.
                channel = await outbox.channel_of(conn, ids[0])
                if channel is not None:
                    await outbox.pause_window(conn, channel, pause)
            return await outbox.settle(conn, ids, status, now_us, at, error, token)

    async def release_claim(self, claim: outbox.Claim) -> int:
        """End a claim without an attempt (a node stopping before it sent): the message is
        free for any node at once; rows released (0: settled or taken over meanwhile)."""
        async with self._row_write("release a claim") as conn:
            return await outbox.release(conn, token=claim.token)

    async def release_claims_of(self, node: str) -> int:
        """End every claim `node` holds: a node starting again knows its earlier process is
        gone (node names are unique in a fleet), so what that one had in flight goes now."""
        async with self._row_write(f"release the claims of {node}") as conn:
            return await outbox.release(conn, node=node)

    async def retry_now(self, now: dt.datetime) -> int:
        """Make deliveries waiting for a retry due now (after a reload fixed a channel)."""
        async with self._write("retry deliveries now") as conn:
            return await outbox.retry_now(conn, schema.to_micros(now, "now"))

    async def retire_channels(self, active: Sequence[str], error: str) -> dict[str, int]:
        """Mark pending deliveries of channels not in `active` dead; counts per channel."""
        async with self._write("retire removed channels") as conn:
            return await outbox.retire(conn, active, error)

    async def enqueue_reminders(
        self, rules: Sequence[outbox.ReminderRule], now: dt.datetime
    ) -> dict[str, int]:
        """Queue the reminders due at `now` (see `outbox.enqueue_reminders`)."""
        async with self._write("queue reminders") as conn:
            return await outbox.enqueue_reminders(conn, rules, schema.to_micros(now, "now"))


def _scan_row(scan: ScanRecord) -> dict[str, Any]:
    where = f"scan of {scan.target}"
    return {
        "target": scan.target,
        "kind": ScanKind(scan.kind).value,
        "address": scan.address,
        "started": schema.to_micros(scan.started, f"{where}.started"),
        "finished": schema.to_micros(scan.finished, f"{where}.finished"),
        "complete": scan.complete,
        "ports_scanned": scan.ports_scanned,
        "open_count": scan.open_count,
        "closed_count": scan.closed_count,
        "filtered_count": scan.filtered_count,
        "duration_s": scan.duration_s,
        "vantage": scan.vantage,
    }
