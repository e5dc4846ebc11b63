"""The status page (`GET /`): server-rendered HTML, no scripts, no external assets.

`build` turns configured targets, stored states and recent events into a view model (pure);
`render` fills the jinja2 template with autoescaping on, so text from scanned hosts (banners,
HTTP titles, certificate subjects) reaches the browser only as text. The page reloads itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Mapping, Sequence

import jinja2

from exposuremon import units
from exposuremon.config import Config, TargetConfig
from exposuremon.model import (
    Event,
    Finding,
    FindingState,
    Fingerprint,
    Observed,
    ScanKind,
    Severity,
    TargetState,
)
from exposuremon.store import Store
from exposuremon.units import utcnow
from exposuremon.web.views import NEVER_SCANNED

REFRESH_SECONDS = 30
TIMELINE = 50  # recent events shown
SERVICE_CHARS = 120  # longest service description shown


@dataclasses.dataclass(frozen=True, slots=True)
class When:
    """A time shown as `5m ago`, with the exact UTC time for the tooltip."""

    ago: str
    iso: str


@dataclasses.dataclass(frozen=True, slots=True)
class PortView:
    """An open port of a target, or an expected port found closed."""

    port: int
    expected: bool
    open: bool
    since: When | None
    service: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class FindingView:
    """An active finding (open or acked)."""

    id: int | None
    target: str
    anchor: str
    port: int
    severity: str
    acked: bool
    reopen_count: int
    opened: When
    previous_resolved: When | None
    ack_until: When | None
    ack_reason: str | None
    service: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class TargetView:
    """One configured target's card."""

    name: str
    anchor: str
    address: str | None
    status: str
    status_since: When | None
    last_scans: tuple[tuple[str, When | None], ...]
    ports: tuple[PortView, ...]
    findings: tuple[FindingView, ...]
    last_reboot: When | None
    reboots: int
    reopened: int


@dataclasses.dataclass(frozen=True, slots=True)
class EventView:
    """One line of the timeline."""

    when: When
    target: str
    anchor: str
    port: int | None
    type: str
    severity: str
    summary: str


@dataclasses.dataclass(frozen=True, slots=True)
class PageModel:
    """Everything the template shows."""

    title: str
    headline: str
    generated: When
    refresh: int
    counts: Mapping[str, int]
    findings: tuple[FindingView, ...]
    targets: tuple[TargetView, ...]
    events: tuple[EventView, ...]


def anchor(target: str) -> str:
    """The element id of a target's card (notifications link to `{public_url}/#target-<name>`)."""
    return f"target-{target}"


def ago(when: dt.datetime, now: dt.datetime) -> str:
    """`just now`, `42s ago`, `5m ago`, `3h ago`, `2d ago` (or `in 5m` for future times)."""
    seconds = (now - when).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            text = f"{int(seconds // size)}{unit}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"  # unreachable: seconds >= 5 here


def when(at: dt.datetime | None, now: dt.datetime) -> When | None:
    """A time for display, or None."""
    if at is None:
        return None
    return When(ago=ago(at, now), iso=units.rfc3339(at))


def service(fp: Fingerprint | None) -> str | None:
    """What an open port's service said about itself, shortened (untrusted text)."""
    if fp is None:
        return None
    text = fp.describe()
    if not text:
        return None
    return text if len(text) <= SERVICE_CHARS else text[: SERVICE_CHARS - 1] + "…"


def finding_view(f: Finding, now: dt.datetime) -> FindingView:
    """An active finding for display."""
    opened = when(f.opened_at, now)
    assert opened is not None
    return FindingView(
        id=f.id,
        target=f.target,
        anchor=anchor(f.target),
        port=f.port,
        severity=f.severity.label,
        acked=f.state is FindingState.ACKED,
        reopen_count=f.reopen_count,
        opened=opened,
        previous_resolved=when(f.previous_resolved_at, now),
        ack_until=when(f.ack_until, now),
        ack_reason=f.ack_reason,
        service=service(f.fingerprint),
    )


def finding_order(f: Finding) -> tuple[bool, bool, int, float]:
    """Open before acked, reopened first, then by severity, newest first."""
    return (
        f.state is FindingState.ACKED,
        f.reopen_count == 0,
        -int(f.severity),
        -f.opened_at.timestamp(),
    )


def target_view(target: TargetConfig, state: TargetState | None, now: dt.datetime) -> TargetView:
    """One configured target's card."""
    expected = frozenset(target.expected_open)
    if state is None:
        state = TargetState(name=target.name, address=target.address)
        status = NEVER_SCANNED
    else:
        status = state.status.value
    open_ports = {p: rec for p, rec in state.ports.items() if rec.state is Observed.OPEN}
    ports = [
        PortView(
            port=p,
            expected=p in expected,
            open=True,
            since=when(rec.last_change, now),
            service=service(rec.fingerprint),
        )
        for p, rec in open_ports.items()
    ]
    if status != NEVER_SCANNED:
        # An expected port that is not open is news too (a forward that stopped working).
        ports += [
            PortView(
                port=p,
                expected=True,
                open=False,
                since=when(state.ports[p].last_change, now) if p in state.ports else None,
                service=None,
            )
            for p in expected - set(open_ports)
        ]
    findings = sorted(state.findings.values(), key=finding_order)
    return TargetView(
        name=target.name,
        anchor=anchor(target.name),
        address=state.address or target.address,
        status=status,
        status_since=when(state.status_since, now),
        last_scans=tuple((k.value, when(state.last_scan.get(k), now)) for k in ScanKind),
        ports=tuple(sorted(ports, key=lambda v: v.port)),
        findings=tuple(finding_view(f, now) for f in findings),
        last_reboot=when(state.last_reboot, now),
        reboots=state.reboots_total,
        reopened=state.reopened_total,
    )


def event_view(event: Event, now: dt.datetime) -> EventView:
    """One timeline entry."""
    at = when(event.observed_at, now)
    assert at is not None
    return EventView(
        when=at,
        target=event.target,
        anchor=anchor(event.target),
        port=event.port,
        type=event.type.value.replace("_", " "),
        severity=event.severity.label,
        summary=event.summary,
    )


def build(
    targets: Sequence[TargetConfig],
    states: Mapping[str, TargetState],
    events: Sequence[Event],
    now: dt.datetime,
) -> PageModel:
    """The page's view model: configured targets in config order, findings, recent events."""
    views = tuple(target_view(t, states.get(t.name), now) for t in targets)
    active = [f for t in targets if t.name in states for f in states[t.name].findings.values()]
    active.sort(key=finding_order)
    unacked = [f for f in active if f.state is FindingState.OPEN]
    counts = {
        "targets": len(views),
        "critical": sum(1 for f in unacked if f.severity is Severity.CRITICAL),
        "warning": sum(1 for f in unacked if f.severity is Severity.WARNING),
        "info": sum(1 for f in unacked if f.severity is Severity.INFO),
        "reopened": sum(1 for f in unacked if f.reopen_count),
        "acked": len(active) - len(unacked),
        "down": sum(1 for v in views if v.status == "down"),
    }
    parts = [f"{counts[k]} {k}" for k in ("critical", "warning", "info") if counts[k]]
    if counts["down"]:
        parts.append(f"{counts['down']} down")
    headline = ", ".join(parts) if parts else "all clear"
    generated = when(now, now)
    assert generated is not None
    return PageModel(
        title=f"exposuremon: {headline}",
        headline=headline,
        generated=generated,
        refresh=REFRESH_SECONDS,
        counts=counts,
        findings=tuple(finding_view(f, now) for f in active),
        targets=views,
        events=tuple(event_view(e, now) for e in events[:TIMELINE]),
    )


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("exposuremon.web", "templates"),
        autoescape=True,  # every value is text unless the template says otherwise (it never does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(model: PageModel) -> str:
    """The page's HTML."""
    return _environment().get_template("status.html").render(page=model)


async def render_status(store: Store, config: Config, now: dt.datetime | None = None) -> str:
    """Load what the page shows from the store and render it."""
    now = now or utcnow()
    states = await store.load_states()
    events, _ = await store.events(limit=TIMELINE)
    return render(build(config.targets, states, events, now))
