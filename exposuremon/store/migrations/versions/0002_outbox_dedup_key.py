"""Outbox: a dedup key per delivery, and an index for the delivery worker's due-rows query.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

`dedup_key` is "<channel>/<event_id>": unique, so a channel can never get two deliveries of
one event, and a stable key for receivers. Existing rows are backfilled before the unique index
is built. The worker's query (`status = 'pending' AND next_attempt_at <= now`) gets a composite
index in place of the one on `status` alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Only the columns this revision touches, as they are at this revision.
_outbox = sa.table(
    "outbox",
    sa.column("channel", sa.Text),
    sa.column("event_id", sa.Integer),
    sa.column("dedup_key", sa.Text),
)


def upgrade() -> None:
    """Add and backfill `outbox.dedup_key`; index pending rows by due time."""
    op.add_column("outbox", sa.Column("dedup_key", sa.Text))
    op.execute(
        _outbox.update().values(
            dedup_key=_outbox.c.channel + "/" + sa.cast(_outbox.c.event_id, sa.Text)
        )
    )
    op.create_index("ix_outbox_dedup_key", "outbox", ["dedup_key"], unique=True)
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])
    op.drop_index("ix_outbox_status", table_name="outbox")


def downgrade() -> None:
    """Back to 0001's outbox; the dedup keys are derived data and can be rebuilt."""
    op.create_index("ix_outbox_status", "outbox", ["status"])
    op.drop_index("ix_outbox_status_next_attempt_at", table_name="outbox")
    op.drop_index("ix_outbox_dedup_key", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("dedup_key")
