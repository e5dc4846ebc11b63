"""The port history picture: spans and marks from events (pure), and their place on the x axis."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.model import (
    Event,
    EventType,
    Finding,
    FindingState,
    Observed,
    PortRecord,
    Severity,
    TargetState,
    TargetStatus,
)
from exposuremon.web import timeline
from exposuremon.web.timeline import MarkKind, Shade

NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
START = NOW - timeline.WINDOW
NAME = "surgery-router"


def ev(kind: EventType, at: dt.datetime, port: int | None = None, **details: Any) -> Event:
    """An event of the surgery router."""
    return Event(kind, Severity.INFO, NAME, at, kind.value, port, details)


def record(port: int, state: Observed, first_seen: dt.datetime, opened: int = 1) -> PortRecord:
    """A port record that was open `opened` times."""
    return PortRecord(
        port=port,
        state=state,
        first_seen=first_seen,
        last_seen=NOW,
        last_change=first_seen,
        times_opened=opened,
        first_open=first_seen if opened else None,
    )


def shades(port: timeline.PortHistory) -> list[Shade]:
    """The shades of a port's spans, in order."""
    return [s.shade for s in port.spans]


def story() -> tuple[TargetState, list[Event]]:
    """The incident: 81 open (a finding), closed by the admin, a reboot, open again."""
    t = NOW - dt.timedelta(days=3)
    reboot = NOW - dt.timedelta(hours=5)
    events = [
        ev(EventType.PORT_OPENED, t, 81, previous=None),
        ev(EventType.FINDING_OPENED, t, 81),
        ev(EventType.PORT_CLOSED, t + dt.timedelta(days=1), 81, state="closed"),
        ev(EventType.FINDING_RESOLVED, t + dt.timedelta(days=1, minutes=1), 81),
        ev(EventType.REBOOT_SUSPECTED, reboot),
        ev(EventType.FINGERPRINT_CHANGED, reboot, 443),
        ev(EventType.PORT_OPENED, reboot + dt.timedelta(seconds=30), 81, previous="closed"),
        ev(EventType.FINDING_REOPENED, reboot + dt.timedelta(seconds=30), 81),
    ]
    reopened = Finding(
        id=7,
        target=NAME,
        port=81,
        severity=Severity.CRITICAL,
        state=FindingState.OPEN,
        opened_at=reboot,
        reopen_count=1,
    )
    state = TargetState(
        name=NAME,
        status=TargetStatus.UP,
        ports={
            81: record(81, Observed.OPEN, t, opened=2),
            443: record(443, Observed.OPEN, NOW - dt.timedelta(days=90)),
            23: record(23, Observed.CLOSED, NOW - dt.timedelta(days=90), opened=0),
        },
        findings={81: reopened},
    )
    return state, events


def test_a_reopen_story_reads_open_closed_reboot_open_in_red() -> None:
    """Open, closed by the admin, a reboot mark, then open again as reopened (red)."""
    state, events = story()
    h = timeline.history(state, events, NOW)
    assert [p.port for p in h.ports] == [81, 443]  # 23 was never open: no row
    port81, port443 = h.ports
    assert shades(port81) == [Shade.UNKNOWN, Shade.OPEN, Shade.CLOSED, Shade.REOPENED]
    assert port81.spans[0].start == START
    assert port81.spans[-1].end == NOW
    reboot = next(m.at for m in port81.marks if m.kind is MarkKind.REBOOT)
    reopen = next(m.at for m in port81.marks if m.kind is MarkKind.REOPEN)
    assert port81.spans[2].start < reboot < reopen == port81.spans[3].start
    # The forward on 443: open all along, with the reboot and its new fingerprint marked.
    assert shades(port443) == [Shade.OPEN]
    assert {m.kind for m in port443.marks} == {MarkKind.REBOOT, MarkKind.FINGERPRINT}


def test_the_reopen_story_is_visible_on_the_picture() -> None:
    """Minutes-long spans next to 30 quiet days still get room, in order, and the axis holds."""
    state, events = story()
    pic = timeline.picture(timeline.history(state, events, NOW))
    row = pic.rows[0]
    assert [b.shade for b in row.bars] == ["unknown", "open", "closed", "reopened"]
    assert all(b.width >= 5 for b in row.bars)
    reboot = next(m for m in row.marks if m.kind == "reboot")
    reopen = next(m for m in row.marks if m.kind == "reopen")
    assert row.bars[2].x < reboot.x < reopen.x
    assert reopen.x - reboot.x >= 5  # 30 seconds apart, yet two marks
    texts = [text for _, text, _ in pic.axis]
    assert texts[0] == "30d ago"
    assert texts[-1] == "now"
    assert [x for x, _, _ in pic.axis] == sorted(x for x, _, _ in pic.axis)


def test_a_down_target_is_unknown_and_states_come_back() -> None:
    """While the target is down every port is unknown; after, its state as before."""
    down = NOW - dt.timedelta(days=2)
    events = [
        ev(EventType.TARGET_DOWN, down),
        ev(EventType.TARGET_UP, down + dt.timedelta(hours=1)),
        ev(
            EventType.EXPECTED_PORT_CLOSED,
            NOW - dt.timedelta(hours=1),
            443,
            state="filtered",
            previous="open",
        ),
    ]
    state = TargetState(
        name=NAME,
        status=TargetStatus.UP,
        ports={443: record(443, Observed.FILTERED, NOW - dt.timedelta(days=90))},
    )
    (port,) = timeline.history(state, events, NOW).ports
    assert shades(port) == [Shade.OPEN, Shade.UNKNOWN, Shade.OPEN, Shade.FILTERED]


def test_a_quiet_port_shows_its_state_and_unknown_before_its_first_sight() -> None:
    """No events: the record's state, from the record's first sight (before it: unknown)."""
    state = TargetState(
        name=NAME,
        status=TargetStatus.UP,
        ports={
            8080: record(8080, Observed.OPEN, NOW - dt.timedelta(days=2)),
            22: record(22, Observed.CLOSED, NOW - dt.timedelta(days=60)),
        },
    )
    ports = timeline.history(state, [], NOW).ports
    assert [(p.port, shades(p)) for p in ports] == [
        (22, [Shade.CLOSED]),
        (8080, [Shade.UNKNOWN, Shade.OPEN]),
    ]
    assert ports[1].spans[1].start == NOW - dt.timedelta(days=2)


def test_a_target_down_since_before_the_window_is_unknown_throughout() -> None:
    """Down all window long: unknown from start to now."""
    state = TargetState(
        name=NAME,
        status=TargetStatus.DOWN,
        status_since=NOW - dt.timedelta(days=40),
        ports={443: record(443, Observed.OPEN, NOW - dt.timedelta(days=90))},
    )
    (port,) = timeline.history(state, [], NOW).ports
    assert shades(port) == [Shade.UNKNOWN]


class Future(enum.StrEnum):
    """Event types of later features, unknown to the timeline."""

    PORT_FLAPPING = "port_flapping"
    ADVISORY_MATCHED = "advisory_matched"
    MAINTENANCE_STARTED = "maintenance_started"
    VANTAGE_LOST = "vantage_lost"


def test_unknown_event_types_are_passed_over() -> None:
    """Events of types the timeline does not know change nothing."""
    state, events = story()
    strange = [dataclasses_replace(e, kind) for e in events for kind in Future] + [
        ev(EventType.ADDRESS_CHANGED, NOW - dt.timedelta(days=1)),
        ev(EventType.ANOMALY_ALL_OPEN, NOW),
    ]
    assert timeline.history(state, events + strange, NOW) == timeline.history(state, events, NOW)


def dataclasses_replace(event: Event, kind: Future) -> Event:
    """The event, as if of a type the timeline does not know."""
    return Event(cast(EventType, kind), event.severity, NAME, event.observed_at, "?", event.port)


def test_rows_are_capped_and_counted() -> None:
    """Beyond MAX_PORTS ports the rest is counted, not drawn."""
    ports = {p: record(p, Observed.OPEN, START) for p in range(1, 31)}
    h = timeline.history(TargetState(name=NAME, ports=ports), [], NOW)
    assert len(h.ports) == timeline.MAX_PORTS
    assert h.hidden == 30 - timeline.MAX_PORTS


# -- properties ----------------------------------------------------------------------------

KINDS = [
    EventType.PORT_OPENED,
    EventType.PORT_CLOSED,
    EventType.EXPECTED_PORT_CLOSED,
    EventType.FINDING_OPENED,
    EventType.FINDING_REOPENED,
    EventType.FINDING_RESOLVED,
    EventType.TARGET_DOWN,
    EventType.TARGET_UP,
    EventType.REBOOT_SUSPECTED,
    EventType.FINGERPRINT_CHANGED,
    EventType.ADDRESS_CHANGED,
]
TARGET_LEVEL = {
    EventType.TARGET_DOWN,
    EventType.TARGET_UP,
    EventType.REBOOT_SUSPECTED,
    EventType.ADDRESS_CHANGED,
}
seconds = st.integers(-3 * 86400, 31 * 86400 + 3600)  # before the window to after now
events_st = st.lists(
    st.builds(
        lambda kind, offset, port, state, previous: ev(
            kind,
            START + dt.timedelta(seconds=offset),
            None if kind in TARGET_LEVEL else port,
            state=state,
            previous=previous,
        ),
        st.sampled_from(KINDS),
        seconds,
        st.sampled_from([22, 80, 443]),
        st.sampled_from(["closed", "filtered", "open", None, "bogus"]),
        st.sampled_from(["closed", "filtered", "open", None]),
    ),
    max_size=40,
)
records_st = st.dictionaries(
    st.sampled_from([22, 80, 443, 8080]),
    st.tuples(st.sampled_from(list(Observed)), seconds, st.integers(0, 3)),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    events_st,
    records_st,
    st.sampled_from(list(TargetStatus)),
    st.none() | seconds,
)
def test_spans_cover_the_window_in_order_without_overlap(
    events: list[Event],
    records: dict[int, tuple[Observed, int, int]],
    status: TargetStatus,
    since: int | None,
) -> None:
    """For any events and records: each port's spans tile [start, now], marks lie within."""
    ports = {
        p: record(p, obs, START + dt.timedelta(seconds=offset), opened)
        for p, (obs, offset, opened) in records.items()
    }
    state = TargetState(
        name=NAME,
        status=status,
        status_since=None if since is None else START + dt.timedelta(seconds=since),
        ports=ports,
    )
    h = timeline.history(state, events, NOW)
    for port in h.ports:
        assert port.spans, port
        assert port.spans[0].start == START
        assert port.spans[-1].end == NOW
        for a, b in zip(port.spans, port.spans[1:], strict=False):
            assert a.end == b.start
            assert a.shade is not b.shade  # neighbours of one shade are merged
        assert all(s.start < s.end for s in port.spans)
        assert all(START <= m.at <= NOW for m in port.marks)
    pic = timeline.picture(h)
    for row in pic.rows:
        x = pic.label
        for bar in row.bars:
            assert abs(bar.x - x) <= 0.2  # rounding to 0.1 units
            assert bar.width >= 0
            x = bar.x + bar.width
        assert abs(x - (pic.label + timeline.BARS)) <= 0.3
        assert all(pic.label <= m.x <= pic.label + timeline.BARS for m in row.marks)


@given(st.lists(st.floats(0, 1e7), min_size=1, max_size=300), st.floats(50, 2000))
def test_parts_add_up_and_give_every_stretch_room(durations: list[float], width: float) -> None:
    """Widths add up to the width, none below its share of the minimum, and follow durations."""
    widths = timeline.parts(durations, width)
    assert abs(sum(widths) - width) <= 1e-6 * width
    least = min(timeline.MIN_PART, width / (2 * len(durations)))
    assert all(w >= least * 0.999 for w in widths)
    for (d1, w1), (d2, w2) in zip(
        zip(durations, widths, strict=True),
        zip(durations[1:], widths[1:], strict=True),
        strict=False,
    ):
        if d1 < d2:
            assert w1 <= w2 + 1e-9


gaps = st.integers(1, 6 * 86400)  # one second to six days between the story's steps


@settings(max_examples=200, deadline=None)
@given(gaps, gaps, gaps, gaps, st.booleans())
def test_any_reopen_story_reads_open_closed_reboot_open_in_red(
    opened_for: int, closed_for: int, reboot_to_reopen: int, since: int, down: bool
) -> None:
    """Whatever its pace: open, closed, a reboot mark, open in red, each with room to be seen."""
    t = NOW - dt.timedelta(seconds=opened_for + closed_for + reboot_to_reopen + since)
    closed = t + dt.timedelta(seconds=opened_for)
    reboot = closed + dt.timedelta(seconds=closed_for)
    back = reboot + dt.timedelta(seconds=reboot_to_reopen)
    events = [
        ev(EventType.PORT_OPENED, t, 81, previous="closed"),
        ev(EventType.FINDING_OPENED, t, 81),
        ev(EventType.PORT_CLOSED, closed, 81, state="closed"),
        ev(EventType.FINDING_RESOLVED, closed, 81),
    ]
    if down:  # the reboot seen as the router going down and coming back
        events.append(ev(EventType.TARGET_DOWN, reboot - dt.timedelta(microseconds=1)))
        events.append(ev(EventType.TARGET_UP, reboot))
    events += [
        ev(EventType.REBOOT_SUSPECTED, reboot),
        ev(EventType.PORT_OPENED, back, 81, previous="closed"),
        ev(EventType.FINDING_REOPENED, back, 81),
    ]
    state = TargetState(
        name=NAME, status=TargetStatus.UP, ports={81: record(81, Observed.OPEN, t, opened=2)}
    )
    (port,) = timeline.history(state, events, NOW).ports
    known = [s.shade for s in port.spans if s.shade is not Shade.UNKNOWN]  # down: unknown
    story = [shade for i, shade in enumerate(known) if i == 0 or known[i - 1] is not shade]
    assert story[-3:] == [Shade.OPEN, Shade.CLOSED, Shade.REOPENED]
    (mark,) = [m for m in port.marks if m.kind is MarkKind.REBOOT]
    red = port.spans[-1]
    assert red.shade is Shade.REOPENED
    assert mark.at <= red.start
    (row,) = timeline.picture(timeline.history(state, events, NOW)).rows
    open_bar = next(b for b in row.bars if b.shade == "open")
    closed_bar = next(b for b in row.bars if b.shade == "closed" and b.x > open_bar.x)
    red_bar = row.bars[-1]
    (tick,) = [m for m in row.marks if m.kind == "reboot"]
    assert closed_bar.x < tick.x <= red_bar.x
    assert red_bar.shade == "reopened"
    assert all(b.width >= 10 for b in (open_bar, closed_bar, red_bar))


def test_a_reopen_from_before_the_window_is_red_until_it_resolves() -> None:
    """A reopened finding older than the window: red from the start until its resolution."""
    resolved_at = NOW - dt.timedelta(days=5)
    old = Finding(
        id=3,
        target=NAME,
        port=444,
        severity=Severity.CRITICAL,
        state=FindingState.RESOLVED,
        opened_at=NOW - dt.timedelta(days=40),
        resolved_at=resolved_at,
        reopen_count=2,
    )
    events = [
        ev(EventType.PORT_CLOSED, resolved_at - dt.timedelta(minutes=2), 444, state="filtered"),
        dataclasses.replace(ev(EventType.FINDING_RESOLVED, resolved_at, 444), finding_id=3),
    ]
    state = TargetState(
        name=NAME,
        status=TargetStatus.UP,
        ports={444: record(444, Observed.FILTERED, NOW - dt.timedelta(days=90), opened=3)},
        resolved={444: old},
    )
    (port,) = timeline.history(state, events, NOW).ports
    assert shades(port) == [Shade.REOPENED, Shade.FILTERED]
    # Another finding resolved first (its id differs): no claim that it was a reopen.
    other = [events[0], dataclasses.replace(events[1], finding_id=2)]
    (port,) = timeline.history(state, other, NOW).ports
    assert shades(port) == [Shade.OPEN, Shade.FILTERED]
