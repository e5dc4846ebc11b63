"""`[[maintenance]]` tables: one-off or recurring windows, errors that name the key and value."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from exposuremon.config import Config, ConfigError, parse_config
from exposuremon.schedule import OneOff, Recurring

TARGETS = (
    '[[targets]]\nname = "r1"\naddress = "192.0.2.1"\n'
    '[[targets]]\nname = "r2"\naddress = "192.0.2.2"\n'
)


def load(maintenance: str) -> Config:
    """The config with a `[[maintenance]]` table."""
    return parse_config(TARGETS + "[[maintenance]]\n" + maintenance, Path("/srv"))


def errors(maintenance: str) -> list[str]:
    """The errors of a config with a bad `[[maintenance]]` table."""
    with pytest.raises(ConfigError) as caught:
        load(maintenance)
    return caught.value.errors


def test_a_one_off_window_for_some_targets() -> None:
    """start/end as TOML date-times or RFC 3339 strings; the window's key names its table."""
    config = load(
        'targets = ["r1"]\nstart = 2026-12-05T22:00:00+01:00\nend = "2026-12-05T23:30:00+01:00"\n'
    )
    (window,) = config.maintenance_windows()
    assert window.key == "config/0"
    assert window.targets == frozenset({"r1"})
    assert window.schedule == OneOff(
        dt.datetime(2026, 12, 5, 21, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 5, 22, 30, tzinfo=dt.UTC),
    )


def test_a_recurring_window_for_every_target() -> None:
    """cron + duration + timezone; no targets key: every target."""
    config = load('cron = "0 2 * * SUN"\nduration = "2h"\ntimezone = "Europe/Berlin"\n')
    (window,) = config.maintenance_windows()
    assert window.targets is None
    assert window.schedule == Recurring("0 2 * * SUN", dt.timedelta(hours=2), "Europe/Berlin")


@pytest.mark.parametrize(
    ("table", "error"),
    [
        (
            'start = "2026-12-05T23:00:00+01:00"\nend = "2026-12-05T22:00:00+01:00"\n',
            "maintenance[0].end: must be after start (start '2026-12-05T23:00:00+01:00', "
            "end '2026-12-05T22:00:00+01:00')",
        ),
        ('start = "2026-12-05T22:00:00+01:00"\n', "maintenance[0].end: required key is missing"),
        (
            'start = "tonight"\nend = "2026-12-05T22:00:00+01:00"\n',
            "maintenance[0].start: expected an RFC 3339 time like '2026-12-05T22:00:00+01:00', "
            "got 'tonight'",
        ),
        (
            'start = "2026-12-05T22:00:00"\nend = "2026-12-05T23:00:00+01:00"\n',
            "maintenance[0].start: needs a UTC offset ('Z' or '+01:00'), got '2026-12-05T22:00:00'",
        ),
        (
            'cron = "0 2 * * 0"\nduration = "2h"\ntimezone = "UTC"\n',
            "maintenance[0].cron: cron '0 2 * * 0': write the weekday as a name (MON-SUN), not a "
            "number (crontab and APScheduler 3 number the days differently)",
        ),
        (
            'cron = "0 2 * * SUN"\nduration = "2h"\ntimezone = "Mars/Olympus"\n',
            "maintenance[0].timezone: unknown time zone 'Mars/Olympus' (an IANA name like "
            "'Europe/Berlin')",
        ),
        (
            'cron = "0 2 * * SUN"\nduration = "30s"\ntimezone = "UTC"\n',
            "maintenance[0].duration: must be at least 1m (shorter than one scan), got '30s'",
        ),
        (
            'cron = "0 * * * *"\nduration = "2h"\ntimezone = "UTC"\n',
            "maintenance[0].duration: duration 2:00:00 is not shorter than the time between two "
            "starts (1:00:00): the window would never end (cron '0 * * * *')",
        ),
        (
            'cron = "0 2 * * SUN"\nduration = "2h"\n',
            "maintenance[0].timezone: required key is missing",
        ),
        (
            'cron = "0 2 * * SUN"\nduration = "2h"\ntimezone = "UTC"\n'
            "start = 2026-12-05T22:00:00Z\n",
            "maintenance[0].cron: a window has either start and end or cron, duration, timezone, "
            "not both (start is set)",
        ),
        ("", "maintenance[0].start: set start and end, or cron, duration and timezone"),
        (
            'targets = ["r3"]\nstart = 2026-12-05T22:00:00Z\nend = 2026-12-05T23:00:00Z\n',
            "maintenance[0].targets[0]: no target named 'r3'",
        ),
        (
            "targets = []\nstart = 2026-12-05T22:00:00Z\nend = 2026-12-05T23:00:00Z\n",
            "maintenance[0].targets: empty list; leave the key out for every target",
        ),
    ],
)
def test_errors_name_the_key_and_the_value(table: str, error: str) -> None:
    """Each mistake is one line naming maintenance[i].key and what was given."""
    assert errors(table) == [error]
