"""Maintenance windows: when a target is in one, and what to say when it ends (pure).

A window covers some targets (or all) either once, from `start` to `end`, or again and again:
a cron expression (APScheduler's `CronTrigger.from_crontab`, no parser of ours) names the
local wall-clock times in a time zone (`zoneinfo`) at which an occurrence starts, and
`duration` is how long each lasts, in elapsed time.

Daylight saving time, decided here because APScheduler 3 with `zoneinfo` zones steps through
an ambiguous hour out of order (measured: "*/20" on the night clocks go back in Berlin returns
02:40 CEST, 02:00 CET, 02:20 CEST): the cron expression is matched against wall-clock times
alone (the trigger runs in UTC over naive local times, which have no DST), and each wall time
that matches becomes an instant with `zoneinfo`'s `fold=0`. So a wall time that happens twice
(clocks go back) starts one occurrence, at its first instance; one that does not exist
(clocks go forward) starts one at the instant the skipped wall time maps to (02:30 on the
night Berlin skips 02:00-03:00 starts at 03:30 CEST). A daily window starts once every day.

Everything takes the time as an argument; nothing reads a clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from exposuremon.model import Event, EventType, FindingState, Severity, TargetState
from exposuremon.units import parse_duration, rfc3339

# Bounds on one recurring window's arithmetic, so that every loop ends: occurrences starting
# within a duration plus a margin are looked at, at most this many (a cron of every minute
# with a 2-hour duration is 120; one of every minute for 7 days is cut at this many).
MAX_OCCURRENCES = 2_000
MAX_DURATION = dt.timedelta(days=7)
MIN_DURATION = dt.timedelta(minutes=1)
# A recurring window must end before its next start; checked over this many starts.
GAP_SAMPLE = 500
_GAP_FROM = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# How far a wall clock can be from UTC-as-wall: more than any zone's DST shift.
_WALL_MARGIN = dt.timedelta(hours=3)
_UTC = dt.UTC


def parse_zone(name: str) -> ZoneInfo:
    """A time zone by IANA name (`Europe/Berlin`); ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name like 'Europe/Berlin')"
        ) from None


_NUMERIC_WEEKDAY = re.compile(r"[0-9]")


def parse_cron(expr: str) -> CronTrigger:
    """A crontab expression (minute hour day month weekday) as a trigger; ValueError if bad.

    Numeric weekdays are refused: APScheduler 3 counts 0 as Monday where crontab counts it as
    Sunday, so `0 2 * * 0` would quietly mean another day. Names (MON-SUN) mean the same in both.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expr!r}: expected 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    if _NUMERIC_WEEKDAY.search(fields[4]):
        raise ValueError(
            f"cron {expr!r}: write the weekday as a name (MON-SUN), not a number "
            "(crontab and APScheduler 3 number the days differently)"
        )
    try:
        return CronTrigger.from_crontab(expr, timezone=_UTC)
    except ValueError as exc:
        raise ValueError(f"cron {expr!r}: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class OneOff:
    """One window from `start` to `end` (aware datetimes; end after start)."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a UTC offset")
        if self.end <= self.start:
            raise ValueError("end must be after start")


@dataclasses.dataclass(frozen=True, slots=True)
class Recurring:
    """A window starting at each local wall time `cron` matches in `timezone`, for `duration`."""

    cron: str
    duration: dt.timedelta
    timezone: str

    def __post_init__(self) -> None:
        parse_cron(self.cron)
        parse_zone(self.timezone)
        if not MIN_DURATION <= self.duration <= MAX_DURATION:
            raise ValueError(f"duration must be from {MIN_DURATION} to {MAX_DURATION}")
        gap = self.shortest_gap()
        if gap is not None and self.duration >= gap:
            raise ValueError(
                f"duration {self.duration} is not shorter than the time between two starts "
                f"({gap}): the window would never end"
            )

    def shortest_gap(self) -> dt.timedelta | None:
        """The shortest time between two starts among the first GAP_SAMPLE from 2024 (a leap
        year, its DST nights included); None when fewer than two start in that sample."""
        return _shortest_gap(self.cron, self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the cron times are read in."""
        return _zone(self.timezone)

    def starts(self, lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
        """The occurrences' starts in [lo, hi) (UTC), in order, at most MAX_OCCURRENCES."""
        trigger = _trigger(self.cron)
        zone = self.zone
        # Wall times whose instants may fall in [lo, hi), one margin either side.
        wall = _wall(lo, zone) - _WALL_MARGIN
        last = _wall(hi, zone) + _WALL_MARGIN
        found: set[dt.datetime] = set()
        for _ in range(MAX_OCCURRENCES):
            fire = trigger.get_next_fire_time(None, wall)
            if fire is None or fire > last:
                break
            naive = fire.replace(tzinfo=None)
            at = naive.replace(tzinfo=zone, fold=0).astimezone(_UTC)
            if lo <= at < hi:
                found.add(at)
            wall = fire + dt.timedelta(seconds=1)
        # A skipped wall time maps past later ones: keep the instants in order, once each.
        return sorted(found)

    def starts_from(self, lo: dt.datetime) -> Iterator[dt.datetime]:
        """Every start at or after `lo`, in order, lazily; ends after MAX_OCCURRENCES or when
        no start follows within 8 years (cron times may be that far apart: 29 February)."""
        step = max(self.duration, dt.timedelta(days=1))
        horizon = lo + dt.timedelta(days=8 * 366)
        given = 0
        while lo < horizon and given < MAX_OCCURRENCES:
            hi = min(lo + step, horizon)
            for at in self.starts(lo, hi):
                yield at
                given += 1
            lo = hi
            step = min(step * 2, dt.timedelta(days=366))


Schedule = OneOff | Recurring


@functools.lru_cache(maxsize=256)
def _shortest_gap(cron: str, timezone: str) -> dt.timedelta | None:
    # Any duration below the gap will do to list the starts: the gap does not depend on it.
    probe = Recurring.__new__(Recurring)
    object.__setattr__(probe, "cron", cron)
    object.__setattr__(probe, "duration", MIN_DURATION)
    object.__setattr__(probe, "timezone", timezone)
    starts = list(itertools.islice(probe.starts_from(_GAP_FROM), GAP_SAMPLE))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    return min(gaps) if gaps else None


@functools.lru_cache(maxsize=256)
def _trigger(cron: str) -> CronTrigger:
    return parse_cron(cron)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return parse_zone(name)


def _wall(t: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """`t`'s local wall-clock time in `zone`, labelled UTC (the trigger's naive clock)."""
    return t.astimezone(zone).replace(tzinfo=_UTC, fold=0)


def occurrences(
    schedule: Schedule, lo: dt.datetime, hi: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The occurrences (start, end) that overlap [lo, hi], ordered by start."""
    if isinstance(schedule, OneOff):
        if schedule.end <= lo or schedule.start > hi:
            return []
        return [(schedule.start, schedule.end)]
    d = schedule.duration
    return [(s, s + d) for s in schedule.starts(lo - d + _TICK, hi + _TICK)]


_TICK = dt.timedelta(microseconds=1)


def active_span(schedule: Schedule, t: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The stretch of window that covers `t` (start, end), or None when `t` is outside.

    The start is that of the earliest occurrence covering `t`. Occurrences that overlap or
    touch make one stretch, and the end is its end: a daily 25-hour window never ends (the
    end is then the one reached after MAX_OCCURRENCES occurrences).
    """
    covering = [(s, e) for s, e in occurrences(schedule, t, t) if s <= t < e]
    if not covering:
        return None
    start = min(s for s, _ in covering)
    end = max(e for _, e in covering)
    if isinstance(schedule, Recurring):
        # Occurrences starting before the stretch's end extend it (a start exactly at the end
        # too: touching occurrences are one stretch). Bounded: each round moves `end` on.
        lo = t + _TICK
        for _ in range(MAX_OCCURRENCES):
            later = schedule.starts(lo, end + _TICK)
            if not later:
                break
            lo, end = end + _TICK, max(end, later[-1] + schedule.duration)
    return start, end


def next_start(schedule: Schedule, t: dt.datetime) -> dt.datetime | None:
    """When an occurrence next starts after `t` (strictly), or None: never again."""
    if isinstance(schedule, OneOff):
        return schedule.start if schedule.start > t else None
    return next(iter(schedule.starts_from(t + _TICK)), None)


# --- windows and targets --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A maintenance window of some targets (None: every target).

    `key` names it for good: `config/<n>` for the n-th `[[maintenance]]` table, `api/<id>`
    for one added by the API or the CLI (kept in the store).
    """

    key: str
    schedule: Schedule
    targets: frozenset[str] | None = None
    reason: str = ""

    def applies_to(self, target: str) -> bool:
        """Whether the window covers `target` at all (at some time)."""
        return self.targets is None or target in self.targets

    @classmethod
    def ad_hoc(
        cls,
        window_id: int,
        targets: Iterable[str] | None,
        start: dt.datetime,
        end: dt.datetime,
        reason: str = "",
    ) -> MaintenanceWindow:
        """A window the API or the CLI added (kept in the store): key `api/<id>`."""
        names = None if targets is None else frozenset(targets)
        return cls(f"api/{window_id}", OneOff(start, end), names, reason)


# The longest ad-hoc window, and how far ahead one may start: a forgotten window must not
# silence a target for good.
MAX_AD_HOC = dt.timedelta(days=30)
MAX_AHEAD = dt.timedelta(days=365)


def ad_hoc_times(
    start: str | None, end: str | None, duration: str | None, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """An ad-hoc window's (start, end) from what the API or the CLI was given.

    `start`: RFC 3339, default now. Exactly one of `end` (RFC 3339) and `duration` (`2h`).
    ValueError starting with the field's name.
    """
    begin = now if start is None else _instant("start", start)
    if (end is None) == (duration is None):
        raise ValueError("end: give exactly one of end (an RFC 3339 time) and duration (2h)")
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise ValueError(f"duration: {exc}") from None
        finish = begin + dt.timedelta(seconds=seconds)
        field = "duration"
    else:
        assert end is not None  # one of the two, checked above
        finish = _instant("end", end)
        field = "end"
    if finish <= begin:
        raise ValueError(f"{field}: the window must end after it starts ({rfc3339(begin)})")
    if finish <= now:
        raise ValueError(f"{field}: the window must end in the future (now {rfc3339(now)})")
    if finish - begin > MAX_AD_HOC:
        raise ValueError(f"{field}: at most {MAX_AD_HOC.days} days long")
    if begin - now > MAX_AHEAD:
        raise ValueError(f"start: at most {MAX_AHEAD.days} days ahead")
    return begin, finish


def _instant(field: str, text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{field}: expected an RFC 3339 time like 2026-12-05T22:00:00+01:00, got {text[:64]!r}"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{field}: needs a UTC offset ('Z' or '+01:00'), got {text[:64]!r}")
    return when.astimezone(_UTC)


class ActiveMemo:
    """Whether windows are active at a time, each answer kept until it can change.

    A recurring window's answer costs milliseconds (APScheduler steps through the calendar);
    the pipeline asks at every scan it writes. An answer holds until the stretch in force
    ends, or until the next start: only then is it computed again. Pure: `t` is given.
    """

    LIMIT = 1024  # windows remembered (a reload or new ad-hoc windows bring new ones)

    def __init__(self) -> None:
        self._known: dict[MaintenanceWindow, tuple[dt.datetime, bool, dt.datetime | None]] = {}

    def active(self, window: MaintenanceWindow, t: dt.datetime) -> bool:
        """Whether `window` is active at `t`."""
        known = self._known.get(window)
        if known is not None and known[0] <= t and (known[2] is None or t < known[2]):
            return known[1]
        span = active_span(window.schedule, t)
        entry = (t, True, span[1]) if span else (t, False, next_start(window.schedule, t))
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known[window] = entry
        return entry[1]


@dataclasses.dataclass(frozen=True, slots=True)
class Showing:
    """A window as listed (API, CLI, status page): the stretch in force or the next one."""

    window: MaintenanceWindow
    start: dt.datetime | None  # None: never (again)
    end: dt.datetime | None
    active: bool


def showing(window: MaintenanceWindow, t: dt.datetime) -> Showing:
    """`window` at `t`: the stretch covering `t`, else the next one (None: over for good)."""
    span = active_span(window.schedule, t)
    if span is not None:
        return Showing(window, span[0], span[1], True)
    start = next_start(window.schedule, t)
    if start is None:  # over for good: a one-off shows when it was
        if isinstance(window.schedule, OneOff):
            return Showing(window, window.schedule.start, window.schedule.end, False)
        return Showing(window, None, None, False)
    nxt = active_span(window.schedule, start)
    return Showing(window, start, None if nxt is None else nxt[1], False)


def covering(
    windows: Sequence[MaintenanceWindow], targets: Iterable[str], t: dt.datetime
) -> dict[str, MaintenanceWindow]:
    """Each target of `targets` in a window at `t`, with the window (the first one listed)."""
    active = [w for w in windows if active_span(w.schedule, t) is not None]
    out: dict[str, MaintenanceWindow] = {}
    if not active:
        return out
    for name in targets:
        for window in active:
            if window.applies_to(name):
                out[name] = window
                break
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Transitions:
    """What the service does at one look: targets whose maintenance starts, or ends."""

    starting: dict[str, str]  # target -> key of the window it entered
    ending: tuple[str, ...]


def transitions(
    covered: Mapping[str, MaintenanceWindow], recorded: Mapping[str, str | None]
) -> Transitions:
    """Compare the targets in a window now with what the store says.

    `recorded`: target -> the window its `maintenance_started` was recorded for, or None for a
    target that only has held notifications (a scan held in the second before the service's
    look recorded the start; a window removed from the config; a restart after its end).
    Covered targets without a recorded start start; every recorded one not covered ends, so
    nothing stays held.
    """
    return Transitions(
        starting={n: w.key for n, w in covered.items() if recorded.get(n) is None},
        ending=tuple(sorted(n for n in recorded if n not in covered)),
    )


# --- the summary at the end -----------------------------------------------------------------

_STILL_TRUE = frozenset({EventType.FINDING_OPENED, EventType.FINDING_REOPENED})


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """What one target's summary message says when its maintenance ends."""

    text: str
    still_open: tuple[int, ...]  # ports of findings open at the end: they page now
    came_and_went: tuple[int, ...]  # ports that opened inside the window and are closed again
    page_events: frozenset[int]  # ids of the held events that still hold (they go out)
    held: int  # how many events were held


def summarise(held: Sequence[Event], state: TargetState) -> Summary:
    """The end-of-window summary of one target from its held events and its state now.

    A finding still open at the end pages: the held event that opened (or reopened) it goes
    out with the summary. A port that opened and closed again inside the window is mentioned,
    not paged; so is everything else that happened (counts by type).
    """
    open_now = {port for port, f in state.findings.items() if f.state is FindingState.OPEN}
    opened_ports: set[int] = set()
    page: dict[int, int] = {}  # port -> id of the newest held event that opened its finding
    counts: dict[str, int] = {}
    for event in held:
        counts[event.type.value] = counts.get(event.type.value, 0) + 1
        if event.port is None:
            continue
        if event.type in _STILL_TRUE or event.type is EventType.PORT_OPENED:
            opened_ports.add(event.port)
        if event.type in _STILL_TRUE and event.port in open_now and event.id is not None:
            # The event of the finding that is open now, not of an earlier one of the port.
            finding_id = state.findings[event.port].id
            if None in (finding_id, event.finding_id) or event.finding_id == finding_id:
                page[event.port] = event.id
    still = tuple(sorted(page))
    went = tuple(sorted(p for p in opened_ports if p not in open_now))
    parts = [f"maintenance ended; {len(held)} event(s) were held"]
    if still:
        parts.append("still open: " + ", ".join(f"{p}/tcp" for p in still))
    if went:
        parts.append("opened and closed again: " + ", ".join(f"{p}/tcp" for p in went))
    if counts:
        parts.append("held: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    return Summary(
        text="; ".join(parts),
        still_open=still,
        came_and_went=went,
        page_events=frozenset(page.values()),
        held=len(held),
    )


def started_event(target: str, window: str, at: dt.datetime) -> Event:
    """The `maintenance_started` event of `target` entering `window` at `at`."""
    return Event(
        type=EventType.MAINTENANCE_STARTED,
        severity=Severity.INFO,
        target=target,
        observed_at=at,
        summary=f"maintenance started ({window}): notifications are held until it ends",
        details={"window": window},
    )


def ended_event(target: str, window: str | None, at: dt.datetime, summary: Summary) -> Event:
    """The `maintenance_ended` event carrying `summary` (info: the findings page themselves)."""
    return Event(
        type=EventType.MAINTENANCE_ENDED,
        severity=Severity.INFO,
        target=target,
        observed_at=at,
        summary=summary.text,
        details={
            "window": window,
            "held": summary.held,
            "still_open": list(summary.still_open),
            "came_and_went": list(summary.came_and_went),
        },
    )
