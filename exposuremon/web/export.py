"""`exposuremon export`: the known state of every target as one document, for other tools.

Three formats of the same facts, each port exposuremon has a record of (open ones, and those
seen open or expected before and closed or filtered now), with its fingerprint and verdict:
- `nmap-xml`: one nmap run (scan/nmapxml.py), one `<host>` per target, for ndiff and the tools
  that import nmap XML (DefectDojo, Faraday, IVRE);
- `json`: `{"exported_at", "targets": [{name, address, status, ..., "ports": [...]}]}`;
- `csv`: one line per port (a target without port records gets one line with no port).

Pure: configured targets and stored states in, text out.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from exposuremon.model import Finding, FindingState, Observed, PortRecord, TargetState
from exposuremon.scan import NmapHost, NmapPort, nmap_run
from exposuremon.web.views import NEVER_SCANNED, fingerprint_json, json_time

if TYPE_CHECKING:
    import datetime as dt

    from exposuremon.config import TargetConfig

EXPORT_FORMATS = ("nmap-xml", "json", "csv")
CSV_COLUMNS = (
    "target",
    "address",
    "status",
    "port",
    "protocol",
    "state",
    "verdict",
    "finding_id",
    "finding_state",
    "severity",
    "since",
    "last_seen",
    "banner",
    "http_server",
    "http_title",
    "tls_subject",
    "tls_sha256",
    "tls_not_after",
)
# A cell a spreadsheet would run as a formula (`=HYPERLINK(...)` in a banner): the text the
# network sent is prefixed with `'`, which spreadsheets show as text (OWASP's advice).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_document(
    fmt: str,
    targets: Sequence[TargetConfig],
    states: Mapping[str, TargetState],
    now: dt.datetime,
    version: str,
) -> str:
    """The export of `targets` (config order) in `fmt`, one of EXPORT_FORMATS."""
    if fmt == "nmap-xml":
        return export_nmap_xml(targets, states, now, version)
    if fmt == "json":
        return json.dumps(export_json(targets, states, now), indent=2) + "\n"
    if fmt == "csv":
        return export_csv(targets, states)
    raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")


def _records(state: TargetState | None) -> list[PortRecord]:
    return [] if state is None else [state.ports[p] for p in sorted(state.ports)]


def verdict(target: TargetConfig, state: TargetState | None, record: PortRecord) -> str:
    """What exposuremon makes of a port: `expected`, `ignored`, `unexpected` (open, or with
    an active finding), `expected, not open` or `` (closed, nothing to say)."""
    port = record.port
    is_open = record.state is Observed.OPEN
    if port in target.expected_open:
        return "expected" if is_open else "expected, not open"
    if port in target.ignore:
        return "ignored"
    finding = None if state is None else state.findings.get(port)
    return "unexpected" if is_open or finding is not None else ""


def _finding(state: TargetState | None, port: int) -> Finding | None:
    return None if state is None else state.findings.get(port)


def _finding_note(finding: Finding) -> str:
    text = f"finding {finding.id} {finding.state.value}, {finding.severity.label}"
    if finding.state is FindingState.ACKED and finding.ack_until is not None:
        text += f", acked until {json_time(finding.ack_until)}"
    return text


def _status(state: TargetState | None) -> str:
    return NEVER_SCANNED if state is None else state.status.value


def _address(target: TargetConfig, state: TargetState | None) -> str:
    """The address last scanned, else the configured one."""
    return state.address if state is not None and state.address else target.address


# --- nmap XML -------------------------------------------------------------------------------


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def export_host(target: TargetConfig, state: TargetState | None) -> NmapHost:
    """One target as an nmap `<host>`: its status, its port records, verdicts as notes."""
    ports = []
    for record in _records(state):
        said = verdict(target, state, record)
        finding = _finding(state, record.port)
        if finding is not None:
            said = f"{said}; {_finding_note(finding)}" if said else _finding_note(finding)
        is_open = record.state is Observed.OPEN
        fingerprint = record.fingerprint if is_open else None  # a closed port's is history
        ports.append(NmapPort(record.port, record.state.value, fingerprint, said))
    address = _address(target, state)
    return NmapHost(
        address=address if _is_ip(address) else None,
        status="unknown" if state is None else state.status.value,
        hostname=None if _is_ip(target.address) else target.address,
        ports=ports,
        finished=None if state is None else state.last_observed,
        note=f"target {target.name}",
    )


def export_nmap_xml(
    targets: Sequence[TargetConfig],
    states: Mapping[str, TargetState],
    now: dt.datetime,
    version: str,
) -> str:
    """One nmap run document of every target's known state."""
    hosts = [export_host(t, states.get(t.name)) for t in targets]
    args = "exposuremon export --format nmap-xml"
    return nmap_run(hosts, args=args, version=version, started=now, finished=now)


# --- JSON and CSV -----------------------------------------------------------------------------


def _port_json(target: TargetConfig, state: TargetState | None, rec: PortRecord) -> dict[str, Any]:
    finding = _finding(state, rec.port)
    return {
        "port": rec.port,
        "protocol": "tcp",
        "state": rec.state.value,
        "verdict": verdict(target, state, rec) or None,
        "since": json_time(rec.last_change),
        "last_seen": json_time(rec.last_seen),
        "finding": None
        if finding is None
        else {
            "id": finding.id,
            "state": finding.state.value,
            "severity": finding.severity.label,
            "opened_at": json_time(finding.opened_at),
            "ack_until": json_time(finding.ack_until),
        },
        "fingerprint": fingerprint_json(rec.fingerprint) if rec.state is Observed.OPEN else None,
    }


def export_json(
    targets: Sequence[TargetConfig], states: Mapping[str, TargetState], now: dt.datetime
) -> dict[str, Any]:
    """The `--format json` document."""
    docs = []
    for target in targets:
        state = states.get(target.name)
        docs.append(
            {
                "name": target.name,
                "address": _address(target, state),
                "status": _status(state),
                "status_since": None if state is None else json_time(state.status_since),
                "last_observed": None if state is None else json_time(state.last_observed),
                "ports": [_port_json(target, state, rec) for rec in _records(state)],
            }
        )
    return {"exported_at": json_time(now), "targets": docs}


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def export_csv(targets: Sequence[TargetConfig], states: Mapping[str, TargetState]) -> str:
    """The `--format csv` document: a header line, then one line per port record."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for target in targets:
        state = states.get(target.name)
        head = [target.name, _address(target, state), _status(state)]
        records = _records(state)
        if not records:
            writer.writerow(head + [""] * (len(CSV_COLUMNS) - len(head)))
        for rec in records:
            doc = _port_json(target, state, rec)
            finding = doc["finding"] or {}
            fp = doc["fingerprint"] or {}
            writer.writerow(
                [
                    *head,
                    rec.port,
                    "tcp",
                    rec.state.value,
                    doc["verdict"] or "",
                    finding.get("id", ""),
                    finding.get("state", ""),
                    finding.get("severity", ""),
                    doc["since"],
                    doc["last_seen"],
                    *(
                        _cell(fp.get(key))
                        for key in ("banner", "http_server", "http_title", "tls_subject")
                    ),
                    fp.get("tls_sha256", ""),
                    fp.get("tls_not_after", ""),
                ]
            )
    return out.getvalue()
