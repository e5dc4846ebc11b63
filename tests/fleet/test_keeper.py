"""LeaseKeepers on a real database: fair shares, failover within lease_ttl + a round, fenced
writes after a takeover, a joining node without a gap, and a database restart survived."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from exposuremon.fleet import Held, LeaseKeeper, NodeIdentity, fair_shares, shard_of
from exposuremon.metrics import Metrics
from exposuremon.model import EventType, ScanKind, TargetState
from exposuremon.store import FencedWrite, Store
from tests.store.test_store import T0, at, event, scan_of
from tests.support import postgres
from tests.support.databases import Backend

V = "default"
TTL = 2.0  # seconds: rounds every 0.67 s
SLACK = 0.75  # a round's own duration and scheduling on a loaded 2-core CI box


def identity(name: str) -> NodeIdentity:
    """A node of the default vantage."""
    return NodeIdentity(name=name, vantage=V, version="test", config_hash="h")


async def wait_for(check: Callable[[], Any], deadline: float, what: str) -> Any:
    """Poll a condition (sync or async) every 20 ms until truthy, or fail after `deadline` s."""
    try:
        async with asyncio.timeout(deadline):
            while True:
                value = check()
                if isinstance(value, Awaitable):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {deadline}s: {what}") from None


class Fleet:
    """Keepers of one database, each with its own Store (as separate nodes would have)."""

    def __init__(self, where: Path | str) -> None:
        self.where = where
        self.keepers: dict[str, LeaseKeeper] = {}
        self.stores: list[Store] = []
        self.changes: dict[str, list[Held]] = {}

    async def join(self, name: str, ttl: float = TTL, **kw: Any) -> LeaseKeeper:
        store = await Store.open(self.where)
        self.stores.append(store)
        self.changes[name] = []
        keeper = LeaseKeeper(store, identity(name), ttl, on_change=self.changes[name].append, **kw)
        await keeper.start()
        self.keepers[name] = keeper
        return keeper

    def counts(self) -> dict[str, int]:
        return {name: len(k.held) for name, k in self.keepers.items()}

    def disjoint_cover(self, names: list[str], shards: int = 64) -> bool:
        """The keepers `names` hold every shard, none twice, each its fair share."""
        held = [s for n in names for s in self.keepers[n].held]
        shares = fair_shares(names, shards)
        return sorted(held) == list(range(shards)) and all(
            len(self.keepers[n].held) == share for n, share in shares.items()
        )

    async def close(self) -> None:
        for keeper in self.keepers.values():
            await keeper.stop()
        for store in self.stores:
            await store.close()


@pytest.fixture
async def fleet(pg_url: str) -> AsyncIterator[Fleet]:
    """Keepers on a fresh PostgreSQL database; all stopped at the end."""
    made = Fleet(pg_url)
    yield made
    await made.close()


def abandon(keeper: LeaseKeeper) -> None:
    """End a keeper's task without releasing anything, as a crash or SIGKILL would."""
    assert keeper._task is not None
    keeper._task.cancel()


async def test_two_then_three_keepers_share_the_shards_fairly(fleet: Fleet) -> None:
    """Two keepers end with 32 shards each, three with 22/21/21, never a shard held twice."""
    metrics = Metrics()
    await fleet.join("a", metrics=metrics)
    assert fleet.counts() == {"a": 64}  # alone: everything, from the first round on
    await fleet.join("b")
    await wait_for(lambda: fleet.disjoint_cover(["a", "b"]), 20, "a and b at 32 each")
    await fleet.join("c")
    await wait_for(lambda: fleet.disjoint_cover(["a", "b", "c"]), 20, "22/21/21")
    assert fleet.counts() == {"a": 22, "b": 21, "c": 21}
    assert all(k.healthy and k.reason == "" for k in fleet.keepers.values())
    assert metrics.shards_held._value.get() == 22
    assert metrics.fleet_nodes.labels(vantage=V)._value.get() == 3
    # Every fence names a shard its keeper holds, and only one keeper has one per target.
    for target in (f"router-{i}" for i in range(200)):
        fences = [k.fence_for(target) for k in fleet.keepers.values()]
        (fence,) = [f for f in fences if f is not None]
        assert fence.shard == shard_of(target, 64)


async def test_a_dead_keepers_shards_move_within_the_lease_time(fleet: Fleet) -> None:
    """A keeper that stops renewing (killed) loses its shards to the others within
    lease_ttl + one round, and its old fence is refused with nothing written."""
    for name in ("a", "b", "c"):
        await fleet.join(name)
    await wait_for(lambda: fleet.disjoint_cover(["a", "b", "c"]), 20, "22/21/21")
    dead = fleet.keepers["c"]
    target = next(t for t in (f"r{i}" for i in range(1000)) if dead.fence_for(t) is not None)
    stale = dead.fence_for(target)
    assert stale is not None
    abandon(dead)
    killed = time.monotonic()
    await wait_for(lambda: fleet.disjoint_cover(["a", "b"]), TTL + TTL / 3 + SLACK, "failover")
    took = time.monotonic() - killed
    assert took <= TTL + TTL / 3 + SLACK
    assert sum(k.takeovers for n, k in fleet.keepers.items() if n != "c") >= 21
    # The dead node's late result is refused; the new holder's is written.
    store = fleet.stores[2]
    state = TargetState(name=target, last_scan={ScanKind.QUICK: T0})
    backend = Backend.postgresql(str(fleet.where))
    before = await backend.counts()
    with pytest.raises(FencedWrite):
        await store.apply(
            scan_of(target, T0), state, [event(target, EventType.TARGET_UP, T0)], [], ["c"],
            fence=stale,
        )  # fmt: skip
    assert await backend.counts() == before
    owner = next(k for k in fleet.keepers.values() if k is not dead and k.owns(target))
    later = TargetState(name=target, last_scan={ScanKind.QUICK: at(1)})
    await store.apply(scan_of(target, at(1)), later, [], [], [], fence=owner.fence_for(target))
    assert (await store.load_state(target)).last_scan == {ScanKind.QUICK: at(1)}


async def test_a_joining_keeper_gets_its_share_without_a_gap(fleet: Fleet) -> None:
    """While a second keeper joins and shards move to it, no shard stays without a live lease
    (by the database's clock) for longer than one round."""
    await fleet.join("a")
    store = fleet.stores[0]
    unheld_since: dict[int, int] = {}
    longest = 0

    async def balanced() -> bool:
        nonlocal longest
        view = await store.lease_view(V)
        live = {lease.shard for lease in view.leases if lease.expires_at > view.now}
        for shard in range(64):
            if shard in live:
                started = unheld_since.pop(shard, None)
                if started is not None:
                    longest = max(longest, view.now - started)
            else:
                unheld_since.setdefault(shard, view.now)
        return "b" in fleet.keepers and fleet.disjoint_cover(["a", "b"])

    joined = asyncio.create_task(fleet.join("b"))
    try:
        await wait_for(balanced, 30, "a and b at 32 each")
    finally:
        await joined
    await balanced()  # b may have taken the last ones after the view before was read
    assert not unheld_since
    assert longest <= (TTL / 3 + SLACK) * 1_000_000, f"a shard was unheld {longest / 1e6:.2f}s"
    assert fleet.keepers["b"].takeovers == 32  # each released by a, taken with a new epoch


async def test_stop_releases_everything_for_the_others_at_once(fleet: Fleet) -> None:
    """A keeper stopping releases its leases: the other takes them in its next round, not
    after lease_ttl, and on_change saw the shards go."""
    await fleet.join("a")
    b = await fleet.join("b")
    await wait_for(lambda: fleet.disjoint_cover(["a", "b"]), 20, "a and b at 32 each")
    await b.stop()
    assert fleet.changes["b"][-1] == {}
    assert (b.healthy, b.reason, b.held) == (False, "stopped", {})
    del fleet.keepers["b"]
    await wait_for(lambda: fleet.counts()["a"] == 64, TTL / 3 + SLACK, "a holds all 64 again")


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    """A sample's value in the metrics' registry, None when it has no such series."""
    return metrics.registry.get_sample_value(f"exposuremon_{name}", labels)


async def test_fleet_gauges_count_every_vantage(fleet: Fleet) -> None:
    """fleet_shards carries the shard count and this node's vantage; fleet_nodes counts the
    live nodes of every vantage with a node row: 0 once they are all silent, and no series
    once their rows are gone (they stopped)."""
    metrics = Metrics()
    await fleet.join("a", metrics=metrics)
    other = await Store.open(fleet.where)
    fleet.stores.append(other)
    fra = LeaseKeeper(other, NodeIdentity("f", "fra", "test", "h"), TTL)
    await fra.start()
    assert gauge(metrics, "fleet_shards", vantage=V) == 64
    assert gauge(metrics, "fleet_shards", vantage="fra") is None  # only this node's vantage
    await wait_for(lambda: gauge(metrics, "fleet_nodes", vantage="fra") == 1, 5, "fra seen")
    assert gauge(metrics, "fleet_nodes", vantage=V) == 1
    abandon(fra)  # killed: its row stays, its heartbeat stops
    await wait_for(lambda: gauge(metrics, "fleet_nodes", vantage="fra") == 0, TTL + 2, "fra silent")
    await other.release_shards("fra", "f", (), leave=True)  # its row goes, as a stop would do
    await wait_for(lambda: gauge(metrics, "fleet_nodes", vantage="fra") is None, 5, "fra forgotten")
    assert gauge(metrics, "fleet_nodes", vantage=V) == 1


async def test_a_keeper_alone_on_sqlite_holds_every_shard(tmp_path: Path) -> None:
    """On SQLite (one node) the same code path holds all 64 shards and fences writes."""
    fleet = Fleet(tmp_path)
    try:
        keeper = await fleet.join("solo", ttl=1.5)
        assert len(keeper.held) == 64
        fence = keeper.fence_for("r")
        assert fence is not None
        state = TargetState(name="r", last_scan={ScanKind.QUICK: T0})
        await fleet.stores[0].apply(scan_of("r", T0), state, [], [], [], fence=fence)
        rounds = keeper.rounds
        await wait_for(lambda: keeper.rounds >= rounds + 3, 5, "three renewals")
        assert len(keeper.held) == 64
        assert keeper.fence_for("r") == fence  # renewed: same epoch
    finally:
        await fleet.close()


# -- the database going away ----------------------------------------------------------------


def pg_ctl(cluster: postgres.Cluster, *args: str) -> None:
    """Run pg_ctl on the cluster's data directory as the postgres user."""
    argv = ["runuser", "-u", postgres.PG_USER, "--", str(cluster.bin / "pg_ctl")]
    subprocess.run(
        [*argv, "-D", str(cluster.data), "-w", "-t", "60", *args],
        check=True,
        capture_output=True,
        timeout=90,
    )


def start_server(cluster: postgres.Cluster) -> None:
    """Start the (stopped) server again on the same socket."""
    options = (
        f"-c listen_addresses='' -c unix_socket_directories='{cluster.socket_dir}' "
        "-c fsync=off -c max_connections=200"
    )
    pg_ctl(cluster, "-l", str(cluster.root / "server.log"), "-o", options, "start")


async def test_a_keeper_survives_a_database_restart(
    own_cluster: postgres.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the database stopped, the keeper drops its shards and turns unhealthy within
    lease_ttl, naming the error but not the password; started again, it rejoins by itself."""
    name = own_cluster.create_database()
    url = own_cluster.url(name).replace("postgres@", "postgres:hunter2@", 1)
    fleet = Fleet(url)
    try:
        keeper = await fleet.join("a")
        assert len(keeper.held) == 64
        rounds = keeper.rounds
        await wait_for(lambda: keeper.rounds > rounds, 5, "a renewal")
        await asyncio.to_thread(pg_ctl, own_cluster, "-m", "fast", "stop")
        stopped = time.monotonic()
        await wait_for(lambda: not keeper.healthy, TTL + SLACK, "unhealthy")
        assert time.monotonic() - stopped <= TTL + SLACK
        assert keeper.held == {}
        assert fleet.changes["a"][-1] == {}
        assert keeper.fence_for("r") is None
        assert "lease time" in keeper.reason
        assert "Error" in keeper.reason  # the error's type, e.g. ConnectionRefusedError
        assert "hunter2" not in keeper.reason
        await asyncio.to_thread(start_server, own_cluster)
        await wait_for(lambda: keeper.healthy, TTL + SLACK + 5, "healthy again")
        assert len(keeper.held) == 64
        assert keeper.reason == ""
        assert "hunter2" not in capsys.readouterr().err
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(start_server, own_cluster)
        await fleet.close()
