"""Evidence times: when a port's state and a target's liveness were last observed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

`port_state.observed_at` is when the probe behind the port's state was sent;
`targets.answered_at` when the newest answer applied was sent, `targets.silent_until` until
when the newest silent scan applied was silent. Detection changes nothing on evidence older
than these (issue 13). Existing rows get NULL: detection then falls back to `last_seen`,
`last_observed` and `status_since`, which are never earlier than the evidence was.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the three nullable time columns (SQLite adds them in place)."""
    op.add_column("port_state", sa.Column("observed_at", sa.BigInteger))
    op.add_column("targets", sa.Column("answered_at", sa.BigInteger))
    op.add_column("targets", sa.Column("silent_until", sa.BigInteger))


def downgrade() -> None:
    """Back to 0003: drop the columns (detection falls back to the scan times)."""
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35+): a batch rebuild of `targets` would drop a
    # table other tables reference.
    op.drop_column("targets", "silent_until")
    op.drop_column("targets", "answered_at")
    op.drop_column("port_state", "observed_at")
