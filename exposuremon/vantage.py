"""Vantage health: is this vantage's silence the targets' news, or our own outage?

Pure: no I/O and no clock reads (times are monotonic seconds passed in). One `VantageHealth`
judges the results of one node (its vantage's share of the targets, in a fleet); the pipeline
asks it, for every result, whether to apply it now, hold it, or drop it (pipeline.py).

Why hold: when the scanning host loses its uplink, every target goes silent one sentinel scan
after the other. Applied one by one, each silence downs its target, and the answers after the
uplink returns bring each "back up, reboot suspected": hundreds of pages for one outage that
is ours. So a silent result of a target that was answering is not applied at once; it waits
until the other targets tell which it is:

- **Held**: a silence (no SYN-ACK, no RST) of an answering target, when the vantage has at
  least `min_targets` answering targets (with fewer, a silence proves nothing either way and
  a real reboot of one of two routers must stay a reboot: it is applied at once). While held,
  the target's later results queue behind it, in order: detection ignores a silence older
  than the newest answer applied (detect.py, "Evidence carries its own time"), so an answer
  let past a held silence would swallow a short reboot.
- **Released** (applied, in order) when `min(release_answers, answering - 1)` answers of other
  targets came after it (the vantage hears the world: the silence is the target's), or when it
  has been held for `round` seconds (one sentinel round: everybody was scanned meanwhile).
- **Degraded**: when, within one round, the targets that were answering and went silent reach
  `silence_share` of those answering (those still answering plus those silent in the round).
  The vantage enters the degraded state (one `Change`), every held silence is dropped, and
  from then on every silent result is dropped: no target changes on our outage. Answers are
  applied (they are true, and change nothing of a target that was up).
- **Recovered**: when fewer than `silence_share` of the targets answering at the degradation
  are silent on their latest result (one `Change`). They were never marked down, so their
  answers raise nothing. The round starts afresh.

Every result counts, whatever its kind; a target is counted once (its latest result).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Generic, TypeVar

from exposuremon.model import Event, EventType, Severity, VantageStatus
from exposuremon.units import rfc3339

T = TypeVar("T")

RELEASE_ANSWERS = 5  # answers of other targets after a held silence that show it is the target's


@dataclasses.dataclass(frozen=True, slots=True)
class HealthParams:
    """How a vantage's health is judged (`[fleet]` vantage_silence_share, vantage_min_targets)."""

    silence_share: float = 0.5
    min_targets: int = 3
    round: float = 45.0  # seconds: one sentinel round (the interval with room for its jitter)
    release_answers: int = RELEASE_ANSWERS


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """The vantage became degraded (or recovered): `silent` of `answering` targets silent."""

    degraded: bool
    silent: int
    answering: int
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What to do now: results to apply (in this order), results to drop, a health change."""

    apply: tuple[tuple[str, T], ...] = ()
    drop: tuple[tuple[str, T], ...] = ()
    change: Change | None = None


@dataclasses.dataclass(slots=True)
class _Held(Generic[T]):
    since: float
    answers_at: int  # the vantage's answer count when the silence was held
    queue: collections.deque[tuple[T, bool]]  # (result, silent), the held silence first


class VantageHealth(Generic[T]):
    """The health of one vantage, judged from its results as they come (see module docstring)."""

    def __init__(self, params: HealthParams, answering: Iterable[str] = ()) -> None:
        if params.min_targets < 2:
            raise ValueError("min_targets: must be at least 2")
        self.params = params
        self.answering: set[str] = set(answering)  # latest applied result answered (or stored UP)
        self._silences: dict[str, float] = {}  # answering targets gone silent in the round: when
        self._held: dict[str, _Held[T]] = {}
        self._answers = 0  # answers offered so far (their count orders holds and answers)
        self.degraded = False
        self._baseline: frozenset[str] = frozenset()  # answering when degraded
        self._silent: set[str] = set()  # of the baseline, silent on their latest result

    # -- queries ---------------------------------------------------------------------------

    @property
    def held(self) -> frozenset[str]:
        """Targets with a silence held."""
        return frozenset(self._held)

    def counts(self) -> tuple[int, int]:
        """(silent, answering) as the degradation test sees them now."""
        if self.degraded:
            return len(self._silent), len(self._baseline)
        return len(self._silences), self._judged()

    def _judged(self) -> int:
        """Targets answering, or answering until their silence in this round: those still
        answering plus the silent ones already recorded (no set union: this runs per result
        and the silences of a round are few but in an outage)."""
        answering = self.answering
        return len(answering) + sum(1 for name in self._silences if name not in answering)

    # -- inputs ----------------------------------------------------------------------------

    def seed(self, answering: Iterable[str]) -> None:
        """Targets known to answer (their stored state is up) before any result of this run."""
        self.answering.update(answering)

    def resume_degraded(self) -> None:
        """Start degraded (the store says so, from before a restart): silent results are
        dropped until the targets answering now answer again, as after a degradation."""
        self.degraded = True
        self._baseline = frozenset(self.answering)
        self._silent = set()
        self._held.clear()
        self._silences.clear()

    def forget(self, names: Iterable[str]) -> Outcome[T]:
        """Targets no longer judged here (removed, or another node's now): their held results
        are dropped."""
        dropped: list[tuple[str, T]] = []
        for name in names:
            self.answering.discard(name)
            self._silences.pop(name, None)
            self._silent.discard(name)
            held = self._held.pop(name, None)
            if held is not None:
                dropped.extend((name, item) for item, _ in held.queue)
        return Outcome(drop=tuple(dropped))

    def offer(self, target: str, item: T, silent: bool, now: float) -> Outcome[T]:
        """One result of `target` (silent: no SYN-ACK, no RST): what to apply or drop now."""
        out = self._tick(now)
        apply, drop = list(out.apply), list(out.drop)
        change = out.change
        held = self._held.get(target)
        if held is not None:
            held.queue.append((item, silent))  # behind its held silence, in order
        elif self.degraded:
            change = self._offer_degraded(target, item, silent, now, apply, drop) or change
        elif silent:
            change = self._offer_silent(target, item, now, apply, drop) or change
        else:
            self._answered(target)
            apply.append((target, item))
            self._release_answered(apply)
        return Outcome(tuple(apply), tuple(drop), change)

    def tick(self, now: float) -> Outcome[T]:
        """Time passed: release silences held for a round, forget silences older than one."""
        return self._tick(now)

    # -- rules -----------------------------------------------------------------------------

    def _offer_degraded(
        self,
        target: str,
        item: T,
        silent: bool,
        now: float,
        apply: list[tuple[str, T]],
        drop: list[tuple[str, T]],
    ) -> Change | None:
        if silent:
            drop.append((target, item))
            if target in self._baseline:
                self._silent.add(target)
            return None
        apply.append((target, item))
        self.answering.add(target)
        self._silent.discard(target)
        if len(self._silent) < self.params.silence_share * len(self._baseline):
            return self._recover(now)
        return None

    def _offer_silent(
        self,
        target: str,
        item: T,
        now: float,
        apply: list[tuple[str, T]],
        drop: list[tuple[str, T]],
    ) -> Change | None:
        if target not in self.answering or self._judged() < self.params.min_targets:
            # Down already (or never answered), or too few targets to judge: the target's news.
            self.answering.discard(target)
            apply.append((target, item))
            return None
        self._silences[target] = now
        self._held[target] = _Held(now, self._answers, collections.deque([(item, True)]))
        silent, answering = self.counts()
        if silent >= self.params.silence_share * answering:
            return self._degrade(now, drop, apply)
        return None

    def _answered(self, target: str) -> None:
        self._answers += 1
        self.answering.add(target)
        self._silences.pop(target, None)

    def _release_answered(self, apply: list[tuple[str, T]]) -> None:
        """Release the holds that enough answers of other targets came after."""
        if not self._held:
            return
        need = min(self.params.release_answers, self._judged() - 1)
        for name in [n for n, h in self._held.items() if self._answers - h.answers_at >= need]:
            self._release(name, apply)

    def _release(self, name: str, apply: list[tuple[str, T]]) -> None:
        """Apply a held silence and what queued behind it: the silence was the target's."""
        held = self._held.pop(name)
        apply.extend((name, item) for item, _ in held.queue)
        _, last_silent = held.queue[-1]
        if last_silent:
            self.answering.discard(name)  # detection downs it: it answers no more
        else:
            self._answered(name)

    def _degrade(self, now: float, drop: list[tuple[str, T]], apply: list[tuple[str, T]]) -> Change:
        silent, answering = self.counts()
        self.degraded = True
        self._baseline = frozenset(self.answering | self._silences.keys())
        self._silent = set(self._silences)
        for name, held in self._held.items():
            for item, was_silent in held.queue:
                (drop if was_silent else apply).append((name, item))
            _, last_silent = held.queue[-1]
            if not last_silent:
                self._silent.discard(name)
        self._held.clear()
        self._silences.clear()
        return Change(True, silent, answering, now)

    def _recover(self, now: float) -> Change:
        silent, answering = len(self._silent), len(self._baseline)
        self.degraded = False
        # Never marked down: they count as answering until a result of theirs says otherwise.
        self.answering |= self._baseline
        self._baseline, self._silent = frozenset(), set()
        return Change(False, silent, answering, now)

    def _tick(self, now: float) -> Outcome[T]:
        # Both dicts are in time order (an entry is set once, then removed): the old ones
        # are at the front, so this stops at the first one still in the round.
        cutoff = now - self.params.round
        apply: list[tuple[str, T]] = []
        for name in list(itertools.takewhile(lambda n: self._held[n].since <= cutoff, self._held)):
            self._silences.pop(name, None)
            self._release(name, apply)
        expired = itertools.takewhile(lambda n: self._silences[n] <= cutoff, self._silences)
        for name in list(expired):
            del self._silences[name]
        return Outcome(apply=tuple(apply))


def health_event(status: VantageStatus, degraded_since: dt.datetime | None = None) -> Event:
    """The event of a vantage's health change: `vantage_degraded` (warning) or
    `vantage_recovered` (info, saying since when it was degraded)."""
    v = status.vantage
    details: dict[str, object] = {
        "vantage": v,
        "node": status.node,
        "silent": status.silent,
        "answering": status.answering,
    }
    if status.degraded:
        summary = (
            f"vantage {v} degraded: scans silent for {status.silent} of {status.answering} "
            "answering targets; their silence changes no target until it recovers"
        )
        kind, severity = EventType.VANTAGE_DEGRADED, Severity.WARNING
    else:
        since = "" if degraded_since is None else f" (degraded since {rfc3339(degraded_since)})"
        summary = f"vantage {v} recovered: its targets answer again{since}"
        details["degraded_since"] = None if degraded_since is None else rfc3339(degraded_since)
        kind, severity = EventType.VANTAGE_RECOVERED, Severity.INFO
    return Event(
        type=kind,
        severity=severity,
        target=None,
        observed_at=status.since,
        summary=summary,
        details=details,
        vantage=v,
    )
