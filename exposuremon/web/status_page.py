"""The status page (`GET /`): server-rendered HTML, no scripts, no external assets.

`build` turns configured targets, the store's overview of them, the states of the targets
shown and recent events into a view model (pure); `render` fills the jinja2 template with
autoescaping on, so text from scanned hosts (banners, HTTP titles, certificate subjects)
reaches the browser only as text. The page reloads itself.

At 10,000 targets the page cannot show every target (it would be megabytes, reloaded every
30 s), so it shows what needs attention first, as cards: targets with open findings, down, or
up with an expected port not open. The rest is counted, searchable (`?q=`, a plain GET form)
and paged on the server (`?page=`; the attention list has its own `?attention=`). Only the
shown targets' full states are loaded; everything else comes from `Store.target_overview`.

In a fleet of more than one node, a short section lists the nodes (alive, shards held, config
differs) and the vantages, from `Store.fleet_snapshot` (the same view as `/api/v1/fleet`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import urllib.parse
from collections.abc import Collection, Mapping, Sequence

import jinja2

from exposuremon import units
from exposuremon.config import Config, TargetConfig
from exposuremon.fleet import FleetView, fleet_view
from exposuremon.model import (
    Event,
    EventType,
    Finding,
    FindingState,
    Fingerprint,
    Observed,
    ScanKind,
    Severity,
    TargetState,
    TargetStatus,
    VantageStatus,
)
from exposuremon.schedule import MaintenanceWindow, Recurring, showing
from exposuremon.store import FindingCounts, Store, TargetOverview
from exposuremon.units import utcnow
from exposuremon.web import timeline
from exposuremon.web.views import NEVER_SCANNED

REFRESH_SECONDS = 30
TIMELINE = 50  # recent events shown
SERVICE_CHARS = 120  # longest service description shown
ATTENTION_PAGE = 25  # cards per page of the attention list
HEALTHY_PAGE = 100  # rows per page of the other targets
FINDINGS_SHOWN = 100  # rows of the findings table (of the attention cards shown)
MAX_QUERY = 64  # longest search text kept (a target name is at most 64 characters)


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
    flapping: bool = False  # in a flapping episode (flap damping): its changes are held


@dataclasses.dataclass(frozen=True, slots=True)
class AdvisoryView:
    """A firmware advisory rule matching a target now."""

    rule: str
    severity: str
    port: int
    since: When
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
    advisories: tuple[AdvisoryView, ...] = ()
    history: timeline.Picture | None = None  # its ports' last 30 days (attention cards only)


@dataclasses.dataclass(frozen=True, slots=True)
class RowView:
    """One target of the list below the attention cards: a table row."""

    name: str
    anchor: str
    address: str | None
    status: str
    ports: tuple[PortView, ...]
    sentinel: When | None
    acked: int
    history: timeline.Picture | None = None  # only when a search found this target alone


@dataclasses.dataclass(frozen=True, slots=True)
class Pager:
    """Where a page sits in a list: 1-based page numbers, the slice it shows, links."""

    page: int
    pages: int
    start: int
    stop: int
    total: int
    prev_href: str | None = None
    next_href: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PageQuery:
    """The page's query string, as understood (anything odd falls back to the default)."""

    q: str = ""
    page: int = 1
    attention: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class EventView:
    """One line of the timeline."""

    when: When
    target: str
    anchor: str
    href: str
    port: int | None
    type: str
    severity: str
    summary: str


@dataclasses.dataclass(frozen=True, slots=True)
class FleetNodeView:
    """One node of the fleet section."""

    name: str
    vantage: str
    alive: bool
    last_seen: When
    shards: int
    version: str
    config_differs: bool


@dataclasses.dataclass(frozen=True, slots=True)
class FleetSection:
    """The fleet at a glance (shown only when more than one node has joined)."""

    nodes: tuple[FleetNodeView, ...]
    vantages: tuple[tuple[str, str, int], ...]  # name, up/degraded, live nodes
    alive: int
    differs: int
    unheld: int  # shards held by nobody, over every vantage
    shards: int


@dataclasses.dataclass(frozen=True, slots=True)
class MaintenanceView:
    """A maintenance window in force or to come (the stretch in force, else the next one)."""

    id: str  # `config/0` or `api/3`
    active: bool
    targets: str  # "every target" or the names
    start: When | None
    end: When | None
    schedule: str  # "" for one-off windows, else "cron 0 2 * * SUN, 2h, Europe/Berlin"
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class PageModel:
    """Everything the template shows."""

    title: str
    headline: str
    generated: When
    refresh: int
    counts: Mapping[str, int]
    findings: tuple[FindingView, ...]
    findings_hidden: int  # findings of the cards shown that did not fit the table
    attention: tuple[TargetView, ...]
    attention_reasons: Mapping[str, str]  # target -> why it is in the attention list
    attention_pager: Pager
    rows: tuple[RowView, ...]
    rows_pager: Pager
    query: PageQuery
    events: tuple[EventView, ...]
    fleet: FleetSection | None = None
    maintenance: tuple[MaintenanceView, ...] = ()
    # Vantages whose scans went silent for most targets (vantage health), with since when:
    # their silence changes no target, so the page says so above everything else.
    degraded: tuple[tuple[str, When], ...] = ()

    @property
    def targets(self) -> tuple[TargetView, ...]:
        """The cards shown (the attention list's page)."""
        return self.attention


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


def target_view(
    target: TargetConfig,
    state: TargetState | None,
    now: dt.datetime,
    events: Sequence[Event] | None = None,
) -> TargetView:
    """One configured target's card; with its `events` of the window, its ports' history."""
    expected = frozenset(target.expected_open)
    if state is None:
        state = TargetState(name=target.name, address=target.address)
        status = NEVER_SCANNED
    else:
        status = state.status.value
    open_ports = {p: rec for p, rec in state.ports.items() if rec.state is Observed.OPEN}
    flapping = {p for p, f in state.flaps.items() if f.since is not None}
    ports = [
        PortView(
            port=p,
            expected=p in expected,
            open=True,
            since=when(rec.last_change, now),
            service=service(rec.fingerprint),
            flapping=p in flapping,
        )
        for p, rec in open_ports.items()
    ]
    # A flapping port caught closed is shown too: it is open half the time.
    ports += [
        PortView(
            port=p,
            expected=p in expected,
            open=False,
            since=when(state.ports[p].last_change, now),
            service=service(state.ports[p].fingerprint),
            flapping=True,
        )
        for p in sorted(flapping - set(open_ports) - expected)
        if p in state.ports
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
                flapping=p in flapping,
            )
            for p in expected - set(open_ports)
        ]
    findings = sorted(state.findings.values(), key=finding_order)
    picture = None
    if events is not None and status != NEVER_SCANNED:
        drawn = timeline.history(state, events, now)
        picture = timeline.picture(drawn) if drawn.ports else None
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
        history=picture,
        advisories=tuple(
            AdvisoryView(
                rule=name,
                severity=m.severity.label,
                port=m.port,
                since=when(m.since, now) or When("", ""),
                service=service(m.fingerprint),
            )
            for name, m in sorted(state.advisories.items())
        ),
    )


def href(target: str, shown: Collection[str]) -> str:
    """A link to a target's card or row: on this page, or a search that shows it."""
    if target in shown:
        return f"#{anchor(target)}"
    return "?" + urllib.parse.urlencode({"q": target}) + f"#{anchor(target)}"


def event_view(event: Event, now: dt.datetime, shown: Collection[str] = ()) -> EventView:
    """One timeline entry."""
    at = when(event.observed_at, now)
    assert at is not None
    if event.target is None:  # a vantage's event: it links to the fleet section
        name = f"vantage {event.vantage or '?'}"
        return EventView(
            when=at,
            target=name,
            anchor="fleet",
            href="#fleet",
            port=None,
            type=event.type.value.replace("_", " "),
            severity=event.severity.label,
            summary=event.summary,
        )
    return EventView(
        when=at,
        target=event.target,
        anchor=anchor(event.target),
        href=href(event.target, shown),
        port=event.port,
        type=event.type.value.replace("_", " "),
        severity=event.severity.label,
        summary=event.summary,
    )


# -------------------------------------------------------------------- attention, paging


# Why a target needs attention, most urgent first: a reopened port is the incident this tool
# exists for; a critical finding or a router gone down next; then warnings, an expected port
# (a forward) not open, and informational findings. Acknowledged findings alone do not need
# attention (someone accepted them), nor does `unknown` or never scanned: every target is
# that for its first minutes, and silence proves nothing (they are counted and searchable).
TIERS = ("reopened", "critical", "down", "warning", "expected port not open", "info")
NO_FINDINGS = FindingCounts()
Reason = tuple[int, str] | None


def attention_reason(target: TargetConfig, overview: TargetOverview) -> tuple[int, str] | None:
    """(tier, reason) when the target needs attention (tier indexes TIERS), else None."""
    name = target.name
    counts = overview.findings.get(name, NO_FINDINGS)
    if counts is NO_FINDINGS and name not in overview.status and name not in overview.not_open:
        return None  # the common case at scale: up (or never scanned), every port open, clean
    status = overview.status.get(name, TargetStatus.UP) if name in overview.stored else None
    if counts.reopened:
        return 0, TIERS[0]
    if counts.open.get(Severity.CRITICAL):
        return 1, TIERS[1]
    if status is TargetStatus.DOWN:
        return 2, TIERS[2]
    if counts.open.get(Severity.WARNING):
        return 3, TIERS[3]
    expected = target.expected_open
    if status is TargetStatus.UP and expected & overview.not_open.get(name, frozenset()):
        return 4, TIERS[4]
    if counts.open_total:
        return 5, TIERS[5]
    return None


def matches(target: TargetConfig, q: str) -> bool:
    """Whether the search text (case-insensitive) is part of the target's name or address."""
    needle = q.casefold()
    return needle in target.name.casefold() or needle in target.address.casefold()


def split(
    targets: Sequence[TargetConfig], reasons: Sequence[Reason], q: str = ""
) -> tuple[list[tuple[TargetConfig, str]], list[TargetConfig]]:
    """The targets matching `q`: those needing attention (most urgent first, then config
    order, with their reason) and the rest (config order). `reasons[i]` is targets[i]'s."""
    urgent: list[tuple[int, int, TargetConfig, str]] = []
    rest: list[TargetConfig] = []
    for index, (target, reason) in enumerate(zip(targets, reasons, strict=True)):
        if q and not matches(target, q):
            continue
        if reason is None:
            rest.append(target)
        else:
            urgent.append((reason[0], index, target, reason[1]))
    urgent.sort(key=lambda item: (item[0], item[1]))
    return [(t, why) for _, _, t, why in urgent], rest


def paginate(total: int, size: int, requested: int) -> Pager:
    """The page `requested` of a list of `total` items, `size` per page, clamped to [1, last]."""
    pages = max(1, -(-total // size))
    page = min(max(1, requested), pages)
    start = (page - 1) * size
    return Pager(page=page, pages=pages, start=start, stop=min(total, start + size), total=total)


def page_link(query: PageQuery, key: str, number: int) -> str:
    """The query string of this page with `page` or `attention` set (defaults left out)."""
    if key == "page":
        values = dataclasses.replace(query, page=number)
    else:
        values = dataclasses.replace(query, attention=number)
    params: dict[str, str | int] = {}
    if values.q:
        params["q"] = values.q
    if values.attention != 1:
        params["attention"] = values.attention
    if values.page != 1:
        params["page"] = values.page
    return "?" + urllib.parse.urlencode(params) if params else "?"


def with_links(pager: Pager, query: PageQuery, key: str) -> Pager:
    """The pager with its previous/next links (None at either end)."""
    prev_href = page_link(query, key, pager.page - 1) if pager.page > 1 else None
    next_href = page_link(query, key, pager.page + 1) if pager.page < pager.pages else None
    return dataclasses.replace(pager, prev_href=prev_href, next_href=next_href)


def _positive(text: str | None) -> int:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 9:
        return 1
    return max(1, int(text))


def parse_query(params: Mapping[str, str]) -> PageQuery:
    """The page's parameters; a browser's page never errors, so odd values mean the default."""
    q = "".join(ch for ch in params.get("q", "") if ch.isprintable()).strip()[:MAX_QUERY]
    return PageQuery(
        q=q, page=_positive(params.get("page")), attention=_positive(params.get("attention"))
    )


def overview_of(states: Mapping[str, TargetState]) -> TargetOverview:
    """The overview `Store.target_overview` reads, computed from full states (for tests)."""
    findings = {}
    for name, state in states.items():
        active = list(state.findings.values())
        if not active:
            continue
        by_severity: dict[Severity, int] = {}
        for f in active:
            if f.state is FindingState.OPEN:
                by_severity[f.severity] = by_severity.get(f.severity, 0) + 1
        findings[name] = FindingCounts(
            by_severity,
            sum(1 for f in active if f.state is FindingState.OPEN and f.reopen_count),
            sum(1 for f in active if f.state is FindingState.ACKED),
        )
    return TargetOverview(
        stored=frozenset(states),
        status={n: s.status for n, s in states.items() if s.status is not TargetStatus.UP},
        not_open={
            n: frozenset(p for p, rec in s.ports.items() if rec.state is not Observed.OPEN)
            for n, s in states.items()
            if any(rec.state is not Observed.OPEN for rec in s.ports.values())
        },
        findings=findings,
    )


def counts_of(
    targets: Sequence[TargetConfig], overview: TargetOverview, reasons: Sequence[Reason]
) -> dict[str, int]:
    """The summary tiles: targets by status, findings by severity, how many need attention."""
    counts = dict.fromkeys(
        ("critical", "warning", "info", "reopened", "acked", "down", "up", "unknown", "never"), 0
    )
    # Walk the few targets that are not up or have findings, not all 10,000: a loop over every
    # target took about a third of building the page model.
    configured = {target.name for target in targets}
    stored = len(configured & overview.stored)
    counts["never"] = len(configured) - stored
    counts["up"] = stored
    for name, status in overview.status.items():
        if name in configured and name in overview.stored and status is not TargetStatus.UP:
            counts[status.value] += 1
            counts["up"] -= 1
    for name, found in overview.findings.items():
        if name not in configured:
            continue
        for severity, n in found.open.items():
            counts[severity.label] += n
        counts["reopened"] += found.reopened
        counts["acked"] += found.acked
    attention = sum(1 for r in reasons if r is not None)
    return {"targets": len(targets), "attention": attention, **counts}


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """What one page shows: its attention cards (with reasons) and rows, and the pagers."""

    reasons: Sequence[Reason]  # of every configured target, in config order
    urgent: Sequence[tuple[TargetConfig, str]]
    rest: Sequence[TargetConfig]
    attention_pager: Pager
    rows_pager: Pager

    def names(self) -> list[str]:
        """The targets shown, whose full states the page needs."""
        return [t.name for t, _ in self.urgent] + [t.name for t in self.rest]

    def with_history(self) -> list[str]:
        """The targets whose port history the page draws: the attention cards shown, and a
        target that a search found alone (its own section), never a page of rows."""
        names = [t.name for t, _ in self.urgent]
        if self.attention_pager.total + self.rows_pager.total == 1:
            names += [t.name for t in self.rest]
        return names


def pick(targets: Sequence[TargetConfig], overview: TargetOverview, query: PageQuery) -> Selection:
    """The attention cards and the rows this page shows, with their pagers (without links)."""
    reasons = [attention_reason(t, overview) for t in targets]
    urgent, rest = split(targets, reasons, query.q)
    a_pager = paginate(len(urgent), ATTENTION_PAGE, query.attention)
    r_pager = paginate(len(rest), HEALTHY_PAGE, query.page)
    return Selection(
        reasons,
        urgent[a_pager.start : a_pager.stop],
        rest[r_pager.start : r_pager.stop],
        a_pager,
        r_pager,
    )


def row_view(
    target: TargetConfig,
    state: TargetState | None,
    now: dt.datetime,
    events: Sequence[Event] | None = None,
) -> RowView:
    """One row of the list of targets that need no attention (with `events`: its history)."""
    card = target_view(target, state, now, events)
    sentinel = dict(card.last_scans).get(ScanKind.SENTINEL.value)
    acked = (
        0
        if state is None
        else sum(1 for f in state.findings.values() if f.state is FindingState.ACKED)
    )
    return RowView(
        name=card.name,
        anchor=card.anchor,
        address=card.address,
        status=card.status,
        ports=card.ports,
        sentinel=sentinel,
        acked=acked,
        history=card.history,
    )


def fleet_section(view: FleetView | None, now: dt.datetime) -> FleetSection | None:
    """The fleet section, or None for a single node (or none: no lease keeper has run)."""
    if view is None or len(view.nodes) < 2:
        return None
    nodes = []
    for n in view.nodes:
        seen = when(n.last_seen, now)
        assert seen is not None
        nodes.append(
            FleetNodeView(
                name=n.name,
                vantage=n.vantage,
                alive=n.alive,
                last_seen=seen,
                shards=n.shards,
                version=n.version,
                config_differs=n.config_differs,
            )
        )
    return FleetSection(
        nodes=tuple(nodes),
        vantages=tuple((v.name, v.status, v.nodes) for v in view.vantages),
        alive=sum(n.alive for n in view.nodes),
        differs=sum(n.config_differs for n in view.nodes),
        unheld=sum(len(v.unheld) for v in view.shard_owners),
        shards=view.shards,
    )


def duration_text(seconds: float) -> str:
    """`2h`, `90m`, `1d12h`: a window's length as the config writes it (whole minutes)."""
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    text = (
        (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{mins}m" if mins else "")
    )
    return text or "0m"


def maintenance_views(
    windows: Sequence[MaintenanceWindow], now: dt.datetime
) -> tuple[MaintenanceView, ...]:
    """The windows in force (first) and to come; those over for good are left out."""
    views = []
    for window in windows:
        shown = showing(window, now)
        if shown.start is None or (shown.end is not None and shown.end <= now):
            continue
        sched = window.schedule
        every = ""
        if isinstance(sched, Recurring):
            length = duration_text(sched.duration.total_seconds())
            every = f"cron {sched.cron}, {length}, {sched.timezone}"
        views.append(
            MaintenanceView(
                id=window.key,
                active=shown.active,
                targets="every target"
                if window.targets is None
                else ", ".join(sorted(window.targets)),
                start=when(shown.start, now),
                end=when(shown.end, now),
                schedule=every,
                reason=window.reason,
            )
        )
    views.sort(key=lambda v: (not v.active, v.start.iso if v.start else ""))
    return tuple(views)


def build(
    targets: Sequence[TargetConfig],
    overview: TargetOverview,
    states: Mapping[str, TargetState],
    events: Sequence[Event],
    now: dt.datetime,
    query: PageQuery = PageQuery(),
    selection: Selection | None = None,
    fleet: FleetView | None = None,
    histories: Mapping[str, Sequence[Event]] | None = None,
    maintenance: Sequence[MaintenanceWindow] = (),
    health: Mapping[str, VantageStatus] | None = None,
) -> PageModel:
    """The page's view model. `states` needs to hold only the shown targets' states;
    `selection` is `pick`'s answer for the same arguments (computed when not given);
    `fleet` the fleet view (its section shows only for more than one node); `histories`
    the attention cards' events of the history window (None: cards without history);
    `health` the vantages' shared health (a degraded one gets a banner)."""
    chosen = selection or pick(targets, overview, query)
    urgent, rest = chosen.urgent, chosen.rest
    a_pager, r_pager = chosen.attention_pager, chosen.rows_pager
    cards = tuple(
        target_view(
            t,
            states.get(t.name),
            now,
            None if histories is None else histories.get(t.name, ()),
        )
        for t, _ in urgent
    )
    drawn = set(chosen.with_history()) if histories is not None else set()
    rows = tuple(
        row_view(
            t,
            states.get(t.name),
            now,
            histories.get(t.name, ()) if histories is not None and t.name in drawn else None,
        )
        for t in rest
    )
    active = [f for t, _ in urgent if t.name in states for f in states[t.name].findings.values()]
    active.sort(key=finding_order)
    counts = counts_of(targets, overview, chosen.reasons)
    parts = [f"{counts[k]} {k}" for k in ("critical", "warning", "info") if counts[k]]
    if counts["down"]:
        parts.append(f"{counts['down']} down")
    headline = ", ".join(parts) if parts else "all clear"
    generated = when(now, now)
    assert generated is not None
    shown = {t.name for t, _ in urgent} | {t.name for t in rest}
    return PageModel(
        title=f"exposuremon: {headline}",
        headline=headline,
        generated=generated,
        refresh=REFRESH_SECONDS,
        counts=counts,
        findings=tuple(finding_view(f, now) for f in active[:FINDINGS_SHOWN]),
        # Every active finding of the configured targets, less those in the table.
        findings_hidden=max(
            0,
            sum(counts[k] for k in ("critical", "warning", "info", "acked"))
            - min(len(active), FINDINGS_SHOWN),
        ),
        attention=cards,
        attention_reasons={t.name: why for t, why in urgent},
        attention_pager=with_links(a_pager, query, "attention"),
        rows=rows,
        rows_pager=with_links(r_pager, query, "page"),
        query=query,
        events=tuple(event_view(e, now, shown) for e in events[:TIMELINE]),
        fleet=fleet_section(fleet, now),
        maintenance=maintenance_views(maintenance, now),
        degraded=tuple(
            (name, since)
            for name, v in sorted((health or {}).items())
            if v.degraded and (since := when(v.since, now)) is not None
        ),
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


async def render_status(
    store: Store,
    config: Config,
    now: dt.datetime | None = None,
    query: PageQuery = PageQuery(),
) -> str:
    """Load what the page shows from the store and render it.

    Seven reads: the overview of every target (light rows), the full states of the targets
    shown on this page, the events of the last 30 days of the targets whose port history is
    drawn (the attention cards, at most ATTENTION_PAGE, or the one target a search found;
    never the whole fleet), the recent events, the fleet, the vantages' health and the ad-hoc
    maintenance windows. Each is one snapshot; a scan landing between them shows on the next
    reload.
    """
    now = now or utcnow()
    overview = await store.target_overview()
    selection = pick(config.targets, overview, query)
    states = await store.states_of(selection.names())
    drawn = [name for name in selection.with_history() if name in states]
    histories = await store.history_events(drawn, HISTORY_TYPES, now - timeline.WINDOW)
    events, _ = await store.events(limit=TIMELINE)
    fleet = fleet_view(await store.fleet_snapshot(), config.fleet.lease_ttl)
    health = await store.vantage_health()
    stored = await store.maintenance_windows(ending_after=now)
    windows = config.maintenance_windows() + tuple(
        MaintenanceWindow.ad_hoc(w.id, w.targets, w.starts_at, w.ends_at, w.reason) for w in stored
    )
    model = build(
        config.targets,
        overview,
        states,
        events,
        now,
        query,
        selection,
        fleet=fleet,
        histories=histories,
        maintenance=windows,
        health=health,
    )
    return render(model)


# The event types a port history reads, as the store knows them.
HISTORY_TYPES = tuple(EventType(kind) for kind in timeline.TYPES)
