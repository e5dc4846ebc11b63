"""Prometheus metrics: work counters (prometheus-client) and state read from the store at scrape.

A package of its own because both the daemon (counting work) and the HTTP side (rendering
`/metrics` with the fast exposition in `exposition`) use it, and neither owns it.
"""

from __future__ import annotations

from exposuremon.metrics.collectors import Metrics, StateCollector, build_version
from exposuremon.metrics.exposition import Family, scrape_handler

__all__ = ["Family", "Metrics", "StateCollector", "build_version", "scrape_handler"]
