"""RTT estimation and the AIMD congestion window (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon.scan.timing import MIN_CWND, CongestionWindow, RttEstimator, ScanOptions

rtts = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)


@given(st.lists(rtts, min_size=1, max_size=200))
def test_timeout_stays_within_clamps(samples: list[float]) -> None:
    """Whatever the samples, the timeout stays within [timeout_min, timeout_max]."""
    est = RttEstimator(0.5, 0.1, 1.25)
    for r in samples:
        est.sample(r)
        assert 0.1 <= est.timeout <= 1.25


def test_timeout_follows_rtt() -> None:
    """A steady 40 ms path converges to a timeout near srtt + 4·rttvar, above the RTT."""
    est = RttEstimator(0.5, 0.01, 1.25)
    for _ in range(200):
        est.sample(0.040)
    assert est.srtt == pytest.approx(0.040, rel=1e-3)
    assert 0.040 <= est.timeout < 0.045
    est.sample(0.400)  # one slow answer widens the variance
    assert est.timeout > 0.2


@given(st.lists(st.sampled_from(["done", "loss"]), max_size=500), st.integers(1, 5000))
def test_window_bounds(ops: list[str], limit: int) -> None:
    """The window never exceeds its limit and never falls below the floor (or the limit)."""
    w = CongestionWindow(64, limit)
    now = 0.0
    for op in ops:
        now += 1.0
        if op == "done":
            w.on_done()
        else:
            w.on_loss(now - 0.5, now)
        assert min(MIN_CWND, limit) <= w.cwnd <= limit
        assert w.allowed >= 1
        assert w.max_seen <= limit


def test_slow_start_then_halving_once_per_event() -> None:
    """Slow start doubles per round; losses from before a decrease do not halve again."""
    w = CongestionWindow(8, 1024)
    for _ in range(8):
        w.on_done()
    assert w.cwnd == 16
    assert w.on_loss(lost_sent=1.0, now=2.0)
    assert w.cwnd == 8
    assert not w.on_loss(lost_sent=1.5, now=2.1)  # sent before the decrease: same event
    assert w.cwnd == 8
    assert w.on_loss(lost_sent=2.5, now=3.0)
    assert w.cwnd == MIN_CWND
    before = w.cwnd
    w.on_done()  # congestion avoidance: +1/cwnd
    assert w.cwnd == pytest.approx(before + 1 / before)


def test_timeouts_of_filtered_ports_grow_the_window() -> None:
    """Finished probes without loss evidence (e.g. filtered timeouts) open the window."""
    w = CongestionWindow(4, 1024)
    for _ in range(2000):
        w.on_done()
    assert w.cwnd == 1024


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"retries": -1},
        {"timeout_min": 0},
        {"timeout_min": 2.0, "timeout_max": 1.0},
        {"timeout_initial": 5.0},
        {"rate": 0},
        {"initial_cwnd": 0},
    ],
)
def test_bad_options_rejected(kwargs: dict[str, float]) -> None:
    """Nonsensical tuning is refused at construction."""
    with pytest.raises(ValueError, match=r"\w"):
        ScanOptions(**kwargs)  # type: ignore[arg-type]
