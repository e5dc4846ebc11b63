"""The pure half of fleet mode: shards of targets, fair shares, and a simulated fleet of nodes
taking, renewing and releasing leases by `plan` on a fake clock."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from exposuremon.fleet import Plan, fair_shares, live_nodes, plan, shard_of
from exposuremon.store import Lease

TTL = 3_000_000  # microseconds
ROUND = TTL // 3


def test_shard_of_is_pinned() -> None:
    """A target's shard is BLAKE2b of its name: these values never change between versions."""
    # A fleet of mixed versions (a rolling upgrade) must agree: changing these is a migration.
    assert (shard_of("surgery-router", 64), shard_of("shop", 64), shard_of("", 64)) == (0, 6, 52)
    digest = hashlib.blake2b(b"shop", digest_size=8).digest()
    assert shard_of("shop", 1000) == int.from_bytes(digest, "big") % 1000


def test_shard_of_is_the_same_in_another_process() -> None:
    """Another interpreter with another hash seed puts the names in the same shards."""
    names = ["surgery-router", "shop", "практика-7", "198.51.100.7"]
    code = (
        "import sys; from exposuremon.fleet import shard_of; "
        "print([shard_of(n, 64) for n in sys.argv[1:]])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *names],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == str([shard_of(n, 64) for n in names])


@given(st.text(max_size=40), st.integers(min_value=1, max_value=4096))
def test_shard_of_is_in_range(name: str, shards: int) -> None:
    """Every name falls in 0..shards-1."""
    assert 0 <= shard_of(name, shards) < shards


@given(st.sets(st.text(min_size=1, max_size=8), min_size=1, max_size=20), st.integers(1, 300))
def test_fair_shares_add_up_and_differ_by_one_at_most(names: set[str], shards: int) -> None:
    """Shares sum to the shard count, differ by at most one, the larger ones first by name."""
    shares = fair_shares(names, shards)
    assert sum(shares.values()) == shards
    values = [shares[n] for n in sorted(names)]
    assert values == sorted(values, reverse=True)
    assert max(values) - min(values) <= 1


def test_a_joining_node_gets_released_shards_a_few_per_round() -> None:
    """A node holding everything releases at most max_release a round to a node with none,
    and keeps renewing the rest."""
    now = 10 * TTL
    leases = [Lease(s, "a", 1, now + TTL) for s in range(64)]
    decided = plan(leases, {"a", "b"}, "a", 64, now, max_release=8)
    assert len(decided.release) == 8
    assert not decided.take
    assert set(decided.renew) == set(range(64)) - decided.release
    # Nobody below its share: nothing is released into a void.
    alone = plan(leases, {"a"}, "a", 64, now)
    assert alone.release == frozenset()
    assert len(alone.renew) == 64


def test_expired_and_missing_shards_are_taken_up_to_the_share() -> None:
    """Free (no row) and expired shards are taken up to the share; a live lease never is."""
    now = 10 * TTL
    leases = [Lease(s, "b", 3, now + 1) for s in range(10)]
    leases += [Lease(s, "dead", 5, now) for s in range(10, 20)]  # expires_at == now: expired
    decided = plan(leases, {"a", "b"}, "a", 20, now)
    assert decided.take == frozenset(range(10, 20))
    assert decided == Plan(take=decided.take, renew={}, release=frozenset())


# -- a simulated fleet --------------------------------------------------------------------------


@dataclasses.dataclass
class SimNode:
    """A node as the keeper runs it: local leases valid until its round's start + TTL."""

    name: str
    held: dict[int, int] = dataclasses.field(default_factory=dict)
    valid_until: int = 0  # local clock (the same fake clock here)
    running: bool = True  # False: paused (SIGSTOP) or dead, rounds do not run


class FakeDb:
    """The lease rows with the same rules as `Store.acquire` / `release`."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self.rows: dict[int, Lease] = {}
        self.last_seen: dict[str, int] = {}

    def acquire(self, node: str, p: Plan, now: int) -> dict[int, int]:
        held = {}
        for shard in sorted({*p.take, *p.renew}):
            row = self.rows.get(shard, Lease(shard, "", 0, 0))
            if row.expires_at > now:
                if row.node == node and p.renew.get(shard) == row.epoch:
                    self.rows[shard] = dataclasses.replace(row, expires_at=now + TTL)
                    held[shard] = row.epoch
                continue
            self.rows[shard] = Lease(shard, node, row.epoch + 1, now + TTL)
            held[shard] = row.epoch + 1
        return held

    def release(self, node: str, shards: frozenset[int], now: int) -> None:
        for shard in shards:
            row = self.rows[shard]
            if row.node == node and row.expires_at > now:
                self.rows[shard] = dataclasses.replace(row, expires_at=now)


def run_round(db: FakeDb, node: SimNode, now: int) -> None:
    """One keeper round: heartbeat, view, plan, release (dropped locally first), acquire."""
    db.last_seen[node.name] = now
    live = live_nodes(db.last_seen, now, TTL)
    decided = plan(list(db.rows.values()), live, node.name, db.shards, now)
    for shard in decided.release:
        node.held.pop(shard, None)
    db.release(node.name, decided.release, now)
    node.held = db.acquire(node.name, decided, now)
    node.valid_until = now + TTL


def check_no_double_holder(db: FakeDb, nodes: list[SimNode], now: int) -> None:
    """No shard is believed held (locally valid) by two nodes, and each belief matches a row."""
    for shard in range(db.shards):
        believers = [n for n in nodes if shard in n.held and n.valid_until > now]
        assert len(believers) <= 1, (shard, [n.name for n in believers])
        for n in believers:
            row = db.rows[shard]
            assert (row.node, row.epoch) == (n.name, n.held[shard])
            assert row.expires_at >= n.valid_until


Action = tuple[str, int]
actions = st.lists(
    st.tuples(
        st.sampled_from(["round", "round", "round", "advance", "pause", "resume", "join", "kill"]),
        st.integers(min_value=0, max_value=5),
    ),
    max_size=60,
)


@settings(max_examples=150)
@given(st.integers(min_value=1, max_value=64), st.integers(1, 4), actions)
def test_a_simulated_fleet_converges_and_never_double_holds(
    shards: int, first: int, steps: list[Action]
) -> None:
    """Nodes joining, pausing, dying and running rounds in any order never both hold a
    shard; once the survivors run their rounds, each shard has one live holder and every
    node its fair share."""
    db = FakeDb(shards)
    nodes = [SimNode(f"n{i}") for i in range(first)]
    now = TTL
    joined = 0
    for action, arg in steps:
        if action == "round" and nodes:
            node = nodes[arg % len(nodes)]
            if node.running:
                run_round(db, node, now)
        elif action == "advance":
            now += (arg + 1) * ROUND // 2
        elif action == "pause" and nodes:
            nodes[arg % len(nodes)].running = False
        elif action == "resume" and nodes:
            nodes[arg % len(nodes)].running = True
        elif action == "join":
            joined += 1
            nodes.append(SimNode(f"j{joined}"))  # names are unique, as in a fleet
        elif action == "kill" and nodes:
            nodes.pop(arg % len(nodes))  # its rows stay until they expire
        check_no_double_holder(db, nodes, now)
    survivors = [n for n in nodes if n.running]
    if not survivors:
        return
    # Every survivor runs a round every ROUND (in name order within a round), long enough
    # for the paused and dead nodes' leases to expire and for releases to reach the joiners.
    for _ in range(8 + 3 * shards):
        now += ROUND
        for node in survivors:
            run_round(db, node, now)
            check_no_double_holder(db, nodes, now)
    shares = fair_shares((n.name for n in survivors), shards)
    holders = {s: row.node for s, row in db.rows.items() if row.expires_at > now}
    assert set(holders) == set(range(shards)), "a shard is held by nobody"
    assert set(holders.values()) <= set(shares), "a shard is held by a node not running"
    for node in survivors:
        assert len(node.held) <= shares[node.name] + 1
        assert {s for s, n in holders.items() if n == node.name} == set(node.held)
