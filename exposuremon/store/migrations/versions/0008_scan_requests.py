"""Scan requests: an on-demand scan asked of any node, run by the node holding the target.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

In a fleet, `POST /api/v1/targets/{name}/scan` may reach a node that does not hold the
target's shard. It leaves a row here, tagged with the shard; the node that holds that shard
takes it (deletes it) within a second and runs the scan.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the `scan_requests` table."""
    op.create_table(
        "scan_requests",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("vantage", sa.Text, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("requested_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scan_requests"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_scan_requests_vantage_shard", "scan_requests", ["vantage", "shard"])


def downgrade() -> None:
    """Back to 0007: the table goes."""
    op.drop_index("ix_scan_requests_vantage_shard", "scan_requests")
    op.drop_table("scan_requests")
