"""Delivery rates (pure): parsing a channel's rate, defaults per service, the sliding window."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon.config.fields import NOTIFY_TYPES, Rate, parse_rate
from exposuremon.notify.ratelimit import DEFAULT_RATES, MAX_WINDOW, RateLimiter, Window

# ---------------------------------------------------------------------------------- rates


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        (5, Rate(5, 1)),
        (0.5, Rate(0.5, 1)),
        ("2", Rate(2, 1)),
        ("1/s", Rate(1, 1)),
        ("5/2s", Rate(5, 2)),
        ("30/1m", Rate(30, 60)),
        ("60/5m", Rate(60, 300)),
        (" 10 / 500ms", Rate(10, 0.5)),
    ],
)
def test_parse_rate(value: object, rate: Rate) -> None:
    """Numbers are per second; 'count/period' takes any duration."""
    assert parse_rate(value) == rate


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "not a rate: 'fast'"),
        ("5/", "not a rate: '5/'"),
        ("5/2x", "not a rate: '5/2x'"),
        (0, "rate must be more than zero: 0"),
        ("0/s", "rate must be more than zero: '0/s'"),
        ("1/0s", "rate must be more than zero: '1/0s'"),
        ("inf", "must be a finite rate, got 'inf'"),
        (True, "expected a rate"),
        ([5], "expected a rate"),
    ],
)
def test_bad_rates_say_what_is_wrong(value: object, message: str) -> None:
    """Unreadable or non-positive rates are refused with the value in the message."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_rate(value)


def test_every_channel_type_has_a_default_rate_within_the_service_limits() -> None:
    """Slack at most 1/s, Discord 5 per 2 s, and every type has a default that parses back."""
    assert set(DEFAULT_RATES) == set(NOTIFY_TYPES)
    assert DEFAULT_RATES["slack"].per_second <= 1
    assert DEFAULT_RATES["discord"] == Rate(5, 2)
    for rate in DEFAULT_RATES.values():
        assert parse_rate(str(rate)) == rate


def test_rate_limiter_allows_count_per_window_then_queues() -> None:
    """Discord's 5 per 2 s: five at once, the next five 2 s later, queued in order."""
    limiter = RateLimiter(Rate(5, 2))
    waits = [limiter.reserve(100.0) for _ in range(12)]
    assert waits == [0.0] * 5 + [2.0] * 5 + [4.0] * 2
    assert limiter.reserve(110.0) == 0.0  # a quiet spell frees the window


def test_a_fractional_rate_keeps_its_long_run_rate() -> None:
    """0.5 per second is one message every two seconds; 2.5 per second two every 0.8 s."""
    half = RateLimiter(Rate(0.5, 1))
    assert [half.reserve(0.0) for _ in range(3)] == [0.0, 2.0, 4.0]
    more = RateLimiter(Rate(2.5, 1))
    assert [more.reserve(0.0) for _ in range(5)] == pytest.approx([0, 0, 0.8, 0.8, 1.6])


@given(
    st.integers(1, 8),
    st.floats(0.5, 10),
    st.lists(st.floats(0, 3), min_size=1, max_size=60),
)
def test_rate_limiter_never_exceeds_count_in_any_window(
    count: int, per: float, gaps: list[float]
) -> None:
    """Granted send times are ordered, never early, and hold at most `count` per window."""
    limiter = RateLimiter(Rate(count, per))
    now, sends = 0.0, []
    for gap in gaps:
        now += gap
        wait = limiter.reserve(now)
        assert wait >= 0
        sends.append(now + wait)
    # `now + (at - now)` may differ from `at` in the last bit: compare with a tolerance.
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(sends))
    for i in range(len(sends) - count):
        assert sends[i + count] - sends[i] >= per - 1e-9


@given(
    st.integers(1, 6),
    st.floats(0.5, 5),
    st.lists(st.tuples(st.booleans(), st.floats(0, 2)), min_size=1, max_size=60),
)
def test_a_shared_window_holds_for_callers_that_pass_it_around(
    count: int, per: float, bookings: list[tuple[bool, float]]
) -> None:
    """Two callers booking in turn through one stored window (as fleet nodes do through the
    database, in microseconds) never get more than `count` sends into any window together."""
    window = Window.of(Rate(count, per), unit=1e6)
    stored: list[float] = []
    now = 0.0
    sends: dict[bool, list[float]] = {True: [], False: []}
    for caller, gap in bookings:
        now += gap * 1e6
        at, stored = window.reserve(stored, now)
        assert at >= now
        sends[caller].append(at)
    merged = sorted(sends[True] + sends[False])
    for i in range(len(merged) - count):
        assert merged[i + count] - merged[i] >= per * 1e6 - 1e-3
    assert len(stored) <= count


def test_a_huge_rate_keeps_a_bounded_window_and_its_long_run_rate() -> None:
    """10,000 per minute keeps at most MAX_WINDOW times, in a proportionally shorter period."""
    window = Window.of(Rate(10_000, 60))
    assert window.count == MAX_WINDOW
    assert window.per == pytest.approx(6.0)
    assert window.count / window.per == pytest.approx(10_000 / 60)
