"""Prometheus metrics of the daemon's work, in the service's own registry.

Counters of work done live here. Metrics describing state (open ports, findings, target up)
are computed from the store at scrape time by a collector (the observability work adds it),
so they are right after a restart.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exposuremon.model import ScanKind
from exposuremon.scan.result import ScanResult

PREFIX = "exposuremon"
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The work counters; one instance per service, each with a fresh registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.probes = Counter(
            f"{PREFIX}_probes",
            "TCP connect probes by outcome (open, closed, filtered answers and timeouts).",
            ["result"],
            registry=self.registry,
        )
        self.scan_duration = Histogram(
            f"{PREFIX}_scan_duration_seconds",
            "Wall-clock duration of scans by kind.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.scans = Counter(
            f"{PREFIX}_scans",
            "Scans finished by kind and whether they completed.",
            ["kind", "complete"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the version label says which exposuremon runs.",
            ["version"],
            registry=self.registry,
        )
        self.build_info.labels(version=_version()).set(1)

    def record_scan(self, kind: ScanKind, result: ScanResult) -> None:
        """Count one finished scan and its probes."""
        stats = result.stats
        self.scan_duration.labels(kind=kind.value).observe(result.duration)
        self.scans.labels(kind=kind.value, complete=str(result.complete).lower()).inc()
        counts = result.counts
        for label in ("open", "closed", "filtered"):
            if counts[label]:
                self.probes.labels(result=label).inc(counts[label])
        if stats.timeouts:
            self.probes.labels(result="timeout").inc(stats.timeouts)


def _version() -> str:
    try:
        return metadata.version("exposuremon")
    except metadata.PackageNotFoundError:
        return "unknown"
