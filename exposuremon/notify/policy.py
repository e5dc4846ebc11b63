"""Pure delivery policy: what an HTTP answer means, when to try again, how fast to send.

No I/O and no clocks of its own: times and randomness are passed in, so that every rule is
tested without an event loop. The delivery worker (`notify/outbox.py`) applies them.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import email.utils
import math
import re
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from exposuremon.units import parse_duration

REDACTED = "<redacted>"


class Random(Protocol):
    """What the policy needs of `random.Random`: a float in [0, 1)."""

    def random(self) -> float: ...


# --- outcomes of one attempt ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """The receiver accepted the message."""

    status: int


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try again, after `after` seconds when the receiver said so."""

    error: str
    after: float | None = None  # from Retry-After, already clamped; None: use the backoff


@dataclasses.dataclass(frozen=True, slots=True)
class Permanent:
    """The receiver refused the message for good (dead letter)."""

    error: str


Outcome = Sent | Retry | Permanent


def is_retryable(status: int) -> bool:
    """408, 429 and 5xx are worth another try; other non-2xx answers are not."""
    return status in (408, 429) or 500 <= status <= 599


def classify(
    status: int,
    retry_after: str | None,
    body: str,
    now: dt.datetime,
    limits: tuple[float, float] = (1.0, 3600.0),
) -> Outcome:
    """The outcome of an HTTP answer: 2xx sent; 408/429/5xx retry (Retry-After kept); else dead.

    Redirects are failures too: a webhook that moved must be reconfigured, and following one
    would drop the POST body or send it somewhere unexpected.
    """
    if 200 <= status <= 299:
        return Sent(status)
    snippet = " ".join(body.split())[:200]
    error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if is_retryable(status):
        return Retry(error, parse_retry_after(retry_after, now, limits))
    return Permanent(error)


def parse_retry_after(
    value: str | None, now: dt.datetime, limits: tuple[float, float] = (1.0, 3600.0)
) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), clamped.

    None when absent or unreadable. Fractions are accepted (Discord sends them); a date in
    the past gives the lower limit: the receiver asked for a pause, never none at all.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: float | None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses naive
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    low, high = limits
    return min(max(seconds, low), high)


# --- retry schedule ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform in [floor, min(cap, base * 2**n)]."""

    base: float = 5.0
    cap: float = 900.0
    floor: float = 1.0  # never hammer: even an unlucky draw waits this long
    retry_after: tuple[float, float] = (1.0, 3600.0)  # clamp of a receiver's Retry-After

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.base <= self.cap:
            raise ValueError(f"backoff: need 0 < floor <= base <= cap, got {self}")

    def delay(self, failures: int, rng: Random) -> float:
        """Seconds before the next attempt after `failures` failed ones (1 for the first)."""
        exponent = min(max(failures - 1, 0), 32)  # 2**32 * base is past any cap
        top = min(self.cap, self.base * 2.0**exponent)
        return self.floor + (top - self.floor) * rng.random()


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a message after an attempt: settle it as `status`."""

    status: str  # "sent" | "pending" | "dead"
    next_attempt_at: dt.datetime | None = None
    error: str | None = None
    wait: float = 0.0  # seconds the channel should pause before its next attempt


def decide(
    outcome: Outcome,
    *,
    attempts: int,
    created_at: dt.datetime,
    now: dt.datetime,
    horizon: float,
    backoff: Backoff,
    rng: Random,
) -> Decision:
    """Sent, dead (permanent, or past the retry horizon), or pending until the next attempt.

    `attempts` counts this one. The last retry is made at the horizon itself, so an outage
    of up to the horizon loses nothing; one that fails after it is given up.
    """
    if isinstance(outcome, Sent):
        return Decision("sent")
    if isinstance(outcome, Permanent):
        return Decision("dead", error=outcome.error)
    try:
        deadline = created_at + dt.timedelta(seconds=horizon)
    except OverflowError:  # a horizon of millennia: no deadline this side of year 9999
        deadline = dt.datetime.max.replace(tzinfo=dt.UTC)
    if now >= deadline:
        error = f"gave up after {attempts} attempts in {horizon:g}s: {outcome.error}"
        return Decision("dead", error=error)
    wait = outcome.after if outcome.after is not None else backoff.delay(attempts, rng)
    at = min(now + dt.timedelta(seconds=wait), deadline)
    return Decision("pending", next_attempt_at=at, error=outcome.error, wait=wait)


# --- rate limits ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` messages in any `per` seconds."""

    count: float
    per: float = 1.0

    def __post_init__(self) -> None:
        if not (self.count > 0 and self.per > 0 and math.isfinite(self.count / self.per)):
            raise ValueError(f"rate: need a positive count and period, got {self}")

    @property
    def per_second(self) -> float:
        """Sustained messages per second."""
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count:g}/{self.per:g}s"


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


def parse_rate(value: object) -> Rate:
    """A rate from `5` (per second), `"1/s"`, `"5/2s"` or `"30/1m"`; ValueError says why."""
    if isinstance(value, Rate):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a rate like 5, '1/s', '5/2s' or '30/1m'")
    if isinstance(value, int | float):
        count, per = float(value), 1.0
    else:
        head, sep, tail = value.partition("/")
        tail = tail.strip()
        try:
            count = float(head)
            per = 1.0 if not sep else parse_duration(f"1{tail}" if tail.isalpha() else tail)
        except ValueError:
            raise ValueError(
                f"not a rate: {value!r} (use a number per second, or e.g. '5/2s', '30/1m')"
            ) from None
    try:
        return Rate(count, per)
    except ValueError:
        raise ValueError(f"rate must be more than zero: {value!r}") from None


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


# --- secrets ----------------------------------------------------------------------------------


def secret_parts(url: str, secret: str | None = None) -> list[str]:
    """The pieces of a webhook URL (and signing secret) that must never be shown, longest first.

    Its path with the query, the query, each query value, each path segment long enough to be
    a token, and a password. The scheme and host stay visible: they tell the operator which
    service failed (`https://hooks.slack.com<redacted>`).
    """
    parts = {secret or ""}
    split = urlsplit(url)
    parts.add(split.path + (f"?{split.query}" if split.query else ""))
    parts.add(split.query)
    if split.password:
        parts.add(split.password)
    parts.update(v for _, v in parse_qsl(split.query, keep_blank_values=True))
    parts.update(seg for seg in split.path.split("/") if len(seg) >= 4)
    return sorted((p for p in parts if len(p) >= 4 and p != "/"), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by `<redacted>`."""
    for part in secrets:
        if part:
            text = text.replace(part, REDACTED)
    return text
