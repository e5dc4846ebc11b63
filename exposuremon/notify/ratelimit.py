"""Pure pacing of deliveries per channel: a sliding window on a caller's clock.

The rates themselves (`Rate`, `parse_rate`) are configuration and live in `exposuremon.config`.
"""

from __future__ import annotations

import collections
import math

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


class RateLimiter:
    """At most `count` sends in any `per` seconds (a sliding window), on a caller's clock.

    Stricter than a token bucket of the same numbers, which would let Discord's "5 per 2 s"
    become 9 in the first 2 s: services count requests per window, and answer the 6th with 429.
    A fractional count keeps its long-run rate with a whole count (0.5/s is 1 per 2 s).
    """

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._count = max(1, math.floor(rate.count))
        self._per = rate.per * self._count / rate.count
        self._sent: collections.deque[float] = collections.deque(maxlen=self._count)

    def reserve(self, now: float) -> float:
        """Book the next send; seconds to wait before it (0: send now).

        A caller that reserves and then waits keeps its place: waiting senders are served in
        order and never more than `count` fall in one window.
        """
        at = now
        if len(self._sent) == self._count:
            at = max(now, self._sent[0] + self._per)
        if self._sent:
            at = max(at, self._sent[-1])
        self._sent.append(at)
        return at - now
