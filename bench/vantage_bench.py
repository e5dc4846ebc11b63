"""Vantage-health benchmark: the scanner loses its uplink to 200 targets for 3 sentinel rounds.

One daemon (`Service`, in process, SQLite) scans `--targets` (default 200) loopback targets at
distinct addresses 127.77.x.y, each listening on one expected port. Once every target is up,
an nftables table of our own drops every packet this host sends to 127.77.0.0/16 (a connect()
fails at once: no SYN-ACK, no RST, the scans hear silence) for `--rounds` (default 3)
sentinel rounds, then is deleted. Counted: the events raised during the cut and after it (until
every target was scanned twice more), by type; when `vantage_degraded` came after the cut
began and `vantage_recovered` after it ended.

Goal (issue 17): exactly 1 `vantage_degraded` + 1 `vantage_recovered`, 0 target events
(`target_down`, `target_up`, `reboot_suspected`, or any other). Results go to
bench/results/vantage.json. Needs root (nftables); traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write_results
from exposuremon.config import load_config
from exposuremon.logs import configure_logging
from exposuremon.model import Event, TargetStatus
from exposuremon.service import Service
from tests.support.loopback import Listeners
from tests.support.uplink import cut_uplink

PORT = 8443
NET = "127.77.0.0/16"


def addresses(count: int) -> list[str]:
    """`count` distinct addresses in 127.77.0.0/16."""
    return [f"127.77.{i // 250}.{i % 250 + 1}" for i in range(count)]


def write_config(directory: Path, targets: list[str], sentinel: float) -> Path:
    """Targets expecting PORT, sentinel every `sentinel` s, quick and full scans out of the way."""
    lines = [
        "[daemon]",
        f'state_dir = "{directory / "state"}"',
        'log_level = "warning"',
        "[http]",
        'listen = "127.0.0.1:0"',
        "[schedule]",
        f'sentinel = "{sentinel:g}s"',
        'quick = "6h"',
        'full = "24h"',
        "jitter = 0",
    ]
    for i, address in enumerate(targets):
        lines += ["[[targets]]", f'name = "t{i:04d}"', f'address = "{address}"']
        lines.append(f'expected_open = "{PORT}"')
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def every_event(service: Service) -> list[Event]:
    """Every event in the store, oldest first (bounded pagination)."""
    found: list[Event] = []
    cursor = None
    for _ in range(1000):
        page, cursor = await service.store.events(limit=500, cursor=cursor)
        found += page
        if cursor is None:
            break
    return sorted(found, key=lambda e: e.id or 0)


async def wait_for(check: Any, deadline: float, what: str) -> None:
    """Poll an async condition every 0.2 s until true; fail after `deadline` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"not within {deadline:g}s: {what}")


def by_type(events: list[Event]) -> dict[str, int]:
    """How many events of each type."""
    return dict(collections.Counter(e.type.value for e in events))


async def run(count: int, rounds: int, sentinel: float) -> dict[str, Any]:
    """Listen on every target, run the daemon, cut and measure; the figures."""
    targets = addresses(count)
    listeners = Listeners()
    with tempfile.TemporaryDirectory(prefix="vantage-bench-") as tmp:
        try:
            for address in targets:
                listeners.open(address, PORT)
            path = write_config(Path(tmp), targets, sentinel)
            service = Service(load_config(path), path)
            await service.start()
            try:
                return await _measure(service, count, rounds, sentinel)
            finally:
                await service.stop()
        finally:
            listeners.close()


async def _measure(service: Service, count: int, rounds: int, sentinel: float) -> dict[str, Any]:
    names = [t.name for t in service.config.targets]

    async def all_up() -> bool:
        states = await service.store.states_of(names)
        return sum(s.status is TargetStatus.UP for s in states.values()) == count

    await wait_for(all_up, 4 * sentinel + 60, "every target up")
    before = len(await every_event(service))
    cut_wall = time.time()
    with cut_uplink([NET], "vantagebench"):
        print(f"uplink cut for {rounds} rounds of {sentinel:g}s", file=sys.stderr)
        await asyncio.sleep(rounds * sentinel)  # the outage's length is what is measured
        during = (await every_event(service))[before:]
    ended_at = time.monotonic()
    first = [e for e in during if e.type.value == "vantage_degraded"]
    degraded_after = round(first[0].observed_at.timestamp() - cut_wall, 1) if first else None

    async def recovered() -> bool:
        health = service.vantage_health()
        return health is not None and not health[1]

    await wait_for(recovered, 4 * sentinel + 60, "vantage recovered")
    recovered_after = round(time.monotonic() - ended_at, 1)
    # Two more rounds: every target answers again (they were never marked down).
    await asyncio.sleep(2 * sentinel)
    await wait_for(all_up, 4 * sentinel + 60, "every target up again")
    events = (await every_event(service))[before:]
    after = events[len(during) :]
    target_events = [e for e in events if e.target is not None]
    return {
        "targets": count,
        "sentinel_s": sentinel,
        "rounds_cut": rounds,
        "events_during_cut": by_type(during),
        "events_after_cut": by_type(after),
        "vantage_degraded": sum(e.type.value == "vantage_degraded" for e in events),
        "vantage_recovered": sum(e.type.value == "vantage_recovered" for e in events),
        "target_events": len(target_events),
        "degraded_after_cut_s": degraded_after,
        "recovered_after_path_back_s": recovered_after,
        "goal_met": (
            sum(e.type.value == "vantage_degraded" for e in events) == 1
            and sum(e.type.value == "vantage_recovered" for e in events) == 1
            and not target_events
        ),
    }


def main() -> None:
    """Parse the arguments, run once, write bench/results/vantage.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentinel", type=float, default=10.0, help="seconds")
    args = parser.parse_args()
    if not 3 <= args.targets <= 60_000:
        parser.error("--targets: 3 to 60000")
    configure_logging("console", "warning")  # the vantage's own warning lines show
    result = asyncio.run(run(args.targets, args.rounds, args.sentinel))
    doc = {"machine": machine(), "vantage_cut": result}
    path = write_results("vantage", doc)
    print(f"{path}: {result}")


if __name__ == "__main__":
    main()
