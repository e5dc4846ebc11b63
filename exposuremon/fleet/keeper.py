"""The lease keeper: one node's shard leases kept, balanced and fenced (docs/fleet.md).

`start()` joins (reads the shard count, runs a first round), a task then runs a round every
`lease_ttl / 3`, `stop()` ends it and releases the leases. A round: heartbeat, read the
vantage's leases and nodes, `plan` (pure), release the excess (dropped locally first), take
and renew in one transaction. Every time on a lease is the database's; the keeper's own
clock (monotonic) only makes it give up early: a lease counts as held until `lease_ttl`
after the *start* of the round that last renewed it, which is no later than the database's
expiry (that began at the renewal, after the round started). So a node cut off from the
database stops using its shards before any other node can take them.

Losing the database: rounds keep failing; at that local deadline every shard is dropped
(`held` = {}, `on_change`), `healthy` turns False and `reason` names the error (never the
URL). Rounds are retried with a backoff bounded by the round interval, and the first one
that succeeds rejoins.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence

from exposuremon.fleet.balance import live_nodes, plan
from exposuremon.fleet.shards import shard_of
from exposuremon.logs import get_logger
from exposuremon.metrics import Metrics
from exposuremon.store import Fence, FleetNode, Store

Held = Mapping[int, int]  # shard -> epoch
_FIRST_RETRY = 0.1  # seconds; doubles per failed round up to the round interval
_REASON_MAX = 300


@dataclasses.dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who this node is in the fleet (`[fleet]` node and vantage, its version, config hash)."""

    name: str
    vantage: str
    version: str
    config_hash: str


def describe_error(exc: BaseException) -> str:
    """An error as one short line for `reason` and the log: its type and first line, with any
    `scheme://user:password@` cut out and SQLAlchemy's link to its docs dropped."""
    text = str(exc).split("\n", 1)[0]
    text = re.sub(r"\(Background on this error at:[^)]*\)", "", text)
    text = re.sub(r"(\w+://)[^\s/@]*@", r"\1<redacted>@", text).strip()
    if isinstance(exc, TimeoutError) and not text:
        text = "timed out"
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= _REASON_MAX else line[: _REASON_MAX - 3] + "..."


class LeaseKeeper:
    """Keeps this node's share of its vantage's shard leases; see the module docstring."""

    def __init__(
        self,
        store: Store,
        identity: NodeIdentity,
        lease_ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[Held], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl: {lease_ttl} (must be > 0)")
        self._store = store
        self.identity = identity
        self.lease_ttl = lease_ttl
        self.interval = lease_ttl / 3
        self._clock = clock
        self._on_change = on_change
        self._metrics = metrics
        self._log = get_logger(component="fleet", node=identity.name, vantage=identity.vantage)
        self.shards = 0  # known after start()
        self._held: dict[int, int] = {}
        self._deadline = 0.0  # local clock: the held leases count until then
        self._task: asyncio.Task[None] | None = None
        self._restart = True  # the first heartbeat resets started_at
        self._failures = 0
        self._error = ""
        self.healthy = False
        self.reason = "starting"
        self.takeovers = 0
        self.rounds = 0  # rounds that succeeded
        self._vantages: set[str] = set()  # the vantages fleet_nodes has a series for

    # -------------------------------------------------------------------------- reading

    @property
    def held(self) -> Held:
        """The shards this node holds (shard -> epoch); empty once its leases may have lapsed."""
        if self._held and self._clock() >= self._deadline:
            return {}
        return dict(self._held)

    def fence_for(self, target: str) -> Fence | None:
        """The fence for writing a result of `target`, or None when its shard is not held
        (or may have lapsed by the local clock: a write under it would be refused anyway)."""
        if not self.shards or self._clock() >= self._deadline:
            return None
        shard = shard_of(target, self.shards)
        epoch = self._held.get(shard)
        if epoch is None:
            return None
        return Fence(self.identity.vantage, shard, epoch, self.identity.name)

    def owns(self, target: str) -> bool:
        """Whether this node holds the shard of `target` now."""
        return self.fence_for(target) is not None

    # ------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Read the shard count (StoreError if the database cannot be read), run a first
        round (a failure there only leaves the keeper unhealthy), then keep leases in a task."""
        if self._task is not None:
            raise RuntimeError("LeaseKeeper already started")
        self.shards = await self._store.fleet_shards()
        if self._metrics is not None:
            self._metrics.fleet_shards.labels(vantage=self.identity.vantage).set(self.shards)
        delay = await self._attempt()
        self._task = asyncio.create_task(self._run(delay), name="lease-keeper")

    async def stop(self) -> None:
        """End the task, release every held lease and leave the fleet (the node's row goes),
        so that the other nodes take its shards in their next round."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        held = len(self._held)
        self._set_held({})
        if self.shards:
            # Every shard, not only those held locally: a round cut short by the cancel may
            # have taken some in the database. Only this node's unexpired rows change.
            try:
                async with asyncio.timeout(self.interval):
                    await self._store.release_shards(
                        self.identity.vantage, self.identity.name, range(self.shards), leave=True
                    )
            except Exception as exc:  # the leases then lapse after lease_ttl instead
                self._log.warning(
                    "could not release shard leases at stop",
                    shards=held,
                    error=describe_error(exc),
                )
        self.healthy, self.reason = False, "stopped"

    async def __aenter__(self) -> LeaseKeeper:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------------------- loop

    async def _run(self, delay: float) -> None:
        while True:  # until cancelled (stop); each pass waits at most one interval
            await self._wait(delay)
            delay = await self._attempt()

    async def _wait(self, delay: float) -> None:
        """Sleep `delay`, but wake at the local deadline to drop the leases on time."""
        now = self._clock()
        if (self._held or self.healthy) and now + delay >= self._deadline:
            await asyncio.sleep(max(0.0, self._deadline - now))
            self._expire_if_due()
            delay -= max(0.0, self._deadline - now)
        await asyncio.sleep(max(0.0, delay))

    async def _attempt(self) -> float:
        """One round, bounded by the interval; the delay until the next one."""
        started = self._clock()
        try:
            async with asyncio.timeout(self.interval):
                await self._round(started)
        except Exception as exc:  # any failure: retried; lapses are handled by the deadline
            self._failed(exc)
            self._expire_if_due()
            return min(self.interval, _FIRST_RETRY * 2.0 ** min(self._failures - 1, 16))
        return max(0.0, self.interval - (self._clock() - started))

    async def _round(self, started: float) -> None:
        me = self.identity
        ttl_micros = round(self.lease_ttl * 1_000_000)
        await self._store.heartbeat(
            me.name, me.vantage, me.version, me.config_hash, restart=self._restart
        )
        self._restart = False
        view = await self._store.lease_view(me.vantage)
        seen = {n.name: n.last_seen for n in view.nodes if n.vantage == me.vantage}
        live = live_nodes(seen, view.now, ttl_micros)
        decided = plan(view.leases, live, me.name, self.shards, view.now)
        if decided.release:
            # Stop using them before the database hears it, never after.
            self._set_held({s: e for s, e in self._held.items() if s not in decided.release})
            await self._store.release_shards(me.vantage, me.name, decided.release)
        got = await self._store.acquire(
            me.vantage, me.name, decided.take, decided.renew, self.lease_ttl
        )
        self._deadline = started + self.lease_ttl
        self.takeovers += got.takeovers
        self.rounds += 1
        if self._metrics is not None:
            self._metrics.lease_takeovers.inc(got.takeovers)
            self._count_nodes(view.nodes, view.now, ttl_micros, len(live | {me.name}))
        if not self.healthy:
            self._log.info("holding shard leases", shards=len(got.held), nodes=len(live))
        self._failures, self._error = 0, ""
        self.healthy, self.reason = True, ""
        self._set_held({s: h.epoch for s, h in got.held.items()})

    def _count_nodes(
        self, nodes: Sequence[FleetNode], now: int, ttl_micros: int, mine: int
    ) -> None:
        """`fleet_nodes{vantage}` for every vantage with a node row (0: all silent), so that
        one live node of any vantage reports a vantage whose nodes all died; a vantage whose
        rows are all gone (its nodes stopped) loses its series."""
        assert self._metrics is not None
        live = live_nodes({n.name: n.last_seen for n in nodes}, now, ttl_micros)
        counts = dict.fromkeys(sorted({n.vantage for n in nodes}), 0)
        for n in nodes:
            counts[n.vantage] += n.name in live
        counts[self.identity.vantage] = mine  # this node counts itself, whatever its row says
        gauge = self._metrics.fleet_nodes
        for vantage in self._vantages - counts.keys():
            with contextlib.suppress(KeyError):
                gauge.remove(vantage)
        for vantage, count in counts.items():
            gauge.labels(vantage=vantage).set(count)
        self._vantages = set(counts)

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        error = describe_error(exc)
        if error != self._error:
            self._log.warning(
                "lease round failed", error=error, holding=len(self._held), failures=self._failures
            )
        self._error = error
        if self.healthy:
            self.reason = f"renewing shard leases fails: {error}"

    def _expire_if_due(self) -> None:
        """Past the local deadline without a renewal: drop every shard, turn unhealthy."""
        if self._clock() < self._deadline or (not self.healthy and not self._held):
            return
        dropped = len(self._held)
        self._set_held({})
        self.healthy = False
        self.reason = (
            f"no shard lease renewed for {self.lease_ttl:g}s (the lease time), scanning "
            f"stopped: {self._error or 'no answer from the database'}"
        )
        self._log.error("shard leases lapsed: scanning stopped", shards=dropped, error=self._error)

    def _set_held(self, held: dict[int, int]) -> None:
        changed = held != self._held
        self._held = held
        if self._metrics is not None:
            self._metrics.shards_held.set(len(held))
        if changed and self._on_change is not None:
            self._on_change(dict(held))
