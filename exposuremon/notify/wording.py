"""What a notification says, before any chat format: headline, why it matters, sections.

`digest(message)` turns a `Message` into a `Digest`: a headline, a why-it-matters sentence,
sections of items made of spans (plain, strong, code), a footer and an optional link. Renderers
(`notify/formats.py`) escape every span for their chat format; nothing here knows one. Every
piece of text taken from the message passes `text.clean` (untrusted, capped).

Layout of an events message: reopened findings first, then new findings by severity, then
what happened (reboot, fingerprint changes, down/up; for a reopen the happenings since the
port was closed), then the other changes (resolved findings, expected ports closed, ...).
Findings that share their details (closed since, fingerprint) are one line with a compact port
list, so a reboot that reopens 20 ports is a short message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from exposuremon.model import Event, EventType, Fingerprint, Severity
from exposuremon.notify.message import Message, MessageKind
from exposuremon.notify.text import (
    DETAIL_LIMIT,
    ELLIPSIS,
    NAME_LIMIT,
    SUMMARY_LIMIT,
    Item,
    Section,
    Span,
    Style,
    Tone,
    clean,
    ports_text,
    short_time,
    status_link,
)
from exposuremon.scan import format_ports
from exposuremon.units import format_duration, rfc3339

E = EventType
_FINDING_TYPES = (E.FINDING_REOPENED, E.FINDING_OPENED)
# Target-level happenings: what explains a reopen (and the reopen details' `since` notables).
_CONTEXT_TYPES = (
    E.TARGET_DOWN,
    E.TARGET_UP,
    E.REBOOT_SUSPECTED,
    E.FINGERPRINT_CHANGED,
    E.ADDRESS_CHANGED,
    E.ANOMALY_ALL_OPEN,
)
_GOOD_TYPES = frozenset(
    {E.FINDING_RESOLVED, E.TARGET_UP, E.PORT_CLOSED, E.ADVISORY_CLEARED, E.PORT_FLAP_ENDED}
)
_TYPE_ORDER = {t: i for i, t in enumerate(EventType)}
_NOTABLE_LABELS = {
    E.TARGET_DOWN: "target down",
    E.TARGET_UP: "target answering again",
    E.REBOOT_SUSPECTED: "reboot suspected",
    E.FINGERPRINT_CHANGED: "service fingerprint changed",
    E.ADDRESS_CHANGED: "address changed",
}
_RESOLVED_HOW = {
    "closed": "closed again",
    "filtered": "no longer answering (filtered)",
    "expected": "now in expected_open",
    "ignored": "now ignored",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Digest:
    """A message's content in format-neutral form: what every chat format says."""

    kind: MessageKind
    severity: Severity
    tone: Tone
    title: str  # the headline, cleaned plain text
    label: str  # `surgery-router (198.51.100.7)`, or the test marker
    intro: tuple[Item, ...]  # why it matters, what to do
    sections: tuple[Section, ...]
    footer: str
    link: str | None  # the status page, only with `public_url`
    when: dt.datetime | None  # the newest event's time

    def capped(self, limit: int) -> Digest:
        """The same digest with every section cut to `limit` items."""
        return dataclasses.replace(self, sections=tuple(s.capped(limit) for s in self.sections))


def digest(message: Message) -> Digest:
    """What to say about `message`, independent of the chat format."""
    if message.kind is MessageKind.TEST:
        return _test(message)
    if message.kind is MessageKind.REMINDER:
        return _reminder(message)
    return _events(message)


# ----------------------------------------------------------------------------------- events


def _vantage(message: Message, vantage: str) -> Digest:
    """A vantage's health change: one line of what happened, and why no target changed."""
    events = message.events
    label = f"vantage {clean(vantage, NAME_LIMIT)}"
    ref = max((e.observed_at for e in events), default=None)
    degraded = bool(events) and events[-1].type is E.VANTAGE_DEGRADED
    if degraded:
        what = "its scans went silent for most targets"
        why = (
            "Most targets that answered stopped answering at once: the scanner's own uplink "
            "(or a filter near it) is the likely cause, not the routers. Until it recovers, "
            "silence seen from it changes no target: no target down, no reboot, no resolve."
        )
    else:
        what = "recovered, targets answer again"
        why = "Targets were never marked down for it: their answers raise nothing."
    sev = f" — {message.severity.label}" if message.severity >= Severity.WARNING else ""
    items = tuple(Item((Span(clean(e.summary, SUMMARY_LIMIT) or e.type.value),)) for e in events)
    return Digest(
        kind=message.kind,
        severity=message.severity,
        tone=_tone(message.severity, events),
        title=f"{label}: {what}{sev}",
        label=label,
        intro=(Item((Span(why),)),),
        sections=(Section("What happened", items),),
        footer="exposuremon" + (f" · observed {rfc3339(ref)}" if ref else ""),
        link=status_link(message.public_url, ""),  # no target of its own: the page itself
        when=ref,
    )


def _events(message: Message) -> Digest:
    if message.vantage is not None:
        return _vantage(message, message.vantage)
    events, label = message.events, _label(message)
    ref = max((e.observed_at for e in events), default=None)
    finding_ports = {e.port for e in events if e.type in _FINDING_TYPES}
    resolved_ports = {e.port for e in events if e.type is E.FINDING_RESOLVED}
    # A port's `port_opened` says less than its finding event of the same scan; same for closes.
    shown = [
        e
        for e in events
        if not (e.type is E.PORT_OPENED and e.port in finding_ports)
        and not (e.type is E.PORT_CLOSED and e.port in resolved_ports)
    ]
    reopened: list[Event] = []
    new: list[Event] = []
    context: list[Event] = []
    other: list[Event] = []
    for e in shown:
        if e.type is E.FINDING_REOPENED and e.port is not None:
            reopened.append(e)
        elif e.type is E.FINDING_OPENED and e.port is not None:
            new.append(e)
        else:
            (context if e.type in _CONTEXT_TYPES else other).append(e)
    notables = _notables(reopened)
    reboot = any(e.type is E.REBOOT_SUSPECTED for e in context) or any(
        n[1] is E.REBOOT_SUSPECTED for n in notables
    )
    sections = [
        Section("Open again", _finding_items(reopened, ref)),
        Section("New unexpected open ports", _finding_items(new, ref)),
        Section(
            "What happened since they were closed" if reopened else "What happened",
            _context_items(context, notables, ref),
        ),
        Section("Other changes", _other_items(other)),
    ]
    if not (reopened or new or context):
        sections[-1] = dataclasses.replace(sections[-1], heading="Changes")
    tone = _tone(message.severity, events)
    what = _headline(reopened, new, shown, reboot)
    if (reopened or new) and any(e.type is E.MAINTENANCE_ENDED for e in events):
        what += ", held during maintenance"  # the summary at a window's end pages them now
    sev = f" — {message.severity.label}" if message.severity >= Severity.WARNING else ""
    return Digest(
        kind=message.kind,
        severity=message.severity,
        tone=tone,
        title=f"{label}: {what}{sev}",
        label=label,
        intro=_why(reopened, new, shown),
        sections=tuple(s for s in sections if s.items),
        footer="exposuremon" + (f" · observed {rfc3339(ref)}" if ref else ""),
        link=status_link(message.public_url, message.target),
        when=ref,
    )


def _headline(
    reopened: Sequence[Event], new: Sequence[Event], shown: Sequence[Event], reboot: bool
) -> str:
    parts = []
    if reopened:
        parts.append(f"{_count_ports(reopened)} open again")
    if new:
        lone = len(new) == 1 and not reopened
        parts.append(f"{_count_ports(new)} open, not expected" if lone else _n(new, "new port"))
    if parts:
        return " and ".join(parts) + (" after a suspected reboot" if reboot else "")
    kinds: dict[EventType, list[Event]] = {}
    for e in shown:
        kinds.setdefault(e.type, []).append(e)
    if found := kinds.get(E.TARGET_DOWN):
        return clean(found[0].summary, SUMMARY_LIMIT)
    if found := kinds.get(E.ANOMALY_ALL_OPEN):
        return "middlebox suspected: nearly every port answers"
    if found := kinds.get(E.ADVISORY_MATCHED):
        if len(found) == 1:
            return f"firmware advisory {clean(str(found[0].details.get('rule')), NAME_LIMIT)}"
        return f"{len(found)} firmware advisories match"
    if found := kinds.get(E.PORT_FLAPPING):
        return f"{_count_ports(found)} flapping"
    if found := kinds.get(E.EXPECTED_PORT_CLOSED):
        return f"expected {_count_ports(found)} not answering"
    if found := kinds.get(E.FINDING_RESOLVED):
        if len(found) == 1:
            e = found[0]
            how = _RESOLVED_HOW.get(str(e.details.get("reason")), "no longer open")
            return f"port {e.port}/tcp {how}, finding{_ids_text([e])} resolved"
        return f"{len(found)} findings resolved"
    if found := kinds.get(E.PORT_FLAP_ENDED):
        if len(found) == 1:
            state = clean(str(found[0].details.get("state") or "closed"), 20)
            return f"port {found[0].port}/tcp stopped flapping, {state}"
        return f"{_count_ports(found)} stopped flapping"
    if found := kinds.get(E.ADVISORY_CLEARED):
        if len(found) == 1:
            rule = clean(str(found[0].details.get("rule")), NAME_LIMIT)
            return f"firmware advisory {rule} no longer matches"
        return f"{len(found)} firmware advisories no longer match"
    for kind in (E.TARGET_UP, E.REBOOT_SUSPECTED, E.ADDRESS_CHANGED):
        if found := kinds.get(kind):
            return clean(found[0].summary, SUMMARY_LIMIT)
    if found := kinds.get(E.FINGERPRINT_CHANGED):
        return f"service changed on {_count_ports(found)}"
    if found := kinds.get(E.PORT_OPENED):
        return f"{_count_ports(found)} open"
    if found := kinds.get(E.PORT_CLOSED):
        return f"{_count_ports(found)} closed"
    if shown:
        return clean(shown[0].summary, SUMMARY_LIMIT) or shown[0].type.value
    return "no events"


def _why(
    reopened: Sequence[Event], new: Sequence[Event], shown: Sequence[Event]
) -> tuple[Item, ...]:
    types = {e.type for e in shown}
    if reopened:
        text = (
            "Closed before, open again now: a reboot or firmware update may have reset the "
            "router's port forwarding. Check the router now."
        )
    elif new:
        critical = any(e.severity is Severity.CRITICAL for e in new)
        text = "Reachable from the internet and not in expected_open" + (
            "; web and admin ports are critical." if critical else "."
        )
        text += (
            " Close them, or add them to expected_open if they are meant to be open."
            if len(_ports(new)) > 1
            else " Close it, or add it to expected_open if it is meant to be open."
        )
    elif E.TARGET_DOWN in types:
        text = "The target stopped answering; its last known port states are kept."
    elif E.ANOMALY_ALL_OPEN in types:
        text = "Port states are kept until the target answers normally again."
    elif E.ADVISORY_MATCHED in types:
        text = (
            "A service's fingerprint matches a known firmware problem ([[advisories]]): "
            "update the router's firmware."
        )
        urls = sorted({str(e.details["url"]) for e in shown if e.details.get("url")})
        if urls:
            text += " See " + ", ".join(clean(u, SUMMARY_LIMIT) for u in urls[:3]) + "."
    elif E.PORT_FLAPPING in types:
        exposed = any(e.type is E.PORT_FLAPPING and e.severity is Severity.CRITICAL for e in shown)
        text = (
            "It keeps opening and closing (a UPnP mapping, a service in a crash loop). Its "
            "changes are recorded, not sent, until it is stable; one message then says how "
            "it ended."
        )
        if exposed:
            text = "Unexpected and open half the time: treat it as exposed. " + text
    elif E.EXPECTED_PORT_CLOSED in types:
        text = "A port in expected_open stopped answering: a forwarded service may be down."
    elif E.REBOOT_SUSPECTED in types:
        text = "Ports that open again after it will be reported."
    else:
        return ()
    return (Item((Span(text),)),)


def _finding_items(events: Sequence[Event], ref: dt.datetime | None) -> tuple[Item, ...]:
    """Findings grouped by what they share (when closed, fingerprint): one line per group."""

    def key(e: Event) -> tuple[Any, ...]:
        prev = _time(e.details.get("previous_resolved_at"))
        return (
            -e.severity,
            short_time(prev, ref) if prev else None,
            _int(e.details.get("reopen_count")),
            bool(e.details.get("hot")),
            _fingerprint(e.details.get("fingerprint")),
            vantages_text(e.details.get("seen_from")),
        )

    items = []
    for (_, closed, count, hot, fp, where), group in _groups(events, key):
        spans = [Span(_ports_label(group)), *_ids_spans(group)]
        if closed:
            spans.append(Span(f" — closed since {closed}"))
        if count and count > 1:
            spans.append(Span(f", reopened {count} times"))
        if group[0].type is E.FINDING_OPENED:
            spans.append(
                Span(f" — {group[0].severity.label}" + (", web/admin port" if hot else ""))
            )
        if where:
            spans.append(Span(f" — {where}"))
        if fp:
            spans += [Span(" — "), Span(fp, Style.CODE)]
        items.append(Item(tuple(spans), _ports(group)))
    return tuple(items)


def vantages_text(seen_from: object) -> str | None:
    """Where a finding's port is seen open from, when several vantages looked (fleet mode):
    `confirmed from fra and nyc`, `open from fra only; filtered from nyc`, `open from fra`
    (the others not heard from yet). None without `seen_from` (a single vantage)."""
    if not isinstance(seen_from, Mapping):
        return None

    def names(state: str) -> list[str]:
        found = seen_from.get(state)
        if not isinstance(found, list | tuple):
            return []
        return [clean(str(n), NAME_LIMIT) for n in found][:8]

    opened = names("open")
    if not opened:
        return None
    elsewhere = [(state, names(state)) for state in ("closed", "filtered") if names(state)]
    if not elsewhere:
        return f"{'confirmed' if len(opened) > 1 else 'open'} from {_and(opened)}"
    rest = "; ".join(f"{state} from {_and(found)}" for state, found in elsewhere)
    return f"open from {_and(opened)} only; {rest}"


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _notables(reopened: Sequence[Event]) -> list[tuple[dt.datetime, EventType, str]]:
    """The happenings between each reopened port's close and now (from the reopen details)."""
    seen: dict[tuple[dt.datetime, EventType, str], None] = {}
    for e in reopened:
        since = e.details.get("since")
        for n in since if isinstance(since, list) else ():
            if not isinstance(n, Mapping):
                continue
            at, kind = _time(n.get("at")), n.get("type")
            if at is not None and isinstance(kind, str) and kind in _NOTABLE_LABELS:
                seen[(_second(at), EventType(kind), clean(n.get("detail") or ""))] = None
    return sorted(seen, key=lambda n: (n[0], _TYPE_ORDER[n[1]]))


def _context_items(
    events: Sequence[Event],
    notables: Sequence[tuple[dt.datetime, EventType, str]],
    ref: dt.datetime | None,
) -> tuple[Item, ...]:
    rows: list[tuple[dt.datetime, int, Item]] = []
    covered = {(_second(e.observed_at), e.type) for e in events}
    for at, kind, detail in notables:
        if (at, kind) not in covered:  # the event itself says more
            text = f"{short_time(at, ref)} {_NOTABLE_LABELS[kind]}" + (
                f": {detail}" if detail else ""
            )
            rows.append((at, _TYPE_ORDER[kind], Item((Span(text),))))
    fp_events = [e for e in events if e.type is E.FINGERPRINT_CHANGED and e.port is not None]

    def fp_key(e: Event) -> tuple[Any, ...]:
        changed = e.details.get("changed")
        what = ", ".join(clean(c, 40) for c in changed) if isinstance(changed, list) else ""
        return (e.observed_at, what, _fingerprint(e.details.get("after")))

    for (at, what, after), group in _groups(fp_events, fp_key):
        spans = [Span(f"{short_time(at, ref)} {_ports_label(group)} service changed")]
        spans += [Span(f": {what}")] if what else []
        spans += [Span(", now "), Span(after, Style.CODE)] if after else []
        rows.append((at, _TYPE_ORDER[E.FINGERPRINT_CHANGED], Item(tuple(spans), _ports(group))))
    taken = {id(e) for e in fp_events}
    for e in events:
        if id(e) not in taken:
            text = f"{short_time(e.observed_at, ref)} {clean(e.summary, SUMMARY_LIMIT)}"
            rows.append((e.observed_at, _TYPE_ORDER[e.type], Item((Span(text),))))
    rows.sort(key=lambda r: (r[0], r[1]))
    items = tuple(r[2] for r in rows)
    if len(items) > DETAIL_LIMIT:  # the latest happenings explain the most
        left_out = Item((Span(f"{ELLIPSIS} {len(items) - DETAIL_LIMIT} earlier left out"),))
        return (left_out, *items[-DETAIL_LIMIT:])
    return items


def _other_items(events: Sequence[Event]) -> tuple[Item, ...]:
    """Port events grouped by kind (and reason or state); the rest one line each."""
    rows: list[tuple[tuple[int, int, int], Item]] = []
    grouped = [e for e in events if e.port is not None and e.type in _PORT_WORDING]

    def key(e: Event) -> tuple[Any, ...]:
        detail = e.details.get("reason") or e.details.get("state")
        return (-e.severity, _TYPE_ORDER[e.type], clean(detail or "", 20))

    for (sev, order, _), group in _groups(grouped, key):
        item = Item(tuple(_PORT_WORDING[group[0].type](group)), _ports(group))
        rows.append(((sev, order, group[0].port or 0), item))
    taken = {id(e) for e in grouped}
    for e in events:
        if id(e) not in taken:
            text = clean(e.summary, SUMMARY_LIMIT) or e.type.value
            rows.append(((-e.severity, _TYPE_ORDER[e.type], 0), Item((Span(text),))))
    rows.sort(key=lambda r: r[0])
    return tuple(r[1] for r in rows)


def _resolved_spans(group: Sequence[Event]) -> list[Span]:
    how = _RESOLVED_HOW.get(str(group[0].details.get("reason")), "no longer open")
    spans = [Span(f"{_ports_label(group)} {how} — ")]
    if len(group) == 1:
        open_for = _int(group[0].details.get("open_for_s"))
        after = f" after {format_duration(open_for)}" if open_for is not None else ""
        return [*spans, Span(f"finding{_ids_text(group)} resolved{after}")]
    return [*spans, Span(f"{len(group)} findings{_ids_text(group)} resolved")]


def _state_spans(prefix: str, default: str) -> Callable[[Sequence[Event]], list[Span]]:
    def spans(group: Sequence[Event]) -> list[Span]:
        state = str(group[0].details.get("state") or default)
        return [Span(f"{prefix}{_ports_label(group)} {clean(state, 20)}")]

    return spans


_PORT_WORDING: dict[EventType, Callable[[Sequence[Event]], list[Span]]] = {
    E.FINDING_RESOLVED: _resolved_spans,
    E.EXPECTED_PORT_CLOSED: _state_spans("expected ", "closed"),
    E.PORT_OPENED: _state_spans("", "open"),
    E.PORT_CLOSED: _state_spans("", "closed"),
}


# --------------------------------------------------------------------- reminders and tests


def _reminder(message: Message) -> Digest:
    events = [e for e in message.events if e.port is not None]
    label, n = _label(message), message.reminder_count
    ref = max((e.observed_at for e in events), default=None)

    def key(e: Event) -> tuple[Any, ...]:
        rank = (e.type is not E.FINDING_REOPENED, -e.severity)  # reopened first
        return (rank, short_time(e.observed_at, None), _fingerprint(e.details.get("fingerprint")))

    items = []
    for (_, since, fp), group in _groups(events, key):
        spans = [Span(_ports_label(group)), *_ids_spans(group), Span(f" — open since {since}")]
        if group[0].type is E.FINDING_REOPENED:
            spans.append(Span(", reopened"))
        if fp:
            spans += [Span(" — "), Span(fp, Style.CODE)]
        items.append(Item(tuple(spans), _ports(group)))
    ids = [e.finding_id for e in events if e.finding_id is not None]
    example = f"exposuremon ack {ids[0] if ids else 'FINDING_ID'} --until 7d --reason '…'"
    intro = Item(
        (
            Span(
                "Still open and not acknowledged. Close the ports, or accept one for a while: "
                if len(_ports(events)) > 1
                else "Still open and not acknowledged. Close the port, or accept it for a while: "
            ),
            Span(example, Style.CODE),
        )
    )
    sev = f" — {message.severity.label}" if message.severity >= Severity.WARNING else ""
    what = f"{_count_ports(events)} still open, unacknowledged" if events else "still open"
    return Digest(
        kind=message.kind,
        severity=message.severity,
        tone=_tone(message.severity, message.events),
        title=f"{label}: {what} — reminder {n}{sev}",
        label=label,
        intro=(intro,),
        sections=(Section("Still open", tuple(items)),) if items else (),
        footer=f"exposuremon · reminder {n}",
        link=status_link(message.public_url, message.target),
        when=ref,
    )


TEST_TITLE = "exposuremon test message — no port is exposed; this checks the channel works"


def _test(message: Message) -> Digest:
    intro = [
        Item((Span("If you can read this, exposuremon can notify this channel. Nothing to do."),))
    ]
    sections = []
    if message.events:  # example events (not real ones) show what a real message looks like
        intro.append(Item((Span(f"Example target (not real): {_label(message)}"),)))
        real = _events(dataclasses.replace(message, kind=MessageKind.EVENTS))
        items = tuple(i for s in real.sections for i in s.items)
        sections.append(Section("Example lines (not real findings)", items))
    return Digest(
        kind=message.kind,
        severity=Severity.INFO,
        tone=Tone.TEST,
        title=TEST_TITLE,
        label="exposuremon test message",
        intro=tuple(intro),
        sections=tuple(sections),
        footer="exposuremon · test message",
        link=status_link(message.public_url, ""),  # no target of its own: the page itself
        when=max((e.observed_at for e in message.events), default=None),
    )


# ----------------------------------------------------------------------------------- helpers


def _label(message: Message) -> str:
    name = clean(message.target, NAME_LIMIT) or "(unnamed target)"
    address = clean(message.address, NAME_LIMIT) if message.address else ""
    return f"{name} ({address})" if address and address != name else name


def _tone(severity: Severity, events: Sequence[Event]) -> Tone:
    if severity is Severity.CRITICAL:
        return Tone.CRITICAL
    if severity is Severity.WARNING:
        return Tone.WARNING
    if events and all(e.type in _GOOD_TYPES for e in events):
        return Tone.GOOD
    return Tone.INFO


def _groups(
    events: Sequence[Event], key: Callable[[Event], tuple[Any, ...]]
) -> list[tuple[tuple[Any, ...], list[Event]]]:
    """Events grouped by `key`; groups by the key's first element (a rank), then first port."""
    groups: dict[tuple[Any, ...], list[Event]] = {}
    for e in sorted(events, key=lambda e: e.port or 0):
        groups.setdefault(key(e), []).append(e)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], kv[1][0].port or 0))


def _ports(events: Iterable[Event]) -> frozenset[int]:
    return frozenset(e.port for e in events if e.port is not None)


def _ports_label(events: Sequence[Event]) -> str:
    ports = _ports(events)
    if len(ports) == 1:
        return f"port {next(iter(ports))}/tcp"
    return f"ports {ports_text(ports)} ({len(ports)})"


def _count_ports(events: Sequence[Event]) -> str:
    ports = _ports(events)
    return f"port {next(iter(ports))}/tcp" if len(ports) == 1 else f"{len(ports)} ports"


def _n(events: Sequence[Event], noun: str) -> str:
    count = len(_ports(events))
    return f"{count} {noun}{'s' if count != 1 else ''} open"


def _ids_text(events: Sequence[Event]) -> str:
    ids = sorted({e.finding_id for e in events if e.finding_id is not None})
    if not ids:
        return ""
    parts = ["#" + p for p in format_ports(ids).split(",")]
    text = ", ".join(parts)
    return " " + (text if len(text) <= 60 else ", ".join(parts[:4]) + ", " + ELLIPSIS)


def _ids_spans(events: Sequence[Event]) -> list[Span]:
    ids = _ids_text(events)
    if not ids:
        return []
    return [Span(f" — finding{'s' if ',' in ids or '-' in ids else ''}{ids}")]


def _fingerprint(value: object) -> str | None:
    """A fingerprint's one-line description from event details (a string or a dict)."""
    if isinstance(value, str):
        return clean(value) or None
    if isinstance(value, Mapping):

        def field(key: str) -> str | None:
            v = value.get(key)
            return clean(v) if isinstance(v, str) else None

        fp = Fingerprint(
            banner=field("banner"),
            tls_subject=field("tls_subject"),
            http_server=field("http_server"),
            http_title=field("http_title"),
        )
        return clean(fp.describe()) or None
    return None


def _time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.utcoffset() is not None else when.replace(tzinfo=dt.UTC)


def _second(when: dt.datetime) -> dt.datetime:
    """Times from details carry milliseconds, event times may not: compare to the second."""
    return when.astimezone(dt.UTC).replace(microsecond=0)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
