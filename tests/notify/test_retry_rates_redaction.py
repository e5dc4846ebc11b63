"""Delivery policy (pure): answer classification, Retry-After, backoff, horizon, rate limits."""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon.config.fields import NOTIFY_TYPES, Rate, parse_rate
from exposuremon.notify.ratelimit import DEFAULT_RATES, RateLimiter
from exposuremon.notify.redaction import REDACTED, redact, secret_parts
from exposuremon.notify.retry import (
    Backoff,
    Permanent,
    Retry,
    Sent,
    classify,
    decide,
    is_retryable,
    parse_retry_after,
)

NOW = dt.datetime(2026, 11, 26, 3, 14, 7, tzinfo=dt.UTC)


class Fixed:
    """A `random.Random` stand-in that always draws the same number."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


# ------------------------------------------------------------------------- classification


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_sent(status: int) -> None:
    """Every service's success code (Slack 200, Teams 202, Discord 204) counts as sent."""
    assert classify(status, None, "", NOW) == Sent(status)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_408_429_and_5xx_are_retried(status: int) -> None:
    """Timeouts, rate limits and server errors are transient."""
    outcome = classify(status, None, "  busy\n try later ", NOW)
    assert outcome == Retry(f"HTTP {status}: busy try later", None)


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 410, 413, 422])
def test_other_answers_are_permanent(status: int) -> None:
    """Other 4xx (and redirects, never followed) are dead letters, with the answer's text."""
    assert classify(status, "5", "no_service", NOW) == Permanent(f"HTTP {status}: no_service")


@given(st.integers(100, 599))
def test_every_status_has_exactly_one_meaning(status: int) -> None:
    """Each status is sent, retried or permanent, and retried exactly when is_retryable says."""
    outcome = classify(status, None, "", NOW)
    assert isinstance(outcome, Sent) == (200 <= status <= 299)
    assert isinstance(outcome, Retry) == is_retryable(status)


def test_error_text_is_capped() -> None:
    """A huge error page is cut to a short one-line snippet."""
    outcome = classify(500, None, "<html>" + "x" * 5000, NOW)
    assert isinstance(outcome, Retry)
    assert len(outcome.error) <= len("HTTP 500: ") + 200


def test_retry_after_travels_with_the_retry() -> None:
    """A 429's Retry-After is parsed into the outcome."""
    assert classify(429, "7", "rate_limited", NOW) == Retry("HTTP 429: rate_limited", 7.0)


# ------------------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("2.5", 2.5),  # Discord sends fractions
        ("0", 1.0),  # never zero: the receiver asked for a pause
        ("0.2", 1.0),
        ("86400", 3600.0),  # a day is clamped to the hour
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    """Delta-seconds are read and clamped to [1 s, 1 h]; anything unreadable is None."""
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_http_date() -> None:
    """An HTTP-date gives the seconds until then; one in the past gives the minimum."""
    later = email.utils.format_datetime(NOW + dt.timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, NOW) == 90.0
    earlier = email.utils.format_datetime(NOW - dt.timedelta(hours=1), usegmt=True)
    assert parse_retry_after(earlier, NOW) == 1.0
    far = email.utils.format_datetime(NOW + dt.timedelta(days=2), usegmt=True)
    assert parse_retry_after(far, NOW) == 3600.0
    assert parse_retry_after("Wed, 26 Nov 2026 03:15:07 -0000", NOW) == 60.0


@given(st.text(max_size=40))
def test_retry_after_never_raises_and_stays_in_bounds(value: str) -> None:
    """Any header value parses to None or to seconds within the limits."""
    seconds = parse_retry_after(value, NOW, (2.0, 30.0))
    assert seconds is None or 2.0 <= seconds <= 30.0


# ---------------------------------------------------------------------------------- backoff


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    """Top of the range: base, 2x, 4x ... capped; the bottom is the floor."""
    backoff = Backoff(base=5, cap=900, floor=1)
    tops = [backoff.delay(n, Fixed(0.999999)) for n in range(1, 11)]
    assert [round(t) for t in tops] == [5, 10, 20, 40, 80, 160, 320, 640, 900, 900]
    assert backoff.delay(3, Fixed(0.0)) == 1.0
    assert backoff.delay(10_000, Fixed(0.5)) == pytest.approx(450.5)


@given(st.integers(0, 10_000), st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_floor_and_cap(failures: int, draw: float) -> None:
    """Whatever the count and the draw, the delay lies in [floor, cap]."""
    backoff = Backoff(base=0.5, cap=30, floor=0.1)
    assert 0.1 <= backoff.delay(failures, Fixed(draw)) <= 30


def test_backoff_spreads_retries() -> None:
    """Jitter: many senders failing at once do not come back at the same moment."""
    rng = random.Random(7)
    delays = {round(Backoff().delay(4, rng), 3) for _ in range(50)}
    assert len(delays) > 40


def test_backoff_settings_are_checked() -> None:
    """A floor above the base, or a base above the cap, is refused."""
    with pytest.raises(ValueError, match="floor <= base <= cap"):
        Backoff(base=1, cap=10, floor=2)
    with pytest.raises(ValueError, match="floor <= base <= cap"):
        Backoff(base=20, cap=10)


# ------------------------------------------------------------------------- decide + horizon

H = 24 * 3600.0


def test_sent_and_permanent_settle_for_good() -> None:
    """Sent is sent; a permanent error is dead with the error kept."""
    kw: dict[str, Any] = {"attempts": 1, "created_at": NOW, "now": NOW, "horizon": H}
    assert decide(Sent(200), backoff=Backoff(), rng=Fixed(0), **kw).status == "sent"
    dead = decide(Permanent("HTTP 404: no_service"), backoff=Backoff(), rng=Fixed(0), **kw)
    assert (dead.status, dead.error) == ("dead", "HTTP 404: no_service")


def test_a_failure_waits_for_the_backoff_or_retry_after() -> None:
    """Pending again: after the jittered backoff, or exactly the receiver's Retry-After."""
    kw: dict[str, Any] = {
        "created_at": NOW,
        "now": NOW,
        "horizon": H,
        "backoff": Backoff(),
        "rng": Fixed(0.5),
    }
    backed = decide(Retry("HTTP 503"), attempts=2, **kw)
    assert backed.status == "pending"
    assert backed.wait == pytest.approx(1 + 9 * 0.5)
    assert backed.next_attempt_at == NOW + dt.timedelta(seconds=backed.wait)
    assert backed.error == "HTTP 503"
    told = decide(Retry("HTTP 429", after=42.0), attempts=9, **kw)
    assert (told.wait, told.next_attempt_at) == (42.0, NOW + dt.timedelta(seconds=42))


def test_the_last_retry_is_at_the_horizon_then_dead() -> None:
    """A retry past the horizon is moved to it; failing at the horizon gives up, saying why."""
    created = NOW - dt.timedelta(seconds=H - 10)
    kw: dict[str, Any] = {
        "created_at": created,
        "horizon": H,
        "backoff": Backoff(),
        "rng": Fixed(0.9),
    }
    last = decide(Retry("HTTP 500", after=600.0), attempts=30, now=NOW, **kw)
    assert last.status == "pending"
    assert last.next_attempt_at == created + dt.timedelta(seconds=H)
    at_horizon = NOW + dt.timedelta(seconds=10)
    dead = decide(Retry("cannot connect"), attempts=31, now=at_horizon, **kw)
    assert dead.status == "dead"
    assert dead.error == "gave up after 31 attempts in 86400s: cannot connect"


def test_a_horizon_of_millennia_still_backs_off() -> None:
    """A horizon past year 9999 is no error: the message backs off like any other."""
    kw: dict[str, Any] = {"created_at": NOW, "now": NOW, "backoff": Backoff(), "rng": Fixed(0)}
    late = decide(Retry("HTTP 500"), attempts=1, horizon=8.64e12, **kw)
    assert late.status == "pending"
    assert late.next_attempt_at == NOW + dt.timedelta(seconds=late.wait)


@given(
    st.lists(st.floats(0.0, 4000.0), min_size=1, max_size=60),
    st.floats(0, 1, exclude_max=True),
)
def test_no_message_outlives_the_horizon(gaps: list[float], draw: float) -> None:
    """Retrying forever ends in dead at the horizon at the latest, never later."""
    horizon = 3 * 3600.0
    now = NOW
    for attempts, gap in enumerate(gaps, start=1):
        outcome = Retry("x", after=gap if gap > 1 else None)
        d = decide(
            outcome,
            attempts=attempts,
            created_at=NOW,
            now=now,
            horizon=horizon,
            backoff=Backoff(),
            rng=Fixed(draw),
        )
        if d.status == "dead":
            assert now >= NOW + dt.timedelta(seconds=horizon)
            return
        assert d.next_attempt_at is not None
        assert now < d.next_attempt_at <= NOW + dt.timedelta(seconds=horizon)
        now = d.next_attempt_at


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


# ---------------------------------------------------------------------------------- secrets


def test_secret_parts_of_a_webhook_url_are_redacted() -> None:
    """Path tokens and query values go; scheme and host stay, so the error still says where."""
    url = "https://hooks.slack.com/services/T0001/B0002/XXSECRETXX?token=QSECRET&x=1"
    parts = secret_parts(url, "signing-secret")
    text = f"POST {url} failed; path /services/T0001/B0002/XXSECRETXX; QSECRET; signing-secret"
    clean = redact(text, parts)
    for leaked in ("XXSECRETXX", "QSECRET", "signing-secret", "T0001"):
        assert leaked not in clean
    assert "hooks.slack.com" in clean
    assert REDACTED in clean
    assert parts == sorted(parts, key=len, reverse=True)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=40))
def test_no_token_survives_redaction(token: str) -> None:
    """A token anywhere in a URL's path or query never appears in a redacted text."""
    for url in (f"https://h.example/a/{token}", f"https://h.example/hook?sig={token}"):
        assert token not in redact(f"error at {url}: {token}", secret_parts(url))
