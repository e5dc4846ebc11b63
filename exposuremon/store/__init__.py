"""The store: targets, port states, findings, events and the notification outbox.

The only package that speaks SQL (SQLAlchemy Core, Alembic migrations in `migrations/`).
Everything else uses `Store` and the value types exported here; its modules are private.
"""

from __future__ import annotations

from exposuremon.store.copy import Progress, copy_store, dialect_of
from exposuremon.store.database import (
    DEFAULT_RETENTION,
    MAX_PAGE,
    Applied,
    FencedWrite,
    ScanRecord,
    Store,
    StoreError,
    db_path,
)
from exposuremon.store.leases import (
    Acquired,
    Fence,
    FleetNode,
    FleetSnapshot,
    HeldLease,
    Lease,
    LeaseView,
)
from exposuremon.store.maintenance import AdHocWindow, HeldNotification
from exposuremon.store.outbox import Claim, Delivery, Outgoing, Pace, ReminderRule
from exposuremon.store.queries import (
    FindingCounts,
    GaugeMark,
    GaugeSnapshot,
    Route,
    TargetGauges,
    TargetOverview,
    TargetPage,
)

__all__ = [
    "DEFAULT_RETENTION",
    "MAX_PAGE",
    "Acquired",
    "AdHocWindow",
    "Applied",
    "Claim",
    "Delivery",
    "Fence",
    "FencedWrite",
    "FindingCounts",
    "FleetNode",
    "FleetSnapshot",
    "GaugeMark",
    "GaugeSnapshot",
    "HeldLease",
    "HeldNotification",
    "Lease",
    "LeaseView",
    "Outgoing",
    "Pace",
    "Progress",
    "ReminderRule",
    "Route",
    "ScanRecord",
    "Store",
    "StoreError",
    "TargetGauges",
    "TargetOverview",
    "TargetPage",
    "copy_store",
    "db_path",
    "dialect_of",
]
