"""Vantage health: events of a vantage (no target), and each vantage's shared status.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

A vantage whose scans go silent for most of its answering targets is degraded (issue 17):
one `vantage_degraded` event, later one `vantage_recovered`. Those events are a vantage's,
not a target's: `events.target` becomes nullable and `events.vantage` names the vantage.
`vantage_health` holds each vantage's status; a node sets it by compare-and-set, so that in a
fleet one node raises each event of an episode.

SQLite cannot drop a NOT NULL in place: `events` is rebuilt (its rows, ids and indexes kept;
the store migrates SQLite with foreign keys off and checks them before committing).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

_SEVERITIES = "severity IN ('info', 'warning', 'critical')"


def _events(target_nullable: bool, with_vantage: bool) -> sa.Table:
    """`events` as it stands before (or after) this revision, for SQLite's rebuild."""
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=target_nullable),
        sa.Column("port", sa.Integer),
        sa.Column("observed_at", sa.BigInteger, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("finding_id", sa.Integer),
        sa.Column("scan_id", sa.Integer),
    ]
    if with_vantage:
        columns.append(sa.Column("vantage", sa.Text))
    return sa.Table(
        "events",
        sa.MetaData(),
        *columns,
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["target"], ["targets.name"], name="fk_events_target_targets"),
        sa.ForeignKeyConstraint(
            ["finding_id"], ["findings.id"], name="fk_events_finding_id_findings"
        ),
        sa.ForeignKeyConstraint(
            ["scan_id"], ["scans.id"], name="fk_events_scan_id_scans", ondelete="SET NULL"
        ),
        sa.CheckConstraint(_SEVERITIES, name="ck_events_severity"),
        sa.Index("ix_events_target_id", "target", "id"),
        sa.Index("ix_events_type_id", "type", "id"),
        sa.Index("ix_events_observed_at", "observed_at"),
        sa.Index("ix_events_finding_id", "finding_id"),
        sa.Index("ix_events_scan_id", "scan_id"),
        sqlite_autoincrement=True,
    )


def upgrade() -> None:
    """Make `events.target` nullable, add `events.vantage` and the `vantage_health` table."""
    op.add_column("events", sa.Column("vantage", sa.Text))
    with op.batch_alter_table(
        "events",
        copy_from=_events(target_nullable=False, with_vantage=True),
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch:
        batch.alter_column("target", existing_type=sa.Text, nullable=True)
    op.create_table(
        "vantage_health",
        sa.Column("vantage", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("silent", sa.Integer, nullable=False),
        sa.Column("answering", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("vantage", name="pk_vantage_health"),
        sa.CheckConstraint("status IN ('up', 'degraded')", name="ck_vantage_health_status"),
    )


def downgrade() -> None:
    """Back to 0008: vantage events and statuses go; `events.target` is required again."""
    op.drop_table("vantage_health")
    op.execute("DELETE FROM outbox WHERE event_id IN (SELECT id FROM events WHERE target IS NULL)")
    op.execute("DELETE FROM events WHERE target IS NULL")
    with op.batch_alter_table(
        "events",
        copy_from=_events(target_nullable=True, with_vantage=True),
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch:
        batch.alter_column("target", existing_type=sa.Text, nullable=False)
        batch.drop_column("vantage")
