"""Config limits: non-finite numbers are refused everywhere, and each key has sane bounds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon.config.fields import ConfigError
from exposuremon.config.models import parse_config
from exposuremon.units import parse_duration

BASE = Path("/srv/exposuremon")
TARGET = '[[targets]]\nname = "r1"\naddress = "192.0.2.1"\n'
NOTIFY = '[[notify]]\nname = "n"\ntype = "webhook"\nurl_env = "U"\n'
HUGE = "9" * 400  # float() rounds it to inf


def errors_of(text: str) -> list[str]:
    """The error lines parse_config reports for `text`."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, BASE)
    return info.value.errors


def test_the_issue_config_is_refused_key_by_key() -> None:
    """sentinel = nan, quick = inf, rate = nan, anomaly_share = nan: one error per key."""
    text = "[schedule]\nsentinel = nan\nquick = inf\n[scan]\nrate = nan\nanomaly_share = nan\n"
    errors = errors_of(text + TARGET)
    assert sorted(e.partition(":")[0] for e in errors) == [
        "scan.anomaly_share",
        "scan.rate",
        "schedule.quick",
        "schedule.sentinel",
    ]
    assert all("finite" in e for e in errors), errors


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", '"nan"', '"inf"', f'"{HUGE}s"', HUGE])
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("[daemon]", "retention"),
        ("[scan]", "timeout_min"),
        ("[scan]", "timeout_max"),
        ("[scan]", "timeout_initial"),
        ("[scan]", "fingerprint_timeout"),
        ("[scan]", "rate"),
        ("[scan]", "anomaly_share"),
        ("[schedule]", "sentinel"),
        ("[schedule]", "quick"),
        ("[schedule]", "full"),
        ("[schedule]", "jitter"),
    ],
)
def test_non_finite_numbers_are_refused_in_sections(section: str, key: str, value: str) -> None:
    """nan, inf and their string forms are an error naming the key, in every numeric key."""
    errors = errors_of(f"{section}\n{key} = {value}\n{TARGET}")
    assert len(errors) == 1
    assert errors[0].startswith(f"{section.strip('[]')}.{key}: "), errors


@pytest.mark.parametrize("value", ["nan", "inf", '"nan/s"', '"inf/1m"', '"1/nan"', f'"{HUGE}"'])
@pytest.mark.parametrize("key", ["rate", "retry_horizon", "remind_every"])
def test_non_finite_numbers_are_refused_in_channels(key: str, value: str) -> None:
    """A channel's rate and durations refuse nan and inf with an error naming the key."""
    errors = errors_of(f"{TARGET}{NOTIFY}{key} = {value}\n")
    assert len(errors) == 1
    assert errors[0].startswith(f"notify[0].{key}: "), errors


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize(
    ("table", "key"),
    [("schedule", "sentinel"), ("schedule", "quick"), ("schedule", "full"), ("scan", "rate")],
)
def test_non_finite_numbers_are_refused_in_target_overrides(
    table: str, key: str, value: str
) -> None:
    """Per-target overrides refuse nan and inf as the global sections do."""
    errors = errors_of(f"{TARGET}[targets.{table}]\n{key} = {value}\n")
    assert len(errors) == 1
    assert errors[0].startswith(f"targets[0].{table}.{key}: "), errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[schedule]\nsentinel = "1ms"\n',
            "schedule.sentinel: must be at least 1s (more often floods the router and the log), "
            "got '1ms'",
        ),
        (
            '[schedule]\nquick = "500ms"\n',
            "schedule.quick: must be at least 1s (quick scans would run back to back), got '500ms'",
        ),
        (
            '[schedule]\nfull = "30s"\n',
            "schedule.full: must be at least 1m (a full scan of 65535 ports would run back to "
            "back), got '30s'",
        ),
        (
            '[schedule]\nfull = "36526d"\n',
            "schedule.full: must be at most 36525d, got '36526d'",
        ),
        (
            f'{TARGET}[targets.schedule]\nsentinel = "100ms"\n',
            "targets[0].schedule.sentinel: must be at least 1s (more often floods the router "
            "and the log), got '100ms'",
        ),
        (
            '[scan]\ntimeout_min = "1ms"\n',
            "scan.timeout_min: must be at least 10ms (shorter than a scheduling hiccup: every "
            "port looks filtered), got '1ms'",
        ),
        ('[scan]\ntimeout_max = "2m"\n', "scan.timeout_max: must be at most 1m, got '2m'"),
        (
            '[scan]\nfingerprint_timeout = "10ms"\n',
            "scan.fingerprint_timeout: must be at least 100ms (too short for a TLS handshake), "
            "got '10ms'",
        ),
        (
            "[scan]\nrate = 1e-300\n",
            "scan.rate: must be at least 1 (slower scans never finish: a sentinel takes a "
            "minute), got 1e-300",
        ),
        ("[scan]\nrate = 1e9\n", "scan.rate: must be at most 1000000, got 1000000000.0"),
        (
            "[scan]\nanomaly_share = 0.01\n",
            "scan.anomaly_share: must be at least 0.1 (a smaller share takes ordinary scans for "
            "a middlebox and hides their findings), got 0.01",
        ),
        (
            "[scan]\nconcurrency = 100000\n",
            "scan.concurrency: must be less than or equal to 65535 (got 100000)",
        ),
        (
            "[scan]\nmax_concurrent_scans = 5000\n",
            "scan.max_concurrent_scans: must be less than or equal to 1024 (got 5000)",
        ),
        (
            "[scan]\nresolve_after = 1000\n",
            "scan.resolve_after: must be less than or equal to 100 (got 1000)",
        ),
        (
            '[daemon]\nretention = "1h"\n',
            "daemon.retention: must be at least 24h (shorter drops events before anyone reads "
            "them), got '1h'",
        ),
        (
            f'{TARGET}{NOTIFY}rate = "1/1d"\n',
            "notify[0].rate: must allow at least one message an hour, got '1/1d'",
        ),
        (
            f"{TARGET}{NOTIFY}rate = 1e6\n",
            "notify[0].rate: must be at most 1000 messages a second, got 1000000.0",
        ),
        (
            f'{TARGET}{NOTIFY}retry_horizon = "10ms"\n',
            "notify[0].retry_horizon: must be at least 1s (a failed message would get no retry), "
            "got '10ms'",
        ),
        (f"{TARGET}{NOTIFY}remind_max = 1000\n", None),
    ],
)
def test_absurd_values_have_their_own_message(text: str, expected: str | None) -> None:
    """Each bound is refused with a message naming the key, the bound and why."""
    source = text if TARGET in text else text + TARGET
    errors = errors_of(source)
    if expected is None:
        [error] = errors
        assert "less than or equal" in error
    else:
        assert errors == [expected]


def test_minimums_are_accepted() -> None:
    """Values exactly at each bound are valid (the bounds are inclusive)."""
    config = parse_config(
        '[daemon]\nretention = "1d"\n'
        '[scan]\ntimeout_min = "10ms"\ntimeout_initial = "10ms"\ntimeout_max = "60s"\n'
        'rate = 1\nanomaly_share = 0.1\nfingerprint_timeout = "100ms"\n'
        '[schedule]\nsentinel = "1s"\nquick = "1s"\nfull = "1m"\n' + TARGET,
        BASE,
    )
    assert (config.schedule.sentinel, config.schedule.full, config.scan.rate) == (1.0, 60.0, 1.0)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
def test_parse_duration_is_finite_or_refused(value: float | str) -> None:
    """Whatever it is given, parse_duration returns a finite, non-negative number or refuses."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0
