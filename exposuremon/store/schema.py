"""The store's tables (schema at the newest migration) and the pure codecs between rows and model.

Times are integer microseconds since the Unix epoch (UTC): exact, portable to PostgreSQL's
BIGINT, and ordered. Severities are stored as their labels, enums as their values, fingerprints
and event details as JSON. The migrations under `exposuremon/migrations/` create exactly this
schema; a test compares the two.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from exposuremon import model
from exposuremon.model import (
    AdvisoryMatch,
    Event,
    EventType,
    Finding,
    FindingState,
    Fingerprint,
    Notable,
    Observed,
    PortFlap,
    PortRecord,
    ScanKind,
    Severity,
    TargetState,
    TargetStatus,
    VantagePort,
    VantageView,
)
from exposuremon.units import rfc3339

# Explicit constraint names so that migrations (and SQLite's table rebuilds) can refer to them.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Microsecond timestamps; "at" columns are nullable unless the model requires a value.
_Time = sa.BigInteger


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class _Text(sa.TypeDecorator[str]):
    """Text with any NUL character or lone surrogate stored as U+FFFD.

    PostgreSQL's text can hold neither (a NUL is refused, a surrogate is no valid UTF-8), and
    banners, titles, receivers' error bodies and command-line arguments (undecodable bytes
    become surrogates) may carry them: a hostile host must not make its own scans unwritable.
    Both dialects store the same, so a store moved between them compares equal.
    """

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str | None:
        if value is None or (value.isascii() and "\x00" not in value):
            return value
        return _UNSTORABLE.sub("\ufffd", value)


_SEVERITIES = "severity IN ('info', 'warning', 'critical')"
# The vantage point of an observation (migration 0006); one node alone is "default".
DEFAULT_VANTAGE = model.DEFAULT_VANTAGE


def _vantage() -> sa.Column[str]:
    return sa.Column("vantage", _Text, nullable=False, server_default=DEFAULT_VANTAGE)


targets = sa.Table(
    "targets",
    metadata,
    sa.Column("name", _Text, primary_key=True),
    sa.Column("address", _Text),
    sa.Column("status", _Text, nullable=False),
    sa.Column("status_since", _Time),
    sa.Column("expected_refusing", sa.Boolean, nullable=False),
    sa.Column("last_reboot", _Time),
    sa.Column("last_scan", sa.JSON(none_as_null=True), nullable=False),  # {kind: micros}
    sa.Column("reopened_total", sa.Integer, nullable=False),
    sa.Column("reboots_total", sa.Integer, nullable=False),
    sa.Column("last_observed", _Time),
    sa.Column("anomaly_since", _Time),
    sa.Column("answered_at", _Time),  # liveness evidence (migration 0004)
    sa.Column("silent_until", _Time),
    sa.Column("recent", sa.JSON(none_as_null=True), nullable=False),  # [{type, at, detail}]
    # {port: finding id}: the resolved findings detection keeps for reopen detection (not
    # every resolved finding: one resolved because the port became expected is not kept).
    sa.Column("resolved_ids", sa.JSON(none_as_null=True), nullable=False),
    # Added by migration 0004: change stamps (see `queries.stamp`). `changed_seq` marks writes
    # that may change what the state gauges show of the target, `times_seq` writes of its scan
    # times; `/metrics` re-reads only rows stamped after its last read.
    sa.Column("changed_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("times_seq", sa.Integer, nullable=False, server_default="0"),
    # Added by migration 0012: flap damping's memory {port: {...}} and the advisory rules
    # matching now {rule: {...}} (see `flaps_json`, `advisories_json`); NULL: none.
    sa.Column("flaps", sa.JSON(none_as_null=True)),
    sa.Column("advisories", sa.JSON(none_as_null=True)),
    # Added by migration 0010: each vantage's own evidence (see `vantages_to_json`).
    sa.Column("vantages", sa.JSON(none_as_null=True), nullable=False, server_default="{}"),
    sa.Index(None, "changed_seq"),
    sa.Index(None, "times_seq"),
)

scans = sa.Table(
    "scans",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("target", _Text, sa.ForeignKey("targets.name"), nullable=False),
    sa.Column("kind", _Text, nullable=False),
    sa.Column("address", _Text, nullable=False),
    sa.Column("started", _Time, nullable=False),
    sa.Column("finished", _Time, nullable=False),
    sa.Column("complete", sa.Boolean, nullable=False),
    sa.Column("ports_scanned", sa.Integer, nullable=False),
    sa.Column("open_count", sa.Integer, nullable=False),
    sa.Column("closed_count", sa.Integer, nullable=False),
    sa.Column("filtered_count", sa.Integer, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    _vantage(),
    sa.Index(None, "target", "kind", "finished"),
    sa.Index(None, "finished"),
    # Ids are referenced from outside (outbox group keys); never reuse one after a prune.
    sqlite_autoincrement=True,
)

port_state = sa.Table(
    "port_state",
    metadata,
    sa.Column("target", _Text, sa.ForeignKey("targets.name"), primary_key=True),
    sa.Column("port", sa.Integer, primary_key=True),
    sa.Column("state", _Text, nullable=False),
    sa.Column("first_seen", _Time, nullable=False),
    sa.Column("last_seen", _Time, nullable=False),
    sa.Column("last_change", _Time, nullable=False),
    sa.Column("times_opened", sa.Integer, nullable=False),
    sa.Column("times_closed", sa.Integer, nullable=False),
    sa.Column("times_reopened", sa.Integer, nullable=False),
    sa.Column("first_open", _Time),
    sa.Column("last_open", _Time),
    sa.Column("closed_streak", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.JSON(none_as_null=True)),
    sa.Column("observed_at", _Time),  # when the evidence behind `state` was seen (0004)
    _vantage(),
)

findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("target", _Text, sa.ForeignKey("targets.name"), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("severity", _Text, nullable=False),
    sa.Column("state", _Text, nullable=False),
    sa.Column("opened_at", _Time, nullable=False),
    sa.Column("resolved_at", _Time),
    sa.Column("reopen_count", sa.Integer, nullable=False),
    sa.Column("previous_resolved_at", _Time),
    sa.Column("ack_until", _Time),
    sa.Column("ack_reason", _Text),
    sa.Column("fingerprint", sa.JSON(none_as_null=True)),
    sa.Column("seen_from", sa.JSON(none_as_null=True)),  # migration 0010: {state: [vantage]}
    sa.CheckConstraint(_SEVERITIES, name="severity"),
    sa.CheckConstraint("state IN ('open', 'acked', 'resolved')", name="state"),
    sa.Index(None, "target", "port", "state"),
    sa.Index(None, "state"),
    sqlite_autoincrement=True,
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("type", _Text, nullable=False),
    sa.Column("severity", _Text, nullable=False),
    # NULL for a vantage's event, which names its `vantage` instead (migration 0009).
    sa.Column("target", _Text, sa.ForeignKey("targets.name")),
    sa.Column("port", sa.Integer),
    sa.Column("observed_at", _Time, nullable=False),
    sa.Column("summary", _Text, nullable=False),
    sa.Column("details", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("finding_id", sa.Integer, sa.ForeignKey("findings.id")),
    # A scan may be pruned before its events (events pending delivery are kept).
    sa.Column("scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="SET NULL")),
    sa.Column("vantage", _Text),
    sa.CheckConstraint(_SEVERITIES, name="severity"),
    sa.Index(None, "target", "id"),
    sa.Index(None, "type", "id"),
    sa.Index(None, "observed_at"),
    sa.Index(None, "finding_id"),
    sa.Index(None, "scan_id"),
    sqlite_autoincrement=True,
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("channel", _Text, nullable=False),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("group_key", _Text, nullable=False),
    sa.Column("status", _Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", _Time, nullable=False),
    sa.Column("last_error", _Text),
    sa.Column("created_at", _Time, nullable=False),
    sa.Column("sent_at", _Time),
    # Added by migration 0002: "<channel>/<event_id>", one delivery per channel and event.
    sa.Column("dedup_key", _Text),
    # Added by migration 0003: "event" or "reminder" (of the event's finding), and the
    # reminder's number for that finding and channel.
    sa.Column("kind", _Text, nullable=False, server_default="event"),
    sa.Column("reminder", sa.Integer),
    # Added by migration 0007: the lease under which a node delivers the row's message (the
    # node, the token of the claim, its end by the database's clock); NULL: unclaimed.
    sa.Column("claimed_by", _Text),
    sa.Column("claim", _Text),
    sa.Column("claimed_until", _Time),
    sa.CheckConstraint("status IN ('pending', 'sent', 'dead')", name="status"),
    sa.Index(None, "event_id"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "dedup_key", unique=True),
    sa.Index(None, "channel", "group_key"),
    sqlite_autoincrement=True,
)

# Added by migration 0003: reminders sent per finding and channel since it was last acked.
reminders = sa.Table(
    "reminders",
    metadata,
    sa.Column("finding_id", sa.Integer, sa.ForeignKey("findings.id"), primary_key=True),
    sa.Column("channel", _Text, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("last_at", _Time),
)

# Added by migration 0007: per channel, the send times its rate limit counts (microseconds by
# the database's clock, newest last) and a pause a receiver asked for (Retry-After), shared by
# every node of a fleet.
rate_windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("channel", _Text, primary_key=True),
    sa.Column("sent", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("paused_until", _Time),
)

# Added by migration 0006 for fleet mode (not used yet): the nodes, which node of a vantage
# leases which shard until when (the database's clock), and the fixed number of shards.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", _Text, primary_key=True),
    sa.Column("vantage", _Text, nullable=False),
    sa.Column("started_at", _Time, nullable=False),
    sa.Column("last_seen", _Time, nullable=False),
    sa.Column("version", _Text, nullable=False),
    sa.Column("config_hash", _Text, nullable=False),
)

shard_leases = sa.Table(
    "shard_leases",
    metadata,
    sa.Column("vantage", _Text, primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("node", _Text, nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", _Time, nullable=False),
)

fleet = sa.Table(
    "fleet",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("shards", sa.Integer, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
    sa.CheckConstraint("shards > 0", name="shards"),
)

# Added by migration 0008: on-demand scans asked of a node that does not hold the target's
# shard, for the node that does (tagged with the vantage and shard it takes them by).
scan_requests = sa.Table(
    "scan_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("vantage", _Text, nullable=False),
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("target", _Text, nullable=False),
    sa.Column("kind", _Text, nullable=False),
    sa.Column("requested_at", _Time, nullable=False),
    sa.Column("ports", sa.JSON(none_as_null=True)),  # migration 0010: a re-probe's ports
    sa.Index(None, "vantage", "shard"),
    sqlite_autoincrement=True,
)

# Added by migration 0011: maintenance windows (docs/architecture.md "Maintenance windows").
# Windows added by the API or the CLI (the config's [[maintenance]] windows are not stored);
# ending one early sets `ends_at` to then and `ended_early_at`.
maintenance_windows = sa.Table(
    "maintenance_windows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("targets", sa.JSON(none_as_null=True)),  # [name, ...]; NULL: every target
    sa.Column("starts_at", _Time, nullable=False),
    sa.Column("ends_at", _Time, nullable=False),
    sa.Column("reason", _Text, nullable=False),
    sa.Column("created_at", _Time, nullable=False),
    sa.Column("ended_early_at", _Time),
    sa.Index(None, "ends_at"),
    sqlite_autoincrement=True,
)
# Notifications held back while their target is in maintenance: one row per event and channel
# that the outbox would have had. Durable, so a restart during a window loses none of them;
# the summary at the window's end takes them (and deletes them) in one transaction.
maintenance_held = sa.Table(
    "maintenance_held",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("target", _Text, nullable=False),
    sa.Column("channel", _Text, nullable=False),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("held_at", _Time, nullable=False),
    sa.Index(None, "target"),
    sa.Index(None, "event_id"),
    sqlite_autoincrement=True,
)
# The targets in maintenance as the service last recorded it (its `maintenance_started` was
# written): the window's key and since when.
maintenance_active = sa.Table(
    "maintenance_active",
    metadata,
    sa.Column("target", _Text, primary_key=True),
    sa.Column("window", _Text, nullable=False),
    sa.Column("since", _Time, nullable=False),
)
# Added by migration 0009: each vantage's health ("up" | "degraded"), set by compare-and-set
# so that one node of the vantage raises each `vantage_degraded` (and `vantage_recovered`).
vantage_health = sa.Table(
    "vantage_health",
    metadata,
    sa.Column("vantage", _Text, primary_key=True),
    sa.Column("status", _Text, nullable=False),
    sa.Column("since", _Time, nullable=False),
    sa.Column("node", _Text, nullable=False),  # the node whose judgement set it
    sa.Column("silent", sa.Integer, nullable=False),  # targets silent when it was set
    sa.Column("answering", sa.Integer, nullable=False),  # of the targets that were answering
    sa.CheckConstraint("status IN ('up', 'degraded')", name="status"),
)

Row = Mapping[Any, Any]  # a result row's mapping (SQLAlchemy also accepts columns as keys)
ACTIVE_STATES = (FindingState.OPEN.value, FindingState.ACKED.value)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICRO = dt.timedelta(microseconds=1)


def to_micros(value: dt.datetime, field: str) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}: naive datetime {value.isoformat()} (needs a timezone, UTC)")
    return (value - _EPOCH) // _MICRO


def opt_micros(value: dt.datetime | None, field: str) -> int | None:
    """`to_micros` that passes None through."""
    return None if value is None else to_micros(value, field)


def from_micros(value: int) -> dt.datetime:
    """Integer microseconds since the epoch as a UTC datetime."""
    return _EPOCH + value * _MICRO


def opt_datetime(value: int | None) -> dt.datetime | None:
    """`from_micros` that passes None through."""
    return None if value is None else from_micros(value)


def fingerprint_to_json(fp: Fingerprint | None, field: str) -> dict[str, Any] | None:
    """A fingerprint as a JSON object (absent fields omitted)."""
    if fp is None:
        return None
    out: dict[str, Any] = {}
    for f in dataclasses.fields(fp):
        value = getattr(fp, f.name)
        if isinstance(value, dt.datetime):
            to_micros(value, f"{field}.{f.name}")  # rejects naive datetimes
            value = value.isoformat()
        if value is not None:
            out[f.name] = value
    return out


def fingerprint_from_json(data: Mapping[str, Any] | None) -> Fingerprint | None:
    """The inverse of `fingerprint_to_json`; unknown keys (from newer versions) are ignored."""
    if data is None:
        return None
    names = {f.name for f in dataclasses.fields(Fingerprint)}
    values = {k: v for k, v in data.items() if k in names}
    if values.get("tls_not_after") is not None:
        values["tls_not_after"] = dt.datetime.fromisoformat(values["tls_not_after"])
    return Fingerprint(**values)


def jsonable(value: Any, path: str = "details") -> Any:
    """Event details as plain JSON: datetimes as RFC 3339, enums as values, sets sorted."""
    if isinstance(value, Severity):
        return value.label
    if isinstance(value, enum.Enum):
        return jsonable(value.value, path)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        to_micros(value, path)
        return rfc3339(value, "auto")
    if isinstance(value, Fingerprint):
        return fingerprint_to_json(value, path)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, set | frozenset):
        items = [jsonable(v, f"{path}[]") for v in value]
        try:
            return sorted(items)
        except TypeError:  # mixed types: any stable order will do
            return sorted(items, key=repr)
    if isinstance(value, list | tuple):
        return [jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{path}: {type(value).__name__} cannot be stored as JSON")


def target_row(state: TargetState) -> dict[str, Any]:
    """The `targets` row of a target's state whose findings all have ids.

    Ports and findings live in their own tables; the row keeps which resolved finding of each
    port the state holds.
    """
    name = state.name
    resolved_ids = {}
    for port, f in sorted(state.resolved.items()):
        if f.id is None:
            raise ValueError(f"{name}.resolved[{port}]: finding not saved (no id)")
        resolved_ids[str(port)] = f.id
    return {
        "name": name,
        "address": state.address,
        "status": TargetStatus(state.status).value,
        "status_since": opt_micros(state.status_since, f"{name}.status_since"),
        "expected_refusing": state.expected_refusing,
        "last_reboot": opt_micros(state.last_reboot, f"{name}.last_reboot"),
        "last_scan": {
            ScanKind(kind).value: to_micros(at, f"{name}.last_scan[{kind}]")
            for kind, at in sorted(state.last_scan.items())
        },
        "reopened_total": state.reopened_total,
        "reboots_total": state.reboots_total,
        "last_observed": opt_micros(state.last_observed, f"{name}.last_observed"),
        "anomaly_since": opt_micros(state.anomaly_since, f"{name}.anomaly_since"),
        "answered_at": opt_micros(state.answered_at, f"{name}.answered_at"),
        "silent_until": opt_micros(state.silent_until, f"{name}.silent_until"),
        "recent": [
            {
                "type": EventType(n.type).value,
                "at": to_micros(n.at, f"{name}.recent[{i}].at"),
                "detail": n.detail,
            }
            for i, n in enumerate(state.recent)
        ],
        "resolved_ids": resolved_ids,
        "flaps": flaps_json(state.flaps, f"{name}.flaps"),
        "advisories": advisories_json(state.advisories, f"{name}.advisories"),
        "vantages": vantages_to_json(state),
    }


def flaps_json(flaps: Mapping[int, PortFlap], where: str) -> dict[str, Any] | None:
    """`TargetState.flaps` as JSON (ports as text keys); None when there is none."""
    if not flaps:
        return None
    return {
        str(port): {
            "changes": [to_micros(t, f"{where}[{port}].changes") for t in f.changes],
            "since": opt_micros(f.since, f"{where}[{port}].since"),
            "stable": f.stable,
            "episode_changes": f.episode_changes,
            "severity": Severity(f.severity).label,
        }
        for port, f in sorted(flaps.items())
    }


def flaps_from_json(data: Mapping[str, Any] | None) -> dict[int, PortFlap]:
    """The inverse of `flaps_json`."""
    return {
        int(port): PortFlap(
            changes=tuple(from_micros(t) for t in f["changes"]),
            since=opt_datetime(f["since"]),
            stable=f["stable"],
            episode_changes=f["episode_changes"],
            severity=Severity.parse(f["severity"]),
        )
        for port, f in (data or {}).items()
    }


def advisories_json(matches: Mapping[str, AdvisoryMatch], where: str) -> dict[str, Any] | None:
    """`TargetState.advisories` as JSON; None when no rule matches."""
    if not matches:
        return None
    return {
        name: {
            "since": to_micros(m.since, f"{where}[{name}].since"),
            "port": m.port,
            "severity": Severity(m.severity).label,
            "fingerprint": fingerprint_to_json(m.fingerprint, f"{where}[{name}].fingerprint"),
        }
        for name, m in sorted(matches.items())
    }


def advisories_from_json(data: Mapping[str, Any] | None) -> dict[str, AdvisoryMatch]:
    """The inverse of `advisories_json`."""
    return {
        name: AdvisoryMatch(
            since=from_micros(m["since"]),
            port=m["port"],
            severity=Severity.parse(m["severity"]),
            fingerprint=fingerprint_from_json(m["fingerprint"]) or Fingerprint(),
        )
        for name, m in (data or {}).items()
    }


def vantages_to_json(state: TargetState) -> dict[str, Any]:
    """`TargetState.vantages` as JSON: per vantage its liveness times and port records, each
    `[state, observed_at, closed_streak, since]` (times in microseconds)."""
    name = state.name
    out: dict[str, Any] = {}
    for vantage, view in sorted(state.vantages.items()):
        where = f"{name}.vantages[{vantage}]"
        out[vantage] = {
            "answered_at": opt_micros(view.answered_at, f"{where}.answered_at"),
            "silent_until": opt_micros(view.silent_until, f"{where}.silent_until"),
            "ports": {
                str(port): [
                    Observed(rec.state).value,
                    to_micros(rec.observed_at, f"{where}.ports[{port}]"),
                    rec.closed_streak,
                    opt_micros(rec.since, f"{where}.ports[{port}].since"),
                ]
                for port, rec in sorted(view.ports.items())
            },
        }
    return out


def vantages_from_json(data: Mapping[str, Any] | None) -> dict[str, VantageView]:
    """The inverse of `vantages_to_json`."""
    return {
        vantage: VantageView(
            answered_at=opt_datetime(view.get("answered_at")),
            silent_until=opt_datetime(view.get("silent_until")),
            ports={
                int(port): VantagePort(
                    Observed(fields[0]),
                    from_micros(fields[1]),
                    int(fields[2]),
                    opt_datetime(fields[3] if len(fields) > 3 else None),
                )
                for port, fields in view.get("ports", {}).items()
            },
        )
        for vantage, view in (data or {}).items()
    }


def resolved_ids(row: Row) -> dict[int, int]:
    """The `targets.resolved_ids` of a row: finding id by port."""
    return {int(port): int(fid) for port, fid in row["resolved_ids"].items()}


def target_from_row(
    row: Row,
    ports: Mapping[int, PortRecord],
    active: Mapping[int, Finding],
    resolved: Mapping[int, Finding],
) -> TargetState:
    """Reassemble a TargetState from its row and its ports and findings."""
    return TargetState(
        name=row["name"],
        address=row["address"],
        status=TargetStatus(row["status"]),
        status_since=opt_datetime(row["status_since"]),
        ports=dict(ports),
        findings=dict(active),
        resolved=dict(resolved),
        expected_refusing=bool(row["expected_refusing"]),
        last_reboot=opt_datetime(row["last_reboot"]),
        last_scan={ScanKind(k): from_micros(v) for k, v in row["last_scan"].items()},
        reopened_total=row["reopened_total"],
        reboots_total=row["reboots_total"],
        last_observed=opt_datetime(row["last_observed"]),
        anomaly_since=opt_datetime(row["anomaly_since"]),
        answered_at=opt_datetime(row["answered_at"]),
        silent_until=opt_datetime(row["silent_until"]),
        recent=tuple(
            Notable(type=EventType(n["type"]), at=from_micros(n["at"]), detail=n["detail"])
            for n in row["recent"]
        ),
        flaps=flaps_from_json(row.get("flaps")),
        advisories=advisories_from_json(row.get("advisories")),
        vantages=vantages_from_json(row["vantages"]),
    )


def port_row(target: str, rec: PortRecord) -> dict[str, Any]:
    """The `port_state` row of one port record."""
    where = f"{target}.ports[{rec.port}]"
    return {
        "target": target,
        "port": rec.port,
        "state": Observed(rec.state).value,
        "first_seen": to_micros(rec.first_seen, f"{where}.first_seen"),
        "last_seen": to_micros(rec.last_seen, f"{where}.last_seen"),
        "last_change": to_micros(rec.last_change, f"{where}.last_change"),
        "times_opened": rec.times_opened,
        "times_closed": rec.times_closed,
        "times_reopened": rec.times_reopened,
        "first_open": opt_micros(rec.first_open, f"{where}.first_open"),
        "last_open": opt_micros(rec.last_open, f"{where}.last_open"),
        "closed_streak": rec.closed_streak,
        "fingerprint": fingerprint_to_json(rec.fingerprint, f"{where}.fingerprint"),
        "observed_at": opt_micros(rec.observed_at, f"{where}.observed_at"),
    }


def port_row_columns() -> tuple[str, ...]:
    """The `port_state` columns `port_row` fills (all but the vantage)."""
    return tuple(c.name for c in port_state.c if c.name != "vantage")


def port_from_row(row: Row) -> PortRecord:
    """The inverse of `port_row`."""
    return PortRecord(
        port=row["port"],
        state=Observed(row["state"]),
        first_seen=from_micros(row["first_seen"]),
        last_seen=from_micros(row["last_seen"]),
        last_change=from_micros(row["last_change"]),
        times_opened=row["times_opened"],
        times_closed=row["times_closed"],
        times_reopened=row["times_reopened"],
        first_open=opt_datetime(row["first_open"]),
        last_open=opt_datetime(row["last_open"]),
        closed_streak=row["closed_streak"],
        fingerprint=fingerprint_from_json(row["fingerprint"]),
        observed_at=opt_datetime(row["observed_at"]),
    )


def finding_row(f: Finding) -> dict[str, Any]:
    """The `findings` row of a finding, without its id."""
    where = f"finding {f.target}/{f.port}" + (f" #{f.id}" if f.id is not None else "")
    return {
        "target": f.target,
        "port": f.port,
        "severity": Severity(f.severity).label,
        "state": FindingState(f.state).value,
        "opened_at": to_micros(f.opened_at, f"{where}.opened_at"),
        "resolved_at": opt_micros(f.resolved_at, f"{where}.resolved_at"),
        "reopen_count": f.reopen_count,
        "previous_resolved_at": opt_micros(f.previous_resolved_at, f"{where}.previous_resolved_at"),
        "ack_until": opt_micros(f.ack_until, f"{where}.ack_until"),
        "ack_reason": f.ack_reason,
        "fingerprint": fingerprint_to_json(f.fingerprint, f"{where}.fingerprint"),
        "seen_from": None
        if f.seen_from is None
        else {state: list(names) for state, names in f.seen_from.items()},
    }


def finding_from_row(row: Row) -> Finding:
    """A finding from its row (with id)."""
    return Finding(
        id=row["id"],
        target=row["target"],
        port=row["port"],
        severity=Severity.parse(row["severity"]),
        state=FindingState(row["state"]),
        opened_at=from_micros(row["opened_at"]),
        resolved_at=opt_datetime(row["resolved_at"]),
        reopen_count=row["reopen_count"],
        previous_resolved_at=opt_datetime(row["previous_resolved_at"]),
        ack_until=opt_datetime(row["ack_until"]),
        ack_reason=row["ack_reason"],
        fingerprint=fingerprint_from_json(row["fingerprint"]),
        seen_from=None
        if row["seen_from"] is None
        else {state: tuple(names) for state, names in row["seen_from"].items()},
    )


def event_row(e: Event, finding_id: int | None, scan_id: int | None) -> dict[str, Any]:
    """The `events` row of an event, without its id."""
    where = f"event {e.type} of {e.target}"
    return {
        "type": EventType(e.type).value,
        "severity": Severity(e.severity).label,
        "target": e.target,
        "port": e.port,
        "observed_at": to_micros(e.observed_at, f"{where}.observed_at"),
        "summary": e.summary,
        "details": jsonable(e.details, f"{where}.details"),
        "finding_id": finding_id,
        "scan_id": scan_id,
        "vantage": e.vantage,
    }


def event_from_row(row: Row) -> Event:
    """An event from its row; details come back as the JSON they were stored as."""
    return Event(
        id=row["id"],
        type=EventType(row["type"]),
        severity=Severity.parse(row["severity"]),
        target=row["target"],
        port=row["port"],
        observed_at=from_micros(row["observed_at"]),
        summary=row["summary"],
        details=row["details"],
        finding_id=row["finding_id"],
        vantage=row["vantage"],
    )
