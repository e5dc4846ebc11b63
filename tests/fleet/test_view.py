"""The fleet view (pure): liveness by the database's clock, shards held, unheld shards, config
hashes that differ, vantages up or degraded, and the JSON body the API and the CLI share."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposuremon.fleet import DEGRADED, UP, fleet_view, reference_hash
from exposuremon.store import FleetNode, FleetSnapshot, Lease
from exposuremon.web import fleet_json

S = 1_000_000  # microseconds per second
NOW = 1_795_000_000 * S  # the database's now in every snapshot here
TTL = 15.0


def node(
    name: str, vantage: str = "default", seen: float = 1.0, config: str = "h1", version: str = "1"
) -> FleetNode:
    """A node row whose last heartbeat was `seen` seconds before NOW."""
    return FleetNode(
        name=name,
        vantage=vantage,
        started_at=NOW - 3600 * S,
        last_seen=NOW - round(seen * S),
        version=version,
        config_hash=config,
    )


def lease(shard: int, holder: str, expires_in: float = 10.0, epoch: int = 1) -> Lease:
    """A lease row expiring `expires_in` seconds after NOW (negative: expired)."""
    return Lease(shard=shard, node=holder, epoch=epoch, expires_at=NOW + round(expires_in * S))


def snapshot(
    nodes: list[FleetNode], leases: dict[str, list[Lease]], shards: int = 8
) -> FleetSnapshot:
    """A snapshot at NOW."""
    rows = {v: tuple(ls) for v, ls in leases.items()}
    return FleetSnapshot(now=NOW, shards=shards, leases=rows, nodes=tuple(nodes))


def test_nodes_alive_shards_and_owners() -> None:
    """Liveness is a heartbeat within lease_ttl; a node's shards are its unexpired leases;
    expired leases are unheld, and owners carry their lease's age and expiry."""
    snap = snapshot(
        [node("a"), node("b"), node("dead", seen=16.0)],
        {"default": [lease(0, "a"), lease(1, "a"), lease(2, "b", 3.0), lease(3, "dead", -1.0)]},
    )
    view = fleet_view(snap, TTL)
    by_name = {n.name: n for n in view.nodes}
    assert [n.name for n in view.nodes] == ["a", "b", "dead"]
    assert {n: (v.alive, v.shards) for n, v in by_name.items()} == {
        "a": (True, 2),
        "b": (True, 1),
        "dead": (False, 0),
    }
    assert by_name["dead"].seen_ago == 16.0
    assert by_name["a"].last_seen == dt.datetime.fromtimestamp((NOW - S) / S, dt.UTC)
    (owned,) = view.shard_owners
    assert [(o.shard, o.node) for o in owned.owners] == [(0, "a"), (1, "a"), (2, "b")]
    b_lease = owned.owners[2]
    assert (b_lease.age, b_lease.expires_in) == (12.0, 3.0)
    assert owned.unheld == (3, 4, 5, 6, 7)
    (vantage,) = view.vantages
    assert (vantage.name, vantage.status, vantage.nodes, vantage.nodes_total) == (
        "default",
        UP,
        2,
        3,
    )
    assert vantage.shards_held == 3


def test_a_vantage_without_a_live_node_is_degraded() -> None:
    """Every vantage named by a node or a lease is listed; one whose nodes are all silent is
    degraded, and its shards whose leases ran out are unheld."""
    snap = snapshot(
        [node("a", "fra"), node("b", "ams", seen=30)],
        {"fra": [lease(0, "a")], "ams": [lease(0, "b", -15.0)], "old": [lease(1, "x", -100)]},
        shards=2,
    )
    view = fleet_view(snap, TTL)
    assert [(v.name, v.status, v.nodes) for v in view.vantages] == [
        ("ams", DEGRADED, 0),
        ("fra", UP, 1),
        ("old", DEGRADED, 0),
    ]
    assert {v.vantage: v.unheld for v in view.shard_owners} == {
        "ams": (0, 1),
        "fra": (1,),
        "old": (0, 1),
    }
    # Nodes: by vantage, then name.
    assert [(n.vantage, n.name) for n in view.nodes] == [("ams", "b"), ("fra", "a")]


def test_a_vantage_whose_scans_went_silent_is_degraded_with_live_nodes() -> None:
    """A vantage whose shared health is degraded shows degraded although its node is live;
    `health` tells that from one without a live node."""
    snap = dataclasses.replace(
        snapshot(
            [node("a", "fra"), node("b", "ams"), node("c", "nyc", seen=30)],
            {"fra": [lease(0, "a")], "ams": [lease(0, "b")], "nyc": [lease(0, "c", -15.0)]},
        ),
        degraded=frozenset({"fra"}),
    )
    view = fleet_view(snap, TTL)
    assert [(v.name, v.status, v.nodes, v.health) for v in view.vantages] == [
        ("ams", UP, 1, UP),
        ("fra", DEGRADED, 1, DEGRADED),
        ("nyc", DEGRADED, 0, UP),
    ]


def test_config_differs_from_the_most_common_hash_among_live_nodes() -> None:
    """The reference is the live majority's hash; dead nodes do not vote but are compared."""
    snap = snapshot(
        [
            node("a", config="new"),
            node("b", config="new"),
            node("c", config="old"),
            node("d", config="old", seen=60),
            node("e", config="older", seen=60),
        ],
        {},
    )
    view = fleet_view(snap, TTL)
    assert view.config_hash == "new"
    assert {n.name: n.config_differs for n in view.nodes} == {
        "a": False,
        "b": False,
        "c": True,
        "d": True,
        "e": True,
    }


def test_a_tie_flags_every_node() -> None:
    """Two live nodes with two configs: no reference, both flagged; all agree: none flagged."""
    tie = fleet_view(snapshot([node("a", config="x"), node("b", config="y")], {}), TTL)
    assert tie.config_hash is None
    assert all(n.config_differs for n in tie.nodes)
    same = fleet_view(snapshot([node("a"), node("b"), node("c", seen=99, config="z")], {}), TTL)
    assert [n.config_differs for n in same.nodes] == [False, False, True]
    nobody = fleet_view(snapshot([node("a", seen=99, config="x"), node("b", seen=99)], {}), TTL)
    assert nobody.config_hash is None
    assert not any(n.config_differs for n in nobody.nodes)


def test_reference_hash() -> None:
    """The most common hash, or None when empty or tied."""
    assert reference_hash([]) is None
    assert reference_hash(["a"]) == "a"
    assert reference_hash(["a", "b"]) is None
    assert reference_hash(["a", "b", "b"]) == "b"
    assert reference_hash(["a", "a", "b", "b", "c"]) is None


def test_an_empty_database_is_an_empty_fleet() -> None:
    """A store no keeper ever wrote to (a single SQLite node): no node, no vantage, every
    shard counted in the total."""
    view = fleet_view(snapshot([], {}, shards=64), TTL)
    assert (view.nodes, view.vantages, view.shard_owners) == ((), (), ())
    body = fleet_json(view)
    assert body["nodes"] == []
    assert body["vantages"] == []
    assert body["shards"] == {"total": 64, "vantages": {}}


def test_lease_ttl_must_be_positive() -> None:
    """A lease_ttl of 0 is refused."""
    with pytest.raises(ValueError, match="lease_ttl"):
        fleet_view(snapshot([], {}), 0)


def test_json_keeps_the_contract_keys() -> None:
    """DESIGN.md's keys, exactly, plus the documented additive ones; times RFC 3339 UTC."""
    view = fleet_view(snapshot([node("a")], {"default": [lease(5, "a", 14.5, epoch=3)]}), TTL)
    body = fleet_json(view)
    assert set(body) == {"now", "lease_ttl", "config_hash", "nodes", "vantages", "shards"}
    (n,) = body["nodes"]
    assert {"node", "vantage", "started_at", "last_seen", "shards", "version"} <= set(n)
    assert n == {
        "node": "a",
        "vantage": "default",
        "started_at": "2026-11-18T10:06:40Z",
        "last_seen": "2026-11-18T11:06:39Z",
        "shards": 1,
        "version": "1",
        "alive": True,
        "seen_ago": 1.0,
        "config_hash": "h1",
        "config_differs": False,
    }
    assert body["now"] == "2026-11-18T11:06:40Z"
    assert body["vantages"] == [
        {
            "name": "default",
            "status": "up",
            "nodes": 1,
            "nodes_total": 1,
            "shards_held": 1,
            "health": "up",
        }
    ]
    owners = body["shards"]["vantages"]["default"]
    assert owners["owners"] == [
        {"shard": 5, "node": "a", "epoch": 3, "age": 0.5, "expires_in": 14.5}
    ]
    assert owners["unheld"] == [0, 1, 2, 3, 4, 6, 7]


names = st.sampled_from(["a", "b", "c", "d"])
vantage_names = st.sampled_from(["default", "fra"])


@st.composite
def snapshots(draw: st.DrawFn) -> FleetSnapshot:
    """Random nodes (two vantages, two configs, alive or not) and leases (live or expired)."""
    shards = draw(st.integers(1, 16))
    nodes = {
        name: node(
            name,
            draw(vantage_names),
            seen=draw(st.floats(0, 40)),
            config=draw(st.sampled_from(["x", "y"])),
        )
        for name in draw(st.sets(names))
    }
    leases: dict[str, list[Lease]] = {}
    for v in draw(st.sets(vantage_names)):
        taken = draw(st.sets(st.integers(0, shards - 1)))
        leases[v] = [
            lease(s, draw(names), draw(st.floats(-30, 15)), draw(st.integers(1, 9)))
            for s in sorted(taken)
        ]
    return snapshot(list(nodes.values()), leases, shards)


@given(snapshots())
def test_properties(snap: FleetSnapshot) -> None:
    """Per vantage, owners and unheld shards partition the shards; a node's count is what the
    owners list names; a vantage is up exactly when one of its nodes is alive; the JSON
    body has the same figures."""
    view = fleet_view(snap, TTL)
    assert {v.name for v in view.vantages} == set(snap.vantages())
    for owned in view.shard_owners:
        held = [o.shard for o in owned.owners]
        assert sorted(held + list(owned.unheld)) == list(range(snap.shards))
        assert all(o.expires_in > 0 and 0 <= o.age <= TTL for o in owned.owners)
    owners = {(v.vantage, o.node) for v in view.shard_owners for o in v.owners}
    for n in view.nodes:
        count = sum(
            1
            for v in view.shard_owners
            if v.vantage == n.vantage
            for o in v.owners
            if o.node == n.name
        )
        assert n.shards == count
        assert (n.shards > 0) == ((n.vantage, n.name) in owners)
        assert n.alive == (n.seen_ago < TTL)
    for v in view.vantages:
        assert (v.status == UP) == any(n.alive for n in view.nodes if n.vantage == v.name)
    body = fleet_json(view)
    assert [n["shards"] for n in body["nodes"]] == [n.shards for n in view.nodes]
    assert all(v["status"] in ("up", "degraded") for v in body["vantages"])
