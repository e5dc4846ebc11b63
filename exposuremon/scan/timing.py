"""Pure timing and congestion logic of the scan engine: tuning, RTT estimation, AIMD window.

No I/O and no clock reads: the engine passes times in. See engine.py's docstring for how the
pieces work together.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
from collections.abc import Callable

MIN_CWND = 4.0

# What the config and the CLI accept (ScanOptions itself only demands finite values, so that
# tests can drive the engine with tiny timeouts). Below 1 connect/s even a sentinel scan of ~40
# ports takes most of a minute, and `--rate 1e-300` would never finish; a million per second
# is beyond any uplink, so a larger "rate" is a typo, not a limit. A probe timeout under 10 ms
# is shorter than a scheduling hiccup (every port would look filtered) and over 60 s makes one
# filtered port hold a scan for minutes.
RATE_MIN, RATE_MAX = 1.0, 1_000_000.0
TIMEOUT_MIN, TIMEOUT_MAX = 0.01, 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class ScanOptions:
    """Tuning of one scan; defaults are safe for a router on the internet."""

    concurrency: int = 1024  # most probes in flight to this target (the pool per WAN IP)
    initial_cwnd: int = 64
    timeout_initial: float = 0.5  # before any RTT sample (nmap -T4's initial RTT timeout)
    timeout_min: float = 0.1
    timeout_max: float = 1.25
    retries: int = 1
    retries_on_loss: int = 2  # extra attempts once the path has shown packet loss
    rate: float | None = None  # connects per second
    # Connects per second the target was found to accept in an earlier scan (a SYN-flood
    # limit): the scan starts paced at it and keeps learning (`ScanStats.learned_rate`).
    start_rate: float | None = None
    shuffle_seed: int | None = None

    def __post_init__(self) -> None:
        numbers = (self.timeout_initial, self.timeout_min, self.timeout_max, self.rate or 1.0)
        if not all(math.isfinite(n) for n in numbers):  # NaN passes every comparison below
            raise ValueError("timeouts and rate must be finite numbers")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.initial_cwnd < 1:
            raise ValueError("initial_cwnd must be at least 1")
        if self.retries < 0 or self.retries_on_loss < 0:
            raise ValueError("retries must be 0 or more")
        if not 0 < self.timeout_min <= self.timeout_max:
            raise ValueError("need 0 < timeout_min <= timeout_max")
        if not self.timeout_min <= self.timeout_initial <= self.timeout_max:
            raise ValueError("timeout_initial must lie within [timeout_min, timeout_max]")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.start_rate is not None and self.start_rate <= 0:
            raise ValueError("start_rate must be positive")


class RttEstimator:
    """Smoothed RTT and its variance (RFC 6298); timeout = srtt + 4·rttvar, clamped."""

    __slots__ = ("rttvar", "srtt", "timeout", "timeout_max", "timeout_min")

    def __init__(self, initial: float, timeout_min: float, timeout_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.timeout = initial
        self.timeout_min = timeout_min
        self.timeout_max = timeout_max

    def sample(self, rtt: float) -> None:
        """Fold in one measured round trip (seconds)."""
        srtt = self.srtt
        if srtt is None:
            srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += (abs(srtt - rtt) - self.rttvar) * 0.25
            srtt += (rtt - srtt) * 0.125
        self.srtt = srtt
        timeout = srtt + 4 * self.rttvar
        # Conditionals rather than min()/max(): this runs once per answered probe.
        if timeout < self.timeout_min:
            timeout = self.timeout_min
        elif timeout > self.timeout_max:
            timeout = self.timeout_max
        self.timeout = timeout


class CongestionWindow:
    """AIMD window of probes in flight: slow start, additive increase, halving on loss."""

    __slots__ = ("cwnd", "limit", "max_seen", "recover_at", "ssthresh")

    def __init__(self, initial: int, limit: int) -> None:
        self.limit = float(limit)
        self.cwnd = float(min(initial, limit))
        self.ssthresh = self.limit
        self.max_seen = int(self.cwnd)
        self.recover_at = float("-inf")  # losses of probes sent before this: the same event

    @property
    def allowed(self) -> int:
        """Probes that may be in flight now."""
        return int(self.cwnd)

    def on_done(self) -> None:
        """A probe finished without evidence of loss (an answer, or a timeout of a filter)."""
        cwnd = self.cwnd
        if cwnd < self.limit:
            cwnd = min(self.limit, cwnd + (1.0 if cwnd < self.ssthresh else 1.0 / cwnd))
            self.cwnd = cwnd
            if cwnd > self.max_seen:
                self.max_seen = int(cwnd)

    def on_loss(self, lost_sent: float, now: float) -> bool:
        """A probe that should have answered was lost; halve once per event. True if halved."""
        if lost_sent < self.recover_at:
            return False
        self.ssthresh = max(min(MIN_CWND, self.limit), self.cwnd / 2)
        self.cwnd = self.ssthresh
        self.recover_at = now
        return True


MIN_PACE = 0.5  # connects/s: the slowest pace the learner falls to (a 1/s limit is common)
MAX_PACE = 50_000.0  # above this pacing no longer binds a scan: the learner lets go
_HISTORY = 1 << 16  # send times kept per outcome: enough for 2 s at full speed
_UNPACED_SHARE = 0.5  # unpaced, a window with less than this answered is a bucket, not loss
_PACED_SHARE = 0.85  # paced, a window with less than this answered means the pace is too high
_LIMITED_DROPS = 3  # confirmed drops while paced before the target counts as rate-limited


def _count_since(times: collections.deque[float], low: float, high: float) -> int:
    """How many of the `times` fall within [low, high]."""
    return bisect.bisect_right(times, high) - bisect.bisect_left(times, low)


def _span_since(
    times: collections.deque[float], low: float, high: float
) -> tuple[int, float, float]:
    """(how many, earliest, latest) of the `times` within [low, high].

    The times are send times appended as answers arrive, so sorted but for the odd retry
    answered out of turn; bisecting (a deque indexes in O(n/64)) keeps this cheap at 30 000
    answers a second, and a rare misplaced entry changes a rate estimate by one answer.
    """
    start, end = bisect.bisect_left(times, low), bisect.bisect_right(times, high)
    if end <= start:
        return 0, high, low
    return end - start, times[start], times[end - 1]


class RateLearner:
    """Learns how many new connections per second a target accepts, and the pace to send at.

    Fed with the send times of answered and timed-out probes and with *drops* (a probe to a
    port that answers went unanswered: a retry answered, or a timing ping timed out). All
    times are passed in; nothing here reads a clock. engine.py explains the algorithm.
    """

    __slots__ = (
        "_accepted",
        "_changed_at",
        "_growth",
        "_next_eval",
        "_quiet_since",
        "_started",
        "_timeouts",
        "answered",
        "drops",
        "learned",
        "limited",
        "rate",
        "timed_out",
    )

    def __init__(self, start: float | None, now: float) -> None:
        if start is not None:
            start = min(max(start, MIN_PACE), MAX_PACE)
        self.rate = start  # the pace now (connects/s); None: not paced
        self.learned = start  # the accepted rate evidence supports (carried to the next scan)
        self.limited = False  # this scan showed drops that a connection-rate limit explains
        self.drops = 0  # confirmed drops: silent probes to ports that answered later
        self._accepted: collections.deque[float] = collections.deque(maxlen=_HISTORY)
        self._timeouts: collections.deque[float] = collections.deque(maxlen=_HISTORY)
        # answered(sent): a probe sent then was answered (SYN-ACK or RST), the target accepted
        # it; timed_out(sent): one got no answer (dropped, or a filtered port). The deques'
        # own append methods: the engine calls answered() once per answered probe.
        self.answered: Callable[[float], None] = self._accepted.append
        self.timed_out: Callable[[float], None] = self._timeouts.append
        self._started = now
        self._changed_at = now  # drops of probes sent before this were already reacted to
        self._quiet_since = now
        self._next_eval = now
        self._growth = 1.25

    def drop(self, sent: float, now: float, settle: float, confirmed: bool) -> bool:
        """A probe sent at `sent` to a port that answers was dropped; True if the pace changed.

        `confirmed`: the port answered a later attempt. A timing ping's silence is not
        confirmation (loss, or a target that just went down, explain it as well), so it
        never starts pacing. `settle`: the time answers take (srtt).
        """
        if confirmed:
            self.drops += 1
            if self.rate is not None and self.drops >= _LIMITED_DROPS:
                self.limited = True
        elif self.rate is None:
            return False
        if sent < self._changed_at:
            return False  # sent before the last change: that change was the reaction to it
        self._quiet_since = now
        if now < self._next_eval:
            return False  # evaluated a moment ago
        self._next_eval = now + 0.1
        measured = self._measure(now, settle)
        if measured is None:
            return False
        rate, share = measured
        if share >= (_UNPACED_SHARE if self.rate is None else _PACED_SHARE):
            # Most of what was sent was answered: random loss, which the AIMD window handles,
            # or a pace a little above the limit, which costs a few retries and keeps the
            # target's bucket busy. Either way the target accepted `rate`.
            if self.learned is not None and rate > self.learned:
                self.learned = rate
            return False
        self._set(rate, now)
        if confirmed and self.drops >= _LIMITED_DROPS:
            self.limited = True
        return True

    def certain(self, now: float, settle: float) -> None:
        """Proof of a rate limit: a port silent for every attempt answered after a pause."""
        self.limited = True
        measured = self._measure(now, settle, since=self._started)
        rate = measured[0] if measured is not None else MIN_PACE
        self._set(rate if self.rate is None else min(rate, self.rate), now)

    def pace(self, now: float) -> float | None:
        """The pace now; after a quiet period (no drops) it grows, as TCP probes for bandwidth."""
        rate = self.rate
        if rate is None or now < self._quiet_since + max(1.0, 20.0 / rate):
            return rate
        # The target took everything for 20 sends or more: raise the learned rate to what it
        # accepted, and probe upward, faster each quiet period in a row (a wrong guess, such
        # as a lossy path taken for a limit, recovers in seconds).
        span = now - self._quiet_since
        accepted = _count_since(self._accepted, self._quiet_since, now) / span
        if self.learned is not None and accepted > self.learned * 1.1:
            self.learned = accepted
        rate *= self._growth
        self._growth = min(2.0, self._growth * 1.25)
        self._quiet_since = now
        if rate > MAX_PACE:
            self.rate = self.learned = None
            return None
        self.rate = rate
        return rate

    def _measure(
        self, now: float, settle: float, since: float | None = None
    ) -> tuple[float, float] | None:
        """(accepted per second, answered share) of the probes sent since the last change."""
        high = now - settle  # later probes may still be answered
        window = 10.0 if self.rate is None else max(10.0, 20.0 / self.rate)
        low = max(self._changed_at if since is None else since, high - window)
        if high - low < 0.2 and since is None:
            return None  # too little evidence at the present pace yet
        answered, first, last = _span_since(self._accepted, low, high)
        silent = _count_since(self._timeouts, low, high)
        share = answered / (answered + silent) if answered + silent else 1.0
        # A rate from a few answers is noise: wait for more, unless the share shows a pace far
        # above the limit, where every moment spent waiting has most SYNs dropped.
        enough = 3 if self.rate is None or share < 0.5 else 6
        if answered < enough and since is None and high - low < enough / MIN_PACE:
            return None
        if answered >= 3 and last - first >= 0.05:
            # A saturated bucket lets one SYN through per token: the accepted ones are spaced
            # 1/R apart, whatever the window's edges (counting answers per window is off by
            # up to one answer, 50% at 1/s over 2 s).
            return (answered - 1) / (last - first), share
        return (answered + 1) / max(high - low, 0.05), share

    def _set(self, rate: float, now: float) -> None:
        rate = max(MIN_PACE, rate)
        if self.rate is not None:
            rate = min(rate, self.rate)
        self.rate = self.learned = rate
        self._changed_at = self._quiet_since = now
        self._growth = 1.25
