"""Maintenance windows' pure logic: who is in a window when, next start and end, DST, summary."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.model import Event, EventType, Finding, FindingState, Severity, TargetState
from exposuremon.schedule import (
    ActiveMemo,
    MaintenanceWindow,
    OneOff,
    Recurring,
    active_span,
    ad_hoc_times,
    covering,
    next_start,
    occurrences,
    parse_cron,
    showing,
    summarise,
    transitions,
)

UTC = dt.UTC
BERLIN = "Europe/Berlin"
ZONES = ["UTC", BERLIN, "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
# Each cron with durations shorter than the time between two of its starts.
CRONS = {
    "0 2 * * *": (1, 30, 180),
    "30 2 * * *": (1, 30, 180),
    "*/20 * * * *": (1, 10),
    "0 2 * * SUN": (1, 90, 180),
    "15 1,3 * * MON-FRI": (1, 30, 90),
}
# Around the 2026 DST changes of Europe and the US, and the whole year.
instants = st.datetimes(
    min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 12, 31), timezones=st.just(UTC)
)
dst_nights = st.sampled_from(
    [
        dt.datetime(2026, 3, 8, 6, tzinfo=UTC),  # US spring forward
        dt.datetime(2026, 3, 29, 1, tzinfo=UTC),  # EU spring forward
        dt.datetime(2026, 10, 25, 1, tzinfo=UTC),  # EU fall back
        dt.datetime(2026, 11, 1, 6, tzinfo=UTC),  # US fall back
    ]
)
near_dst = st.builds(
    lambda night, minutes: night + dt.timedelta(minutes=minutes),
    dst_nights,
    st.integers(-36 * 60, 36 * 60),
)
recurring = st.sampled_from(sorted(CRONS)).flatmap(
    lambda cron: st.builds(
        Recurring,
        st.just(cron),
        st.sampled_from([dt.timedelta(minutes=m) for m in CRONS[cron]]),
        st.sampled_from(ZONES),
    )
)


def at(text: str) -> dt.datetime:
    """An RFC 3339 time."""
    return dt.datetime.fromisoformat(text)


# --- one-off windows ------------------------------------------------------------------------


@given(instants, st.integers(1, 10_000), instants)
def test_a_one_off_window_covers_exactly_its_half_open_interval(
    start: dt.datetime, minutes: int, t: dt.datetime
) -> None:
    """A one-off window covers t exactly when start <= t < end; its next start is after t."""
    end = start + dt.timedelta(minutes=minutes)
    window = OneOff(start, end)
    assert (active_span(window, t) is not None) == (start <= t < end)
    assert next_start(window, t) == (start if start > t else None)


def test_a_one_off_window_needs_an_end_after_its_start() -> None:
    """An empty or reversed window is refused."""
    t = at("2026-12-05T22:00:00+01:00")
    with pytest.raises(ValueError, match="end must be after start"):
        OneOff(t, t)


# --- recurring windows ----------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(recurring, st.one_of(instants, near_dst))
def test_recurring_coverage_agrees_with_the_occurrences(window: Recurring, t: dt.datetime) -> None:
    """t is covered exactly when an occurrence [s, s + duration) contains it; the stretch
    around t contains t, and the next start is the first occurrence start after t."""
    day = dt.timedelta(days=2)
    around = occurrences(window, t - day, t + day)
    inside = any(s <= t < e for s, e in around)
    span = active_span(window, t)
    assert (span is not None) == inside
    if span is not None:
        assert span[0] <= t < span[1]
        assert active_span(window, span[1]) is None  # occurrences never overlap
    starts = [s for s, _ in around if s > t]
    if starts:
        assert next_start(window, t) == starts[0]


@settings(max_examples=60, deadline=None)
@given(recurring, st.one_of(instants, near_dst))
def test_after_the_next_start_the_window_is_active_and_lasts_its_duration(
    window: Recurring, t: dt.datetime
) -> None:
    """At its next start the window is active, until at least start + duration (elapsed)."""
    start = next_start(window, t)
    assert start is not None
    assert start > t
    span = active_span(window, start)
    assert span is not None
    assert span[1] - start >= window.duration


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["0 2 * * *", "30 2 * * *", "45 1 * * *"]),
    st.sampled_from(ZONES),
    st.integers(0, 364),
)
def test_a_daily_window_starts_once_every_local_day_across_dst(
    cron: str, zone: str, day: int
) -> None:
    """A daily cron starts exactly one occurrence per local calendar day, also on the nights
    the clocks change (no skipped day in spring, no double start in autumn)."""
    tz = ZoneInfo(zone)
    local = dt.datetime(2026, 1, 1, tzinfo=tz) + dt.timedelta(days=day)
    lo = local.replace(hour=0).astimezone(UTC)
    hi = (local + dt.timedelta(days=1)).replace(hour=0).astimezone(UTC)
    window = Recurring(cron, dt.timedelta(minutes=30), zone)
    assert len(window.starts(lo, hi)) == 1


def test_europe_berlin_dst_nights() -> None:
    """02:30 daily in Berlin: on the spring night (no 02:30) it starts at 03:30 CEST, on the
    autumn night (02:30 twice) once, at the first 02:30 (CEST); durations are elapsed time."""
    window = Recurring("30 2 * * *", dt.timedelta(hours=1), BERLIN)
    spring = window.starts(at("2026-03-29T00:00:00+01:00"), at("2026-03-30T00:00:00+02:00"))
    assert spring == [at("2026-03-29T03:30:00+02:00")]
    autumn = window.starts(at("2026-10-25T00:00:00+02:00"), at("2026-10-26T00:00:00+01:00"))
    assert autumn == [at("2026-10-25T02:30:00+02:00")]
    span = active_span(window, at("2026-10-25T02:45:00+02:00"))
    assert span == (at("2026-10-25T02:30:00+02:00"), at("2026-10-25T02:30:00+01:00"))
    # The repeated hour after that is not a second start.
    assert active_span(window, at("2026-10-25T02:45:00+01:00")) is None


def test_every_twenty_minutes_through_the_autumn_night_in_order() -> None:
    """APScheduler 3 alone steps back in time here; our starts only go forward."""
    window = Recurring("*/20 * * * *", dt.timedelta(minutes=5), BERLIN)
    starts = window.starts(at("2026-10-25T00:50:00+02:00"), at("2026-10-25T03:30:00+01:00"))
    assert starts == sorted(starts)
    assert at("2026-10-25T02:40:00+02:00") in starts
    assert at("2026-10-25T03:00:00+01:00") in starts


@pytest.mark.parametrize(("cron", "minutes"), [("0 * * * *", 60), ("30 2 * * *", 23 * 60)])
def test_a_window_that_would_never_end_is_refused(cron: str, minutes: int) -> None:
    """A duration as long as the time between two starts (the 23-hour day of spring in Berlin
    counts) would chain occurrences into one endless window: refused."""
    with pytest.raises(ValueError, match="would never end"):
        Recurring(cron, dt.timedelta(minutes=minutes), BERLIN)


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 2 * * 0", "weekday as a name"),
        ("0 2 * *", "expected 5 fields"),
        ("61 2 * * *", "cron '61 2 \\* \\* \\*'"),
    ],
)
def test_bad_cron_expressions_are_refused_by_name(cron: str, problem: str) -> None:
    """Numeric weekdays (crontab and APScheduler 3 disagree), wrong field counts and values."""
    with pytest.raises(ValueError, match=problem):
        parse_cron(cron)


# --- windows, targets, transitions ----------------------------------------------------------


def test_covering_names_each_target_in_an_active_window() -> None:
    """Targets of an active window are covered; a window without targets covers every one."""
    t = at("2026-12-05T22:30:00+01:00")
    some = MaintenanceWindow(
        "config/0", OneOff(t - dt.timedelta(hours=1), t + dt.timedelta(hours=1)), frozenset({"a"})
    )
    later = MaintenanceWindow("api/1", OneOff(t + dt.timedelta(hours=1), t + dt.timedelta(hours=2)))
    assert covering([some, later], ["a", "b"], t) == {"a": some}
    assert covering([some, later], ["a", "b"], t + dt.timedelta(hours=1, minutes=1)) == {
        "a": later,
        "b": later,
    }


def test_transitions_start_new_targets_and_end_those_no_longer_covered() -> None:
    """Covered without a recorded start: starts; recorded (or held) but not covered: ends."""
    w = MaintenanceWindow("api/1", OneOff(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z")))
    plan = transitions({"a": w, "b": w, "d": w}, {"b": "api/1", "c": "api/1", "d": None})
    # d has held rows only (a scan held before the start was recorded): its start is written.
    assert plan.starting == {"a": "api/1", "d": "api/1"}
    assert plan.ending == ("c",)
    assert transitions({}, {"e": None}).ending == ("e",)


def test_showing_gives_the_stretch_in_force_or_the_next_one() -> None:
    """Active: its stretch; before: the next; over: the one-off's times, inactive."""
    w = MaintenanceWindow("config/0", Recurring("0 2 * * SUN", dt.timedelta(hours=2), BERLIN))
    sunday = showing(w, at("2026-12-06T02:30:00+01:00"))
    assert (sunday.active, sunday.start, sunday.end) == (
        True,
        at("2026-12-06T02:00:00+01:00"),
        at("2026-12-06T04:00:00+01:00"),
    )
    monday = showing(w, at("2026-12-07T00:00:00+01:00"))
    assert (monday.active, monday.start) == (False, at("2026-12-13T02:00:00+01:00"))
    once = MaintenanceWindow(
        "api/1", OneOff(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"))
    )
    over = showing(once, at("2026-02-01T00:00:00Z"))
    assert (over.active, over.end) == (False, at("2026-01-02T00:00:00Z"))


@pytest.mark.parametrize(
    ("start", "end", "duration", "problem"),
    [
        (None, None, None, "end: give exactly one"),
        (None, "2026-12-05T23:00:00Z", "1h", "end: give exactly one"),
        (None, "2026-12-05T21:00:00Z", None, "end: the window must end after it starts"),
        (
            "2026-12-05T20:00:00Z",
            "2026-12-05T21:00:00Z",
            None,
            "end: the window must end in the future",
        ),
        (None, None, "31d", "duration: at most 30 days"),
        (None, "tomorrow", None, "end: expected an RFC 3339 time"),
        ("2026-12-05T23:00:00", None, "1h", "start: needs a UTC offset"),
        (None, None, "soon", "duration: not a duration"),
    ],
)
def test_ad_hoc_times_are_checked_naming_the_field(
    start: str | None, end: str | None, duration: str | None, problem: str
) -> None:
    """Bad ad-hoc windows are refused with the field's name first."""
    now = at("2026-12-05T22:00:00Z")
    with pytest.raises(ValueError, match=problem):
        ad_hoc_times(start, end, duration, now)


def test_ad_hoc_times_default_to_now() -> None:
    """Without start the window starts now; a duration counts from its start."""
    now = at("2026-12-05T22:00:00Z")
    assert ad_hoc_times(None, None, "2h", now) == (now, now + dt.timedelta(hours=2))


# --- the summary ----------------------------------------------------------------------------

T = at("2026-12-05T22:00:00Z")


def ev(id_: int, type_: EventType, port: int | None, finding_id: int | None = None) -> Event:
    """A saved event of target r."""
    return Event(
        type_, Severity.CRITICAL, "r", T, type_.value, port=port, id=id_, finding_id=finding_id
    )


def open_finding(port: int, id_: int) -> Finding:
    """An open finding of target r."""
    return Finding(id_, "r", port, Severity.CRITICAL, FindingState.OPEN, T)


def test_the_summary_pages_what_is_still_open_and_mentions_what_came_and_went() -> None:
    """The opening event of a finding open at the end pages; a port closed again is named."""
    held = [
        ev(1, EventType.FINDING_OPENED, 8080, 10),
        ev(2, EventType.FINDING_OPENED, 8443, 11),
        ev(3, EventType.FINDING_RESOLVED, 8443, 11),
        ev(4, EventType.REBOOT_SUSPECTED, None),
    ]
    state = TargetState(name="r", findings={8080: open_finding(8080, 10)})
    summary = summarise(held, state)
    assert summary.page_events == frozenset({1})
    assert (summary.still_open, summary.came_and_went) == ((8080,), (8443,))
    assert "still open: 8080/tcp" in summary.text
    assert "opened and closed again: 8443/tcp" in summary.text
    assert "1 reboot_suspected" in summary.text


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [EventType.FINDING_OPENED, EventType.FINDING_RESOLVED, EventType.PORT_OPENED]
            ),
            st.sampled_from([80, 443, 8080]),
        ),
        max_size=12,
    ),
    st.sets(st.sampled_from([80, 443, 8080])),
)
def test_summary_pages_only_findings_open_at_the_end(
    kinds: list[tuple[EventType, int]], open_ports: set[int]
) -> None:
    """Every paged event opened a finding that is open at the end; every port opened in the
    window is either still open (paged, if its opening was held) or mentioned as gone."""
    held = [ev(i + 1, kind, port) for i, (kind, port) in enumerate(kinds)]
    state = TargetState(name="r", findings={p: open_finding(p, 100 + p) for p in open_ports})
    summary = summarise(held, state)
    by_id = {e.id: e for e in held}
    for event_id in summary.page_events:
        event = by_id[event_id]
        assert event.type is EventType.FINDING_OPENED
        assert event.port in open_ports
    opened = {p for k, p in kinds if k in (EventType.FINDING_OPENED, EventType.PORT_OPENED)}
    assert set(summary.came_and_went) == opened - open_ports
    assert set(summary.still_open) <= open_ports
    assert summary.held == len(held)


@settings(max_examples=40, deadline=None)
@given(recurring, st.lists(st.integers(0, 14 * 24 * 60), min_size=1, max_size=30))
def test_the_memo_answers_as_the_schedule_does(window: Recurring, minutes: list[int]) -> None:
    """Asked at increasing times, the memo says what active_span says at each."""
    memo = ActiveMemo()
    w = MaintenanceWindow("config/0", window)
    base = dt.datetime(2026, 10, 20, tzinfo=UTC)
    for m in sorted(minutes):
        t = base + dt.timedelta(minutes=m)
        assert memo.active(w, t) == (active_span(window, t) is not None)
