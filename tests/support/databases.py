"""The two store backends the tests run on: a SQLite file under tmp_path, a PostgreSQL database.

`Backend` is what a test needs of either: what `Store.open` takes, and SQL from another
connection (`run`, with `?` placeholders on both dialects), as a second process would see it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from exposuremon.store.database import (
    database_url,
    db_path,
    migrate,
    migrate_postgres,
    postgres_engine,
)

SQLITE, POSTGRESQL = "sqlite", "postgresql"
# Every table of the store, parents before children (the order rows can be copied in).
TABLES = ("targets", "scans", "port_state", "findings", "events", "outbox")


def named_params(sql: str) -> tuple[str, list[str]]:
    """`sql` with each `?` replaced by `:p0`, `:p1`, ... (outside quotes), and those names."""
    names: list[str] = []
    counter = itertools.count()

    def name(match: re.Match[str]) -> str:
        if match.group(0) != "?":
            return match.group(0)  # a quoted literal, kept as it is
        names.append(f"p{next(counter)}")
        return f":{names[-1]}"

    return re.sub(r"'(?:[^']|'')*'|\?", name, sql), names


@dataclasses.dataclass(frozen=True)
class Backend:
    """One store database: `where` is what `Store.open` takes, `url` its URL."""

    dialect: str
    where: Path | str
    url: str

    @classmethod
    def sqlite(cls, state_dir: Path) -> Backend:
        """The SQLite file under `state_dir` (created by the first `Store.open`)."""
        return cls(SQLITE, state_dir, f"sqlite:///{db_path(state_dir)}")

    @classmethod
    def postgresql(cls, url: str) -> Backend:
        """A PostgreSQL database (empty until the first `Store.open` migrates it)."""
        return cls(POSTGRESQL, url, url)

    @property
    def postgres(self) -> bool:
        """Whether this is the PostgreSQL backend."""
        return self.dialect == POSTGRESQL

    async def run(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run SQL in its own transaction on a separate connection; the rows it returned."""
        text, names = named_params(sql)
        url = database_url(self.url)
        engine = (
            postgres_engine(url, poolclass=sa.NullPool)
            if self.postgres
            else create_async_engine(url, poolclass=sa.NullPool)
        )
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(text), dict(zip(names, args, strict=True)))
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    async def counts(self, tables: tuple[str, ...] = TABLES) -> dict[str, int]:
        """Row count of each table."""
        return {t: (await self.run(f"SELECT count(*) FROM {t}"))[0][0] for t in tables}

    async def migrate(self, revision: str = "head") -> None:
        """Migrate the database to `revision` (the SQLite file is created when missing)."""
        if self.postgres:
            await migrate_postgres(database_url(self.url), revision)
        else:
            path = db_path(Path(self.where))
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(migrate, path, revision)
