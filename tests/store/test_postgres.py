"""What only PostgreSQL has: URLs and their redaction, migrations racing from two processes,
writers of two processes serialised by the database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from exposuremon.model import ScanKind, TargetState
from exposuremon.store import Store, StoreError
from exposuremon.store.database import (
    IDLE_IN_TRANSACTION_MS,
    database_url,
    describe_url,
    postgres_engine,
)
from tests.store.test_store import HEAD, T0, scan_of
from tests.support.daemon import wait_until
from tests.support.databases import Backend

# Waits for a line on stdin, so that both processes migrate at the same instant.
MIGRATE_WHEN_TOLD = textwrap.dedent(
    """
    import sys
    from exposuremon.store.database import migrate
    print("ready", flush=True)
    sys.stdin.readline()
    migrate(sys.argv[1])
    print("migrated", flush=True)
    """
)


def test_urls_map_to_the_async_drivers(tmp_path: Path) -> None:
    """A state dir and sqlite:/// are aiosqlite; postgresql:// is asyncpg; others are refused."""
    assert database_url(tmp_path).render_as_string() == (
        f"sqlite+aiosqlite:///{tmp_path}/exposuremon.db"
    )
    assert database_url("sqlite:////var/x.db").drivername == "sqlite+aiosqlite"
    url = database_url("postgresql://u:pw@db.example/em?sslmode=verify-full")
    assert (url.drivername, url.host, url.database) == ("postgresql+asyncpg", "db.example", "em")
    assert database_url("postgresql+psycopg://u@/em").drivername == "postgresql+psycopg"
    for bad, why in (
        ("mysql://u:hunter2@db/em", "only postgresql:// and sqlite:///"),
        ("postgresql+pg8000://u:hunter2@db/em", "driver 'pg8000' is not one of"),
        ("sqlite://", "needs a file"),
        ("not a url hunter2", "not a database URL"),
    ):
        with pytest.raises(ValueError, match=why) as raised:
            database_url(bad)
        assert "hunter2" not in str(raised.value)


def test_a_described_url_holds_no_password() -> None:
    """Passwords in the user part or in query parameters never show; the rest does."""
    url = database_url(
        "postgresql://em:hunter2@db.example:5433/em?sslmode=verify-full&sslpassword=s3cret"
    )
    shown = describe_url(url)
    assert "hunter2" not in shown
    assert "s3cret" not in shown
    assert shown.startswith("postgresql+asyncpg://em:***@db.example:5433/em?")
    assert "sslmode=verify-full" in shown


async def test_a_connection_failure_names_no_password(pg_url: str) -> None:
    """A wrong database in a URL with a password fails with an error that omits it."""
    wrong = pg_url.replace("postgres@/", "postgres:hunter2@/", 1).replace("/test_", "/absent_")
    with pytest.raises(Exception) as raised:  # noqa: PT011 (any error, as long as it is clean)
        await Store.open(wrong)
    assert "hunter2" not in str(raised.value)
    assert "absent_" in str(raised.value)


def test_two_processes_migrating_at_once_migrate_once(pg_url: str) -> None:
    """Two processes told at the same instant to migrate an empty database both succeed, and
    the schema is there once (the fleet row once, the head revision once)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_WHEN_TOLD, pg_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert [
        (proc.returncode, out, err) for proc, (out, err) in zip(procs, results, strict=True)
    ] == [(0, "migrated\n", "")] * 2
    backend = Backend.postgresql(pg_url)
    assert asyncio.run(backend.run("SELECT version_num FROM alembic_version")) == [(HEAD,)]
    assert asyncio.run(backend.run("SELECT id, shards FROM fleet")) == [(1, 64)]


async def test_a_writer_of_another_process_waits_for_the_store(pg_url: str) -> None:
    """While another connection holds the writers' lock, an apply waits, then goes through."""
    async with await Store.open(pg_url) as store:
        state = TargetState(name="r", last_scan={ScanKind.QUICK: T0})
        engine = create_async_engine(database_url(pg_url), poolclass=sa.NullPool)
        try:
            async with engine.begin() as other:
                await other.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITER})
                applying = asyncio.create_task(store.apply(scan_of("r", T0), state, [], [], []))

                async def apply_waits_for_the_lock() -> bool:
                    waiting = await other.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_locks"
                            " WHERE locktype = 'advisory' AND NOT granted"
                        )
                    )
                    return bool(waiting.scalar_one())

                await wait_until(apply_waits_for_the_lock, 30, "the apply to wait for the lock")
                assert not applying.done()
            await asyncio.wait_for(applying, 30)  # the lock went with the other's commit
        finally:
            await engine.dispose()
        assert await store.last_scans() == {("r", ScanKind.QUICK): T0}


WRITER = 0x656D6F6E_00000001  # the store's writers' advisory lock key (database._WRITER_LOCK)


async def test_libpq_parameters_in_the_url_reach_the_driver(tmp_path: Path, pg_url: str) -> None:
    """libpq's TLS parameters in the URL are the driver's: `sslmode=disable` connects, and
    `verify-full` with a CA file that is not there fails on it, the URL naming which."""
    async with await Store.open(f"{pg_url}&sslmode=disable") as store:
        assert await store.load_states() == {}
    ca = tmp_path / "no-such-ca.pem"
    with pytest.raises(StoreError, match=r"sslrootcert=.*: cannot connect: No such file"):
        await Store.open(f"{pg_url}&sslmode=verify-full&sslrootcert={ca}")


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_a_session_idle_inside_a_transaction_is_ended_by_the_server(
    pg_url: str, driver: str
) -> None:
    """The store's sessions on either driver carry a timeout for idling inside a transaction,
    so that a node stopped in the middle of a write cannot hold its locks for long."""
    url = database_url(pg_url).set(drivername=f"postgresql+{driver}")
    engine = postgres_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            shown = await conn.execute(sa.text("SHOW idle_in_transaction_session_timeout"))
            assert shown.scalar_one() == f"{IDLE_IN_TRANSACTION_MS // 1000}s"
    finally:
        await engine.dispose()
