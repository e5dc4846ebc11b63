"""Pure retry rules: what an HTTP answer means and when to try a delivery again.

No I/O and no clocks of its own: times and randomness are passed in, so that every rule is
tested without an event loop. The delivery worker (`notify/notifier.py`) applies them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import re
from typing import Protocol

from exposuremon.model import DeliveryStatus


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


DeliveryOutcome = Sent | Retry | Permanent


def is_retryable(status: int) -> bool:
    """408, 429 and 5xx are worth another try; other non-2xx answers are not."""
    return status in (408, 429) or 500 <= status <= 599


def classify(
    status: int,
    retry_after: str | None,
    body: str,
    now: dt.datetime,
    limits: tuple[float, float] = (1.0, 3600.0),
) -> DeliveryOutcome:
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

    status: DeliveryStatus
    next_attempt_at: dt.datetime | None = None
    error: str | None = None
    wait: float = 0.0  # seconds the channel should pause before its next attempt


def decide(
    outcome: DeliveryOutcome,
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
        return Decision(DeliveryStatus.SENT)
    if isinstance(outcome, Permanent):
        return Decision(DeliveryStatus.DEAD, error=outcome.error)
    try:
        deadline = created_at + dt.timedelta(seconds=horizon)
    except OverflowError:  # a horizon of millennia: no deadline this side of year 9999
        deadline = dt.datetime.max.replace(tzinfo=dt.UTC)
    if now >= deadline:
        error = f"gave up after {attempts} attempts in {horizon:g}s: {outcome.error}"
        return Decision(DeliveryStatus.DEAD, error=error)
    wait = outcome.after if outcome.after is not None else backoff.delay(attempts, rng)
    at = min(now + dt.timedelta(seconds=wait), deadline)
    return Decision(DeliveryStatus.PENDING, next_attempt_at=at, error=outcome.error, wait=wait)
