"""JSON views of the model, shaped as DESIGN.md's API bodies; shared by the CLI and the API.

Pure functions: model objects in, JSON-ready dicts out. Times are RFC 3339 UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from exposuremon import units
from exposuremon.model import Event, Finding, Fingerprint, Observed, ScanKind, TargetState


def rfc3339(when: dt.datetime | None) -> str | None:
    """`2026-11-26T03:14:07Z`, or None."""
    return None if when is None else units.rfc3339(when)


def fingerprint_json(fp: Fingerprint | None) -> dict[str, Any] | None:
    """A fingerprint with RFC 3339 times, or None."""
    if fp is None or fp.is_empty():
        return None
    doc = dataclasses.asdict(fp)
    doc["tls_not_after"] = rfc3339(fp.tls_not_after)
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
        "opened_at": rfc3339(finding.opened_at),
        "resolved_at": rfc3339(finding.resolved_at),
        "reopen_count": finding.reopen_count,
        "previous_resolved_at": rfc3339(finding.previous_resolved_at),
        "ack_until": rfc3339(finding.ack_until),
        "ack_reason": finding.ack_reason,
        "fingerprint": fingerprint_json(finding.fingerprint),
    }


def event_json(event: Event) -> dict[str, Any]:
    """One element of `GET /api/v1/events`."""
    return {
        "id": event.id,
        "type": event.type.value,
        "target": event.target,
        "port": event.port,
        "severity": event.severity.label,
        "observed_at": rfc3339(event.observed_at),
        "summary": event.summary,
        "details": dict(event.details),
        "finding_id": event.finding_id,
    }


def target_json(state: TargetState, expected_open: frozenset[int]) -> dict[str, Any]:
    """A target's status: liveness, open ports (expected or not), findings, last scans."""
    open_ports = sorted(p for p, rec in state.ports.items() if rec.state is Observed.OPEN)
    return {
        "name": state.name,
        "address": state.address,
        "status": state.status.value,
        "status_since": rfc3339(state.status_since),
        "open_ports": [
            {
                "port": p,
                "expected": p in expected_open,
                "since": rfc3339(state.ports[p].last_change),
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
        "last_reboot": rfc3339(state.last_reboot),
        "reboots_suspected": state.reboots_total,
        "findings_reopened": state.reopened_total,
    }


def _last_scans(last: Mapping[ScanKind, dt.datetime]) -> dict[str, str | None]:
    return {kind.value: rfc3339(last.get(kind)) for kind in ScanKind}
