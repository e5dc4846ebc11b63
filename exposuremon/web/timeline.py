"""Each port's last 30 days as coloured spans with marks, for a target's card on the status page.

Two pure steps. `history` turns the target's stored state and its events of the window into
spans of time per port (open, reopened, closed, filtered, unknown; in order, covering the window
without gap or overlap) and marks (reopen, reboot suspected, fingerprint changed). `picture`
places them on an x axis for an inline SVG, which the template draws with classes of the
page's stylesheet (no script, nothing the page's CSP refuses).

Only the event types named here are read; any other type (those of later features, such as
flap damping or maintenance windows) is passed over, so new events never break the picture.

The x axis is piecewise linear: every span and every gap between marks gets at least a few
units, and the rest of the width is shared in proportion to time. A reopen story of a few
minutes is then visible next to 30 quiet days, in its order, and the axis labels, placed by
the same mapping, stay true.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from typing import Any

from exposuremon.model import Event, FindingState, Observed, TargetState, TargetStatus

WINDOW = dt.timedelta(days=30)
MAX_PORTS = 24  # rows per card; the rest are counted ("and N more ports")

# Event types the history reads (their `type` values); every other type is passed over.
PORT_OPENED = "port_opened"
PORT_CLOSED = "port_closed"
EXPECTED_PORT_CLOSED = "expected_port_closed"
FINDING_OPENED = "finding_opened"
FINDING_REOPENED = "finding_reopened"
FINDING_RESOLVED = "finding_resolved"
TARGET_DOWN = "target_down"
TARGET_UP = "target_up"
REBOOT_SUSPECTED = "reboot_suspected"
FINGERPRINT_CHANGED = "fingerprint_changed"
TYPES = (
    PORT_OPENED,
    PORT_CLOSED,
    EXPECTED_PORT_CLOSED,
    FINDING_OPENED,
    FINDING_REOPENED,
    FINDING_RESOLVED,
    TARGET_DOWN,
    TARGET_UP,
    REBOOT_SUSPECTED,
    FINGERPRINT_CHANGED,
)


class Shade(enum.StrEnum):
    """What a span shows: a port state, or open as a reopened finding (the incident: red)."""

    OPEN = "open"
    REOPENED = "reopened"
    CLOSED = "closed"
    FILTERED = "filtered"
    UNKNOWN = "unknown"  # not observed yet, or the target was down


class MarkKind(enum.StrEnum):
    """A moment drawn on a port's row."""

    REOPEN = "reopen"
    REBOOT = "reboot"  # target-level: on every row
    FINGERPRINT = "fingerprint"


MARK_TEXT = {
    MarkKind.REOPEN: "finding reopened",
    MarkKind.REBOOT: "reboot suspected",
    MarkKind.FINGERPRINT: "fingerprint changed",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """A stretch of time in which a port showed one shade; `start` < `end`."""

    start: dt.datetime
    end: dt.datetime
    shade: Shade


@dataclasses.dataclass(frozen=True, slots=True)
class Mark:
    """Something that happened at one moment."""

    at: dt.datetime
    kind: MarkKind


@dataclasses.dataclass(frozen=True, slots=True)
class PortHistory:
    """One port's window: spans in order covering it, and the marks within it."""

    port: int
    spans: tuple[Span, ...]
    marks: tuple[Mark, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """A target's ports over the window [start, end]; `hidden` ports did not fit."""

    start: dt.datetime
    end: dt.datetime
    ports: tuple[PortHistory, ...]
    hidden: int = 0


def _shown_state(value: Any) -> Shade:
    """A stored state name as a shade; anything else (None, unknown text) is unknown."""
    if value in (Observed.OPEN.value, Observed.CLOSED.value, Observed.FILTERED.value):
        return Shade(value)
    return Shade.UNKNOWN


def _before(event: Event) -> Shade:
    """The port's state just before a port event, as the event tells it."""
    kind = event.type.value
    if kind == PORT_CLOSED:
        return Shade.OPEN
    return _shown_state(event.details.get("previous"))


def _after(event: Event) -> Shade:
    """The port's state the port event reports."""
    if event.type.value == PORT_OPENED:
        return Shade.OPEN
    return _shown_state(event.details.get("state"))


def history(
    state: TargetState,
    events: Iterable[Event],
    now: dt.datetime,
    window: dt.timedelta = WINDOW,
    max_ports: int = MAX_PORTS,
) -> History:
    """The target's ports that were ever open, over the `window` before `now`.

    `events` are the target's events (any order of ids; the order of equal times is kept),
    `state` its stored state now: it tells the ports ever open and, for a port without events
    in the window, its state throughout. Events outside the window are clamped into it.
    """
    start = now - window
    ordered = sorted(
        (e for e in events if e.type.value in TYPES and e.target == state.name),
        key=lambda e: e.observed_at,
    )
    ports = {p for p, rec in state.ports.items() if rec.times_opened or rec.first_open}
    ports |= {
        e.port
        for e in ordered
        if e.port is not None and e.type.value in (PORT_OPENED, FINDING_REOPENED)
    }
    chosen = sorted(ports)
    rows = tuple(_port_history(state, p, ordered, start, now) for p in chosen[:max_ports])
    return History(start, now, rows, max(0, len(chosen) - max_ports))


def _was_down(state: TargetState, ordered: Sequence[Event], start: dt.datetime) -> bool:
    """Whether the target was down when the window began."""
    for e in ordered:
        if e.type.value == TARGET_UP:
            return True
        if e.type.value == TARGET_DOWN:
            return False
    return state.status is TargetStatus.DOWN and (
        state.status_since is None or state.status_since <= start
    )


def _reopened_at_start(state: TargetState, port: int, finding_events: Sequence[Event]) -> bool:
    """Whether the port's finding was a reopen when the window began: the active finding's
    when nothing happened to findings since, or the one the window's first event resolved."""
    if not finding_events:
        current = state.findings.get(port)
        return (
            current is not None
            and current.state in (FindingState.OPEN, FindingState.ACKED)
            and current.reopen_count > 0
        )
    first = finding_events[0]
    resolved = state.resolved.get(port)
    return (
        first.type.value == FINDING_RESOLVED
        and resolved is not None
        and first.finding_id is not None
        and first.finding_id == resolved.id
        and resolved.reopen_count > 0
    )


def _port_history(
    state: TargetState,
    port: int,
    ordered: Sequence[Event],
    start: dt.datetime,
    now: dt.datetime,
) -> PortHistory:
    rec = state.ports.get(port)
    mine = [e for e in ordered if e.port == port or e.port is None]
    state_events = [e for e in mine if e.port == port and e.type.value in _PORT_STATE]
    if state_events:
        shown = _before(state_events[0])
    elif rec is not None:
        shown = _shown_state(rec.state.value)
    else:
        shown = Shade.UNKNOWN
    finding_events = [e for e in mine if e.port == port and e.type.value in _FINDING]
    reopened = _reopened_at_start(state, port, finding_events)
    down = _was_down(state, ordered, start)
    # Before the port's record began nothing was known of it (a record is never removed);
    # with events, the first one says what was before it.
    known_from = rec.first_seen if rec is not None and not state_events else start

    changes: list[tuple[dt.datetime, Shade]] = []
    marks: list[Mark] = []
    known = known_from <= start

    def show() -> Shade:
        if not known or down:
            return Shade.UNKNOWN
        if shown is Shade.OPEN and reopened:
            return Shade.REOPENED
        return shown

    def clamp(at: dt.datetime) -> dt.datetime:
        return min(max(at, start), now)

    changes.append((start, show()))
    for e in mine:
        kind, at = e.type.value, clamp(e.observed_at)
        if not known and at >= known_from:
            known = True
            changes.append((known_from, show()))
        if kind in _PORT_STATE:
            shown = _after(e)
        elif kind == FINDING_REOPENED:
            reopened = True
            marks.append(Mark(at, MarkKind.REOPEN))
        elif kind in (FINDING_OPENED, FINDING_RESOLVED):
            reopened = False
        elif kind == TARGET_DOWN:
            down = True
        elif kind == TARGET_UP:
            down = False
        elif kind == REBOOT_SUSPECTED:
            marks.append(Mark(at, MarkKind.REBOOT))
            continue
        elif kind == FINGERPRINT_CHANGED:
            marks.append(Mark(at, MarkKind.FINGERPRINT))
            continue
        changes.append((at, show()))
    if not known and known_from < now:
        known = True
        changes.append((known_from, show()))
    return PortHistory(port, _spans(changes, now), tuple(marks))


_PORT_STATE = (PORT_OPENED, PORT_CLOSED, EXPECTED_PORT_CLOSED)
_FINDING = (FINDING_OPENED, FINDING_REOPENED, FINDING_RESOLVED)


def _spans(changes: Sequence[tuple[dt.datetime, Shade]], end: dt.datetime) -> tuple[Span, ...]:
    """Spans from (time, shade from then on) in time order: the last change at a time wins,
    neighbours of one shade merge, and nothing of no length is left."""
    spans: list[Span] = []
    for i, (at, shade) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        if until <= at:
            continue
        if spans and spans[-1].shade is shade and spans[-1].end == at:
            spans[-1] = Span(spans[-1].start, until, shade)
        else:
            spans.append(Span(at, until, shade))
    return tuple(spans)


# ------------------------------------------------------------------------------- the picture

WIDTH = 600.0  # SVG user units; the SVG scales to the card's width
LABEL = 46.0  # the port-number column
BARS = WIDTH - LABEL - 4.0
ROW = 16.0  # row pitch
BAR = 10.0  # bar height
TOP = 8.0  # room above the first bar for the reopen marks
AXIS = 16.0  # room below the last row for the axis labels
MIN_PART = 20.0  # units at least, per stretch between two moments shown
_TICKS = (
    (dt.timedelta(0), "now"),
    (dt.timedelta(hours=1), "1h"),
    (dt.timedelta(days=1), "1d"),
    (dt.timedelta(days=7), "7d"),
    (dt.timedelta(days=30), "30d ago"),
)
_TICK_GAP = 34.0  # units between axis labels at least


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    """A span placed on the x axis."""

    x: float
    width: float
    shade: str
    title: str


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    """A mark placed on the x axis."""

    x: float
    kind: str
    title: str


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One port's row: where its bar sits (`y` is the bar's top) and what is on it."""

    port: int
    y: float
    bars: tuple[Bar, ...]
    marks: tuple[Tick, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Picture:
    """What the template draws: rows, axis labels (x, text, anchor) and the SVG's size."""

    width: float
    height: float
    label: float
    bar: float
    rows: tuple[Row, ...]
    axis: tuple[tuple[float, str, str], ...]
    hidden: int


def parts(durations: Sequence[float], width: float, least: float = MIN_PART) -> list[float]:
    """Widths for stretches of time: in proportion to their durations, but none below
    `least` (less when too many stretches share the width), adding up to `width`."""
    n = len(durations)
    if n == 0:
        return []
    least = min(least, width / (2 * n))
    total = sum(durations)
    if total <= 0:
        return [width / n] * n
    shares = [d / total for d in durations]  # adding up to 1: the scale below is at most width
    # The scale k with sum(max(least, k * share)) == width: bisection on a growing function.
    low, high = 0.0, width
    for _ in range(60):
        mid = (low + high) / 2
        if sum(max(least, mid * d) for d in shares) < width:
            low = mid
        else:
            high = mid
    widths = [max(least, high * d) for d in shares]
    scale = width / sum(widths)
    return [w * scale for w in widths]


class Scale:
    """The piecewise-linear x axis over [start, end] with `moments` as its breakpoints."""

    def __init__(
        self, start: dt.datetime, end: dt.datetime, moments: Iterable[dt.datetime], width: float
    ) -> None:
        inner = sorted({m for m in moments if start < m < end})
        self.times = [start, *inner, end]
        lengths = [
            (b - a).total_seconds() for a, b in zip(self.times, self.times[1:], strict=False)
        ]
        self.xs = [0.0]
        for w in parts(lengths, width):
            self.xs.append(self.xs[-1] + w)
        self.xs[-1] = width

    def x(self, at: dt.datetime) -> float:
        """Where `at` sits (clamped to the window)."""
        times, xs = self.times, self.xs
        if at <= times[0]:
            return xs[0]
        if at >= times[-1]:
            return xs[-1]
        i = bisect.bisect_right(times, at) - 1
        span = (times[i + 1] - times[i]).total_seconds()
        frac = (at - times[i]).total_seconds() / span if span > 0 else 0.0
        return xs[i] + frac * (xs[i + 1] - xs[i])


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def picture(h: History) -> Picture:
    """The history placed for an SVG of WIDTH units: one row per port, shared axis."""
    moments = [s.start for p in h.ports for s in p.spans] + [m.at for p in h.ports for m in p.marks]
    scale = Scale(h.start, h.end, moments, BARS)
    rows = []
    for i, p in enumerate(h.ports):
        bars = []
        for s in p.spans:
            x0, x1 = scale.x(s.start), scale.x(s.end)
            text = f"{p.port}/tcp {s.shade.value} {_stamp(s.start)} – {_stamp(s.end)}"
            bars.append(Bar(round(LABEL + x0, 1), round(x1 - x0, 1), s.shade.value, text))
        marks = tuple(
            Tick(
                round(LABEL + scale.x(m.at), 1), m.kind.value, f"{MARK_TEXT[m.kind]} {_stamp(m.at)}"
            )
            for m in p.marks
        )
        rows.append(Row(p.port, TOP + i * ROW, tuple(bars), marks))
    axis: list[tuple[float, str, str]] = []
    taken: list[float] = []
    for age, text in _TICKS:  # "now" and "30d ago" first; the others where there is room
        at = h.end - age
        if at < h.start:
            continue
        x = scale.x(at)
        if any(abs(x - other) < _TICK_GAP for other in taken):
            continue
        taken.append(x)
        anchor = "end" if x > BARS - 20 else ("start" if x < 20 else "middle")
        axis.append((round(LABEL + x, 1), text, anchor))
    axis.sort()
    height = TOP + len(rows) * ROW + AXIS
    return Picture(WIDTH, height, LABEL, BAR, tuple(rows), tuple(axis), h.hidden)
