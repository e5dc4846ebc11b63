"""Alembic environment for the store's schema.

`exposuremon.store.database.migrate` runs it with an open connection in
`config.attributes["connection"]` (inside the caller's transaction, so an upgrade commits whole
or not at all). From the command line it works with an ini file holding
`script_location = exposuremon.store:migrations` and
`sqlalchemy.url = sqlite:////var/lib/exposuremon/exposuremon.db`, online or with `--sql`
(a `postgresql://` URL there needs a synchronous driver, which exposuremon does not install;
the store migrates PostgreSQL itself, on asyncpg, at start).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import context

from exposuremon.store import database, schema

config = context.config
target_metadata = schema.metadata


def _run(connection: sa.Connection) -> None:
    """Run the pending revisions on `connection`, all in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters tables by rebuilding them; batch mode copies the rows across.
        render_as_batch=True,
        # SQLite has transactional DDL; Alembic assumes otherwise unless told.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "sqlite":
            # Migrations run with SQLite's foreign keys off (`database.sqlite_engine`): every
            # reference is checked here instead, before the upgrade commits.
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"migrations: foreign keys broken: {broken[:5]}")


def _engine_for(url: str) -> sa.Engine:
    """An engine for a URL from the ini file, with the store's SQLite settings."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return database.sqlite_engine(Path(parsed.database), foreign_keys=False)
    return sa.create_engine(parsed)


def run_offline() -> None:
    """Print the SQL instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate the connection passed in, or one made from `sqlalchemy.url`."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("migrations: no connection passed and no sqlalchemy.url configured")
    engine = _engine_for(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
