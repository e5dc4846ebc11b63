"""Flap damping: a port that keeps toggling pages once, not on every cycle (issue 18, item 6).

Pure: no I/O and no clock reads. It runs after `detect.evaluate` on the evaluation detection
made, the way Nagios's flap detection and Alertmanager's grouping sit after their checks:

- A **change** is a port's record going from open to not open (closed or filtered) or back,
  on a scan that applied new evidence to the port. A port first seen open on a target that was
  scanned before counts as a change too (it was closed before: the UPnP mapping that appears).
  Ignored ports are left alone (detection raises nothing for them).
- `threshold` changes within `window` make the port **flapping**: one `port_flapping` event,
  critical when the port is unexpected (a port open half the time is exposed), else warning.
- While flapping, every event of that port (opened, closed, finding reopened or resolved,
  fingerprint changed) is stored as always but marked `held` in its details: the pipeline
  sends it to no channel. Events of other ports, and target-level ones, are not touched: a
  real reopen elsewhere pages at once.
- A scan of the port without a change counts towards `settle`; a change starts the count
  again. The episode ends when the port has been stable for `settle` scans and fewer than
  `threshold` of its changes are left in `window` (the hysteresis that keeps a port toggling
  slower than `settle` scans in one episode); then one `port_flap_ended` goes out with the
  final state (and the finding's): at the episode's severity if the port ended open with an
  active finding (exposed), else info; its channels are chosen by the episode's severity
  (`notify_as`), so every channel told of the flap hears its end.
- The memory is `TargetState.flaps` (stored with the target). An entry whose changes all left
  the window is dropped at the port's next scan; a port that changes now and then keeps at
  most `threshold` times, and a quiet port none.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from exposuremon import detect
from exposuremon.model import (
    NOTIFY_AS,
    Event,
    EventType,
    FindingState,
    Observation,
    Observed,
    PortFlap,
    PortRecord,
    Severity,
    TargetState,
)
from exposuremon.units import rfc3339

HELD = "held"  # the details key marking an event recorded but not notified, and why
FLAPPING = "flapping"


@dataclasses.dataclass(frozen=True, slots=True)
class FlapPolicy:
    """`[scan] flap_threshold`, `flap_window` (seconds) and `flap_settle`."""

    threshold: int = 4
    window: float = 600.0
    settle: int = 5

    def __post_init__(self) -> None:
        # One change is never flapping: at least two are needed to call it that.
        if self.threshold < 2:
            raise ValueError(f"flap_threshold: must be at least 2, got {self.threshold}")
        if self.window <= 0:
            raise ValueError(f"flap_window: must be positive, got {self.window}")
        if self.settle < 1:
            raise ValueError(f"flap_settle: must be at least 1, got {self.settle}")


def is_held(event: Event) -> bool:
    """True for an event that is recorded but goes to no notification channel."""
    return bool(event.details.get(HELD))


def flapping_ports(state: TargetState) -> frozenset[int]:
    """The ports of a target in a flapping episode now."""
    return frozenset(p for p, f in state.flaps.items() if f.since is not None)


def damp(
    prev: TargetState,
    obs: Observation,
    ev: detect.Evaluation,
    target: detect.TargetPolicy,
    policy: FlapPolicy,
    now: dt.datetime,
) -> detect.Evaluation:
    """`ev` (detection's evaluation of `obs` against `prev`) with flap damping applied."""
    state = ev.state
    flaps = dict(state.flaps)
    events = list(ev.events)
    for port in sorted(set(flaps) | set(state.ports)):
        rec = state.ports.get(port)
        if rec is None or port in target.ignore:
            flaps.pop(port, None)  # no record (or ignored now): nothing to damp
            continue
        old = prev.ports.get(port)
        if not _scanned(obs, port, old, rec):
            continue  # no new evidence on this port: no round
        changed = _changed(prev, old, rec)
        flap = flaps.get(port, PortFlap())
        flap, extra = _step(flap, port, rec, changed, state, target, policy, now)
        if flap.since is not None or extra:
            events = [_hold(e) if e.port == port else e for e in events]
        events.extend(extra)
        if flap.since is None and not flap.changes:
            flaps.pop(port, None)
        else:
            flaps[port] = flap
    if flaps == state.flaps and len(events) == len(ev.events) and events == list(ev.events):
        return ev
    return dataclasses.replace(
        ev, state=dataclasses.replace(state, flaps=flaps), events=tuple(events)
    )


def _is_open(state: Observed) -> bool:
    return state is Observed.OPEN


def _scanned(obs: Observation, port: int, old: PortRecord | None, rec: PortRecord) -> bool:
    """Whether this evaluation applied new evidence to the port (one round of it)."""
    if port not in obs.states:
        return False
    return old is None or (rec is not old and rec.observed_at != old.observed_at)


def _changed(prev: TargetState, old: PortRecord | None, rec: PortRecord) -> bool:
    if old is None:
        # A record made now: a port seen open on a target scanned before was closed before.
        return _is_open(rec.state) and prev.last_observed is not None
    return _is_open(old.state) != _is_open(rec.state)


def _step(
    flap: PortFlap,
    port: int,
    rec: PortRecord,
    changed: bool,
    state: TargetState,
    target: detect.TargetPolicy,
    policy: FlapPolicy,
    now: dt.datetime,
) -> tuple[PortFlap, list[Event]]:
    """One scan of the port: the flap memory after it, and the events it raises."""
    window = dt.timedelta(seconds=policy.window)
    recent = tuple(t for t in flap.changes if now - t <= window)
    if changed:
        recent = (*recent, now)[-policy.threshold :]
        if flap.since is not None:
            stepped = dataclasses.replace(
                flap, changes=recent, stable=0, episode_changes=flap.episode_changes + 1
            )
            return stepped, []
        if len(recent) < policy.threshold:
            return dataclasses.replace(flap, changes=recent), []
        unexpected = port not in target.expected_open
        severity = Severity.CRITICAL if unexpected else Severity.WARNING
        started = PortFlap(
            changes=recent, since=now, stable=0, episode_changes=len(recent), severity=severity
        )
        return started, [_flapping_event(port, rec, started, unexpected, state, policy, now)]
    if flap.since is None:
        return dataclasses.replace(flap, changes=recent), []
    stable = flap.stable + 1
    if stable < policy.settle or len(recent) >= policy.threshold:
        # Not yet: too few stable scans, or the window still holds a flapping port's changes
        # (a port that toggles every 6 s must not end its episode in every 6 s of quiet
        # between two toggles when the scans come every second).
        return dataclasses.replace(flap, changes=recent, stable=stable), []
    ended = _ended_event(port, rec, flap, state, stable, now)
    return PortFlap(changes=()), [ended]


def _flapping_event(
    port: int,
    rec: PortRecord,
    flap: PortFlap,
    unexpected: bool,
    state: TargetState,
    policy: FlapPolicy,
    now: dt.datetime,
) -> Event:
    first = flap.changes[0]
    span = _span((now - first).total_seconds())
    exposed = ", unexpected: exposed while open" if unexpected else ""
    summary = (
        f"port {port}/tcp flapping: {len(flap.changes)} changes in {span}{exposed}; "
        f"its changes are recorded, not notified, until stable for {policy.settle} scans"
    )
    details: dict[str, Any] = {
        "state": rec.state.value,
        "changes": len(flap.changes),
        "first_change": _iso(first),
        "window_s": policy.window,
        "threshold": policy.threshold,
        "settle": policy.settle,
        "expected": not unexpected,
    }
    return _event(EventType.PORT_FLAPPING, flap.severity, state, port, now, summary, details)


def _ended_event(
    port: int, rec: PortRecord, flap: PortFlap, state: TargetState, stable: int, now: dt.datetime
) -> Event:
    since = flap.since or now
    finding = _finding_text(state, port)
    tail = f" (finding {finding})" if finding else ""
    summary = (
        f"port {port}/tcp stopped flapping: {rec.state.value}{tail} after "
        f"{flap.episode_changes} changes in {_span((now - since).total_seconds())}"
    )
    details: dict[str, Any] = {
        "state": rec.state.value,
        "finding": finding,
        "flapping_since": _iso(since),
        "changes": flap.episode_changes,
        "stable_scans": stable,
        # Every channel told of the flap hears its end, whatever that end's own severity.
        NOTIFY_AS: Severity(flap.severity).label,
    }
    # Open with an active finding: still exposed, and the episode's pages were held.
    exposed = rec.state is Observed.OPEN and finding in ("open", "acked")
    severity = flap.severity if exposed else Severity.INFO
    return _event(EventType.PORT_FLAP_ENDED, severity, state, port, now, summary, details)


def _finding_text(state: TargetState, port: int) -> str | None:
    """`open`/`acked` for an active finding, `resolved` for a kept resolved one, else None."""
    active = state.findings.get(port)
    if active is not None:
        return FindingState(active.state).value
    return FindingState.RESOLVED.value if port in state.resolved else None


def _event(
    type_: EventType,
    severity: Severity,
    state: TargetState,
    port: int,
    now: dt.datetime,
    summary: str,
    details: Mapping[str, Any],
) -> Event:
    return Event(
        type=type_,
        severity=severity,
        target=state.name,
        observed_at=now,
        summary=summary,
        port=port,
        details=details,
    )


def _hold(event: Event) -> Event:
    if is_held(event) or event.type in (EventType.PORT_FLAPPING, EventType.PORT_FLAP_ENDED):
        return event
    return dataclasses.replace(event, details={**event.details, HELD: FLAPPING})


def _span(seconds: float) -> str:
    """`45s`, `12m`, `3h`: a short duration for summaries."""
    if seconds < 120:
        return f"{round(seconds)}s"
    if seconds < 7200:
        return f"{round(seconds / 60)}m"
    return f"{round(seconds / 3600)}h"


def _iso(when: dt.datetime) -> str:
    return rfc3339(when, "milliseconds")
