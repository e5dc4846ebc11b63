"""`exposuremon migrate-store`: a SQLite store's history copied exactly into PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from exposuremon.model import EventType, FindingState, ScanKind, Severity, TargetState
from exposuremon.store import ReminderRule, Store, db_path
from exposuremon.store import schema as store_schema
from exposuremon.store.database import database_url
from tests.store.test_store import at, event, finding, rich_state, scan_of


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as an operator runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "exposuremon")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)


async def fill(state_dir: Path) -> None:
    """A store with every table in use: two targets, scans, ports, findings (open, acked,
    resolved), events, deliveries pending, sent and dead, reminders; all through the API."""
    async with await Store.open(state_dir) as store:
        await store.apply(
            scan_of("r", at(60)),
            rich_state("r"),
            [
                event("r", EventType.TARGET_UP, at(60), details={"at": at(59), "n": 1.5}),
                event("r", EventType.FINDING_REOPENED, at(60), 443, severity=Severity.CRITICAL),
            ],
            [*rich_state("r").findings.values(), *rich_state("r").resolved.values()],
            ["chat", "ops"],
        )
        opened = finding("s", 8080, severity=Severity.CRITICAL, opened_at=at(1))
        s_state = TargetState(name="s", findings={8080: opened}, last_scan={ScanKind.FULL: at(1)})
        second = await store.apply(
            scan_of("s", at(1), ScanKind.FULL),
            s_state,
            [event("s", EventType.FINDING_OPENED, at(1), 8080, severity=Severity.CRITICAL)],
            [opened],
            ["chat"],
        )
        await store.apply(scan_of("s", at(2), complete=False), second.state, [], [], [])
        await store.touch([dataclasses.replace(second.state, last_scan={ScanKind.FULL: at(3)})])
        now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)  # rows are due at the clock
        message, _ = await store.next_message("chat", now)
        assert message is not None
        await store.settle(message.ids, "sent", now)
        message, _ = await store.next_message("ops", now)
        assert message is not None
        await store.settle(message.ids, "dead", now, error="HTTP 404")
        await store.enqueue_reminders([ReminderRule("chat", dt.timedelta(hours=1), 3)], now)
        acked = dataclasses.replace(
            second.state.findings[8080],
            state=FindingState.ACKED,
            ack_until=now + dt.timedelta(days=7),
            ack_reason="known",
        )
        await store.save_ack(acked)


async def every_row(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (and the schema revision), in primary-key order."""
    engine = create_async_engine(database_url(url), poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            found = {}
            for table in store_schema.metadata.sorted_tables:
                query = sa.select(table).order_by(*table.primary_key.columns)
                found[table.name] = [tuple(r) for r in await conn.execute(query)]
            version = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            found["alembic_version"] = [tuple(r) for r in version]
            return found
    finally:
        await engine.dispose()


def test_migrate_store_copies_every_row_exactly(tmp_path: Path, pg_url: str) -> None:
    """Every row of every table arrives as it was, ids kept, with a line per table; new rows
    then get new ids; a second run into the now non-empty database is refused."""
    asyncio.run(fill(tmp_path / "state"))
    source = f"sqlite:///{db_path(tmp_path / 'state')}"
    before = asyncio.run(every_row(source))
    assert all(before[t] for t in ("targets", "scans", "port_state", "findings", "events"))
    assert all(before[t] for t in ("outbox", "reminders"))

    proc = run_cli("migrate-store", "--from", source, "--to", pg_url)
    assert (proc.returncode, proc.stdout) == (0, f"copied {rows(before)} rows in 12 tables\n")
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"{t}: {len(before[t])}/{len(before[t])} rows"
        for t in (
            "targets",
            "scans",
            "port_state",
            "findings",
            "events",
            "outbox",
            "reminders",
            "nodes",
            "shard_leases",
            "maintenance_windows",
            "maintenance_held",
            "maintenance_active",
        )
    ]
    assert asyncio.run(every_row(pg_url)) == before

    async def apply_more() -> tuple[int, tuple[int, ...]]:
        async with await Store.open(pg_url) as store:
            state = await store.load_state("s")
            done = await store.apply(
                scan_of("s", at(9)), state, [event("s", EventType.TARGET_DOWN, at(9))], [], []
            )
            return done.scan_id, done.event_ids

    scan_id, event_ids = asyncio.run(apply_more())
    assert scan_id == max(r[0] for r in before["scans"]) + 1
    assert event_ids == (max(r[0] for r in before["events"]) + 1,)

    again = run_cli("migrate-store", "--from", source, "--to", pg_url)
    assert again.returncode == 1
    assert again.stderr.endswith(
        "not empty (table targets has rows); migrate-store copies only into a new database\n"
    )
    assert len(again.stderr.splitlines()) == 1


def rows(tables: dict[str, list[tuple[Any, ...]]]) -> int:
    """Rows of the copied tables (not the target's own fleet row and schema revision)."""
    return sum(len(v) for k, v in tables.items() if k not in ("fleet", "alembic_version"))


def test_bad_urls_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """Wrong dialects or a missing source are one line each; a password is never echoed."""
    target = "postgresql://em:hunter2@db.invalid/em"
    cases = [
        (("--from", target, "--to", target), "Invalid value for '--from': must be a sqlite"),
        (("--from", "sqlite:///x.db", "--to", "sqlite:///y.db"), "must be a postgresql:// URL"),
        (("--from", "mysql://em:hunter2@h/em", "--to", target), "only postgresql:// and sqlite"),
    ]
    for args, message in cases:
        proc = run_cli("migrate-store", *args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert len(proc.stderr.splitlines()) == 1
        assert "hunter2" not in proc.stderr
    missing = tmp_path / "nothing.db"
    proc = run_cli("migrate-store", "--from", f"sqlite:///{missing}", "--to", target)
    assert (proc.returncode, proc.stderr) == (1, f"exposuremon: error: no database at {missing}\n")
    assert not missing.exists()
