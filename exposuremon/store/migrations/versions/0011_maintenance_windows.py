"""Maintenance windows: ad-hoc windows, notifications held during them, targets in one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

`maintenance_windows` keeps the windows the API and the CLI add (the config's are not
stored); `maintenance_held` the notifications held back while a target is in maintenance,
until the summary at the window's end; `maintenance_active` which targets the service has
recorded as in maintenance (their `maintenance_started` event was written).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the three maintenance tables."""
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("targets", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("starts_at", sa.BigInteger, nullable=False),
        sa.Column("ends_at", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("ended_early_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_windows"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_maintenance_windows_ends_at", "maintenance_windows", ["ends_at"])
    op.create_table(
        "maintenance_held",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("event_id", sa.Integer, nullable=False),
        sa.Column("held_at", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_maintenance_held_event_id_events"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_held"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_maintenance_held_target", "maintenance_held", ["target"])
    op.create_index("ix_maintenance_held_event_id", "maintenance_held", ["event_id"])
    op.create_table(
        "maintenance_active",
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("window", sa.Text, nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_maintenance_active"),
    )


def downgrade() -> None:
    """Back to 0008: the tables go (held notifications with them)."""
    op.drop_table("maintenance_active")
    op.drop_index("ix_maintenance_held_event_id", "maintenance_held")
    op.drop_index("ix_maintenance_held_target", "maintenance_held")
    op.drop_table("maintenance_held")
    op.drop_index("ix_maintenance_windows_ends_at", "maintenance_windows")
    op.drop_table("maintenance_windows")
