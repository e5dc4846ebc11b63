"""Shard leases and fenced writes in the store, on SQLite and on PostgreSQL: times by the
database's clock, epochs bumped by takeovers only, stale fences refused with nothing written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from exposuremon.model import EventType, ScanKind, TargetState
from exposuremon.store import Fence, FencedWrite, Store, StoreError
from tests.store.test_store import T0, at, event, scan_of
from tests.support.databases import Backend

V = "default"


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """A fresh store on each dialect (real clock: leases use the database's)."""
    opened = await Store.open(backend.where)
    yield opened
    await opened.close()


def wall_micros() -> int:
    """This machine's clock in microseconds (the test database runs on it too)."""
    return time.time_ns() // 1000


async def test_heartbeat_keeps_started_at_and_moves_last_seen(store: Store) -> None:
    """A heartbeat upserts the node: started_at stays (unless restarted), last_seen is db now."""
    assert await store.fleet_shards() == 64
    before = wall_micros()
    first = await store.heartbeat("a", V, "1.0", "h1")
    second = await store.heartbeat("a", V, "1.1", "h2")
    assert before - 5_000_000 < first <= second < wall_micros() + 5_000_000
    (node,) = (await store.lease_view(V)).nodes
    assert (node.name, node.vantage, node.version, node.config_hash) == ("a", V, "1.1", "h2")
    assert (node.started_at, node.last_seen) == (first, second)
    third = await store.heartbeat("a", V, "1.1", "h2", restart=True)
    (node,) = (await store.lease_view(V)).nodes
    assert node.started_at == node.last_seen == third


async def test_take_renew_and_release(store: Store) -> None:
    """Taking free shards gives epoch 1 and a db-clock expiry; renewing keeps the epoch and
    moves the expiry; a released shard is taken by another node with the next epoch."""
    got = await store.acquire(V, "a", take={0, 1, 2}, renew={}, ttl=30)
    assert {s: h.epoch for s, h in got.held.items()} == {0: 1, 1: 1, 2: 1}
    assert got.takeovers == 0  # never held before: not a takeover
    assert all(h.expires_at == got.now + 30_000_000 for h in got.held.values())
    # Another node can take none of them while they are live.
    other = await store.acquire(V, "b", take={0, 1, 2, 3}, renew={}, ttl=30)
    assert set(other.held) == {3}
    renewed = await store.acquire(V, "a", take=(), renew={0: 1, 1: 1, 2: 1}, ttl=30)
    assert {s: h.epoch for s, h in renewed.held.items()} == {0: 1, 1: 1, 2: 1}
    assert renewed.now >= got.now
    # A renewal under the wrong epoch, or of someone else's shard, fails.
    wrong = await store.acquire(V, "a", take=(), renew={0: 7, 3: 1}, ttl=30)
    assert wrong.held == {}
    assert await store.release_shards(V, "a", {1, 2, 3}) == 2  # shard 3 is b's: untouched
    taken = await store.acquire(V, "b", take={1, 2}, renew={3: 1}, ttl=30)
    assert {s: h.epoch for s, h in taken.held.items()} == {1: 2, 2: 2, 3: 1}
    assert taken.takeovers == 2
    view = await store.lease_view(V)
    owners = {lease.shard: (lease.node, lease.epoch) for lease in view.leases}
    assert owners == {0: ("a", 1), 1: ("b", 2), 2: ("b", 2), 3: ("b", 1)}
    assert (await store.lease_view("elsewhere")).leases == ()


async def test_an_expired_lease_is_taken_over_and_cannot_be_renewed(store: Store) -> None:
    """Once the db clock passes expires_at, another node takes the shard (new epoch) and the
    old holder's renewal fails."""
    await store.acquire(V, "a", take={5}, renew={}, ttl=0.3)
    await asyncio.sleep(0.4)
    got = await store.acquire(V, "b", take={5}, renew={}, ttl=30)
    assert {s: h.epoch for s, h in got.held.items()} == {5: 2}
    assert got.takeovers == 1
    assert (await store.acquire(V, "a", take=(), renew={5: 1}, ttl=30)).held == {}


async def test_a_stale_fence_refuses_apply_and_writes_nothing(
    store: Store, backend: Backend
) -> None:
    """apply() under the current fence writes; under a fence whose lease moved on it raises
    FencedWrite and leaves every table as it was."""
    got = await store.acquire(V, "a", take={7}, renew={}, ttl=30)
    fence = Fence(V, 7, got.held[7].epoch, "a")
    state = TargetState(name="r", last_scan={ScanKind.QUICK: T0})
    await store.apply(
        scan_of("r", T0), state, [event("r", EventType.TARGET_UP, T0)], [], ["c"], fence=fence
    )
    await store.release_shards(V, "a", {7})
    await store.acquire(V, "b", take={7}, renew={}, ttl=30)
    before = await backend.counts()
    later = TargetState(name="r", last_scan={ScanKind.QUICK: at(1)})
    with pytest.raises(FencedWrite, match="shard 7 epoch 1") as raised:
        await store.apply(
            scan_of("r", at(1)), later, [event("r", EventType.PORT_OPENED, at(1))], [], ["c"],
            fence=fence,
        )  # fmt: skip
    assert isinstance(raised.value, StoreError)
    assert raised.value.fences == (fence,)
    assert await backend.counts() == before
    assert (await store.load_state("r")).last_scan == {ScanKind.QUICK: T0}
    # Without a fence, apply writes as it always did.
    await store.apply(scan_of("r", at(2)), later, [], [], [])


async def test_an_expired_fence_is_refused_even_if_nobody_took_the_shard(store: Store) -> None:
    """A lease past its db-clock expiry fences writes, taken over or not."""
    got = await store.acquire(V, "a", take={9}, renew={}, ttl=0.2)
    await asyncio.sleep(0.3)
    state = TargetState(name="r", last_scan={ScanKind.QUICK: T0})
    with pytest.raises(FencedWrite):
        await store.apply(
            scan_of("r", T0), state, [], [], [], fence=Fence(V, 9, got.held[9].epoch, "a")
        )
    with pytest.raises(FencedWrite):  # a shard never leased at all
        await store.apply(scan_of("r", T0), state, [], [], [], fence=Fence(V, 10, 1, "a"))


async def test_touch_drops_the_states_of_lost_shards(store: Store) -> None:
    """touch() with fences writes the states still fenced by a current lease and drops (and
    counts) those whose lease moved on or that have no fence."""
    got = await store.acquire(V, "a", take={1, 2}, renew={}, ttl=30)
    fences = {n: Fence(V, s, got.held[s].epoch, "a") for n, s in (("r1", 1), ("r2", 2))}
    for name in ("r1", "r2", "r3"):
        await store.apply(
            scan_of(name, T0), TargetState(name=name, last_scan={ScanKind.QUICK: T0}), [], [], []
        )
    await store.release_shards(V, "a", {2})
    quiet = [TargetState(name=n, last_scan={ScanKind.QUICK: at(5)}) for n in ("r1", "r2", "r3")]
    assert await store.touch(quiet, fences=fences) == 2
    scans = {n: (await store.load_state(n)).last_scan[ScanKind.QUICK] for n in ("r1", "r2", "r3")}
    assert scans == {"r1": at(5), "r2": T0, "r3": T0}
    assert await store.touch(quiet) == 0  # unfenced: as before, every state written


async def test_concurrent_takers_never_share_a_shard(backend: Backend) -> None:
    """Four stores (as four nodes) taking every shard at once end with each shard held by
    exactly one of them, with epoch 1."""
    stores = [await Store.open(backend.where) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(s.acquire(V, f"n{i}", take=range(64), renew={}, ttl=30) for i, s in enumerate(stores))
        )
    finally:
        for s in stores:
            await s.close()
    held = [shard for r in results for shard in r.held]
    assert sorted(held) == list(range(64))
    assert {h.epoch for r in results for h in r.held.values()} == {1}


async def test_fleet_snapshot_reads_every_vantage_at_once(store: Store, backend: Backend) -> None:
    """Every node, every vantage's held rows (never-held rows left out), the shard count and
    the database's now, in one read."""
    empty = await store.fleet_snapshot()
    assert (empty.shards, empty.nodes, dict(empty.leases), empty.vantages()) == (64, (), {}, ())
    await store.heartbeat("a", V, "1.0", "h1")
    await store.heartbeat("b", "fra", "1.0", "h2")
    await store.acquire(V, "a", take={0, 1}, renew={}, ttl=30)
    await store.acquire("fra", "b", take={3}, renew={}, ttl=30)
    # A row made free by a take that lost its race (nobody's, epoch 0): not a holder.
    await backend.run(
        "INSERT INTO shard_leases (vantage, shard, node, epoch, expires_at)"
        " VALUES (?, 9, '', 0, 0)",
        V,
    )
    snap = await store.fleet_snapshot()
    assert snap.shards == 64
    assert [(n.name, n.vantage) for n in snap.nodes] == [("a", V), ("b", "fra")]
    assert {v: [(x.shard, x.node) for x in rows] for v, rows in snap.leases.items()} == {
        V: [(0, "a"), (1, "a")],
        "fra": [(3, "b")],
    }
    assert snap.vantages() == (V, "fra")
    assert all(x.expires_at > snap.now for rows in snap.leases.values() for x in rows)
    assert abs(snap.now - wall_micros()) < 5_000_000
