"""The fleet as an operator sees it (`GET /api/v1/fleet`, `exposuremon fleet status`): pure.

`fleet_view` turns one `FleetSnapshot` (every node row, every vantage's leases, the shard
count and the database's now, read in one snapshot) and this node's `lease_ttl` into a
`FleetView`: the nodes (alive or not, shards held, whether their config differs), the
vantages (up or degraded) and who holds which shard. Every time is the database's clock,
so the view is the same from any node, whatever the machines' clocks say.

Rules:
- A node is **alive** when its last heartbeat is less than `lease_ttl` before the database's
  now (the rule `live_nodes` uses for balancing).
- A node's **shards** are the unexpired leases it holds in its vantage.
- **config_differs**: the reference is the config hash most common among the live nodes;
  a node whose hash is another one differs. When two or more hashes tie for most common,
  there is no reference and every node differs as soon as the live nodes disagree (nobody
  can tell which config is meant). No live node: nothing differs.
- A vantage is **degraded** when it has no live node (`health` "up": nothing scans from
  there), or when its shared health is degraded (`health` "degraded": its scans went silent
  for most of the targets that answered them, vantage.py; its silence changes no target);
  else **up**.
- A shard is **unheld** in a vantage when no unexpired lease names it (never taken, released,
  or its holder's lease ran out).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Sequence

from exposuremon.fleet.balance import live_nodes
from exposuremon.store import FleetNode, FleetSnapshot, Lease

UP, DEGRADED = "up", "degraded"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def db_time(micros: int) -> dt.datetime:
    """A database-clock time (microseconds since the Unix epoch) as an aware UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=micros)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node of the fleet."""

    name: str
    vantage: str
    started_at: dt.datetime
    last_seen: dt.datetime
    seen_ago: float  # seconds between its last heartbeat and the database's now
    shards: int  # unexpired leases it holds
    version: str
    config_hash: str
    alive: bool
    config_differs: bool


@dataclasses.dataclass(frozen=True, slots=True)
class VantageStatus:
    """One vantage: its live nodes, how many of its shards are held, up or degraded."""

    name: str
    status: str  # UP or DEGRADED (no live node, or `health` DEGRADED)
    nodes: int  # live nodes
    nodes_total: int  # node rows, live or not
    shards_held: int
    health: str = UP  # UP, or DEGRADED while its scans went silent (vantage health)


@dataclasses.dataclass(frozen=True, slots=True)
class ShardOwner:
    """A held shard: its node and epoch, seconds since its last renewal (estimated with this
    node's `lease_ttl`) and until it expires, by the database's clock."""

    shard: int
    node: str
    epoch: int
    age: float
    expires_in: float


@dataclasses.dataclass(frozen=True, slots=True)
class VantageShards:
    """Who holds which shard of one vantage, and which shards nobody holds."""

    vantage: str
    owners: tuple[ShardOwner, ...]  # by shard
    unheld: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class FleetView:
    """The whole fleet at `now` (the database's clock)."""

    now: dt.datetime
    lease_ttl: float
    shards: int
    config_hash: str | None  # the reference hash (most common among live nodes), if any
    nodes: tuple[NodeStatus, ...]  # by vantage, then name
    vantages: tuple[VantageStatus, ...]  # by name
    shard_owners: tuple[VantageShards, ...]  # by vantage


def reference_hash(hashes: Sequence[str]) -> str | None:
    """The hash most common in `hashes`; None when there is none or two or more tie."""
    ranked = collections.Counter(hashes).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _differs(node: FleetNode, reference: str | None, live_hashes: set[str]) -> bool:
    if reference is not None:
        return node.config_hash != reference
    return len(live_hashes) > 1  # a tie among live nodes that disagree: every node is flagged


def _shards_of(
    vantage: str, leases: Sequence[Lease], shards: int, now: int, ttl_micros: int
) -> VantageShards:
    owners = tuple(
        ShardOwner(
            shard=lease.shard,
            node=lease.node,
            epoch=lease.epoch,
            age=max(0, ttl_micros - (lease.expires_at - now)) / 1_000_000,
            expires_in=(lease.expires_at - now) / 1_000_000,
        )
        for lease in sorted(leases, key=lambda lease: lease.shard)
        if lease.expires_at > now and 0 <= lease.shard < shards and lease.node
    )
    held = {o.shard for o in owners}
    return VantageShards(vantage, owners, tuple(s for s in range(shards) if s not in held))


def fleet_view(snapshot: FleetSnapshot, lease_ttl: float) -> FleetView:
    """The fleet view of one snapshot, with liveness judged against `lease_ttl` (seconds)."""
    if not lease_ttl > 0:
        raise ValueError(f"lease_ttl: {lease_ttl} (must be > 0)")
    now, ttl_micros = snapshot.now, round(lease_ttl * 1_000_000)
    live = live_nodes({n.name: n.last_seen for n in snapshot.nodes}, now, ttl_micros)
    live_hashes = [n.config_hash for n in snapshot.nodes if n.name in live]
    reference = reference_hash(live_hashes)
    by_vantage = {
        v: _shards_of(v, snapshot.leases.get(v, ()), snapshot.shards, now, ttl_micros)
        for v in snapshot.vantages()
    }
    held: collections.Counter[tuple[str, str]] = collections.Counter(
        (v, o.node) for v, owned in by_vantage.items() for o in owned.owners
    )
    nodes = tuple(
        NodeStatus(
            name=n.name,
            vantage=n.vantage,
            started_at=db_time(n.started_at),
            last_seen=db_time(n.last_seen),
            seen_ago=max(0, now - n.last_seen) / 1_000_000,
            shards=held[(n.vantage, n.name)],
            version=n.version,
            config_hash=n.config_hash,
            alive=n.name in live,
            config_differs=_differs(n, reference, set(live_hashes)),
        )
        for n in sorted(snapshot.nodes, key=lambda n: (n.vantage, n.name))
    )
    vantages = []
    for v, owned in by_vantage.items():
        members = [n for n in nodes if n.vantage == v]
        alive = sum(n.alive for n in members)
        health = DEGRADED if v in snapshot.degraded else UP
        vantages.append(
            VantageStatus(
                name=v,
                status=UP if alive and health == UP else DEGRADED,
                nodes=alive,
                nodes_total=len(members),
                shards_held=len(owned.owners),
                health=health,
            )
        )
    return FleetView(
        now=db_time(now),
        lease_ttl=lease_ttl,
        shards=snapshot.shards,
        config_hash=reference,
        nodes=nodes,
        vantages=tuple(vantages),
        shard_owners=tuple(by_vantage.values()),
    )
