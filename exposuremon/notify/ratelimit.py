"""Pure pacing of deliveries per channel: a sliding window on a caller's clock.

The rates themselves (`Rate`, `parse_rate`) are configuration and live in `exposuremon.config`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from exposuremon.config import Rate

# What each service tolerates per webhook, with room to spare: Slack about 1 message a
# second; Discord 5 per 2 s; Teams connectors 4 a second but 60 per 30 s; Google Chat about
# 1 write a second per space; ntfy.sh bursts of 60 then 1 per 5 s; generic receivers are ours.
DEFAULT_RATES: dict[str, Rate] = {
    "slack": Rate(1, 1.0),
    "discord": Rate(5, 2.0),
    "msteams": Rate(4, 2.0),
    "googlechat": Rate(1, 1.0),
    "ntfy": Rate(60, 300.0),
    "webhook": Rate(10, 1.0),
}


# The most send times a window keeps: a rate of more (10,000 per minute) becomes this many in a
# proportionally shorter period, the same long-run rate (the shared windows stay small rows).
MAX_WINDOW = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """At most `count` sends in any `per` (a sliding window); pure arithmetic, any time unit.

    Stricter than a token bucket of the same numbers, which would let Discord's "5 per 2 s"
    become 9 in the first 2 s: services count requests per window, and answer the 6th with 429.
    A fractional count keeps its long-run rate with a whole count (0.5/s is 1 per 2 s).
    """

    count: int
    per: float

    @classmethod
    def of(cls, rate: Rate, unit: float = 1.0) -> Window:
        """The window of `rate`, its period in `unit`s of a second (1e6: microseconds)."""
        count = min(max(1, math.floor(rate.count)), MAX_WINDOW)
        return cls(count, rate.per * count / rate.count * unit)

    def reserve(self, sent: Sequence[float], now: float) -> tuple[float, list[float]]:
        """Book the next send after the booked ones `sent` (oldest first): when it may go (never
        before `now`), and the times to keep for the next booking.

        A caller that reserves and then waits keeps its place: waiting senders are served in
        order and never more than `count` fall in one window.
        """
        kept = list(sent[-self.count :])
        at = now
        if len(kept) == self.count:
            at = max(now, kept[0] + self.per)
        if kept:
            at = max(at, kept[-1])
        kept.append(at)
        return at, kept[-self.count :]


class RateLimiter:
    """A `Window` of one process, on a caller's clock (seconds): the times kept in memory.

    The notifier keeps its windows in the store instead (shared by the nodes of a fleet);
    this is the same arithmetic for a single caller.
    """

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.window = Window.of(rate)
        self._sent: list[float] = []

    def reserve(self, now: float) -> float:
        """Book the next send; seconds to wait before it (0: send now)."""
        at, self._sent = self.window.reserve(self._sent, now)
        return at - now
