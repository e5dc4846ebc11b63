"""Notifications in a fleet: several nodes deliver one shared outbox through a real database.

Nodes are real processes (`tests/support/notify_node.py`) on a real PostgreSQL (the throwaway
cluster) where it matters: who delivers, a node killed mid-flight, a rate limit shared by two
nodes. The claim rules themselves run on both dialects through two stores, as two nodes. The
receivers are real aiohttp servers on loopback (`tests/support/receivers.py`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exposuremon.config.models import NotifyConfig
from exposuremon.metrics.collectors import Metrics
from exposuremon.model import EventType, Severity
from exposuremon.notify.notifier import Notifier
from exposuremon.store.database import Store
from exposuremon.store.outbox import Outgoing
from tests.notify.test_notifier import TUNING, all_settled, apply_events, ev, rows_of, utcnow
from tests.support.daemon import wait_until
from tests.support.databases import Backend
from tests.support.receivers import Answer, Receiver

ROOT = Path(__file__).resolve().parents[2]
START_WITHIN = 30.0  # seconds for a node process to start delivering (a loaded CI box)
# Node processes poll often (no other node wakes them: only the writer's own notifier is
# woken by a scan) and give up on a receiver quickly.
FAST: dict[str, Any] = {
    "time_limit": 2.0,
    "claim": 5.0,
    "idle_poll": 0.2,
    "reminder_poll": 1.0,
    "error_pause": 0.2,
    "backoff": {"base": 0.2, "cap": 0.5, "floor": 0.05, "retry_after": [0.05, 5.0]},
}


@dataclasses.dataclass
class Node:
    """A node process and its log (JSON lines)."""

    name: str
    proc: subprocess.Popen[str]
    log: Path

    def events(self, event: str) -> list[dict[str, Any]]:
        """The node's log entries of one kind."""
        entries = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == event:
                    entries.append(entry)
        return entries

    def sent(self) -> list[str]:
        """The delivery ids this node recorded as sent."""
        return [e["delivery"] for e in self.events("notification sent")]


def hook_channel(url: str, rate: str | float = 100) -> dict[str, Any]:
    """The `[[notify]]` table of the test's webhook channel `h`."""
    return {"name": "h", "type": "webhook", "url": url, "rate": rate}


def spawn(url: str, name: str, spec: dict[str, Any], log: Path) -> Node:
    """The node process, logging to `log`."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.notify_node", url, name, json.dumps(spec)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    return Node(name, proc, log)


async def start_node(url: str, name: str, spec: dict[str, Any], tmp_path: Path) -> Node:
    """Start a node process; returns once its notifier runs."""
    node = spawn(url, name, spec, tmp_path / f"{name}.log")
    proc = node.proc
    assert proc.stdout is not None
    stdout = proc.stdout
    try:
        async with asyncio.timeout(START_WITHIN):
            line = await asyncio.to_thread(stdout.readline)
    except TimeoutError:
        stop_node(node)
        raise AssertionError(f"{name} did not start within {START_WITHIN}s") from None
    assert line.strip() == f"started {name}", node.log.read_text()[-2000:]
    return node


def stop_node(node: Node) -> None:
    """SIGTERM (its in-flight POST may finish), SIGKILL if it does not end in time."""
    if node.proc.poll() is None:
        node.proc.terminate()
        try:
            node.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(timeout=15)
    if node.proc.stdout is not None:
        node.proc.stdout.close()


@contextlib.asynccontextmanager
async def fleet(
    url: str, tmp_path: Path, spec: dict[str, Any], *names: str
) -> AsyncIterator[list[Node]]:
    """Node processes on `url`, stopped (and their logs complete) after the block."""
    nodes: list[Node] = []
    try:
        for name in names:
            nodes.append(await start_node(url, name, spec, tmp_path))
        yield nodes
    finally:
        for node in nodes:
            stop_node(node)


async def down_events(store: Store, targets: range) -> list[str]:
    """One message per target (a target_down each) for channel `h`; their delivery ids."""
    ids = []
    for i in targets:
        name = f"t{i:03d}"
        applied = await apply_events(
            store, name, [ev(name, EventType.TARGET_DOWN, Severity.WARNING)], ["h"]
        )
        ids.append(f"h/{applied.scan_id}")
    return ids


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[Store]:
    """The test's own store on the shared PostgreSQL database (it writes the events)."""
    opened = await Store.open(pg_url)
    yield opened
    await opened.close()


@pytest.fixture
async def two_stores(backend: Backend) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, each with its own connections: two nodes."""
    first = await Store.open(backend.where)
    second = await Store.open(backend.where)
    yield first, second
    await second.close()
    await first.close()


# -------------------------------------------------------------------- claims (both dialects)


async def test_a_claimed_message_is_invisible_to_other_nodes_until_released(
    two_stores: tuple[Store, Store],
) -> None:
    """While node a's claim lasts node b gets nothing (told when the claim ends); released, b
    takes it at once with the same delivery id."""
    a, b = two_stores
    (key,) = await down_events(a, range(1))
    now = utcnow()
    taken, _ = await a.next_message("h", now, node="a", claim_for=60)
    assert taken is not None
    assert taken.claim is not None
    assert (taken.delivery_id, taken.claim.node, taken.claim.wait) == (key, "a", 0.0)
    nothing, due = await b.next_message("h", now, node="b")
    assert nothing is None
    assert due is not None
    assert due - now > dt.timedelta(seconds=50)
    assert await a.release_claim(taken.claim) == 1
    again, _ = await b.next_message("h", utcnow(), node="b")
    assert again is not None
    assert again.claim is not None
    assert (again.delivery_id, again.claim.node) == (key, "b")
    assert again.ids == taken.ids


async def test_a_settle_after_a_take_over_writes_nothing(two_stores: tuple[Store, Store]) -> None:
    """Node a's claim runs out, node b takes the message over: a's settle writes nothing and
    says so (0), b's records the delivery."""
    a, b = two_stores
    await down_events(a, range(1))
    taken, _ = await a.next_message("h", utcnow(), node="a", claim_for=0.3)
    assert taken is not None
    assert taken.claim is not None

    async def take_over() -> Outgoing | None:
        found, _ = await b.next_message("h", utcnow(), node="b", claim_for=60)
        return found

    over = await wait_until(take_over, 10, "node b takes the message once a's claim ran out")
    assert over.claim is not None
    assert over.claim.token != taken.claim.token
    assert over.delivery_id == taken.delivery_id
    assert await a.settle(taken.ids, "sent", utcnow(), claim=taken.claim) == 0
    (row,) = await rows_of(a)
    assert (row.status, row.attempts, row.sent_at) == ("pending", 0, None)
    assert await b.settle(over.ids, "sent", utcnow(), claim=over.claim) == 1
    (row,) = await rows_of(a)
    assert (row.status, row.attempts) == ("sent", 1)


async def test_a_settle_after_the_claim_ran_out_untaken_still_counts(
    two_stores: tuple[Store, Store],
) -> None:
    """A claim that ran out but that no node took over is still its node's: the settle counts
    (no needless second send)."""
    a, b = two_stores
    await down_events(a, range(1))
    taken, _ = await a.next_message("h", utcnow(), node="a", claim_for=0.1)
    assert taken is not None
    assert taken.claim is not None

    async def ran_out() -> bool:
        _, due = await b.next_message("h", utcnow())  # only looking: claims nothing
        return due is None

    await wait_until(ran_out, 10, "a's claim ran out")
    assert await a.settle(taken.ids, "sent", utcnow(), claim=taken.claim) == 1


async def test_a_node_starting_again_sends_what_its_earlier_process_had_in_flight(
    tmp_path: Path,
) -> None:
    """A single node (SQLite) that died holding a claim sends the message at its restart at
    once, as before claims existed, not after the claim runs out."""
    store = await Store.open(tmp_path / "state")
    try:
        (key,) = await down_events(store, range(1))
        taken, _ = await store.next_message("h", utcnow(), node="solo", claim_for=3600)
        assert taken is not None  # the earlier process took it, then died
        async with Receiver("webhook") as hook, aiohttp.ClientSession() as session:
            chans = [NotifyConfig.model_validate(hook_channel(hook.url))]
            notifier = Notifier(store, chans, session, Metrics(), tuning=TUNING, node="solo")
            notifier.start()
            try:
                await hook.wait_for(lambda r: key in r.delivered(), 10, "the message resent")
                await wait_until(all_settled(store), 10, "recorded as sent")
            finally:
                await notifier.stop()
    finally:
        await store.close()


# --------------------------------------------------------- node processes on PostgreSQL


async def test_two_nodes_deliver_each_message_exactly_once(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    """Two node processes on one outbox and one receiver: 60 messages, each delivery id
    received exactly once, and both nodes delivered some."""
    async with Receiver("webhook", default=Answer(delay=0.05)) as hook:
        spec = {"channels": [hook_channel(hook.url)], "tuning": FAST}
        async with fleet(pg_url, tmp_path, spec, "node-a", "node-b") as nodes:
            keys = await down_events(pg_store, range(60))
            await hook.wait_for(lambda r: len(r.delivered()) == 60, 60, "60 messages")
            await wait_until(all_settled(pg_store), 20, "every row recorded as sent")
        received = collections.Counter(r.key for r in hook.requests)
    assert received == collections.Counter(keys)  # every id once, no other
    assert all(r.accepted for r in hook.requests)
    a, b = (node.sent() for node in nodes)
    assert sorted(a + b) == sorted(keys)
    assert min(len(a), len(b)) > 0, (len(a), len(b))


async def test_a_message_in_flight_at_a_nodes_death_goes_again_with_its_id(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    """Node a is killed (SIGKILL) while its POST hangs: node b sends the later messages at
    once, and a's message only once a's claim ran out, with the same delivery id; that one
    message is the only one received twice."""
    claim = 3.0
    async with Receiver("webhook") as hook:
        hook.script(Answer(hold=True))  # node a's POST: never answered while a lives
        (victim,) = await down_events(pg_store, range(1))
        slow = {**FAST, "time_limit": 2.0, "claim": claim}
        a = await start_node(
            pg_url, "node-a", {"channels": [hook_channel(hook.url)], "tuning": slow}, tmp_path
        )
        try:
            await hook.wait_for(lambda r: len(r.requests) == 1, 20, "node a's POST")
            a.proc.kill()
            a.proc.wait(timeout=15)
        finally:
            stop_node(a)
        others = await down_events(pg_store, range(1, 11))
        spec = {"channels": [hook_channel(hook.url)], "tuning": FAST}
        async with fleet(pg_url, tmp_path, spec, "node-b"):
            await hook.wait_for(lambda r: len(r.delivered()) == 11, 30, "all 11 messages")
            await wait_until(all_settled(pg_store), 20, "every row recorded as sent")
        hook.release()
        first, *rest = hook.requests
        received = collections.Counter(r.key for r in hook.requests)
    assert first.key == victim
    assert received == collections.Counter([victim, victim, *others])
    again = next(r for r in rest if r.key == victim)
    # Not before a's claim ran out (a claimed it a moment before its POST arrived).
    assert again.at - first.at >= claim - 0.5
    # The other messages did not wait for it: a claimed message is passed over.
    assert sum(1 for r in rest if r.key != victim and r.at < again.at) >= 1


async def test_a_shared_rate_limit_holds_across_two_nodes(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    """A channel limited to 5 per 2 s, delivered by two node processes: never more than 5
    received in any 2 s, and both nodes sent."""
    count, per = 5, 2.0
    async with Receiver("webhook") as hook:
        spec = {"channels": [hook_channel(hook.url, rate=f"{count}/{per:g}s")], "tuning": FAST}
        async with fleet(pg_url, tmp_path, spec, "node-a", "node-b") as nodes:
            keys = await down_events(pg_store, range(20))
            await hook.wait_for(lambda r: len(r.delivered()) == 20, 60, "20 messages")
            await wait_until(all_settled(pg_store), 20, "every row recorded as sent")
        times = sorted(r.at for r in hook.requests)
    assert len(times) == len(keys)
    # The window is kept by the database's clock when a send is booked; a POST leaves a node
    # a few milliseconds later (more on a loaded machine): that much slack, no more.
    for i in range(len(times) - count):
        assert times[i + count] - times[i] >= per - 0.15, i
    assert all(node.sent() for node in nodes)


async def test_a_retry_after_pauses_every_node(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    """A 429 with Retry-After: 2 to one node holds the other node's sends to that channel
    too: nothing is received for 2 s after the 429 but what was already on its way."""
    async with Receiver("webhook", default=Answer(delay=0.05)) as hook:
        hook.script(Answer(429, retry_after="2"))
        spec = {"channels": [hook_channel(hook.url)], "tuning": FAST}
        async with fleet(pg_url, tmp_path, spec, "node-a", "node-b"):
            keys = await down_events(pg_store, range(8))
            await hook.wait_for(lambda r: len(r.delivered()) == 8, 30, "8 messages")
            await wait_until(all_settled(pg_store), 20, "every row recorded as sent")
        limited, *rest = hook.requests
    assert limited.status == 429
    assert {r.key for r in rest} == set(keys)
    # At most one POST per node may have left before the pause was recorded.
    early = [r for r in rest if r.at < limited.at + 2.0 - 0.15]
    assert len(early) <= 1, [(r.key, round(r.at - limited.at, 2)) for r in early]
