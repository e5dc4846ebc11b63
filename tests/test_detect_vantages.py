"""Detection across vantages (pure): each merge rule on its own, and invariants under hypothesis."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.detect import Evaluation, TargetPolicy, evaluate, seen_from
from exposuremon.model import (
    EventType,
    Observation,
    Observed,
    ScanKind,
    TargetState,
    TargetStatus,
    VantagePort,
    VantageView,
)

T0 = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
NAME = "surgery-router"
ADDR = "198.51.100.7"
E = EventType


def observation(
    vantage: str,
    at: dt.datetime,
    open_: Iterable[int] = (),
    closed: Iterable[int] = (),
    filtered: Iterable[int] = (),
    *,
    complete: bool = True,
) -> Observation:
    """A scan from `vantage` that finished at `at` (started 5 s before), open ports confirmed."""
    states = {p: Observed.FILTERED for p in filtered}
    states.update({p: Observed.CLOSED for p in closed})
    states.update({p: Observed.OPEN for p in open_})
    return Observation(
        target=NAME,
        kind=ScanKind.SENTINEL,
        address=ADDR,
        started=at - dt.timedelta(seconds=5),
        finished=at,
        complete=complete,
        states=states,
        confirmed_open=frozenset(p for p, s in states.items() if s is Observed.OPEN),
        responded=any(s is not Observed.FILTERED for s in states.values()),
        vantage=vantage,
    )


class Fleet:
    """Feeds scans of one target from several vantages to `evaluate`, a minute apart."""

    def __init__(self, policy: TargetPolicy | None = None) -> None:
        self.policy = policy or TargetPolicy()
        self.state = TargetState(name=NAME)
        self.now = T0
        self.degraded: frozenset[str] = frozenset()

    def scan(
        self,
        vantage: str,
        open_: Iterable[int] = (),
        closed: Iterable[int] = (),
        filtered: Iterable[int] = (),
    ) -> Evaluation:
        """One scan from `vantage` a minute after the last scan of any vantage."""
        self.now += dt.timedelta(minutes=1)
        obs = observation(vantage, self.now, open_, closed, filtered)
        out = evaluate(self.state, obs, self.policy, self.now, degraded=self.degraded)
        self.state = out.state
        return out

    def silent(self, vantage: str, ports: Iterable[int] = (22, 80, 443)) -> Evaluation:
        """A scan from `vantage` that nobody answered."""
        return self.scan(vantage, filtered=ports)


def kinds(ev: Evaluation) -> list[EventType]:
    return [e.type for e in ev.events]


def test_open_from_one_vantage_filtered_from_the_other_says_so() -> None:
    """A port open from fra and filtered from nyc is a finding whose seen_from names both."""
    f = Fleet()
    f.scan("fra", open_=[22], closed=[443])
    f.scan("nyc", open_=[22], closed=[443])
    f.scan("nyc", open_=[22], closed=[443], filtered=[8080])
    ev = f.scan("fra", open_=[22, 8080], closed=[443])
    assert E.FINDING_OPENED in kinds(ev)
    finding = f.state.findings[8080]
    assert finding.seen_from == {"open": ("fra",)}
    opened = next(e for e in ev.events if e.type is E.FINDING_OPENED)
    assert opened.details["seen_from"] == {"open": ["fra"]}
    ev = f.scan("nyc", open_=[22], closed=[443], filtered=[8080])
    assert kinds(ev) == []  # still open: fra sees it open
    assert f.state.ports[8080].state is Observed.OPEN
    assert f.state.findings[8080].seen_from == {"open": ("fra",), "filtered": ("nyc",)}
    assert [x.seen_from for x in ev.findings] == [{"open": ("fra",), "filtered": ("nyc",)}]


def test_resolves_only_when_every_vantage_saw_it_closed_enough_times() -> None:
    """A finding seen from two vantages resolves once each saw it closed resolve_after times."""
    f = Fleet(TargetPolicy(resolve_after=2))
    f.scan("fra", open_=[8080])
    f.scan("nyc", open_=[8080])
    assert 8080 in f.state.findings
    for _ in range(3):
        ev = f.scan("fra", closed=[8080])
        assert kinds(ev) == []  # nyc still sees it open: no port_closed, no resolve
    ev = f.scan("nyc", closed=[8080])
    assert kinds(ev) == [E.PORT_CLOSED]
    assert 8080 in f.state.findings
    ev = f.scan("nyc", closed=[8080])
    assert kinds(ev) == [E.FINDING_RESOLVED]
    assert 8080 not in f.state.findings
    assert 8080 in f.state.resolved


def test_target_down_only_when_every_vantage_hears_nothing() -> None:
    """One vantage's silence downs nothing while another hears the target; both silent: one down."""
    f = Fleet()
    f.scan("fra", open_=[22], closed=[80, 443])
    f.scan("nyc", open_=[22], closed=[80, 443])
    statuses = [f.state.status]
    assert kinds(f.silent("fra")) == []
    assert kinds(f.silent("fra")) == []
    statuses.append(f.state.status)
    assert kinds(f.silent("nyc")) == [E.TARGET_DOWN]
    assert kinds(f.silent("fra")) == []
    statuses.append(f.state.status)
    assert statuses == [TargetStatus.UP, TargetStatus.UP, TargetStatus.DOWN]


def test_reboot_and_reopen_raised_once_whichever_vantage_sees_them_first() -> None:
    """Back after a silence from both: target_up, reboot and reopen once, not once per vantage."""
    f = Fleet(TargetPolicy(resolve_after=1))
    for v in ("fra", "nyc"):
        f.scan(v, open_=[22, 80], closed=[443])
    for v in ("fra", "nyc"):
        f.scan(v, open_=[22], closed=[80, 443])
    assert 80 in f.state.resolved
    f.silent("fra")
    f.silent("nyc")
    assert f.state.status is TargetStatus.DOWN
    first = f.scan("nyc", open_=[22, 80], closed=[443])
    assert E.TARGET_UP in kinds(first)
    assert E.REBOOT_SUSPECTED in kinds(first)
    assert E.FINDING_REOPENED in kinds(first)
    # fra's record of 80 is from before the reopen: it has not answered since.
    assert f.state.findings[80].seen_from == {"open": ("nyc",)}
    second = f.scan("fra", open_=[22, 80], closed=[443])
    assert kinds(second) == []
    assert f.state.findings[80].seen_from == {"open": ("fra", "nyc")}


def test_degraded_vantage_silence_changes_nothing() -> None:
    """A degraded vantage's silent scans raise nothing and leave the state as it was."""
    f = Fleet(TargetPolicy(resolve_after=1))
    f.scan("fra", open_=[22, 8080], closed=[443])
    f.scan("nyc", open_=[22, 8080], closed=[443])
    f.degraded = frozenset({"fra"})
    before = f.state
    ev = f.silent("fra", [22, 443, 8080])
    assert kinds(ev) == []
    assert f.state == before
    ev = f.scan("fra", open_=[22], filtered=[8080, 443])  # answering, but timeouts: no evidence
    assert kinds(ev) == []
    assert 8080 in f.state.findings


def test_degraded_single_node_silence_downs_nothing() -> None:
    """A single node of vantage "default" judged degraded: its silence downs nothing."""
    f = Fleet()
    f.scan("default", open_=[22], closed=[443])
    f.degraded = frozenset({"default"})
    for _ in range(3):
        assert kinds(f.silent("default")) == []
    assert f.state.status is TargetStatus.UP
    assert f.state.vantages == {}


def test_reprobe_asked_by_the_first_vantage_to_see_a_port_open() -> None:
    """The first vantage to see an unexpected port open asks for a re-probe; the next does not."""
    f = Fleet(TargetPolicy(expected_open=frozenset({22})))
    f.scan("fra", open_=[22], closed=[443])
    f.scan("nyc", open_=[22], closed=[443])
    assert f.scan("fra", open_=[22, 8080], closed=[443]).reprobe == {8080}
    assert f.scan("nyc", open_=[22, 8080], closed=[443]).reprobe == frozenset()
    assert f.scan("fra", open_=[22, 8080], closed=[443]).reprobe == frozenset()


def test_single_default_vantage_keeps_no_records() -> None:
    """A node alone in vantage "default" keeps no per-vantage records and no seen_from."""
    f = Fleet()
    f.scan("default", open_=[8080])
    f.scan("default", open_=[8080])
    assert f.state.vantages == {}
    assert f.state.findings[8080].seen_from is None


def test_seen_from_groups_vantages_by_state() -> None:
    """seen_from lists the vantages with a record of the port by state, open first, sorted;
    a close seen before the port was seen open (not looked at since) is left out."""
    at, before = T0, T0 - dt.timedelta(minutes=5)
    views = {
        "nyc": VantageView(ports={80: VantagePort(Observed.FILTERED, at)}),
        "fra": VantageView(ports={80: VantagePort(Observed.OPEN, at, since=at)}),
        "sfo": VantageView(ports={80: VantagePort(Observed.OPEN, at)}),
        "syd": VantageView(ports={80: VantagePort(Observed.CLOSED, before)}),
        "lon": VantageView(),
    }
    assert seen_from(views, 80) == {"open": ("fra", "sfo"), "filtered": ("nyc",)}
    assert seen_from(views, 443) is None


# ---------------------------------------------------------------------------- properties

PORTS = (22, 80, 443, 8080)
_state = st.sampled_from([None, Observed.OPEN, Observed.CLOSED, Observed.FILTERED])
_scan = st.one_of(
    st.just("silent"),
    st.tuples(*[_state for _ in PORTS]),
)


def _obs_of(vantage: str, at: dt.datetime, scan: object) -> Observation:
    if scan == "silent":
        return observation(vantage, at, filtered=PORTS)
    assert isinstance(scan, tuple)
    states = dict(zip(PORTS, scan, strict=True))
    return observation(
        vantage,
        at,
        open_=[p for p, s in states.items() if s is Observed.OPEN],
        closed=[p for p, s in states.items() if s is Observed.CLOSED],
        filtered=[p for p, s in states.items() if s is Observed.FILTERED],
    )


def _run(
    policy: TargetPolicy, obs: Sequence[Observation], degraded: frozenset[str] = frozenset()
) -> tuple[TargetState, list[Evaluation]]:
    state, out = TargetState(name=NAME), []
    for o in obs:
        ev = evaluate(state, o, policy, o.finished + dt.timedelta(seconds=1), degraded=degraded)
        state = ev.state
        out.append(ev)
    return state, out


_POLICY = st.builds(
    TargetPolicy,
    expected_open=st.frozensets(st.sampled_from(PORTS), max_size=2),
    resolve_after=st.integers(1, 3),
)


@settings(max_examples=150, deadline=None)
@given(policy=_POLICY, scans=st.lists(_scan, max_size=12), name=st.sampled_from(["fra", "nyc"]))
def test_one_vantage_gives_exactly_the_results_of_one_node(
    policy: TargetPolicy, scans: list[object], name: str
) -> None:
    """One vantage of any name: events, findings and the merged state are those of one node."""
    times = [T0 + dt.timedelta(minutes=i + 1) for i in range(len(scans))]
    alone, alone_out = _run(
        policy, [_obs_of("default", t, s) for t, s in zip(times, scans, strict=True)]
    )
    named, named_out = _run(
        policy, [_obs_of(name, t, s) for t, s in zip(times, scans, strict=True)]
    )
    assert dataclasses.replace(named, vantages={}) == alone
    for a, b in zip(alone_out, named_out, strict=True):
        assert a.events == b.events
        assert a.findings == b.findings
        assert a.reboot_suspected == b.reboot_suspected


def _merged(state: TargetState) -> tuple[object, ...]:
    """What the order of arrival must not change: open ports, active findings, status.

    Not the history: in one order both vantages may have seen a port closed at once (its
    finding resolved, then reopened), in another never.
    """
    return (
        frozenset(p for p, r in state.ports.items() if r.state is Observed.OPEN),
        {p: f.seen_from for p, f in state.findings.items()},
        state.status,
    )


def _records(state: TargetState) -> dict[str, dict[int, tuple[Observed, int]]]:
    """Each vantage's own records: state and closed streak per port."""
    return {
        v: {p: (r.state, r.closed_streak) for p, r in w.ports.items()}
        for v, w in state.vantages.items()
    }


_answering = st.tuples(*[_state for _ in PORTS]).filter(
    lambda t: any(s in (Observed.OPEN, Observed.CLOSED) for s in t)
)


@settings(max_examples=300, deadline=None)
@given(
    policy=_POLICY,
    fra=st.lists(_answering, min_size=1, max_size=6),
    nyc=st.lists(_answering, min_size=1, max_size=6),
    seed=st.randoms(use_true_random=False),
)
def test_order_of_vantages_does_not_change_the_final_state(
    policy: TargetPolicy, fra: list[object], nyc: list[object], seed: random.Random
) -> None:
    """Each vantage's scans in its own order, interleaved any way: the same final merged state.

    Both vantages first saw every port open (as after a reboot that opened them): each then
    keeps a record of every port. A closed port nobody had seen open gets no record (as in
    the merged state, for the cost of full scans), so a vantage's close that arrives before
    another vantage's open of that port is not counted in one order; that case is left out.
    """
    everything = tuple(Observed.OPEN for _ in PORTS)
    fra, nyc = [everything, *fra], [everything, *nyc]
    timed = [(T0 + dt.timedelta(minutes=2 * i + 1), "fra", s) for i, s in enumerate(fra)]
    timed += [(T0 + dt.timedelta(minutes=2 * i + 2), "nyc", s) for i, s in enumerate(nyc)]
    in_time = sorted(timed, key=lambda x: x[0])
    # Another interleaving after the first two: each vantage's own order kept, else random.
    queues = {v: [b for b in in_time[2:] if b[1] == v] for v in ("fra", "nyc")}
    shuffled = in_time[:2]
    while queues["fra"] or queues["nyc"]:
        ready = [v for v in ("fra", "nyc") if queues[v]]
        shuffled.append(queues[seed.choice(ready)].pop(0))
    one, _ = _run(policy, [_obs_of(v, t, s) for t, v, s in in_time])
    two, _ = _run(policy, [_obs_of(v, t, s) for t, v, s in shuffled])
    assert _merged(one) == _merged(two)
    assert _records(one) == _records(two)


@settings(max_examples=150, deadline=None)
@given(
    policy=_POLICY,
    scans=st.lists(st.tuples(st.sampled_from(["fra", "nyc"]), _scan), max_size=14),
    sick=st.sampled_from(["fra", "nyc"]),
)
def test_degraded_vantage_silence_never_creates_an_event(
    policy: TargetPolicy, scans: list[tuple[str, object]], sick: str
) -> None:
    """Whatever came before, a silent scan from a degraded vantage raises nothing."""
    state = TargetState(name=NAME)
    degraded = frozenset({sick})
    for i, (vantage, scan) in enumerate(scans):
        at = T0 + dt.timedelta(minutes=i + 1)
        ev = evaluate(state, _obs_of(vantage, at, scan), policy, at, degraded=degraded)
        state = ev.state
        silent = _obs_of(sick, at + dt.timedelta(seconds=30), "silent")
        quiet = evaluate(state, silent, policy, at + dt.timedelta(seconds=30), degraded=degraded)
        assert quiet.events == ()
        assert quiet.state == state
