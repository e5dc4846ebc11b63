"""The scan engine: non-blocking connect() probes, fingerprints, port specs and reports
(a table, JSON, nmap XML)."""

from __future__ import annotations

from exposuremon.scan.engine import Scanner
from exposuremon.scan.fingerprint import fingerprint_many
from exposuremon.scan.nmapxml import NmapHost, NmapPort, nmap_run, xml_text
from exposuremon.scan.oneshot import scan_blocking
from exposuremon.scan.ports import HOT_PORTS, PortSpecError, format_ports, parse_ports
from exposuremon.scan.report import (
    rate_limit_note,
    result_json,
    result_nmap_xml,
    result_table,
    unexpected_open,
)
from exposuremon.scan.result import PortState, ScanResult, ScanStats
from exposuremon.scan.target import ScanError, TargetScan
from exposuremon.scan.timing import RATE_MAX, RATE_MIN, TIMEOUT_MAX, TIMEOUT_MIN, ScanOptions

__all__ = [
    "HOT_PORTS",
    "RATE_MAX",
    "RATE_MIN",
    "TIMEOUT_MAX",
    "TIMEOUT_MIN",
    "NmapHost",
    "NmapPort",
    "PortSpecError",
    "PortState",
    "ScanError",
    "ScanOptions",
    "ScanResult",
    "ScanStats",
    "Scanner",
    "TargetScan",
    "fingerprint_many",
    "format_ports",
    "nmap_run",
    "parse_ports",
    "rate_limit_note",
    "result_json",
    "result_nmap_xml",
    "result_table",
    "scan_blocking",
    "unexpected_open",
    "xml_text",
]
