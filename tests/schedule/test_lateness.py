"""Late scans: counted per kind and summed up once per summary, then forgotten."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exposuremon.model import ScanKind
from exposuremon.schedule import LATE_AFTER, LateScans, LateSummary, is_late


def test_on_time_scans_leave_no_summary() -> None:
    """Scans that start within the threshold are not late, and nothing is logged for them."""
    late = LateScans()
    assert not late.started(ScanKind.SENTINEL, 0.0)
    assert not late.started(ScanKind.SENTINEL, LATE_AFTER)
    assert late.summary() == []


def test_summary_counts_late_and_skipped_then_starts_over() -> None:
    """One line per kind: how many started late, how many were skipped, the worst lag."""
    late = LateScans()
    assert late.started(ScanKind.SENTINEL, LATE_AFTER + 1)
    late.started(ScanKind.SENTINEL, 40.0)
    late.skipped(ScanKind.FULL)
    late.skipped(ScanKind.FULL)
    assert late.summary() == [
        LateSummary(ScanKind.SENTINEL, late=2, skipped=0, worst_lag=40.0),
        LateSummary(ScanKind.FULL, late=0, skipped=2, worst_lag=0.0),
    ]
    assert late.summary() == []  # counted once


@given(st.lists(st.tuples(st.sampled_from(ScanKind), st.floats(0, 1e6)), max_size=50))
def test_every_late_start_is_counted_once(starts: list[tuple[ScanKind, float]]) -> None:
    """The summary's counts are exactly the starts past the threshold, per kind."""
    late = LateScans()
    for kind, lag in starts:
        late.started(kind, lag)
    counted = {s.kind: s.late for s in late.summary()}
    for kind in ScanKind:
        assert counted.get(kind, 0) == sum(1 for k, lag in starts if k is kind and is_late(lag))
