"""`exposuremon migrate-store`: a single node's SQLite history into a new PostgreSQL database."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from exposuremon.store import StoreError, copy_store, dialect_of


class DatabaseUrl(click.ParamType):  # type: ignore[type-arg]
    """A click parameter holding a database URL of one dialect; errors never echo the URL."""

    def __init__(self, dialect: str, example: str) -> None:
        self.dialect, self.name = dialect, example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        try:
            found = dialect_of(text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if found != self.dialect:
            self.fail(f"must be a {self.name} URL", param, ctx)
        return text


@click.command("migrate-store")
@click.option(
    "--from",
    "source",
    required=True,
    type=DatabaseUrl("sqlite", "sqlite:///FILE"),
    help="The SQLite store: sqlite:///FILE, e.g. sqlite:////var/lib/exposuremon/exposuremon.db.",
)
@click.option(
    "--to",
    "target",
    required=True,
    type=DatabaseUrl("postgresql", "postgresql://"),
    help="A new, empty PostgreSQL database: postgresql://USER@HOST/DB (keep the password "
    "out of the command line: ~/.pgpass or PGPASSWORD).",
)
def migrate_store(source: str, target: str) -> None:
    """Copy every table of a SQLite store (targets, port states, findings, events, scans,
    the outbox) into an empty PostgreSQL database, ids kept. Stop the daemon first."""
    live = sys.stderr.isatty()

    def progress(table: str, done: int, total: int) -> None:
        # A line per table; on a terminal it counts up while the table is copied.
        line = f"{table}: {done}/{total} rows"
        if done == total:
            click.echo(f"\r{line}" if live else line, err=True)
        elif live:
            click.echo(f"\r{line}", err=True, nl=False)

    try:
        copied = asyncio.run(copy_store(source, target, progress))
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"copied {sum(copied.values())} rows in {len(copied)} tables")
