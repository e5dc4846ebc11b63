"""Targets: change stamps, so `/metrics` re-reads only the targets written since its last scrape.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

`targets.changed_seq` is stamped by every write that may change what the state gauges show of
a target (an applied scan, an ack), `targets.times_seq` by every write of its scan times (an
applied scan, the flush of quiet scans). A stamp is one more than the largest of its column,
taken by the one writer, so a reader that remembers the largest stamps it saw asks only for
rows stamped later. Existing rows start at 0: a reader's first read is a full one anyway.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `targets.changed_seq` and `targets.times_seq`, each with an index."""
    # A constant default lets SQLite add the columns in place, no table rebuild.
    op.add_column(
        "targets", sa.Column("changed_seq", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("targets", sa.Column("times_seq", sa.Integer, nullable=False, server_default="0"))
    # Indexed: the largest stamp (taken at each write) and the rows after a stamp are index
    # searches, not scans of every target.
    op.create_index("ix_targets_changed_seq", "targets", ["changed_seq"])
    op.create_index("ix_targets_times_seq", "targets", ["times_seq"])


def downgrade() -> None:
    """Back to 0003: the stamps go (readers fall back to full reads)."""
    op.drop_index("ix_targets_times_seq", table_name="targets")
    op.drop_index("ix_targets_changed_seq", table_name="targets")
    # SQLite (3.35+) drops an unindexed column in place: a batch rebuild would have to drop
    # `targets`, which every other table references.
    op.drop_column("targets", "times_seq")
    op.drop_column("targets", "changed_seq")
