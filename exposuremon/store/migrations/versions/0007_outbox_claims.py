"""Fleet outbox: row leases on outbox rows, and each channel's rate window in the database.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Several nodes may deliver one shared outbox (docs/fleet.md, "Notifications in a fleet"). A node
takes a message under a lease: `outbox.claimed_by` names the node, `outbox.claim` is the token
of that one claim (a settle must show it), `outbox.claimed_until` is when the lease ends, by
the database's clock in microseconds. Existing rows are unclaimed (NULL): any node may take
them. `rate_windows` keeps per channel the send times the rate limit counts (`sent`, a JSON list
of microseconds, newest last) and a pause the receiver asked for (`paused_until`), so that the
nodes of a fleet share one limit per channel.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the claim columns to `outbox` and the `rate_windows` table."""
    # Nullable columns without a default: SQLite adds them in place, no table rebuild.
    op.add_column("outbox", sa.Column("claimed_by", sa.Text))
    op.add_column("outbox", sa.Column("claim", sa.Text))
    op.add_column("outbox", sa.Column("claimed_until", sa.BigInteger))
    op.create_table(
        "rate_windows",
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("sent", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("paused_until", sa.BigInteger),
        sa.PrimaryKeyConstraint("channel", name="pk_rate_windows"),
    )


def downgrade() -> None:
    """Back to 0006: the rate windows go, and the claims (a 0006 node takes every row)."""
    op.drop_table("rate_windows")
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35+): no rebuild of the outbox.
    for column in ("claimed_until", "claim", "claimed_by"):
        op.drop_column("outbox", column)
