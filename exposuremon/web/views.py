"""JSON views of the model, the API bodies of docs/architecture.md, shared by the CLI and the API.

Pure functions: model objects in, JSON-ready dicts out. Times are RFC 3339 UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from exposuremon import units
from exposuremon.model import Event, Finding, Fingerprint, Observed, ScanKind, TargetState
from exposuremon.schedule import Recurring, Showing

if TYPE_CHECKING:
    from exposuremon.config import TargetConfig
    from exposuremon.fleet import FleetView
    from exposuremon.store import Delivery

NEVER_SCANNED = "never scanned"
# Any URL in a delivery's error text: the notifier redacts webhook secrets before storing it;
# the API drops whole URLs as well, so that a missed case cannot leak one.
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>]*[^\s\"'<>:.,;)]")


def json_time(when: dt.datetime | None) -> str | None:
    """`2026-11-26T03:14:07Z`, or None."""
    return None if when is None else units.rfc3339(when)


def fingerprint_json(fp: Fingerprint | None) -> dict[str, Any] | None:
    """A fingerprint with RFC 3339 times, or None."""
    if fp is None or fp.is_empty():
        return None
    doc = dataclasses.asdict(fp)
    doc["tls_not_after"] = json_time(fp.tls_not_after)
    return {k: v for k, v in doc.items() if v is not None}


def finding_json(finding: Finding, address: str | None) -> dict[str, Any]:
    """One element of `GET /api/v1/findings`."""
    return {
        "id": finding.id,
        "target": finding.target,
        "address": address,
        "port": finding.port,
        "protocol": "tcp",
        "state": finding.state.value,
        "severity": finding.severity.label,
        "opened_at": json_time(finding.opened_at),
        "resolved_at": json_time(finding.resolved_at),
        "reopen_count": finding.reopen_count,
        "previous_resolved_at": json_time(finding.previous_resolved_at),
        "ack_until": json_time(finding.ack_until),
        "ack_reason": finding.ack_reason,
        "fingerprint": fingerprint_json(finding.fingerprint),
        # With several vantages: {"open": ["fra"], "filtered": ["nyc"]}; null with one.
        "seen_from": None
        if finding.seen_from is None
        else {state: list(names) for state, names in finding.seen_from.items()},
    }


def event_json(event: Event) -> dict[str, Any]:
    """One element of `GET /api/v1/events`."""
    return {
        "id": event.id,
        "type": event.type.value,
        "target": event.target,
        "port": event.port,
        "severity": event.severity.label,
        "observed_at": json_time(event.observed_at),
        "summary": event.summary,
        "details": dict(event.details),
        "finding_id": event.finding_id,
        "vantage": event.vantage,  # a vantage's event (target null): vantage_degraded/_recovered
    }


def target_json(state: TargetState, expected_open: frozenset[int]) -> dict[str, Any]:
    """A target's status: liveness, open ports (expected or not), findings, last scans."""
    open_ports = sorted(p for p, rec in state.ports.items() if rec.state is Observed.OPEN)
    return {
        "name": state.name,
        "address": state.address,
        "status": state.status.value,
        "status_since": json_time(state.status_since),
        "open_ports": [
            {
                "port": p,
                "expected": p in expected_open,
                "since": json_time(state.ports[p].last_change),
                "fingerprint": fingerprint_json(state.ports[p].fingerprint),
            }
            for p in open_ports
        ],
        "unexpected_open": [p for p in open_ports if p not in expected_open],
        "findings": {
            "open": sum(1 for f in state.findings.values() if f.state.value == "open"),
            "acked": sum(1 for f in state.findings.values() if f.state.value == "acked"),
        },
        "last_scan": _last_scans(state.last_scan),
        "last_reboot": json_time(state.last_reboot),
        "reboots_suspected": state.reboots_total,
        "findings_reopened": state.reopened_total,
    }


def _last_scans(last: Mapping[ScanKind, dt.datetime]) -> dict[str, str | None]:
    return {kind.value: json_time(last.get(kind)) for kind in ScanKind}


def status_json(
    targets: Sequence[TargetConfig], states: Mapping[str, TargetState]
) -> dict[str, Any]:
    """`GET /api/v1/targets` and `exposuremon status --json`: configured targets, in order."""
    return {"targets": [target_status_json(t, states.get(t.name)) for t in targets]}


def target_status_json(target: TargetConfig, state: TargetState | None) -> dict[str, Any]:
    """One configured target; one shape whether scanned or not, so scripts need no special case."""
    expected = frozenset(target.expected_open)
    if state is not None:
        return target_json(state, expected)
    never = TargetState(name=target.name, address=target.address)
    return target_json(never, expected) | {"status": NEVER_SCANNED}


def targets_page(
    rows: Sequence[tuple[TargetConfig, TargetState | None]], next_cursor: str | None
) -> dict[str, Any]:
    """`GET /api/v1/targets?limit=...`: a page of targets (name order) and the next cursor."""
    return {
        "targets": [target_status_json(target, state) for target, state in rows],
        "next": next_cursor,
    }


def findings_page(
    rows: Sequence[Finding], states: Mapping[str, TargetState], next_cursor: int | None
) -> dict[str, Any]:
    """`GET /api/v1/findings` and `exposuremon findings --json`: a page and the next cursor."""
    return {
        "findings": [
            finding_json(f, states[f.target].address if f.target in states else None) for f in rows
        ],
        "next": next_cursor,
    }


def events_page(rows: Sequence[Event], next_cursor: int | None) -> dict[str, Any]:
    """`GET /api/v1/events`: a page and the next cursor."""
    return {"events": [event_json(e) for e in rows], "next": next_cursor}


def delivery_json(d: Delivery) -> dict[str, Any]:
    """One element of `GET /api/v1/notifications`: an outbox row, never its channel's URL."""
    return {
        "id": d.id,
        "channel": d.channel,
        "target": d.target,
        "event_id": d.event_id,
        "kind": d.kind,
        "reminder": d.reminder,
        "group_key": d.group_key,
        "dedup_key": d.dedup_key,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": json_time(d.next_attempt_at),
        "last_error": None if d.last_error is None else _URL.sub("<url>", d.last_error),
        "created_at": json_time(d.created_at),
        "sent_at": json_time(d.sent_at),
    }


def deliveries_page(rows: Sequence[Delivery], next_cursor: int | None) -> dict[str, Any]:
    """`GET /api/v1/notifications`: a page and the next cursor."""
    return {"notifications": [delivery_json(d) for d in rows], "next": next_cursor}


def fleet_json(view: FleetView) -> dict[str, Any]:
    """`GET /api/v1/fleet` and `exposuremon fleet status --json`: nodes, vantages, shards.

    DESIGN.md's keys (`nodes`: node, vantage, started_at, last_seen, shards, version;
    `vantages`: name, status, nodes) and additive ones: per node `alive`, `config_hash`,
    `config_differs`, `seen_ago`; per vantage `nodes_total`, `shards_held`, `health` ("up", or
    "degraded" while its scans went silent: vantage health; `status` is "degraded" when it
    has no live node or its health is degraded); and `now`,
    `lease_ttl`, `config_hash` (the reference) and `shards` (total, and per vantage the owner
    of each held shard with its lease's age and expiry in seconds, and the unheld shards).
    """
    return {
        "now": json_time(view.now),
        "lease_ttl": view.lease_ttl,
        "config_hash": view.config_hash,
        "nodes": [
            {
                "node": n.name,
                "vantage": n.vantage,
                "started_at": json_time(n.started_at),
                "last_seen": json_time(n.last_seen),
                "shards": n.shards,
                "version": n.version,
                "alive": n.alive,
                "seen_ago": round(n.seen_ago, 1),
                "config_hash": n.config_hash,
                "config_differs": n.config_differs,
            }
            for n in view.nodes
        ],
        "vantages": [
            {
                "name": v.name,
                "status": v.status,
                "nodes": v.nodes,
                "nodes_total": v.nodes_total,
                "shards_held": v.shards_held,
                "health": v.health,
            }
            for v in view.vantages
        ],
        "shards": {
            "total": view.shards,
            "vantages": {
                owned.vantage: {
                    "owners": [
                        {
                            "shard": o.shard,
                            "node": o.node,
                            "epoch": o.epoch,
                            "age": round(o.age, 1),
                            "expires_in": round(o.expires_in, 1),
                        }
                        for o in owned.owners
                    ],
                    "unheld": list(owned.unheld),
                }
                for owned in view.shard_owners
            },
        },
    }


def maintenance_json(showing: Showing) -> dict[str, Any]:
    """One element of `GET /api/v1/maintenance`: a window, and the stretch in force or next.

    `start`/`end` are those of the stretch covering now (`active`), else of the next one
    (null: the window is over for good).
    """
    window = showing.window
    schedule = window.schedule if isinstance(window.schedule, Recurring) else None
    return {
        "id": window.key,
        "source": window.key.partition("/")[0],
        "targets": None if window.targets is None else sorted(window.targets),
        "reason": window.reason,
        "active": showing.active,
        "start": json_time(showing.start),
        "end": json_time(showing.end),
        "cron": None if schedule is None else schedule.cron,
        "duration_s": None if schedule is None else schedule.duration.total_seconds(),
        "timezone": None if schedule is None else schedule.timezone,
    }
