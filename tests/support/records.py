"""Test-only builders of store records from detection's input."""

from __future__ import annotations

import collections

from exposuremon.model import Observation, Observed
from exposuremon.store import ScanRecord


def scan_record_of(obs: Observation, ports_scanned: int | None = None) -> ScanRecord:
    """Summarise an observation; `ports_scanned` defaults to the ports it finished."""
    counts = collections.Counter(obs.states.values())
    scanned = len(obs.states) if ports_scanned is None else ports_scanned
    when = (obs.target, obs.kind, obs.address, obs.started, obs.finished, obs.complete, scanned)
    tally = (counts[Observed.OPEN], counts[Observed.CLOSED], counts[Observed.FILTERED])
    return ScanRecord(*when, *tally, (obs.finished - obs.started).total_seconds())
