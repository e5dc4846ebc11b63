"""Per-vantage records in the store (both dialects): kept with the target, and writes of
several vantages to one target each evaluated against the state stored when they commit."""

from __future__ import annotations

import asyncio
import datetime as dt

from exposuremon.detect import Evaluation, TargetPolicy, evaluate
from exposuremon.model import (
    Event,
    EventType,
    Finding,
    Observation,
    Observed,
    ScanKind,
    TargetState,
)
from exposuremon.store.database import ScanRecord, Store
from exposuremon.store.queries import Route
from tests.support.databases import Backend

T0 = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
NAME = "surgery-router"
POLICY = TargetPolicy(expected_open=frozenset({22}))


def observe(vantage: str, minutes: float, open_: list[int], closed: list[int]) -> Observation:
    """A scan of the target from `vantage`, finished `minutes` after T0 (open ports confirmed)."""
    at = T0 + dt.timedelta(minutes=minutes)
    states = {p: Observed.CLOSED for p in closed} | {p: Observed.OPEN for p in open_}
    return Observation(
        target=NAME,
        kind=ScanKind.SENTINEL,
        address="198.51.100.7",
        started=at - dt.timedelta(seconds=2),
        finished=at,
        complete=True,
        states=states,
        confirmed_open=frozenset(open_),
        responded=True,
        vantage=vantage,
    )


def record(obs: Observation) -> ScanRecord:
    """The scans row of an observation."""
    return ScanRecord(
        target=NAME,
        kind=obs.kind,
        address=obs.address,
        started=obs.started,
        finished=obs.finished,
        complete=True,
        ports_scanned=len(obs.states),
        open_count=sum(s is Observed.OPEN for s in obs.states.values()),
        closed_count=sum(s is Observed.CLOSED for s in obs.states.values()),
        filtered_count=0,
        duration_s=2.0,
        vantage=obs.vantage,
    )


def nowhere(_event: object) -> list[str]:
    """No notification channel."""
    return []


async def write(
    store: Store, prev: TargetState, based_on: int, obs: Observation
) -> tuple[TargetState, int, list[TargetState]]:
    """Evaluate `obs` against `prev` (held at stamp `based_on`) and apply it as a node does.

    Returns the stored state, its stamp, and the states `redo` was handed (if any)."""
    now = obs.finished
    ev = evaluate(prev, obs, POLICY, now)
    handed: list[TargetState] = []

    def redo(
        stored: TargetState,
    ) -> tuple[TargetState, tuple[Event, ...], tuple[Finding, ...], Route]:
        handed.append(stored)
        again: Evaluation = evaluate(stored, obs, POLICY, now)
        return again.state, again.events, again.findings, nowhere

    applied = await store.apply(
        record(obs), ev.state, ev.events, ev.findings, nowhere, based_on=based_on, redo=redo
    )
    return applied.state, applied.stamp, handed


async def test_vantage_records_and_seen_from_are_stored_and_loaded(backend: Backend) -> None:
    """Each vantage's records, the finding's seen_from and the scans' vantage round-trip."""
    async with await Store.open(backend.where) as store:
        state, seq = await store.load_state_stamped(NAME)
        assert seq == 0
        state, seq, _ = await write(store, state, seq, observe("fra", 1, [22, 8080], [443]))
        state, seq, _ = await write(store, state, seq, observe("nyc", 2, [22], [443, 8080]))
        loaded, stored_seq = await store.load_state_stamped(NAME)
        assert loaded == state
        assert stored_seq == seq
        assert set(loaded.vantages) == {"fra", "nyc"}
        assert loaded.vantages["nyc"].ports[8080].state is Observed.CLOSED
        assert loaded.findings[8080].seen_from == {"open": ("fra",), "closed": ("nyc",)}
        findings, _ = await store.findings(target=NAME)
        assert [f.seen_from for f in findings] == [{"open": ("fra",), "closed": ("nyc",)}]
        vantages = await backend.run("SELECT vantage FROM scans ORDER BY id")
        assert [v for (v,) in vantages] == ["fra", "nyc"]


async def test_a_write_on_a_stale_state_is_evaluated_again_on_the_stored_one(
    backend: Backend,
) -> None:
    """Two nodes of two vantages start from the same state; the second to write is handed the
    first one's state and keeps both vantages' records: one finding, no lost evidence."""
    async with await Store.open(backend.where) as a, await Store.open(backend.where) as b:
        start, seq = await a.load_state_stamped(NAME)
        state_a, _, handed_a = await write(a, start, seq, observe("fra", 1, [22, 8080], []))
        assert handed_a == []  # nothing written since: no second evaluation
        state_b, _, handed_b = await write(b, start, seq, observe("nyc", 1.5, [22, 8080], []))
        assert [h.vantages.keys() for h in handed_b] == [{"fra"}]
        assert set(state_b.vantages) == {"fra", "nyc"}
        stored = await a.load_state(NAME)
        assert stored == state_b
        assert list(stored.findings) == [8080]
        assert stored.findings[8080].seen_from == {"open": ("fra", "nyc")}
        events, _ = await a.events(target=NAME, type=EventType.FINDING_OPENED)
        assert len(events) == 1
        assert state_a.findings[8080].id == stored.findings[8080].id


async def test_concurrent_writes_of_two_vantages_keep_both(backend: Backend) -> None:
    """Writes of two vantages racing from one stale state: every record kept, one finding."""
    async with await Store.open(backend.where) as a, await Store.open(backend.where) as b:
        start, seq = await a.load_state_stamped(NAME)
        for round_ in range(5):
            minutes = 1 + round_
            await asyncio.gather(
                write(a, start, seq, observe("fra", minutes, [22, 8080], [443])),
                write(b, start, seq, observe("nyc", minutes + 0.5, [22, 8080], [443])),
            )
        stored = await a.load_state(NAME)
        assert set(stored.vantages) == {"fra", "nyc"}
        assert {v: w.ports[8080].state for v, w in stored.vantages.items()} == {
            "fra": Observed.OPEN,
            "nyc": Observed.OPEN,
        }
        findings, _ = await a.findings(target=NAME)
        assert [f.port for f in findings] == [8080]


async def test_reprobe_requests_reach_the_other_vantages_with_their_ports(
    backend: Backend,
) -> None:
    """A re-probe asked by fra is left for every other vantage with nodes, with its ports."""
    async with await Store.open(backend.where) as store:
        for node, vantage in (("a", "fra"), ("b", "nyc"), ("c", "sfo"), ("d", "nyc")):
            await store.heartbeat(node, vantage, "1.0", "hash")
        asked = await store.request_reprobe("fra", 7, NAME, {8080, 443})
        assert asked == ["nyc", "sfo"]
        assert await store.take_scan_requests("fra", {7}) == []
        assert await store.take_scan_requests("nyc", {7}) == [
            (NAME, ScanKind.SENTINEL, frozenset({443, 8080}))
        ]
        assert await store.take_scan_requests("nyc", {7}) == []
        await store.request_scan("sfo", 7, NAME, ScanKind.QUICK)
        assert await store.take_scan_requests("sfo", {7}) == [
            (NAME, ScanKind.SENTINEL, frozenset({443, 8080})),
            (NAME, ScanKind.QUICK, None),
        ]
