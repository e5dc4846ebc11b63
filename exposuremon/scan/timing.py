"""Pure timing and congestion logic of the scan engine: tuning, RTT estimation, AIMD window.

No I/O and no clock reads: the engine passes times in. See engine.py's docstring for how the
pieces work together.
"""

from __future__ import annotations

import dataclasses
import math

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
