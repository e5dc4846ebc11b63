"""Vantage health (pure): our own outage changes no target; a target's own silence still does."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.detect import TargetPolicy, evaluate
from exposuremon.model import EventType, Observation, Observed, ScanKind, TargetState
from exposuremon.vantage import Change, HealthParams, Outcome, VantageHealth

PARAMS = HealthParams(silence_share=0.5, min_targets=3, round=30.0, release_answers=3)
Item = tuple[str, int, bool]  # (target, sequence number, silent)


class Run:
    """Feeds results to a `VantageHealth` and keeps what it said to apply, drop and change."""

    def __init__(self, targets: list[str], params: HealthParams = PARAMS) -> None:
        self.health: VantageHealth[Item] = VantageHealth(params, targets)
        self.applied: list[Item] = []
        self.dropped: list[Item] = []
        self.changes: list[Change] = []
        self.seq = 0
        self.offered: list[tuple[Item, bool]] = []  # (item, vantage degraded when offered)

    def take(self, out: Outcome[Item]) -> None:
        self.applied.extend(item for _, item in out.apply)
        self.dropped.extend(item for _, item in out.drop)
        if out.change is not None:
            self.changes.append(out.change)

    def offer(self, target: str, silent: bool, now: float) -> Item:
        self.seq += 1
        item = (target, self.seq, silent)
        self.offered.append((item, self.health.degraded))
        self.take(self.health.offer(target, item, silent, now))
        return item

    def tick(self, now: float) -> None:
        self.take(self.health.tick(now))


def names(n: int) -> list[str]:
    return [f"r{i}" for i in range(n)]


def test_an_uplink_cut_degrades_once_changes_no_target_and_recovers_once() -> None:
    """All targets silent for three rounds: one degraded, no silence applied, one recovered."""
    run = Run(names(10))
    now = 0.0
    for _round in range(3):
        for name in names(10):
            now += 3.0
            run.offer(name, True, now)
            run.tick(now)
    assert [c.degraded for c in run.changes] == [True]
    assert not [i for i in run.applied if i[2]]
    for name in names(10):
        now += 3.0
        run.offer(name, False, now)
    assert [c.degraded for c in run.changes] == [True, False]
    assert (run.changes[0].answering, run.changes[0].silent) == (10, 5)
    assert run.health.answering == set(names(10))


def test_one_target_silent_among_answering_ones_is_applied_after_their_answers() -> None:
    """A reboot of one router: its silence is held, then applied once others answered."""
    run = Run(names(6))
    silence = run.offer("r0", True, 1.0)
    assert silence not in run.applied
    assert run.health.held == {"r0"}
    later = run.offer("r0", False, 1.5)  # queued behind its silence
    for i, name in enumerate(names(6)[1:4]):
        run.offer(name, False, 2.0 + i)
    assert run.applied[-2:] == [silence, later]
    assert not run.changes
    assert not run.health.held


def test_with_fewer_than_min_targets_a_silence_is_applied_at_once() -> None:
    """One or two routers: a silence is the router's news, never held."""
    run = Run(names(2))
    silence = run.offer("r0", True, 1.0)
    assert run.applied == [silence]
    assert not run.changes


def test_a_held_silence_is_applied_after_one_round_without_answers() -> None:
    """Nobody else reported: the hold ends after a round and the silence is applied."""
    run = Run(names(5))
    silence = run.offer("r0", True, 1.0)
    run.tick(20.0)
    assert run.applied == []
    run.tick(31.0)
    assert run.applied == [silence]


def test_a_target_down_before_the_cut_stays_silent_without_any_event() -> None:
    """A silence of a target not answering is applied at once (it changes nothing)."""
    run = Run(names(4))
    run.health.answering.discard("r3")
    silence = run.offer("r3", True, 1.0)
    assert run.applied == [silence]


events = st.lists(
    st.tuples(st.integers(0, 7), st.booleans(), st.floats(0.0, 12.0)), min_size=1, max_size=120
)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(2, 8))
def test_properties_over_any_sequence_of_results(
    steps: list[tuple[int, bool, float]], n: int
) -> None:
    """Any results: each is applied or dropped once, in order per target, and no silence
    offered while degraded (or held at the degradation) is ever applied."""
    run = Run(names(n))
    now = 0.0
    held_at_degradation: set[Item] = set()
    for index, silent, gap in steps:
        now += gap
        run.tick(now)  # holds that time ended are settled before the snapshot
        held_before = {i for i, _ in run.offered if i not in run.applied and i not in run.dropped}
        was_degraded = run.health.degraded
        run.offer(f"r{index % n}", silent, now)
        if run.health.degraded and not was_degraded:
            held_at_degradation |= {i for i in held_before if i[2]}
    run.tick(now + 1000.0)
    run.tick(now + 2000.0)
    everything = [i for i, _ in run.offered]
    assert sorted(run.applied + run.dropped) == sorted(everything)
    assert not set(run.applied) & set(run.dropped)
    for name in names(n):
        assert [i for i in run.applied if i[0] == name] == sorted(
            i for i in run.applied if i[0] == name
        )
    assert not [i for i, degraded in run.offered if degraded and i[2] and i in run.applied]
    assert not held_at_degradation & set(run.applied)
    assert not [i for i in run.dropped if not i[2]]  # answers are never dropped
    flips = [c.degraded for c in run.changes]
    assert flips == [i % 2 == 0 for i in range(len(flips))]  # degraded, recovered, ...


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 40), st.randoms(use_true_random=False), st.integers(1, 3))
def test_a_cut_of_any_size_and_order_applies_no_silence(n: int, rnd: object, rounds: int) -> None:
    """Every answering target silent for some rounds, in any order: one degraded, no silence
    applied; answers again: one recovered."""
    import random

    assert isinstance(rnd, random.Random)
    run = Run(names(n))
    now, gap = 0.0, PARAMS.round / n
    for _ in range(rounds):
        order = names(n)
        rnd.shuffle(order)
        for name in order:
            now += gap * rnd.uniform(0.5, 1.0)
            run.offer(name, True, now)
    order = names(n)
    rnd.shuffle(order)
    for name in order:
        now += gap
        run.offer(name, False, now)
    assert [c.degraded for c in run.changes] == [True, False]
    assert not [i for i in run.applied if i[2]]


@settings(max_examples=200, deadline=None)
@given(st.integers(4, 40), st.integers(0, 39), st.integers(1, 4))
def test_a_single_target_silence_among_many_answering_is_applied(
    n: int, which: int, silences: int
) -> None:
    """One target silent for some rounds while the others answer: every silence applied, in
    order, and the vantage stays up."""
    run = Run(names(n))
    target = f"r{which % n}"
    now = 0.0
    mine: list[Item] = []
    for _ in range(silences):
        for name in names(n):
            now += 1.0
            item = run.offer(name, name == target, now)
            if name == target:
                mine.append(item)
    run.tick(now + PARAMS.round + 1.0)
    assert not run.changes
    assert [i for i in run.applied if i[0] == target] == mine


# ------------------------------------------------------------- with detection behind it

T0 = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)
POLICY = TargetPolicy(expected_open=frozenset({443}))


def observation(name: str, at: float, silent: bool) -> Observation:
    """A one-second sentinel scan of 443 at `at` seconds: open, or silent."""
    state = Observed.FILTERED if silent else Observed.OPEN
    return Observation(
        target=name,
        kind=ScanKind.SENTINEL,
        address="198.18.0.2",
        started=T0 + dt.timedelta(seconds=at),
        finished=T0 + dt.timedelta(seconds=at + 1),
        complete=True,
        states={443: state},
        confirmed_open=frozenset() if silent else frozenset({443}),
        responded=not silent,
    )


class Detected:
    """Vantage health in front of detection, as the pipeline runs them."""

    def __init__(self, n: int) -> None:
        self.health: VantageHealth[Observation] = VantageHealth(PARAMS)
        self.states = {f"r{i}": TargetState(name=f"r{i}") for i in range(n)}
        self.events: list[tuple[str, EventType]] = []

    def take(self, out: Outcome[Observation]) -> None:
        """Evaluate what the gate let through, in its order."""
        for name, obs in out.apply:
            ev = evaluate(self.states[name], obs, POLICY, obs.finished + dt.timedelta(seconds=1))
            self.states[name] = ev.state
            self.events += [(name, e.type) for e in ev.events]

    def scan(self, name: str, at: float, silent: bool) -> None:
        """One result of `name` at `at` s, through the health gate into detection."""
        self.take(self.health.offer(name, observation(name, at, silent), silent, at))


@settings(max_examples=100, deadline=None)
@given(st.integers(4, 12), st.integers(0, 11), st.integers(1, 4), st.booleans())
def test_a_short_reboot_among_answering_routers_is_down_up_and_reboot(
    n: int, which: int, rounds_down: int, cut_later: bool
) -> None:
    """One router silent for a few rounds while the others answer: detection behind the
    health gate still sees down, up and a suspected reboot, in that order; an uplink cut of
    every router afterwards raises no target event at all."""
    run = Detected(n)
    target = f"r{which % n}"
    at = 0.0
    for round_ in range(2 + rounds_down + 2):
        down = 2 <= round_ < 2 + rounds_down
        for i in range(n):
            at += 1.0
            name = f"r{i}"
            run.scan(name, at, silent=down and name == target)
    run.take(run.health.tick(at + 1000.0))
    kinds = [k for name, k in run.events if name == target]
    assert kinds.index(EventType.TARGET_DOWN) < kinds.index(EventType.TARGET_UP)
    assert EventType.REBOOT_SUSPECTED in kinds
    assert not run.health.degraded
    if cut_later:
        before = len(run.events)
        for _ in range(3):
            for i in range(n):
                at += 1.0
                run.scan(f"r{i}", at, silent=True)
        for _ in range(2):
            for i in range(n):
                at += 1.0
                run.scan(f"r{i}", at, silent=False)
        assert run.events[before:] == []
        assert not run.health.degraded


def test_resumed_degraded_drops_silence_and_recovers_on_answers() -> None:
    """Degraded in the store at start: silences are dropped, answers recover it (once)."""
    run = Run(names(4))
    run.health.resume_degraded()
    silence = run.offer("r0", True, 1.0)
    assert run.dropped == [silence]
    for i, name in enumerate(names(4)):
        run.offer(name, False, 2.0 + i)
    assert [c.degraded for c in run.changes] == [False]
    assert not run.health.degraded
