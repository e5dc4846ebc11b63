"""Firmware advisories: known-bad firmware recognised by its fingerprints (issue 18, item 4).

Pure: no I/O and no clock reads. It runs after detection (and flap damping) on the state
detection made. `[[advisories]]` rules (config) name regexes over fingerprint fields
(`banner`, `http_server`, `http_title`, `tls_subject`, `tls_issuer`) and optionally a port
set; a rule matches a port's fingerprint when every field it names is present and its regex
finds a match in it (`re.search`).

- A rule matches a target when the last known fingerprint of any of its ports (in the rule's
  port set, if it has one) matches. The last known one: a port that closes keeps its
  fingerprint, as for `fingerprint_changed`; the firmware did not change because a port
  forward went away. What ends a match is a fingerprint that no longer matches (the firmware
  update), seen on a scan.
- A rule that starts matching raises one `advisory_matched` (the rule's severity) with the
  port and the fingerprint that matched; nothing more while it keeps matching (whatever port
  does), then one `advisory_cleared` (info, its channels chosen by the match's severity:
  `notify_as`), so every channel told of the match hears that it is gone. Matches are kept
  in `TargetState.advisories` (stored with the target), so a restart raises nothing again.
- A rule removed from the config drops its match silently (nothing was fixed on the device).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from exposuremon import detect
from exposuremon.config import AdvisoryConfig
from exposuremon.model import (
    NOTIFY_AS,
    AdvisoryMatch,
    Event,
    EventType,
    Fingerprint,
    Severity,
    TargetState,
)
from exposuremon.units import rfc3339


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One advisory rule, its patterns compiled."""

    name: str
    severity: Severity
    match: Mapping[str, re.Pattern[str]]
    ports: frozenset[int] | None
    text: str
    url: str | None = None

    @classmethod
    def from_config(cls, rule: AdvisoryConfig) -> Rule:
        """The rule of an `[[advisories]]` table (its patterns were checked at load)."""
        return cls(rule.name, rule.severity, rule.patterns(), rule.ports, rule.text, rule.url)

    def matched(self, fp: Fingerprint) -> dict[str, str] | None:
        """The fields of `fp` this rule matched (field -> value), or None if it does not match."""
        found = {}
        for field, pattern in self.match.items():
            value = getattr(fp, field)
            if not isinstance(value, str) or pattern.search(value) is None:
                return None
            found[field] = value
        return found


def rules_of(config: Iterable[AdvisoryConfig]) -> tuple[Rule, ...]:
    """The compiled rules of the config's `[[advisories]]`."""
    return tuple(Rule.from_config(rule) for rule in config)


def first_match(rule: Rule, state: TargetState) -> tuple[int, Fingerprint, dict[str, str]] | None:
    """The lowest port whose last known fingerprint `rule` matches, that fingerprint and fields."""
    for port in sorted(state.ports):
        if rule.ports is not None and port not in rule.ports:
            continue
        fp = state.ports[port].fingerprint
        if fp is None:
            continue
        fields = rule.matched(fp)
        if fields is not None:
            return port, fp, fields
    return None


def check(ev: detect.Evaluation, rules: Sequence[Rule], now: dt.datetime) -> detect.Evaluation:
    """`ev` with the advisories of its state brought up to date, and their events added."""
    state = ev.state
    if not rules and not state.advisories:
        return ev
    current = dict(state.advisories)
    events: list[Event] = []
    names = {rule.name for rule in rules}
    for name in [n for n in current if n not in names]:
        del current[name]  # the rule is gone from the config: nothing to clear on the device
    for rule in rules:
        hit = first_match(rule, state)
        had = current.get(rule.name)
        if hit is not None and had is None:
            port, fp, fields = hit
            current[rule.name] = AdvisoryMatch(
                since=now, port=port, severity=rule.severity, fingerprint=fp
            )
            events.append(_matched(state, rule, port, fp, fields, now))
        elif hit is None and had is not None:
            del current[rule.name]
            events.append(_cleared(state, rule, had, now))
    if current == state.advisories:
        return ev
    return dataclasses.replace(
        ev,
        state=dataclasses.replace(state, advisories=current),
        events=(*ev.events, *events),
    )


def _matched(
    state: TargetState,
    rule: Rule,
    port: int,
    fp: Fingerprint,
    fields: Mapping[str, str],
    now: dt.datetime,
) -> Event:
    seen = "; ".join(f"{field}: {value}" for field, value in fields.items())
    summary = f"advisory {rule.name}: {rule.text} (port {port}/tcp, {seen})"
    details: dict[str, Any] = {
        "rule": rule.name,
        "text": rule.text,
        "url": rule.url,
        "port": port,
        "matched": dict(fields),
        "fingerprint": _fp_json(fp),
    }
    return _event(EventType.ADVISORY_MATCHED, rule.severity, state, now, summary, details)


def _cleared(state: TargetState, rule: Rule, had: AdvisoryMatch, now: dt.datetime) -> Event:
    rec = state.ports.get(had.port)
    fp = rec.fingerprint if rec is not None else None
    now_text = f": {fp.describe()}" if fp is not None and fp.describe() else ""
    summary = f"advisory {rule.name} no longer matches (port {had.port}/tcp{now_text})"
    details: dict[str, Any] = {
        "rule": rule.name,
        "text": rule.text,
        "url": rule.url,
        "port": had.port,
        "matched_since": rfc3339(had.since, "milliseconds"),
        "matched_fingerprint": _fp_json(had.fingerprint),
        "fingerprint": None if fp is None else _fp_json(fp),
        NOTIFY_AS: Severity(had.severity).label,  # to every channel told of the match
    }
    return _event(EventType.ADVISORY_CLEARED, Severity.INFO, state, now, summary, details)


def _event(
    type_: EventType,
    severity: Severity,
    state: TargetState,
    now: dt.datetime,
    summary: str,
    details: Mapping[str, Any],
) -> Event:
    # Target-level (no port): an advisory is about the device, and flap damping of one port
    # must not hold it back.
    return Event(
        type=type_,
        severity=severity,
        target=state.name,
        observed_at=now,
        summary=summary,
        details=details,
    )


def _fp_json(fp: Fingerprint) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(fp):
        value = getattr(fp, field.name)
        if isinstance(value, dt.datetime):
            value = rfc3339(value, "milliseconds")
        if value is not None:
            out[field.name] = value
    return out
