"""Initial schema: targets, scans, port_state, findings, events, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Times are integer microseconds since the Unix epoch (UTC). Written out in full rather than
imported from `exposuremon.store.schema`, so that this revision stays what it was when later
ones change the schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_SEVERITIES = "severity IN ('info', 'warning', 'critical')"


def upgrade() -> None:
    """Create the initial tables and indexes."""
    op.create_table(
        "targets",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_since", sa.BigInteger),
        sa.Column("expected_refusing", sa.Boolean, nullable=False),
        sa.Column("last_reboot", sa.BigInteger),
        sa.Column("last_scan", sa.JSON, nullable=False),
        sa.Column("reopened_total", sa.Integer, nullable=False),
        sa.Column("reboots_total", sa.Integer, nullable=False),
        sa.Column("last_observed", sa.BigInteger),
        sa.Column("anomaly_since", sa.BigInteger),
        sa.Column("recent", sa.JSON, nullable=False),
        sa.Column("resolved_ids", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_targets"),
    )
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("started", sa.BigInteger, nullable=False),
        sa.Column("finished", sa.BigInteger, nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("ports_scanned", sa.Integer, nullable=False),
        sa.Column("open_count", sa.Integer, nullable=False),
        sa.Column("closed_count", sa.Integer, nullable=False),
        sa.Column("filtered_count", sa.Integer, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scans"),
        sa.ForeignKeyConstraint(["target"], ["targets.name"], name="fk_scans_target_targets"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_scans_target_kind_finished", "scans", ["target", "kind", "finished"])
    op.create_index("ix_scans_finished", "scans", ["finished"])

    op.create_table(
        "port_state",
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("last_change", sa.BigInteger, nullable=False),
        sa.Column("times_opened", sa.Integer, nullable=False),
        sa.Column("times_closed", sa.Integer, nullable=False),
        sa.Column("times_reopened", sa.Integer, nullable=False),
        sa.Column("first_open", sa.BigInteger),
        sa.Column("last_open", sa.BigInteger),
        sa.Column("closed_streak", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.JSON),
        sa.PrimaryKeyConstraint("target", "port", name="pk_port_state"),
        sa.ForeignKeyConstraint(["target"], ["targets.name"], name="fk_port_state_target_targets"),
    )

    op.create_table(
        "findings",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("opened_at", sa.BigInteger, nullable=False),
        sa.Column("resolved_at", sa.BigInteger),
        sa.Column("reopen_count", sa.Integer, nullable=False),
        sa.Column("previous_resolved_at", sa.BigInteger),
        sa.Column("ack_until", sa.BigInteger),
        sa.Column("ack_reason", sa.Text),
        sa.Column("fingerprint", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
        sa.ForeignKeyConstraint(["target"], ["targets.name"], name="fk_findings_target_targets"),
        sa.CheckConstraint(_SEVERITIES, name="ck_findings_severity"),
        sa.CheckConstraint("state IN ('open', 'acked', 'resolved')", name="ck_findings_state"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_findings_target_port_state", "findings", ["target", "port", "state"])
    op.create_index("ix_findings_state", "findings", ["state"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("port", sa.Integer),
        sa.Column("observed_at", sa.BigInteger, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("finding_id", sa.Integer),
        sa.Column("scan_id", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["target"], ["targets.name"], name="fk_events_target_targets"),
        sa.ForeignKeyConstraint(
            ["finding_id"], ["findings.id"], name="fk_events_finding_id_findings"
        ),
        sa.ForeignKeyConstraint(
            ["scan_id"], ["scans.id"], name="fk_events_scan_id_scans", ondelete="SET NULL"
        ),
        sa.CheckConstraint(_SEVERITIES, name="ck_events_severity"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_target_id", "events", ["target", "id"])
    op.create_index("ix_events_type_id", "events", ["type", "id"])
    op.create_index("ix_events_observed_at", "events", ["observed_at"])
    op.create_index("ix_events_finding_id", "events", ["finding_id"])
    op.create_index("ix_events_scan_id", "events", ["scan_id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("event_id", sa.Integer, nullable=False),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("sent_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_outbox_event_id_events"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'dead')", name="ck_outbox_status"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_event_id", "outbox", ["event_id"])
    op.create_index("ix_outbox_status", "outbox", ["status"])


def downgrade() -> None:
    """Refuse: going below the first revision would drop every table and its history."""
    raise RuntimeError("refusing to downgrade below revision 0001: it would drop all data")
