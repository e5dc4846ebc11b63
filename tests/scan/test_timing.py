"""RTT estimation, the AIMD congestion window and the rate learner (pure)."""

from __future__ import annotations

import collections
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.scan.timing import (
    MAX_PACE,
    MIN_CWND,
    MIN_PACE,
    CongestionWindow,
    RateLearner,
    RttEstimator,
    ScanOptions,
)

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


# -- the rate learner ---------------------------------------------------------------------------


def simulate(
    learner: RateLearner, rate: float, burst: int, probes: int, *, flood: float = 2000.0
) -> tuple[int, float]:
    """Scan `probes` ports through a token bucket, the sender paced by `learner`.

    Every port answers when its SYN gets a token; a SYN without one is dropped, times out
    after 0.1 s and is retried (the newest timeout first, as the engine does), and its answered
    retry is reported as a confirmed drop. Unpaced, the sender floods at `flood` per second.
    Returns (SYNs sent, simulated seconds).
    """
    tokens, refilled = float(burst), 0.0
    now, sent = 0.0, 0
    timing_out: collections.deque[tuple[float, float]] = collections.deque()  # (due, sent)
    retries: list[float] = []  # send times of the dropped attempts, newest last
    todo = probes
    # Bounded: every step sends one SYN; a pace at the 0.5/s floor finishes in ~1000 s.
    for _ in range(200 * probes):
        if todo == 0 and not retries and not timing_out:
            break
        pace = learner.pace(now)
        now += 1.0 / (pace if pace is not None else flood)
        tokens = min(float(burst), tokens + (now - refilled) * rate)
        refilled = now
        while timing_out and timing_out[0][0] <= now:
            lost_at = timing_out.popleft()[1]
            learner.timed_out(lost_at)
            retries.append(lost_at)
        if retries:
            lost: float | None = retries.pop()
        elif todo:
            todo, lost = todo - 1, None
        else:
            continue  # waiting for timeouts: the sender idles
        sent += 1
        if tokens >= 1.0:
            tokens -= 1.0
            learner.answered(now)
            if lost is not None:
                learner.drop(lost, now + 0.0001, 0.0001, confirmed=True)
        else:
            timing_out.append((now + 0.1, now))
    return sent, now


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 200), st.integers(1, 60))
def test_learner_finds_a_token_buckets_rate(rate: int, burst: int) -> None:
    """Against any token bucket the learner ends paced near its rate, having called it a limit."""
    learner = RateLearner(None, 0.0)
    probes = max(200, 30 * rate)
    sent, elapsed = simulate(learner, rate, burst, probes)
    assert learner.limited
    assert learner.learned is not None
    # A bucket of one or two tokens tolerates no jitter: a pace a hair above its rate loses
    # every other SYN, so the learner settles lower there (slower, still exact).
    assert (0.7 if burst >= 3 else 0.5) * rate <= learner.learned <= 1.5 * rate
    # Near the bucket's floor, and not by flooding it: once it has three answers to go by
    # (the unpaced start floods), few SYNs are wasted on drops.
    assert elapsed <= 1.5 * (probes - burst) / rate + 10
    assert sent <= 1.6 * probes + 2000 * (3 / rate + 0.5)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 200), st.floats(0.2, 5.0))
def test_learner_started_from_a_rate_converges(rate: int, factor: float) -> None:
    """Started from a wrong earlier rate (too low or too high), the learned rate converges."""
    learner = RateLearner(rate * factor, 0.0)
    simulate(learner, rate, 5, max(300, 40 * rate))
    assert learner.learned is not None
    assert 0.7 * rate <= learner.learned <= 1.5 * rate


@given(st.floats(0.0, 0.1), st.integers(0, 2**32 - 1))
def test_random_loss_is_not_taken_for_a_rate_limit(loss: float, seed: int) -> None:
    """Up to 10% random loss at full speed never makes the learner pace or call a limit."""
    rng = random.Random(seed)
    learner = RateLearner(None, 0.0)
    now = 0.0
    for _ in range(5000):
        now += 0.0002
        if rng.random() < loss:
            learner.timed_out(now)
            learner.drop(now, now + 0.1, 0.0001, confirmed=True)  # its retry answered
        else:
            learner.answered(now)
    assert learner.rate is None
    assert not learner.limited
    assert learner.learned is None


ops = st.lists(
    st.tuples(
        st.sampled_from(["answered", "timed_out", "drop", "ping", "certain", "pace"]),
        st.floats(0.0, 5.0),
    ),
    max_size=300,
)


@given(ops, st.one_of(st.none(), st.floats(0.01, 1e6)))
def test_pace_stays_within_bounds(steps: list[tuple[str, float]], start: float | None) -> None:
    """Whatever happens (any start), the pace and the learned rate are None or within bounds."""
    learner = RateLearner(start, 0.0)
    now = 0.0
    for op, dt in steps:
        now += dt
        if op == "answered":
            learner.answered(now)
        elif op == "timed_out":
            learner.timed_out(now)
        elif op in ("drop", "ping"):
            learner.drop(now - dt / 2, now, 0.001, confirmed=op == "drop")
        elif op == "certain":
            learner.certain(now, 0.001)
        else:
            learner.pace(now)
        if learner.rate is not None:
            assert MIN_PACE <= learner.rate <= MAX_PACE
        if learner.learned is not None:
            assert MIN_PACE <= learner.learned <= MAX_PACE


def test_quiet_pace_grows_faster_each_period_then_lets_go() -> None:
    """Without drops the pace grows each quiet period, faster each time, until it lets go."""
    learner = RateLearner(100.0, 0.0)
    paces = []
    now = 0.0
    for _ in range(100):
        now += 1.0
        pace = learner.pace(now)
        if pace is None:
            break
        paces.append(pace)
    assert paces[0] == pytest.approx(125.0)
    steps = [b / a for a, b in itertools.pairwise(paces)]
    assert steps == sorted(steps)
    assert steps[-1] == pytest.approx(2.0)
    assert learner.pace(now + 1) is None
    assert learner.learned is None


def test_drops_from_before_a_change_do_not_lower_the_pace_again() -> None:
    """The drops a change reacted to, reported late, neither lower the pace nor stop growth."""
    learner = RateLearner(None, 0.0)
    for i in range(100):  # 100 sent in 0.5 s, 20 answered: a bucket of about 40/s
        (learner.answered if i % 5 == 0 else learner.timed_out)(i * 0.005)
    assert learner.drop(0.1, 0.6, 0.001, confirmed=True)
    paced = learner.rate
    assert paced is not None
    assert 30 < paced < 60
    for k in range(50):  # late reports of drops of probes sent before the change
        assert not learner.drop(0.2, 0.7 + k * 0.1, 0.001, confirmed=True)
    assert learner.rate == paced
    assert learner.pace(6.0) is not None
    assert learner.rate > paced


def test_ping_silence_never_starts_pacing_answered_retries_do() -> None:
    """A timing ping's silence (loss, or an outage) starts no pacing; answered retries do."""
    learner = RateLearner(None, 0.0)
    for i in range(100):
        (learner.answered if i % 10 == 0 else learner.timed_out)(i * 0.005)
    assert not learner.drop(0.4, 0.6, 0.001, confirmed=False)
    assert learner.rate is None
    assert learner.drop(0.4, 0.6, 0.001, confirmed=True)
    assert learner.rate is not None
    assert not learner.limited
    for k in range(3):
        learner.drop(0.7 + k * 0.01, 0.8 + k * 0.01, 0.001, confirmed=True)
    assert learner.limited
