"""Test-only builders of store records from detection's input."""

from __future__ import annotations

from exposuremon.model import Observation, Observed
from exposuremon.store import ScanRecord


def scan_record_of(obs: Observation, ports_scanned: int | None = None) -> ScanRecord:
    """Summarise an observation; `ports_scanned` defaults to the ports it finished."""
    counts = dict.fromkeys(Observed, 0)
    for state in obs.states.values():
        counts[state] += 1
    return ScanRecord(
        target=obs.target,
        kind=obs.kind,
        address=obs.address,
        started=obs.started,
        finished=obs.finished,
        complete=obs.complete,
        ports_scanned=len(obs.states) if ports_scanned is None else ports_scanned,
        open_count=counts[Observed.OPEN],
        closed_count=counts[Observed.CLOSED],
        filtered_count=counts[Observed.FILTERED],
        duration_s=(obs.finished - obs.started).total_seconds(),
    )
