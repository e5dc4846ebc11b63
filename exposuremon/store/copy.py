"""Copying a single node's SQLite store into a new PostgreSQL database (`migrate-store`).

Every row of every table, ids kept, read in one snapshot of the source and written in one
transaction of the target: a failure leaves the target as empty as it was. The target must be
empty (a freshly migrated database); its id sequences are moved past the copied ids afterwards,
so that the next scan, event or delivery gets a new id, never a copied one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from exposuremon.store import database, schema

# Parents before children (foreign keys). `fleet` is not copied: the target keeps the shard
# count it was created with; `alembic_version` is the target's own.
COPIED = (
    schema.targets,
    schema.scans,
    schema.port_state,
    schema.findings,
    schema.events,
    schema.outbox,
    schema.reminders,
    schema.nodes,
    schema.shard_leases,
    schema.maintenance_windows,
    schema.maintenance_held,
    schema.maintenance_active,
)
BATCH = 5000  # rows per INSERT: bounded memory on a store of millions of events

Progress = Callable[[str, int, int], None]  # table, rows copied so far, rows in the table


def dialect_of(url: str) -> str:
    """`sqlite` or `postgresql` for a database URL; ValueError (without the URL) otherwise."""
    return database.database_url(url).get_backend_name()


async def copy_store(source: str, target: str, progress: Progress) -> dict[str, int]:
    """Copy the SQLite store at `source` into the empty PostgreSQL database at `target`.

    Both are migrated to the newest schema first (the source as the daemon would at its next
    start). Returns the rows copied per table. StoreError when the source does not exist,
    the target is not empty, or either database fails; ValueError for the wrong dialects.
    """
    src_url, dst_url = database.database_url(source), database.database_url(target)
    if database.is_postgres(src_url):
        raise ValueError("the source must be a sqlite:/// URL")
    if not database.is_postgres(dst_url):
        raise ValueError("the target must be a postgresql:// URL")
    path = Path(src_url.database or "")
    if not await asyncio.to_thread(path.is_file):
        # migrate() would create an empty database there: say what is missing instead.
        raise database.StoreError(f"no database at {path}")
    await asyncio.to_thread(database.migrate, path)
    await database.migrate_postgres(dst_url)
    shown = database.describe_url(dst_url)
    src = create_async_engine(src_url, connect_args={"isolation_level": None})
    database.setup_sqlite(src.sync_engine)
    dst = database.postgres_engine(dst_url)
    try:
        with database.errors(f"copy into {shown}"):
            async with src.connect() as reading, dst.begin() as writing:
                await database.lock_postgres_writers(writing)
                await _refuse_rows(writing, shown)
                copied = {
                    table.name: await _copy_table(reading, writing, table, progress)
                    for table in COPIED
                }
                await _reset_sequences(writing)
    finally:
        await src.dispose()
        await dst.dispose()
    return copied


async def _refuse_rows(conn: AsyncConnection, shown: str) -> None:
    """StoreError naming the first table of the target that has a row."""
    for table in COPIED:
        if (await conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1))).first():
            raise database.StoreError(
                f"{shown}: not empty (table {table.name} has rows); migrate-store copies only "
                "into a new database"
            )


async def _copy_table(
    reading: AsyncConnection, writing: AsyncConnection, table: sa.Table, progress: Progress
) -> int:
    """Copy one table in batches, in primary-key order; the rows copied."""
    total = int((await reading.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
    done = 0
    progress(table.name, done, total)
    result = await reading.stream(sa.select(table).order_by(*table.primary_key.columns))
    async for batch in result.partitions(BATCH):
        await writing.execute(sa.insert(table), [dict(row._mapping) for row in batch])
        done += len(batch)
        progress(table.name, done, total)
    return done


async def _reset_sequences(conn: AsyncConnection) -> None:
    """Let each serial id continue after the largest copied one (rows were inserted with
    their ids, which does not advance PostgreSQL's sequences)."""
    for table in COPIED:
        key = table.c.get("id")
        if key is None or not table.primary_key.columns.contains_column(key):
            continue
        sequence = sa.func.pg_get_serial_sequence(table.name, "id")
        after = sa.func.coalesce(sa.func.max(key), 0) + 1
        await conn.execute(sa.select(sa.func.setval(sequence, after, False)).select_from(table))
