"""Vantages and the fleet: every observation carries its vantage; tables for nodes and leases.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Prepares fleet mode (docs/fleet.md) without changing behaviour. `scans.vantage` and
`port_state.vantage` say from which vantage point an observation was made; every existing row
and every row written without one is from "default", the single vantage of one node.
`nodes` lists a fleet's nodes, `shard_leases` which node of a vantage holds which shard and
until when (by the database's clock), and the one row of `fleet` the number of shards targets
hash into: fixed when the database is created, 64.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

SHARDS = 64


def upgrade() -> None:
    """Add the vantage columns and the `nodes`, `shard_leases` and `fleet` tables."""
    # A constant default lets SQLite add the columns in place, no table rebuild.
    for table in ("scans", "port_state"):
        op.add_column(
            table, sa.Column("vantage", sa.Text, nullable=False, server_default="default")
        )
    op.create_table(
        "nodes",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("vantage", sa.Text, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("config_hash", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_nodes"),
    )
    op.create_table(
        "shard_leases",
        sa.Column("vantage", sa.Text, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("vantage", "shard", name="pk_shard_leases"),
    )
    fleet = op.create_table(
        "fleet",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("shards", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fleet"),
        sa.CheckConstraint("id = 1", name="ck_fleet_one_row"),
        sa.CheckConstraint("shards > 0", name="ck_fleet_shards"),
    )
    op.bulk_insert(fleet, [{"id": 1, "shards": SHARDS}])


def downgrade() -> None:
    """Back to 0005: the fleet tables and the vantage columns go."""
    op.drop_table("fleet")
    op.drop_table("shard_leases")
    op.drop_table("nodes")
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35+): no rebuild of a referenced table.
    for table in ("port_state", "scans"):
        op.drop_column(table, "vantage")
