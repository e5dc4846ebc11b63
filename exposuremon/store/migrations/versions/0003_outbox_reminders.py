"""Outbox: reminders of open critical findings, and an index to load one message's rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

`outbox.kind` tells event deliveries ("event", every existing row) from reminders
("reminder", pointing at the event that opened the finding), `outbox.reminder` numbers a
finding's reminders per channel. The `reminders` table keeps, per finding and channel, how
many were sent since the finding was last acknowledged and when the last one was queued. The
delivery worker loads a message by (channel, group_key): it gets an index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `outbox.kind` and `outbox.reminder`, the `reminders` table and the group index."""
    # A constant default lets SQLite add the column in place, no table rebuild.
    op.add_column("outbox", sa.Column("kind", sa.Text, nullable=False, server_default="event"))
    op.add_column("outbox", sa.Column("reminder", sa.Integer))
    op.create_index("ix_outbox_channel_group_key", "outbox", ["channel", "group_key"])
    op.create_table(
        "reminders",
        sa.Column("finding_id", sa.Integer, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("last_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("finding_id", "channel", name="pk_reminders"),
        sa.ForeignKeyConstraint(
            ["finding_id"], ["findings.id"], name="fk_reminders_finding_id_findings"
        ),
    )


def downgrade() -> None:
    """Back to 0002: reminder rows go (they are repeats of delivered events), then the columns."""
    op.drop_table("reminders")
    op.execute("DELETE FROM outbox WHERE kind = 'reminder'")
    op.drop_index("ix_outbox_channel_group_key", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("reminder")
        batch.drop_column("kind")
