"""Shard leases and fencing (fleet mode, docs/fleet.md): the SQL behind the `Store` methods.

A lease is one `shard_leases` row (vantage, shard) -> (node, epoch, expires_at). Every time
in these rows is the database's clock (`db_now`: PostgreSQL's `clock_timestamp()`, SQLite's
`julianday('now')`), never a node's, in the schema's integer microseconds. Taking a free or
expired shard bumps its epoch; renewing keeps it. A write fenced by (vantage, shard, epoch,
node) checks, inside its own transaction, that the row still says so and has not expired,
and locks it (PostgreSQL `FOR SHARE`) so that no takeover (`FOR UPDATE SKIP LOCKED`) can
slip in before its commit. On SQLite the same statements run; the lock clauses render to
nothing, and `BEGIN IMMEDIATE` serialises the transactions instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from exposuremon.store import schema

_UNIX_EPOCH_JULIAN = 2440587.5
_MICROS_PER_DAY = 86_400_000_000
_NOBODY = ""  # the node of a lease row that was created free and never held


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease row in a vantage; `expires_at` in microseconds of the db clock."""

    shard: int
    node: str
    epoch: int
    expires_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class FleetNode:
    """One `nodes` row; times in microseconds of the db clock."""

    name: str
    vantage: str
    started_at: int
    last_seen: int
    version: str
    config_hash: str


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseView:
    """A vantage's leases and the fleet's nodes, read at `now` (db clock, microseconds)."""

    now: int
    leases: tuple[Lease, ...]
    nodes: tuple[FleetNode, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Every vantage's leases and every node, read in one snapshot at `now` (db clock,
    microseconds), with the fixed shard count: what the fleet view is made of."""

    now: int
    shards: int
    leases: Mapping[str, tuple[Lease, ...]]  # vantage -> its lease rows, by shard
    nodes: tuple[FleetNode, ...]
    # Vantages whose shared health is degraded (`vantage_health`: their scans went silent).
    degraded: frozenset[str] = frozenset()

    def vantages(self) -> tuple[str, ...]:
        """Every vantage named by a node or a lease row, sorted."""
        return tuple(sorted({n.vantage for n in self.nodes} | set(self.leases)))


@dataclasses.dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease this node holds after `Store.acquire`: its epoch and db-clock expiry."""

    epoch: int
    expires_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Acquired:
    """What `Store.acquire` left this node holding (shard -> lease), at `now` (db clock).

    `takeovers`: how many shards it took from a previous holder (another node, or its own
    lapsed lease), each with a new epoch; a never-held shard taken is not one.
    """

    now: int
    held: Mapping[int, HeldLease]
    takeovers: int


@dataclasses.dataclass(frozen=True, slots=True)
class Fence:
    """The lease a write is made under: refused unless it is still current (`FencedWrite`)."""

    vantage: str
    shard: int
    epoch: int
    node: str


def db_now(conn: AsyncConnection) -> sa.ColumnElement[int]:
    """The database's clock now, in integer microseconds since the Unix epoch, as SQL."""
    if conn.dialect.name == "postgresql":
        # clock_timestamp(), not now(): the time of this statement, not of the transaction.
        seconds = sa.extract("epoch", sa.func.clock_timestamp())
        return sa.cast(sa.func.floor(seconds * 1_000_000), sa.BigInteger)
    julian = sa.func.julianday("now")
    return sa.cast((julian - _UNIX_EPOCH_JULIAN) * _MICROS_PER_DAY, sa.BigInteger)


async def read_now(conn: AsyncConnection) -> int:
    """The database's clock now (microseconds)."""
    return int((await conn.execute(sa.select(db_now(conn)))).scalar_one())


def insert_of(conn: AsyncConnection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of the connection's dialect (for its ON CONFLICT clauses)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_insert = insert_of


async def fleet_shards(conn: AsyncConnection) -> int:
    """The number of shards targets hash into (fixed when the database was created)."""
    return int((await conn.execute(sa.select(schema.fleet.c.shards))).scalar_one())


async def heartbeat(
    conn: AsyncConnection,
    node: str,
    vantage: str,
    version: str,
    config_hash: str,
    restart: bool,
) -> int:
    """Upsert the node's row with last_seen = db now; returns that time.

    `started_at` is set when the row is new or `restart` says the node (re)started; kept
    otherwise.
    """
    now = await read_now(conn)
    t = schema.nodes
    stmt = _insert(conn, t).values(
        name=node,
        vantage=vantage,
        started_at=now,
        last_seen=now,
        version=version,
        config_hash=config_hash,
    )
    update: dict[str, object] = {
        "vantage": stmt.excluded.vantage,
        "last_seen": stmt.excluded.last_seen,
        "version": stmt.excluded.version,
        "config_hash": stmt.excluded.config_hash,
    }
    if restart:
        update["started_at"] = stmt.excluded.started_at
    await conn.execute(stmt.on_conflict_do_update(index_elements=[t.c.name], set_=update))
    return now


async def lease_view(conn: AsyncConnection, vantage: str) -> LeaseView:
    """The vantage's lease rows and every node row, with the db clock's now."""
    now = await read_now(conn)
    sl = schema.shard_leases
    rows = await conn.execute(
        sa.select(sl.c.shard, sl.c.node, sl.c.epoch, sl.c.expires_at)
        .where(sl.c.vantage == vantage)
        .order_by(sl.c.shard)
    )
    leases = tuple(Lease(int(s), str(nd), int(e), int(x)) for s, nd, e, x in rows)
    return LeaseView(now=now, leases=leases, nodes=await _nodes(conn))


async def _nodes(conn: AsyncConnection) -> tuple[FleetNode, ...]:
    n = schema.nodes
    rows = await conn.execute(sa.select(n).order_by(n.c.name))
    return tuple(
        FleetNode(
            name=r.name,
            vantage=r.vantage,
            started_at=int(r.started_at),
            last_seen=int(r.last_seen),
            version=r.version,
            config_hash=r.config_hash,
        )
        for r in rows
    )


async def fleet_snapshot(conn: AsyncConnection) -> FleetSnapshot:
    """Every vantage's lease rows and every node row, with the shard count and db now.

    Rows of never-held shards (node "", epoch 0) are left out: such a shard is unheld, as a
    missing row is.
    """
    now = await read_now(conn)
    shards = await fleet_shards(conn)
    sl = schema.shard_leases
    rows = await conn.execute(
        sa.select(sl.c.vantage, sl.c.shard, sl.c.node, sl.c.epoch, sl.c.expires_at)
        .where(sl.c.node != _NOBODY)
        .order_by(sl.c.vantage, sl.c.shard)
    )
    by_vantage: dict[str, list[Lease]] = {}
    for v, s, nd, e, x in rows:
        by_vantage.setdefault(str(v), []).append(Lease(int(s), str(nd), int(e), int(x)))
    leases = {v: tuple(rows_of) for v, rows_of in by_vantage.items()}
    vh = schema.vantage_health
    degraded = frozenset(
        str(v)
        for v in (
            await conn.execute(sa.select(vh.c.vantage).where(vh.c.status == "degraded"))
        ).scalars()
    )
    return FleetSnapshot(
        now=now, shards=shards, leases=leases, nodes=await _nodes(conn), degraded=degraded
    )


async def acquire(
    conn: AsyncConnection,
    vantage: str,
    node: str,
    take: Collection[int],
    renew: Mapping[int, int],
    ttl_micros: int,
    shards: int,
) -> Acquired:
    """Take `take` where free or expired and renew `renew` (shard -> epoch), in one transaction.

    Rows are locked before they are judged: renewals wait for their rows (only this node's
    own fenced writes hold them, briefly), takes skip rows another transaction holds
    (`SKIP LOCKED`: a shard being taken, or written under its fence, is not free). A renewal
    succeeds only while the row is still this node's, with the same epoch, and unexpired; an
    expired row of this node that nobody took is taken again (new epoch). Returns every
    shard this node holds now, renewals and takes included.
    """
    sl = schema.shard_leases
    wanted = sorted({s for s in (*take, *renew) if 0 <= s < shards})
    existing = set(
        (
            await conn.execute(
                sa.select(sl.c.shard).where(sl.c.vantage == vantage, sl.c.shard.in_(wanted))
            )
        ).scalars()
    )
    missing = [s for s in wanted if s not in existing]
    if missing:
        # Ascending order, as every transaction inserts: concurrent inserters wait, never
        # deadlock. A free row: nobody's, expired since the epoch began.
        stmt = _insert(conn, sl).values(
            [
                {"vantage": vantage, "shard": s, "node": _NOBODY, "epoch": 0, "expires_at": 0}
                for s in missing
            ]
        )
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=[sl.c.vantage, sl.c.shard]))
    columns = (sl.c.shard, sl.c.node, sl.c.epoch, sl.c.expires_at)
    renewing = sorted(s for s in renew if 0 <= s < shards)
    locked: dict[int, Lease] = {}
    if renewing:
        query = (
            sa.select(*columns)
            .where(sl.c.vantage == vantage, sl.c.shard.in_(renewing))
            .order_by(sl.c.shard)
            .with_for_update()
        )
        for s, nd, e, x in await conn.execute(query):
            locked[int(s)] = Lease(int(s), str(nd), int(e), int(x))
    taking = sorted(s for s in take if 0 <= s < shards and s not in renew)
    if taking:
        query = (
            sa.select(*columns)
            .where(sl.c.vantage == vantage, sl.c.shard.in_(taking))
            .order_by(sl.c.shard)
            .with_for_update(skip_locked=True)
        )
        for s, nd, e, x in await conn.execute(query):
            locked[int(s)] = Lease(int(s), str(nd), int(e), int(x))
    now = await read_now(conn)
    expires = now + ttl_micros
    held: dict[int, HeldLease] = {}
    takeovers = 0
    extend: list[int] = []
    for shard, lease in sorted(locked.items()):
        if lease.expires_at > now:
            if lease.node == node and renew.get(shard) == lease.epoch:
                extend.append(shard)
                held[shard] = HeldLease(lease.epoch, expires)
            continue  # another node's live lease, or ours under an epoch we do not know
        # Free or expired: a takeover with a new epoch.
        await conn.execute(
            sa.update(sl)
            .where(sl.c.vantage == vantage, sl.c.shard == shard, sl.c.epoch == lease.epoch)
            .values(node=node, epoch=lease.epoch + 1, expires_at=expires)
        )
        held[shard] = HeldLease(lease.epoch + 1, expires)
        takeovers += lease.node != _NOBODY
    if extend:
        await conn.execute(
            sa.update(sl)
            .where(sl.c.vantage == vantage, sl.c.node == node, sl.c.shard.in_(extend))
            .values(expires_at=expires)
        )
    return Acquired(now=now, held=held, takeovers=takeovers)


async def release(
    conn: AsyncConnection, vantage: str, node: str, shards: Collection[int], leave: bool
) -> int:
    """Expire this node's unexpired leases of `shards` now (epochs kept); rows changed.
    `leave`: the node stops, its `nodes` row goes too (the others count it out at once)."""
    if leave:
        await conn.execute(sa.delete(schema.nodes).where(schema.nodes.c.name == node))
    if not shards:
        return 0
    sl = schema.shard_leases
    now = db_now(conn)
    result = await conn.execute(
        sa.update(sl)
        .where(
            sl.c.vantage == vantage,
            sl.c.node == node,
            sl.c.shard.in_(sorted(shards)),
            sl.c.expires_at > now,
        )
        .values(expires_at=now)
    )
    return int(result.rowcount)


async def stale_fences(conn: AsyncConnection, fences: Collection[Fence]) -> set[Fence]:
    """The fences whose lease moved on (another node, another epoch, expired by the db clock,
    or no row); the others' rows stay share-locked until the transaction ends."""
    sl = schema.shard_leases
    stale: set[Fence] = set()
    by_vantage: dict[str, list[Fence]] = {}
    for fence in fences:
        by_vantage.setdefault(fence.vantage, []).append(fence)
    for vantage in sorted(by_vantage):
        wanted = by_vantage[vantage]
        query = (
            sa.select(sl.c.shard, sl.c.node, sl.c.epoch, sl.c.expires_at, db_now(conn))
            .where(sl.c.vantage == vantage, sl.c.shard.in_(sorted({f.shard for f in wanted})))
            .order_by(sl.c.shard)
            .with_for_update(read=True)
        )
        rows = {
            int(s): (str(nd), int(e), int(x), int(now))
            for s, nd, e, x, now in await conn.execute(query)
        }
        for fence in wanted:
            row = rows.get(fence.shard)
            if row is None:
                stale.add(fence)
                continue
            node, epoch, expires_at, now = row
            if node != fence.node or epoch != fence.epoch or expires_at <= now:
                stale.add(fence)
    return stale


def describe_fence(fence: Fence) -> str:
    """A fence as a log line names it."""
    return f"vantage {fence.vantage!r} shard {fence.shard} epoch {fence.epoch} of {fence.node!r}"
