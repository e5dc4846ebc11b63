"""Scans that did not run on time: counted per kind, summed up once a minute (pure).

A scan is late when it starts more than `LATE_AFTER` seconds after it was due, or when it
does not run at all because the previous run of the same scan was still going (APScheduler's
"maximum number of running instances reached", which it would log once per job). Nothing is
skipped silently: the service counts each late scan in `exposuremon_scans_late_total{kind}`,
observes every start's lag in `exposuremon_scan_lag_seconds{kind}`, and logs this module's
`summary()` once a minute instead of a line per job.
"""

from __future__ import annotations

import dataclasses

from exposuremon.model import ScanKind

# The goal speaks of a sentinel scan "within its interval + 15 s": a start later than that
# after its due time (which includes the jitter) is late. One threshold for every kind keeps
# the metric's meaning simple; a quick or full scan waiting 15 s for a slot is worth knowing.
LATE_AFTER = 15.0


@dataclasses.dataclass(slots=True)
class _KindTally:
    late: int = 0
    skipped: int = 0
    worst_lag: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class LateSummary:
    """Late scans of one kind since the last summary: started late, skipped, worst lag (s)."""

    kind: ScanKind
    late: int
    skipped: int
    worst_lag: float


def is_late(lag: float) -> bool:
    """A scan that started `lag` seconds after it was due is late."""
    return lag > LATE_AFTER


class LateScans:
    """Tallies late and skipped scans between two `summary()` calls."""

    def __init__(self) -> None:
        self._tally: dict[ScanKind, _KindTally] = {}

    def started(self, kind: ScanKind, lag: float) -> bool:
        """Note a scan that started `lag` s after it was due; True when that is late."""
        if not is_late(lag):
            return False
        tally = self._tally.setdefault(kind, _KindTally())
        tally.late += 1
        tally.worst_lag = max(tally.worst_lag, lag)
        return True

    def skipped(self, kind: ScanKind) -> None:
        """Note a scan that did not run: the previous run of it was still going."""
        self._tally.setdefault(kind, _KindTally()).skipped += 1

    def summary(self) -> list[LateSummary]:
        """What was late since the last call (kinds in scan order, none when all were on time)."""
        tally, self._tally = self._tally, {}
        return [
            LateSummary(kind, t.late, t.skipped, round(t.worst_lag, 3))
            for kind in ScanKind
            if (t := tally.get(kind)) is not None
        ]
