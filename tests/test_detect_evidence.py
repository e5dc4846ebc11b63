"""Detection judges evidence by when it was observed (issue 13) and resolves only on evidence
that a port closed (issue 12): reproductions and properties over overlapping scans."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Mapping

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from exposuremon.detect import Evaluation, TargetPolicy, evaluate
from exposuremon.model import (
    EventType,
    FindingState,
    Observation,
    Observed,
    ScanKind,
    TargetState,
    TargetStatus,
)

E = EventType
T0 = dt.datetime(2026, 11, 20, 16, 0, tzinfo=dt.UTC)
NAME = "r"
ADDR = "198.18.0.2"
POLICY = TargetPolicy(expected_open=frozenset({443}))
PORTS = (22, 443, 8080, 9000)
RETRIES = 1  # the engine's default: a silent port gets two attempts before its verdict


def s(seconds: float) -> dt.datetime:
    """T0 plus `seconds`."""
    return T0 + dt.timedelta(seconds=seconds)


def obs(
    start: float,
    end: float,
    states: Mapping[int, Observed],
    *,
    kind: ScanKind = ScanKind.SENTINEL,
    seen: Mapping[int, float] | None = None,
    answered: float | None = None,
    live: frozenset[int] | None = None,
    dropped: bool = False,
) -> Observation:
    """An observation of `states` over [start, end] seconds; times per probe when given."""
    responded = any(v is not Observed.FILTERED for v in states.values())
    return Observation(
        target=NAME,
        kind=kind,
        address=ADDR,
        started=s(start),
        finished=s(end),
        complete=True,
        states=dict(states),
        confirmed_open=frozenset(p for p, v in states.items() if v is Observed.OPEN),
        responded=responded,
        seen_at={} if seen is None else {p: s(t) for p, t in seen.items()},
        answered_at=None if answered is None else s(answered),
        filtered_live=live,
        dropped=dropped,
    )


def apply(state: TargetState, o: Observation, policy: TargetPolicy = POLICY) -> Evaluation:
    """Evaluate as the service does: at the time the result is applied (after it finished)."""
    return evaluate(state, o, policy, o.finished + dt.timedelta(seconds=1))


def up_with_finding() -> TargetState:
    """443 (expected) and 8080 open, a finding on 8080, target up: before the power-off."""
    state = TargetState(name=NAME)
    for i in range(2):
        open_ = {443: Observed.OPEN, 8080: Observed.OPEN, 22: Observed.CLOSED}
        state = apply(state, obs(i * 2, i * 2 + 1, open_)).state
    assert 8080 in state.findings
    assert state.status is TargetStatus.UP
    return state


def test_reproduction_overlapping_quick_scan_revives_a_down_target() -> None:
    """Root cause: a quick scan that answered before a power-off and finished after the
    silent sentinel scan was read as news: `target_up` and `reboot_suspected` while still off.

    The quick scan runs 10-30 s and sees 443 and 8080 answer at its start; the router goes
    off at 12 s; the sentinel scan at 20-21 s is silent (target_down); the quick scan then
    finishes (its fingerprints done) and is applied. Before the fix detection ordered by
    `finished`, so 30 s > 21 s made the old answers newer than the silence. Only
    `started`/`finished` are used here: no engine times are needed to show it.
    """
    state = up_with_finding()
    quick = obs(10, 30, {443: Observed.OPEN, 8080: Observed.OPEN}, kind=ScanKind.QUICK)
    silent = obs(20, 21, {443: Observed.FILTERED, 8080: Observed.FILTERED})
    down = apply(state, silent)
    assert [e.type for e in down.events] == [E.TARGET_DOWN]
    late = apply(down.state, quick)
    assert late.events == ()
    assert not late.reboot_suspected
    assert late.state.status is TargetStatus.DOWN


def test_probe_times_decide_not_the_scan_end() -> None:
    """With engine times, answers sent before the silence never revive; later ones do."""
    state = up_with_finding()
    down = apply(state, obs(20, 21, {443: Observed.FILTERED, 8080: Observed.FILTERED}))
    old = obs(15, 40, {443: Observed.OPEN}, seen={443: 15.1}, answered=15.1)
    assert apply(down.state, old).events == ()
    new = obs(15, 41, {443: Observed.OPEN}, seen={443: 22.0}, answered=22.0)
    out = apply(down.state, new)
    assert [e.type for e in out.events] == [E.TARGET_UP, E.REBOOT_SUSPECTED]


def test_silence_that_began_before_an_answer_downs_nothing() -> None:
    """A silent scan applied after an answer sent during its run is no news of an outage."""
    state = up_with_finding()
    answered = apply(state, obs(10, 11, {443: Observed.OPEN}, answered=10.5))
    silent = apply(answered.state, obs(10, 12, {443: Observed.FILTERED, 8080: Observed.FILTERED}))
    assert silent.events == ()
    assert silent.state.status is TargetStatus.UP


def test_scan_into_an_outage_closes_nothing() -> None:
    """Ports a scan probed after the target went silent are no evidence (`filtered_live`)."""
    state = up_with_finding()
    states = {443: Observed.OPEN, 22: Observed.CLOSED, 8080: Observed.FILTERED}
    seen = {443: 10.0, 22: 10.0, 8080: 11.0}
    for i in range(3):
        into = obs(10 + i * 5, 14 + i * 5, states, kind=ScanKind.QUICK, live=frozenset())
        into = dataclasses.replace(into, seen_at={p: s(t + i * 5) for p, t in seen.items()})
        out = apply(state, into)
        state = out.state
        assert not {E.PORT_CLOSED, E.FINDING_RESOLVED} & {e.type for e in out.events}
    assert state.ports[8080].state is Observed.OPEN
    assert 8080 in state.findings


def test_filtered_counts_only_without_drops() -> None:
    """RST resolves; filtered resolves when the scan answered and saw no drops, else never."""
    for dropped, live, resolves in [
        (False, None, True),
        (False, frozenset({8080}), True),
        (True, None, False),
        (False, frozenset(), False),
    ]:
        state = up_with_finding()
        for i in range(2):
            o = obs(10 + i * 2, 11 + i * 2, {443: Observed.OPEN, 8080: Observed.FILTERED})
            state = apply(state, dataclasses.replace(o, dropped=dropped, filtered_live=live)).state
        assert (8080 in state.resolved) is resolves, (dropped, live)
    state = up_with_finding()
    for i in range(2):
        o = obs(10 + i * 2, 11 + i * 2, {443: Observed.OPEN, 8080: Observed.CLOSED}, dropped=True)
        state = apply(state, o).state
    assert 8080 in state.resolved  # an RST is strong evidence, drops or not


# --- properties over overlapping scans -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Truth:
    """The router's real history: up except during [off, on), 8080 open until `closes`."""

    off: float
    on: float | None  # None: stays off
    closes: float | None  # 8080 closes (RST) at this time, if ever

    def alive(self, t: float) -> bool:
        return t < self.off or (self.on is not None and t >= self.on)

    def state(self, port: int, t: float) -> Observed:
        if not self.alive(t):
            return Observed.FILTERED
        if port == 443 or (port == 8080 and (self.closes is None or t < self.closes)):
            return Observed.OPEN
        return Observed.CLOSED


@dataclasses.dataclass(frozen=True)
class Scan:
    """A generated scan: starts at `start`, probes each port at `start + offset`."""

    start: float
    offsets: tuple[float, ...]  # per PORTS
    timeout: float
    delay: float  # how long after finishing it is applied (confirmation, fingerprints)

    def observe(self, truth: Truth) -> Observation:
        sent = {p: self.start + off for p, off in zip(PORTS, self.offsets, strict=True)}
        states = {p: truth.state(p, t) for p, t in sent.items()}
        answered = [t for p, t in sent.items() if states[p] is not Observed.FILTERED]
        # The engine's `filtered_live`: answers heard while the port was silent, from its
        # first attempt to its verdict (the retries' timeouts), not answers long after it.
        silence = self.timeout * (1 + RETRIES)
        live = frozenset(
            p
            for p, t in sent.items()
            if states[p] is Observed.FILTERED and any(t < a <= t + silence for a in answered)
        )
        end = max(sent.values()) + self.timeout
        return obs(
            self.start,
            end,
            states,
            seen=sent,
            answered=max(answered) if answered else None,
            live=live,
        )


scan_st = st.builds(
    Scan,
    start=st.floats(0, 600).map(lambda x: round(x, 1)),
    offsets=st.tuples(*[st.floats(0, 120).map(lambda x: round(x, 1)) for _ in PORTS]),
    timeout=st.sampled_from([0.5, 1.25]),
    delay=st.floats(0, 60),
)
truth_st = st.builds(
    Truth,
    off=st.floats(100, 400).map(lambda x: round(x, 1) + 0.05),
    on=st.none() | st.floats(420, 700).map(lambda x: round(x, 1) + 0.05),
    closes=st.none() | st.floats(0, 700).map(lambda x: round(x, 1) + 0.05),
)


def run(observations: list[Observation], order: list[int]) -> tuple[TargetState, list[E]]:
    """Apply the observations in `order` after the warm-up; the final state and event types."""
    state, kinds = up_with_finding(), []
    state = dataclasses.replace(state, silent_until=None)
    for i in order:
        out = apply(state, observations[i])
        kinds += [e.type for e in out.events]
        for event in out.events:
            if event.type in (E.TARGET_UP, E.REBOOT_SUSPECTED):
                answer = observations[i].answered_at
                assert answer is not None
                assert state.silent_until is not None
                assert answer > state.silent_until  # newer than the silence it ends
        state = out.state
    return state, kinds


@settings(max_examples=300, deadline=None)
@given(truth=truth_st, scans=st.lists(scan_st, min_size=1, max_size=8), data=st.data())
def test_outages_under_overlapping_scans(
    truth: Truth, scans: list[Scan], data: st.DataObject
) -> None:
    """Overlapping scans applied in any order: no `target_up`/reboot while the router stays
    off, liveness and ports end at the newest evidence whatever the order."""
    observations = [scan.observe(truth) for scan in scans]
    # Realistic arrival: by finish plus processing delay; and any other order.
    by_arrival = sorted(
        range(len(scans)),
        key=lambda i: observations[i].finished + dt.timedelta(seconds=scans[i].delay),
    )
    shuffled = data.draw(st.permutations(range(len(scans))))
    state_a, kinds_a = run(observations, by_arrival)
    state_b, kinds_b = run(observations, list(shuffled))
    for kinds in (kinds_a, kinds_b):
        if truth.on is None:
            assert E.TARGET_UP not in kinds
            assert E.REBOOT_SUSPECTED not in kinds
        assert kinds.count(E.TARGET_DOWN) <= 1
        assert E.FINDING_REOPENED not in kinds
    # Liveness depends only on the newest answer against the newest silence, unless a silent
    # scan's wait for timeouts overlaps an answer (then either reading is defensible).
    silences = [o for o in observations if not o.responded]
    answers = [o.answered_at for o in observations if o.answered_at is not None]
    assume(not any(o.started <= a <= o.finished for o in silences for a in answers))
    assert state_a.status is state_b.status
    if truth.on is None and not answers:
        assert state_a.status is not TargetStatus.UP or not silences
    # Without an outage every port ends at its newest evidence, in any order.
    if not silences:
        for port in PORTS:
            a, b = state_a.ports.get(port), state_b.ports.get(port)
            assert (a and (a.state, a.observed_at)) == (b and (b.state, b.observed_at))


@dataclasses.dataclass(frozen=True)
class DropScan:
    """One scan of a target that drops some SYNs while 8080 stays open all along."""

    dropped_8080: bool
    dropped_443: bool
    signal: str  # how the engine tells: "flag" (loss seen) or "not_live" (no answer heard)
    closed_22: bool


drop_st = st.builds(
    DropScan,
    dropped_8080=st.booleans(),
    dropped_443=st.booleans(),
    signal=st.sampled_from(["flag", "not_live", "both"]),
    closed_22=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(scans=st.lists(drop_st, min_size=1, max_size=30), resolve_after=st.integers(1, 3))
def test_no_drop_pattern_resolves_or_reopens(scans: list[DropScan], resolve_after: int) -> None:
    """8080 stays open while the target drops SYNs: no resolve, no reopen, no port_closed."""
    policy = dataclasses.replace(POLICY, resolve_after=resolve_after)
    state = up_with_finding()
    kinds: list[E] = []
    for i, scan in enumerate(scans):
        states = {
            443: Observed.FILTERED if scan.dropped_443 else Observed.OPEN,
            8080: Observed.FILTERED if scan.dropped_8080 else Observed.OPEN,
            22: Observed.CLOSED if scan.closed_22 else Observed.FILTERED,
        }
        filtered = frozenset(p for p, v in states.items() if v is Observed.FILTERED)
        any_drop = bool(filtered & {443, 8080})
        flag = any_drop and scan.signal in ("flag", "both")
        live = filtered - {443, 8080} if scan.signal in ("not_live", "both") else None
        if any_drop and not flag and live is None:
            live = filtered - {443, 8080}  # the engine tells a drop one way or the other
        o = obs(10 + i * 3, 11 + i * 3, states, dropped=flag, live=live)
        out = evaluate(state, o, policy, o.finished)
        kinds += [e.type for e in out.events]
        state = out.state
    assert not {E.FINDING_RESOLVED, E.FINDING_REOPENED, E.PORT_CLOSED} & set(kinds)
    assert state.findings[8080].state is FindingState.OPEN
    assert state.ports[8080].state is Observed.OPEN


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.booleans(), st.sampled_from(list(itertools.product([None, *Observed], repeat=2)))
        ),
        min_size=1,
        max_size=20,
    )
)
def test_non_overlapping_scans_give_todays_results(
    steps: list[tuple[bool, tuple[Observed | None, ...]]],
) -> None:
    """Scans one after another: probe times inside each scan change no event or state."""
    with_times, without = TargetState(name=NAME), TargetState(name=NAME)
    for i, (silent, pair) in enumerate(steps):
        states = {p: v for p, v in zip((443, 8080), pair, strict=True) if v is not None}
        states[22] = Observed.FILTERED if silent else Observed.CLOSED
        if silent:
            states = dict.fromkeys(states, Observed.FILTERED)
        start = i * 60.0
        plain = obs(start, start + 5, states)
        timed = obs(
            start,
            start + 5,
            states,
            seen={p: start + 1 + k * 0.1 for k, p in enumerate(sorted(states))},
            answered=None if silent else start + 2,
        )
        a, b = apply(without, plain), apply(with_times, timed)
        assert a.events == b.events
        assert a.findings == b.findings
        assert {p: dataclasses.replace(r, observed_at=None) for p, r in a.state.ports.items()} == {
            p: dataclasses.replace(r, observed_at=None) for p, r in b.state.ports.items()
        }
        assert (a.state.status, a.state.status_since) == (b.state.status, b.state.status_since)
        without, with_times = a.state, b.state
