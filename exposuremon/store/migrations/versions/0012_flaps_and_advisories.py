"""Flap damping and firmware advisories: what they remember of each target.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

Two JSON columns on `targets`, NULL for none: `flaps`, flap damping's memory per port (recent
changes, an episode in progress), and `advisories`, the advisory rules matching the target
now. Both must survive a restart: a flapping port must not page again, nor a matched advisory.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `targets.flaps` and `targets.advisories`."""
    op.add_column("targets", sa.Column("flaps", sa.JSON(none_as_null=True)))
    op.add_column("targets", sa.Column("advisories", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    """Back to 0008: the columns go."""
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35+): a batch rebuild of `targets` would drop a
    # table every other table references.
    op.drop_column("targets", "advisories")
    op.drop_column("targets", "flaps")
