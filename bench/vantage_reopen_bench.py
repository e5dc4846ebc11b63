"""Reopen benchmark with two vantages: detection time and duplicates of one reopened port.

The namespace test bed of tests/support/vantages.py (`VantageBed`): vantages fra and nyc, one
`exposuremon run` node each, one fleet on a throwaway PostgreSQL cluster, 3 routers (vantage
health is judged from `vantage_min_targets`, 3, answering targets), each expecting 443; a real
aiohttp webhook receiver (tests/support/receivers.py) listening on both vantages' gateways.
Router 0 also listens on PORT (8081, unexpected, in every sentinel scan), so it has a finding.
Flap damping is off (`flap_threshold` 1000): each round changes the port twice, so with the
default (4 changes in 10 min) the port would be flapping from round 2 on, its reopens stored
but held from the channels by design, and a reopen's path is what is measured here.

Each of `--rounds` rounds (default 8):
1. the router's firewall closes PORT (TCP RST); wait until the finding is resolved (both
   vantages saw it closed `resolve_after`, 2, times);
2. wait a random share of one sentinel interval (seeded), so the reopen falls at any phase of
   the scan schedule, as a real one does;
3. the firewall opens PORT again; the time is recorded;
4. the time until a `finding_reopened` event of that port is stored (the events table, polled
   every 0.1 s), and from its `observed_at`;
5. wait until the receiver got a message with that reopen and both vantages scanned the router
   since (a late duplicate would show in the counts); the finding's `seen_from` then.
Counted per round (by event id and receive time, from one reopen to the next): the
`finding_reopened` events of the port (goal exactly 1), the webhook requests carrying that
reopen (goal 1; every accepted request counts, retries included) and their delivery ids; the
duplicates over all rounds (goal 0).

Goal (issue 17): detection p95 <= sentinel interval + 5 s, as with one vantage; 0 duplicate
reopen events or messages. The sentinel interval is 10 s unless `--sentinel` says otherwise.
Results go to bench/results/vantage_reopen.json, with the 1-minute load average at the start
and end: the machine may be shared with other work, which slows the nodes' scans. Needs root
(namespaces, nftables, a PostgreSQL cluster run as the postgres user); traffic stays in the
namespaces made here (198.18.0.0/15).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import machine, percentile, write_results
from tests.support import postgres
from tests.support.receivers import Receiver
from tests.support.testbed import Router, cleanup_stale, missing_requirements
from tests.support.vantages import VANTAGES, ScanRow, VantageBed, micros

PORT = 8081  # unexpected, a hot port: in every sentinel scan
EXPECTED = 443  # every router's expected port: the targets answer throughout
ROUTERS = 3
RESOLVE_AFTER = 2
FLAP_OFF = "flap_threshold = 1000"  # see the module docstring
SLACK = 5.0  # goal: p95 <= sentinel interval + SLACK seconds
POLL = 0.1  # seconds between polls of the events table while timing


@dataclasses.dataclass
class Round:
    """One close-and-reopen of PORT: when it reopened and what it took to see it."""

    number: int
    phase_s: float  # waited after the resolve before reopening
    opened_mono: float
    first_event_id: int  # events with a larger id came after the reopen
    stored_after_s: float = math.nan  # until the finding_reopened row was seen in the store
    observed_after_s: float = math.nan  # its observed_at minus the reopen's wall time
    seen_from: Any = None  # in the event (and so the message): who had seen it open then
    seen_from_after: Any = None  # the finding's, once both vantages scanned it again


def router_policy(router: Router, port_open: bool) -> None:
    """Expected port accepted, PORT accepted or not, every other TCP port answers RST."""
    rules: dict[int | tuple[int, int], str] = {EXPECTED: "accept"}
    if port_open:
        rules[PORT] = "accept"
    router.set_policy("reject", rules)


async def wait_until(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> float:
    """Poll `check` every POLL s until true; the seconds it took. RuntimeError after `deadline`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > deadline:
            raise RuntimeError(f"not within {deadline:g}s: {what}")
        await asyncio.sleep(POLL)
    return time.monotonic() - start


async def finding_state(bed: VantageBed, target: str) -> str | None:
    """The state of PORT's newest finding on the target (None: no finding)."""
    rows = await bed.sql(
        "SELECT state FROM findings WHERE target = ? AND port = ? ORDER BY id DESC LIMIT 1",
        target,
        PORT,
    )
    return str(rows[0][0]) if rows else None


async def last_event_id(bed: VantageBed) -> int:
    """The newest event's id (0: none)."""
    rows = await bed.sql("SELECT max(id) FROM events")
    return int(rows[0][0] or 0)


async def reopens(bed: VantageBed, target: str, after: int) -> list[dict[str, Any]]:
    """The target's finding_reopened events of PORT with an id above `after`, oldest first."""
    rows = await bed.sql(
        "SELECT id, observed_at, details FROM events WHERE id > ? AND target = ?"
        " AND port = ? AND type = 'finding_reopened' ORDER BY id",
        after,
        target,
        PORT,
    )
    keys = ("id", "observed_at", "details")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def carries_reopen(body: Any, target: str) -> bool:
    """A webhook body (generic format) with a finding_reopened event of the target's PORT."""
    if not isinstance(body, dict) or body.get("target") != target:
        return False
    return any(
        e.get("type") == "finding_reopened" and e.get("port") == PORT
        for e in body.get("events", [])
    )


def reopen_requests(hook: Receiver, target: str) -> list[tuple[float, str | None]]:
    """(receive time, delivery id) of every accepted request that carries the reopen."""
    return [(r.at, r.key) for r in hook.accepted() if carries_reopen(r.json(), target)]


def as_datetime(value: Any) -> dt.datetime:
    """An events.observed_at value read with raw SQL (microseconds since the epoch)."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(int(value) / 1e6, dt.UTC)


def summary(samples: list[float]) -> dict[str, Any]:
    """Median, p95, max and every sample, rounded."""
    return {
        "median": round(statistics.median(samples), 2) if samples else None,
        "p95": percentile(samples, 0.95),
        "max": round(max(samples), 2) if samples else None,
        "all": [round(s, 2) for s in samples],
    }


async def both_scanned_since(bed: VantageBed, target: str, since: int, sentinel: float) -> None:
    """Both vantages scanned the target after `since` and saw PORT open (2 open ports)."""

    def both_open(row: ScanRow) -> bool:
        return row.open >= 2

    for vantage in VANTAGES:
        await bed.wait_scan(vantage, target, since, both_open, f"{PORT} open", 4 * sentinel + 60)


async def one_round(
    bed: VantageBed, hook: Receiver, number: int, sentinel: float, rng: random.Random
) -> Round:
    """Close PORT until resolved, wait a random phase, reopen and time the reopen event."""
    router = bed.routers[0]
    target = bed.target(router)
    await asyncio.to_thread(router_policy, router, False)
    resolve_within = 6 * (RESOLVE_AFTER + 1) * sentinel + 60

    async def resolved() -> bool:
        return await finding_state(bed, target) == "resolved"

    await wait_until(resolved, resolve_within, f"round {number}: the finding resolved")
    phase = rng.uniform(0.0, sentinel)
    await asyncio.sleep(phase)  # the reopen's phase in the schedule is what is sampled
    first = await last_event_id(bed)
    opened_wall = dt.datetime.now(dt.UTC)
    opened_mono = time.monotonic()
    await asyncio.to_thread(router_policy, router, True)
    result = Round(number, round(phase, 2), opened_mono, first)
    found: list[dict[str, Any]] = []

    async def reopened() -> bool:
        found[:] = await reopens(bed, target, first)
        return bool(found)

    await wait_until(reopened, 6 * sentinel + 60, f"round {number}: finding_reopened")
    result.stored_after_s = time.monotonic() - opened_mono
    event = found[0]
    result.observed_after_s = (as_datetime(event["observed_at"]) - opened_wall).total_seconds()
    details = event["details"]
    result.seen_from = details.get("seen_from") if isinstance(details, dict) else None
    await hook.wait_for(
        lambda h: any(at >= opened_mono for at, _ in reopen_requests(h, target)),
        60,
        f"round {number}: the reopen's message",
    )
    await both_scanned_since(bed, target, micros(), sentinel)
    rows = await bed.sql(
        "SELECT seen_from FROM findings WHERE target = ? AND port = ? ORDER BY id DESC LIMIT 1",
        target,
        PORT,
    )
    result.seen_from_after = rows[0][0] if rows else None
    print(
        f"round {number}: reopen stored after {result.stored_after_s:.2f}s"
        f" (observed after {result.observed_after_s:.2f}s, phase {phase:.1f}s,"
        f" seen from {result.seen_from}, then {result.seen_from_after})",
        file=sys.stderr,
    )
    return result


async def count_duplicates(
    bed: VantageBed, hook: Receiver, target: str, rounds: list[Round]
) -> list[dict[str, Any]]:
    """Per round, from its reopen to the next: reopen events, messages and delivery ids."""
    events = await reopens(bed, target, rounds[0].first_event_id)
    requests = reopen_requests(hook, target)
    counted = []
    for i, one in enumerate(rounds):
        last = rounds[i + 1] if i + 1 < len(rounds) else None
        ids = [
            e["id"]
            for e in events
            if e["id"] > one.first_event_id and (last is None or e["id"] <= last.first_event_id)
        ]
        got = [
            key
            for at, key in requests
            if at >= one.opened_mono and (last is None or at < last.opened_mono)
        ]
        counted.append(
            {
                "round": one.number,
                "reopen_events": len(ids),
                "messages": len(got),
                "delivery_ids": len(set(got)),
            }
        )
    return counted


async def run(rounds: int, sentinel: float, seed: int) -> dict[str, Any]:
    """Build the bed, start the nodes, measure every round; the figures."""
    rng = random.Random(seed)
    with (
        tempfile.TemporaryDirectory(prefix="vantage-reopen-bench-") as tmp,
        VantageBed(Path(tmp), routers=ROUTERS) as bed,
    ):
        for router in bed.routers:
            router.listen(EXPECTED)
        bed.routers[0].listen(PORT)
        for router in bed.routers:
            await asyncio.to_thread(router_policy, router, router is bed.routers[0])
        async with Receiver("webhook", hosts=bed.gateways) as hook:
            bed.start(
                channels={"ops": hook},
                expected_open=str(EXPECTED),
                sentinel=f"{sentinel:g}s",
                resolve_after=RESOLVE_AFTER,
                scan=[FLAP_OFF],
            )
            await asyncio.to_thread(bed.wait_ready)
            target = bed.target(bed.routers[0])

            async def opened() -> bool:
                return await finding_state(bed, target) == "open"

            await wait_until(opened, 6 * sentinel + 60, f"the finding of {PORT} open")
            await both_scanned_since(bed, target, 0, sentinel)
            measured = [await one_round(bed, hook, n, sentinel, rng) for n in range(1, rounds + 1)]
            counted = await count_duplicates(bed, hook, target, measured)
    return report(measured, counted, sentinel, seed)


def report(
    measured: list[Round], counted: list[dict[str, Any]], sentinel: float, seed: int
) -> dict[str, Any]:
    """The figures and whether the goals were met."""
    stored = [r.stored_after_s for r in measured]
    p95 = percentile(stored, 0.95)
    duplicate_events = sum(max(0, c["reopen_events"] - 1) for c in counted)
    duplicate_messages = sum(max(0, c["messages"] - 1) for c in counted)
    missing = sum(c["reopen_events"] == 0 or c["messages"] == 0 for c in counted)
    return {
        "routers": ROUTERS,
        "vantages": list(VANTAGES),
        "port": PORT,
        "rounds": len(measured),
        "sentinel_s": sentinel,
        "resolve_after": RESOLVE_AFTER,
        "flap_damping": f"off ({FLAP_OFF})",
        "seed": seed,
        "reopen_stored_after_s": summary(stored),
        "reopen_observed_after_s": summary([r.observed_after_s for r in measured]),
        "goal_p95_s": sentinel + SLACK,
        "per_round": [
            {
                "round": r.number,
                "phase_s": r.phase_s,
                "stored_after_s": round(r.stored_after_s, 2),
                "observed_after_s": round(r.observed_after_s, 2),
                "seen_from": r.seen_from,
                "finding_seen_from_after": r.seen_from_after,
                **{k: v for k, v in c.items() if k != "round"},
            }
            for r, c in zip(measured, counted, strict=True)
        ],
        "duplicate_reopen_events": duplicate_events,
        "duplicate_reopen_messages": duplicate_messages,
        "rounds_missing_event_or_message": missing,
        "goal_met": (
            p95 is not None
            and p95 <= sentinel + SLACK
            and duplicate_events == 0
            and duplicate_messages == 0
            and missing == 0
        ),
    }


def main() -> None:
    """Parse the arguments, run once, write bench/results/vantage_reopen.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--sentinel", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--seed", type=int, default=17, help="of the reopen phases")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 200:
        parser.error("--rounds: 1 to 200")
    if not 1.0 <= args.sentinel <= 300.0:
        parser.error("--sentinel: 1 to 300 seconds")
    if os.geteuid() != 0:
        raise SystemExit("vantage reopen benchmark needs root (namespaces, PostgreSQL cluster)")
    for reason in (missing_requirements(), postgres.missing_requirements()):
        if reason:
            raise SystemExit(f"vantage reopen benchmark: {reason}")
    cleanup_stale()  # namespaces of a killed earlier run
    postgres.cleanup_stale()
    print(
        f"sentinel interval {args.sentinel:g}s, resolve_after {RESOLVE_AFTER},"
        f" {args.rounds} rounds; goal: reopen p95 <= {args.sentinel + SLACK:g}s",
        file=sys.stderr,
    )
    load_start = os.getloadavg()[0]
    result = asyncio.run(run(args.rounds, args.sentinel, args.seed))
    doc = {
        "machine": {
            **machine(),
            "load_1m_start": round(load_start, 2),
            "load_1m_end": round(os.getloadavg()[0], 2),
            "note": "shared machine: other work ran beside the benchmark (see the load)",
        },
        "vantage_reopen": result,
    }
    path = write_results("vantage_reopen", doc)
    print(f"{path}: {result}")


if __name__ == "__main__":
    main()
