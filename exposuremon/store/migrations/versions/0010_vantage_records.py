"""Vantage records: each vantage's own evidence of a target, seen_from, ports of a request.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Every vantage scans every target (docs/architecture.md "Fleet and vantage points"), and
detection merges their evidence. `targets.vantages` keeps each vantage's latest evidence of
the target (its newest answer and silence; per port: state, when observed, closed streak) as
JSON, in the target's own row: it is read and written with the merged state, in the same
transaction, and one node alone (vantage "default") keeps none. `findings.seen_from` names
the vantages by what they last saw of the port; `scan_requests.ports` the ports a targeted
re-probe scans (NULL: the kind's own ports).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `targets.vantages`, `findings.seen_from` and `scan_requests.ports`."""
    # Constant defaults: SQLite adds the columns in place, no table rebuild.
    op.add_column("targets", sa.Column("vantages", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("findings", sa.Column("seen_from", sa.JSON(), nullable=True))
    op.add_column("scan_requests", sa.Column("ports", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Back to 0008: the three columns go."""
    op.drop_column("scan_requests", "ports")
    op.drop_column("findings", "seen_from")
    op.drop_column("targets", "vantages")
