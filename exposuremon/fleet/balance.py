"""The balancing decision of one node in one round: pure, no I/O, no clock of its own.

Given a vantage's leases, the nodes seen alive, this node's name, the shard count and the
database's now (all read in one `Store.lease_view`), `plan` says which shards to take, which
to renew and which to release. Every live node makes the same computation from the same
rows, so they agree on the shares without talking to each other:

- Fair share: the live nodes sorted by name get `shards // n` each, the first `shards % n`
  one more.
- A node takes free or expired shards up to its share (never a live lease of another node).
- A node above its share releases the excess, at most `max_release` a round, and only while
  another live node is below its share: so a joining node gets shards without a gap (it
  takes a released shard in its next round) and nobody releases into a void.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence

from exposuremon.store import Lease


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """One round's decision: `take` (free or expired), `renew` (shard -> epoch), `release`."""

    take: frozenset[int]
    renew: Mapping[int, int]
    release: frozenset[int]


def fair_shares(live: Iterable[str], shards: int) -> dict[str, int]:
    """Each live node's share: sorted by name, `shards // n` each, the first `shards % n`
    one more."""
    names = sorted(set(live))
    if not names:
        return {}
    base, extra = divmod(shards, len(names))
    return {name: base + (i < extra) for i, name in enumerate(names)}


def live_nodes(last_seen: Mapping[str, int], now: int, ttl_micros: int) -> frozenset[str]:
    """The nodes whose last heartbeat is less than `ttl_micros` before `now` (db clock)."""
    return frozenset(name for name, seen in last_seen.items() if now - seen < ttl_micros)


def default_max_release(shards: int) -> int:
    """How many shards a node releases at most per round: an eighth of them, at least one."""
    return max(1, shards // 8)


def _order(node: str, shard: int) -> bytes:
    # Each node tries free shards in its own order, so that nodes starting together
    # mostly want different ones instead of all racing for shard 0.
    return hashlib.blake2b(f"{node}/{shard}".encode(), digest_size=8).digest()


def plan(
    leases: Sequence[Lease],
    live: Collection[str],
    me: str,
    shards: int,
    now: int,
    *,
    max_release: int | None = None,
) -> Plan:
    """This node's round: what to take, renew and release (see the module's docstring).

    `leases`: the vantage's rows (missing shards are free); `live`: the nodes seen alive
    (this node counts as live whatever it says); `now`: the database's clock, the same
    clock as the leases' `expires_at`.
    """
    limit = default_max_release(shards) if max_release is None else max_release
    shares = fair_shares({*live, me}, shards)
    by_shard = {lease.shard: lease for lease in leases if 0 <= lease.shard < shards}
    active = {s: lease for s, lease in by_shard.items() if lease.expires_at > now}
    mine = {s: lease.epoch for s, lease in active.items() if lease.node == me}
    free = [s for s in range(shards) if s not in active]
    held = dict.fromkeys(shares, 0)
    for lease in active.values():
        if lease.node in held:
            held[lease.node] += 1
    share = shares[me]
    take: list[int] = []
    release: list[int] = []
    if len(mine) < share:
        free.sort(key=lambda s: _order(me, s))
        take = free[: share - len(mine)]
    elif len(mine) > share:
        # What the nodes below their share cannot get from the free shards already there.
        wanting = sum(max(0, shares[n] - held[n]) for n in shares if n != me) - len(free)
        count = max(0, min(len(mine) - share, limit, wanting))
        release = sorted(mine, key=lambda s: _order(me, s))[:count]
    renew = {s: epoch for s, epoch in mine.items() if s not in release}
    return Plan(take=frozenset(take), renew=renew, release=frozenset(release))
