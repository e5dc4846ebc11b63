"""Fleet mode: shards of targets leased by the nodes of a vantage (docs/fleet.md).

`shard_of` says which shard a target is in; `plan` is one node's balancing decision, pure;
`LeaseKeeper` runs it against the store every `lease_ttl / 3` and says which shards this
node holds and under which fence its writes go; `fleet_view` makes the operator's view of the
whole fleet from one `Store.fleet_snapshot`, pure. The SQL lives in `exposuremon.store`.
"""

from __future__ import annotations

from exposuremon.fleet.balance import Plan, default_max_release, fair_shares, live_nodes, plan
from exposuremon.fleet.keeper import Held, LeaseKeeper, NodeIdentity, describe_error
from exposuremon.fleet.shards import shard_of
from exposuremon.fleet.view import (
    DEGRADED,
    UP,
    FleetView,
    NodeStatus,
    ShardOwner,
    VantageShards,
    VantageStatus,
    fleet_view,
    reference_hash,
)

__all__ = [
    "DEGRADED",
    "UP",
    "FleetView",
    "Held",
    "LeaseKeeper",
    "NodeIdentity",
    "NodeStatus",
    "Plan",
    "ShardOwner",
    "VantageShards",
    "VantageStatus",
    "default_max_release",
    "describe_error",
    "fair_shares",
    "fleet_view",
    "live_nodes",
    "plan",
    "reference_hash",
    "shard_of",
]
