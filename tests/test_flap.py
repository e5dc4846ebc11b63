"""Flap damping (pure): one page per episode, held transitions, the end summary, properties."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon import detect, flap
from exposuremon.flap import FlapPolicy, damp, flapping_ports, is_held
from exposuremon.model import (
    NOTIFY_AS,
    Event,
    EventType,
    Observation,
    Observed,
    ScanKind,
    Severity,
    TargetState,
)

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
NAME = "shop"
ADDR = "198.51.100.7"
E = EventType
WATCHED = (22, 443, 8081)  # 443 expected and always open: the target keeps answering


class Walk:
    """Scans of one target through detection and flap damping, as the pipeline runs them."""

    def __init__(
        self,
        policy: FlapPolicy | None = None,
        target: detect.TargetPolicy | None = None,
        state: TargetState | None = None,
    ) -> None:
        # A window shorter than flap_settle scans of 30 s: the episode ends by the count.
        self.policy = policy or FlapPolicy(window=100)
        self.target = target or detect.TargetPolicy(expected_open=frozenset({443}))
        self.state = state or TargetState(name=NAME)
        self.now = T0
        self.events: list[Event] = []

    def scan(self, open_: Iterable[int], seconds: float = 30) -> detect.Evaluation:
        """One scan `seconds` after the last: `open_` open, the other watched ports closed."""
        self.now += dt.timedelta(seconds=seconds)
        opened = frozenset(open_) | {443}
        states = {p: Observed.OPEN if p in opened else Observed.CLOSED for p in WATCHED}
        states.update({p: Observed.OPEN for p in opened})
        obs = Observation(
            target=NAME,
            kind=ScanKind.SENTINEL,
            address=ADDR,
            started=self.now - dt.timedelta(seconds=1),
            finished=self.now,
            complete=True,
            states=states,
            confirmed_open=opened,
            responded=True,
        )
        before = self.state
        ev = detect.evaluate(before, obs, self.target, self.now)
        ev = damp(before, obs, ev, self.target, self.policy, self.now)
        self.state = ev.state
        self.events.extend(ev.events)
        return ev

    def toggle(self, port: int, cycles: int, seconds: float = 20) -> None:
        """`cycles` times open for a scan, then closed for two (its finding resolves)."""
        for _ in range(cycles):
            self.scan({port}, seconds)
            self.scan((), seconds)
            self.scan((), seconds)


def notified(events: Sequence[Event], port: int | None = None) -> list[Event]:
    """The events that reach notification channels (of `port`, if given)."""
    return [e for e in events if not is_held(e) and (port is None or e.port == port)]


def of_type(events: Sequence[Event], kind: EventType) -> list[Event]:
    """Events of one type."""
    return [e for e in events if e.type is kind]


def test_a_flapping_unexpected_port_pages_once_then_once_more_when_it_settles() -> None:
    """Four changes within the window: one critical port_flapping; the rest of the cycles are
    recorded but held; after flap_settle stable scans one port_flap_ended with the final state."""
    walk = Walk()
    walk.scan(())  # first scan: nothing open but the expected port
    walk.toggle(8081, 10)
    flapping = of_type(walk.events, E.PORT_FLAPPING)
    assert len(flapping) == 1
    assert flapping[0].severity is Severity.CRITICAL
    assert flapping[0].details["expected"] is False
    assert flapping_ports(walk.state) == {8081}
    # Recorded: every reopen is stored (held), so the history is complete.
    assert len(of_type(walk.events, E.FINDING_REOPENED)) >= 8
    after = walk.events[walk.events.index(flapping[0]) + 1 :]
    assert notified(after, 8081) == []
    for _ in range(3):  # the toggle's last closed scan was the first stable one
        assert not notified(walk.scan(()).events)
    ended = walk.scan(())
    (end,) = notified(ended.events)
    assert end.type is E.PORT_FLAP_ENDED
    assert end.details["state"] == "closed"
    assert end.details["finding"] == "resolved"
    assert end.severity is Severity.INFO
    assert end.details[NOTIFY_AS] == "critical"
    assert flapping_ports(walk.state) == frozenset()
    assert 8081 not in walk.state.flaps


def test_the_first_changes_page_as_usual_before_the_threshold() -> None:
    """Below the threshold nothing is held: open, resolve and reopen page as always."""
    walk = Walk()
    walk.scan(())
    walk.scan({8081})
    walk.scan(())
    walk.scan(())
    kinds = [e.type for e in notified(walk.events, 8081)]
    assert E.FINDING_OPENED in kinds
    assert E.FINDING_RESOLVED in kinds
    assert not of_type(walk.events, E.PORT_FLAPPING)
    assert walk.state.flaps[8081].since is None
    assert len(walk.state.flaps[8081].changes) == 2


def test_an_expected_port_flapping_is_a_warning_and_ends_open_as_info() -> None:
    """An expected service in a crash loop: warning; settled open, the end is info."""
    walk = Walk(target=detect.TargetPolicy(expected_open=frozenset({443, 8081})))
    walk.scan({8081})
    walk.toggle(8081, 3)
    walk.scan({8081})
    (flapping,) = of_type(walk.events, E.PORT_FLAPPING)
    assert flapping.severity is Severity.WARNING
    for _ in range(5):
        walk.scan({8081})
    (end,) = of_type(walk.events, E.PORT_FLAP_ENDED)
    assert end.details["state"] == "open"
    assert end.severity is Severity.INFO
    assert end.details[NOTIFY_AS] == "warning"


def test_settling_open_with_a_finding_pages_critical() -> None:
    """An unexpected port that ends its episode open is exposed: the end is critical."""
    walk = Walk()
    walk.scan(())
    walk.toggle(8081, 3)
    for _ in range(6):  # the reopen, then five stable scans
        walk.scan({8081})
    (end,) = of_type(walk.events, E.PORT_FLAP_ENDED)
    assert end.details["state"] == "open"
    assert end.details["finding"] == "open"
    assert end.severity is Severity.CRITICAL


def test_a_change_during_settling_starts_the_count_again() -> None:
    """Stable means flap_settle scans in a row without a change."""
    walk = Walk()
    walk.scan(())
    for open_ in (True, False, True, False):
        walk.scan({8081} if open_ else (), seconds=20)
    assert flapping_ports(walk.state) == {8081}
    for _ in range(4):
        walk.scan(())
    walk.scan({8081})  # one more change: the episode goes on
    assert walk.state.flaps[8081].stable == 0
    for _ in range(4):
        walk.scan({8081})
    assert flapping_ports(walk.state) == {8081}
    walk.scan({8081})
    assert flapping_ports(walk.state) == frozenset()


def test_a_reopen_on_another_port_is_not_held() -> None:
    """While 8081 flaps, port 22 opening pages at once."""
    walk = Walk()
    walk.scan(())
    walk.toggle(8081, 2)
    assert flapping_ports(walk.state) == {8081}
    out = walk.scan({22})
    assert [e.type for e in notified(out.events, 22)] == [E.PORT_OPENED, E.FINDING_OPENED]
    assert all(is_held(e) for e in out.events if e.port == 8081)


def test_changes_spread_wider_than_the_window_are_not_flapping() -> None:
    """Four changes, but never four within flap_window: no episode."""
    walk = Walk(policy=FlapPolicy(threshold=4, window=600, settle=5))
    walk.scan(())
    walk.toggle(8081, 4, seconds=250)
    assert not of_type(walk.events, E.PORT_FLAPPING)
    assert len(walk.state.flaps[8081].changes) <= 3


def test_old_changes_are_forgotten_at_the_next_scan_of_the_port() -> None:
    """A port that changed once and stayed keeps no flap memory past the window."""
    walk = Walk(policy=FlapPolicy(window=60))
    walk.scan(())
    walk.scan({8081})
    assert 8081 in walk.state.flaps
    walk.scan({8081}, seconds=90)
    assert walk.state.flaps == {}
    out = walk.scan({8081})
    assert out.state.flaps == {}
    assert detect.only_time_advanced(walk.state, out.state)


def test_the_episode_survives_a_restart() -> None:
    """The flap memory is part of the state: a walk resumed from it goes on holding."""
    walk = Walk()
    walk.scan(())
    walk.toggle(8081, 2)
    resumed = Walk(state=walk.state)
    resumed.now = walk.now
    resumed.toggle(8081, 3)
    assert not of_type(resumed.events, E.PORT_FLAPPING)
    assert notified(resumed.events, 8081) == []


def test_ignored_ports_are_not_tracked() -> None:
    """An ignored port raises nothing, flapping or not."""
    walk = Walk(target=detect.TargetPolicy(expected_open=frozenset({443}), ignore=frozenset({22})))
    walk.scan(())
    walk.toggle(22, 5)
    assert walk.state.flaps == {}
    assert not of_type(walk.events, E.PORT_FLAPPING)


@pytest.mark.parametrize("threshold", [1, 0])
def test_a_threshold_below_two_is_refused(threshold: int) -> None:
    """One change is never flapping: the policy refuses a threshold that would say so."""
    with pytest.raises(ValueError, match="flap_threshold"):
        FlapPolicy(threshold=threshold)


# ----------------------------------------------------------------------------- properties

scans = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.integers(5, 400)), min_size=1, max_size=60
)
policies = st.builds(
    FlapPolicy,
    threshold=st.integers(2, 6),
    window=st.sampled_from([60.0, 300.0, 600.0, 3600.0]),
    settle=st.integers(1, 6),
)


@settings(max_examples=200, deadline=None)
@given(policy=policies, steps=scans)
def test_a_flapping_port_pages_at_most_twice_per_episode(
    policy: FlapPolicy, steps: list[tuple[bool, bool, int]]
) -> None:
    """From its port_flapping to its port_flap_ended a port reaches the channels only with those
    two events; other ports are never held."""
    walk = Walk(policy=policy)
    walk.scan(())
    for open_8081, open_22, seconds in steps:
        walk.scan({p for p, up in ((8081, open_8081), (22, open_22)) if up}, seconds)
    for port in (8081, 22):
        in_episode = False
        for e in notified(walk.events, port):
            if e.type is E.PORT_FLAPPING:
                assert not in_episode
                in_episode = True
            elif e.type is E.PORT_FLAP_ENDED:
                assert in_episode
                in_episode = False
            else:
                assert not in_episode, f"{e.type} of {port} notified during its episode"
        assert in_episode == (port in flapping_ports(walk.state))
    held_ports = {e.port for e in walk.events if is_held(e)}
    assert held_ports <= {p for p in (8081, 22) if of_type(_of(walk.events, p), E.PORT_FLAPPING)}


def _of(events: Sequence[Event], port: int) -> list[Event]:
    return [e for e in events if e.port == port]


def test_the_episode_lasts_while_the_window_holds_its_changes() -> None:
    """A port toggling slower than flap_settle scans stays in one episode: its end waits until
    fewer than flap_threshold changes are left in flap_window (hysteresis)."""
    walk = Walk(policy=FlapPolicy(threshold=4, window=600, settle=5))
    walk.scan(())
    for _ in range(8):  # open 6 scans, closed 6 scans (6 s each at 1 s scans, say)
        for open_ in (True, False):
            for _ in range(6):
                walk.scan({8081} if open_ else (), seconds=1)
    assert len(of_type(walk.events, E.PORT_FLAPPING)) == 1
    assert not of_type(walk.events, E.PORT_FLAP_ENDED)
    walk.scan((), seconds=600)  # the changes leave the window
    (end,) = of_type(walk.events, E.PORT_FLAP_ENDED)
    assert end.details["changes"] == 16


@settings(max_examples=200, deadline=None)
@given(
    policy=policies,
    before=st.integers(1, 30),
    after=st.integers(0, 30),
    start_open=st.booleans(),
    seconds=st.integers(1, 400),
)
def test_a_port_that_changes_once_is_never_called_flapping(
    policy: FlapPolicy, before: int, after: int, start_open: bool, seconds: int
) -> None:
    """Any number of scans, one change among them: no port_flapping, nothing held."""
    walk = Walk(policy=policy)
    walk.scan({8081} if start_open else ())
    for _ in range(before):
        walk.scan({8081} if start_open else (), seconds)
    for _ in range(after + 1):
        walk.scan(() if start_open else {8081}, seconds)
    assert not of_type(walk.events, E.PORT_FLAPPING)
    assert not any(is_held(e) for e in walk.events)
    assert flapping_ports(walk.state) == frozenset()


def test_damp_leaves_an_evaluation_without_flaps_as_it_was() -> None:
    """Nothing to damp: the very evaluation detection made comes back."""
    state = TargetState(name=NAME)
    obs = Observation(
        target=NAME,
        kind=ScanKind.SENTINEL,
        address=ADDR,
        started=T0,
        finished=T0,
        complete=True,
        states={443: Observed.OPEN},
        confirmed_open=frozenset({443}),
    )
    target = detect.TargetPolicy(expected_open=frozenset({443}))
    ev = detect.evaluate(state, obs, target, T0)
    assert damp(state, obs, ev, target, FlapPolicy(), T0) is ev
    assert dataclasses.replace(ev) == ev
    assert flap.HELD == "held"
