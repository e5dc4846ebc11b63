"""Fleet benchmark: failover after kill -9, duplicates, and 3 nodes x 3,000 targets.

Three `exposuremon run` nodes on a throwaway PostgreSQL cluster (tests/support/postgres.py)
scan loopback targets (tests/support/fleet_failover.py: every 7th expects and listens on 8443,
every 10th listens on 8088 unexpectedly, so there are findings and events).

1. failover: `--targets` (default 300) on the default schedule, `lease_ttl` 15 s. `--kills`
   times (default 10): once the fleet is balanced and every target was scanned since, kill -9
   one node (a, b, c in turn) and measure the seconds from the kill until every target it
   held has a sentinel scan by another node that ended after the kill (the scan times from
   the survivors' /metrics, which show the held quiet scans the store gets only every 60 s),
   and until the others hold all 64 shards; then start it again. p50/p95/max. Then the
   duplicates in the store: findings per (target, port), events per (type, target, port).
2. scale: `--scale-targets` (default 3,000) on the default schedule (30 s / 15 min / 24 h)
   for `--seconds` (default 300): the share of targets with a sentinel scan within
   interval + 15 s at each scrape from 60 s on, CPU share and peak RSS per node (from /proc,
   as bench/daemon_bench.py) and of the PostgreSQL server.

Results go to bench/results/fleet.json (a run of one phase keeps the other's). Needs root
(the PostgreSQL cluster runs as the postgres user). Goals (issue 16): failover p95 <= lease_ttl
+ sentinel interval (45 s), 0 duplicates, all targets scanned on schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import CLK_TCK, RESULTS, machine, percentile, write_results
from exposuremon.fleet import fair_shares
from tests.support import postgres
from tests.support.fleet_failover import (
    ScanWatch,
    Target,
    duplicates,
    free_port,
    lease_owners,
    loopback_targets,
    node_process,
    open_listeners,
    shard_counts,
    table_counts,
    write_node_config,
)
from tests.support.fleet_nodes import Node
from tests.support.loopback import Listeners

NAMES = ("a", "b", "c")
SENTINEL = 30.0
LEASE_TTL = 15.0
FRESH_WITHIN = SENTINEL + 15.0
LATE_SENTINEL = 'exposuremon_scans_late_total{kind="sentinel"}'
GOALS = {
    "failover_p95_s": f"<= lease_ttl + sentinel interval ({LEASE_TTL + SENTINEL:g} s)",
    "duplicates": "0",
    "scale_sentinel_fresh_share": f"1.0 (a sentinel scan within {FRESH_WITHIN:g} s)",
}


def summary(samples: list[float]) -> dict[str, Any]:
    """p50, p95, max and every sample, rounded."""
    return {
        "p50": percentile(samples, 0.5),
        "p95": percentile(samples, 0.95),
        "max": round(max(samples), 2) if samples else None,
        "all": [round(s, 2) for s in samples],
    }


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of a process (and of its waited-for children), /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def server_cpu(cluster: postgres.Cluster) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its live backends, and the
    backends that exited (counted in the postmaster's children's time)."""
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(pid, children=True)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                total += cpu_seconds(int(child))
    return total


@contextlib.contextmanager
def cluster_database() -> Iterator[tuple[postgres.Cluster, str]]:
    """A throwaway cluster and a database in it, for one phase."""
    reason = postgres.missing_requirements()
    if reason:
        raise SystemExit(f"fleet benchmark needs a throwaway PostgreSQL cluster: {reason}")
    with postgres.running_cluster() as cluster:
        yield cluster, cluster.url(cluster.create_database())


def make_nodes(
    directory: Path, url: str, targets: list[Target], *, quick: str = "15m"
) -> dict[str, Node]:
    """The three nodes' configs on the default schedule (jitter 0.1, as shipped)."""
    nodes = {}
    for name in NAMES:
        port = free_port()
        config = write_node_config(
            directory / name,
            name,
            targets,
            http_port=port,
            sentinel=f"{SENTINEL:g}s",
            lease_ttl=f"{LEASE_TTL:g}s",
            quick=quick,
            jitter=0.1,
            fingerprint_timeout="3s",
            small_scans=False,
        )
        nodes[name] = node_process(name, config, port, url)
    return nodes


async def wait_ready(session: aiohttp.ClientSession, node: Node, deadline: float) -> float:
    """Seconds until /readyz says 200 (the node was just started)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if node.proc is not None and node.proc.poll() is not None:
            raise RuntimeError(f"{node.name} exited {node.proc.returncode}:\n{node.tail()}")
        if (await node.readyz(session))[0] == 200:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{node.name} not ready within {deadline}s:\n{node.tail()}")


async def wait_balanced(url: str, names: list[str], deadline: float) -> float:
    """Seconds until the nodes `names` hold their fair shares of the 64 shards."""
    start = time.monotonic()
    want = fair_shares(names, 64)
    while await shard_counts(url) != want:
        if time.monotonic() - start > deadline:
            raise RuntimeError(f"not balanced within {deadline}s: {await shard_counts(url)}")
        await asyncio.sleep(0.5)
    return time.monotonic() - start


async def wait_scanned_since(
    watch: ScanWatch, names: list[str], since: float, deadline: float
) -> None:
    """Until every target has a sentinel scan that ended after `since`."""
    end = time.monotonic() + deadline
    while not all(watch.first_after(t, since) for t in names):
        if time.monotonic() > end:
            missing = [t for t in names if not watch.first_after(t, since)]
            raise RuntimeError(f"{len(missing)} targets unscanned for {deadline}s: {missing[:5]}")
        await watch.poll()
        await asyncio.sleep(1.0)


# -- failover ---------------------------------------------------------------------------------


async def failover(n_targets: int, kills: int) -> dict[str, Any]:
    """Kill -9 a node `kills` times; the time until its targets are scanned by the others."""
    targets = loopback_targets(n_targets, 8)
    names = [t.name for t in targets]
    listeners = Listeners()
    open_listeners(targets, listeners)
    took: list[float] = []
    taken: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="emfleet-") as tmp,
        cluster_database() as (_, url),
    ):
        nodes = make_nodes(Path(tmp), url, targets)
        async with aiohttp.ClientSession() as session:
            watch = ScanWatch(list(nodes.values()), session, every=1.0)
            try:
                for node in nodes.values():
                    node.start()
                for node in nodes.values():
                    await wait_ready(session, node, 120)
                for n in range(kills):
                    await wait_balanced(url, list(NAMES), 120)
                    await wait_scanned_since(watch, names, time.time(), SENTINEL * 2 + 30)
                    victim = nodes[NAMES[n % len(NAMES)]]
                    survivors = [x for x in NAMES if x != victim.name]
                    owners = await lease_owners(url, names)
                    held = [t for t, holders in owners.items() if holders == [victim.name]]
                    killed = time.time()
                    victim.sigkill()
                    rescanned, shards = await _after_kill(watch, url, victim, survivors, held)
                    took.append(rescanned - killed)
                    taken.append(shards - killed)
                    print(
                        f"kill {n + 1}/{kills} of {victim.name} ({len(held)} targets): "
                        f"shards taken after {shards - killed:.1f}s, "
                        f"targets scanned after {rescanned - killed:.1f}s",
                        flush=True,
                    )
                    victim.start()
                    await wait_ready(session, victim, 120)
                await wait_balanced(url, list(NAMES), 120)
                await wait_scanned_since(watch, names, time.time(), SENTINEL * 2 + 30)
                doubled = await duplicates(url)
                rows = await table_counts(url)
            finally:
                for node in nodes.values():
                    node.stop()
                listeners.close()
    return {
        "nodes": len(NAMES),
        "targets": n_targets,
        "lease_ttl_s": LEASE_TTL,
        "sentinel_s": SENTINEL,
        "kills": kills,
        "targets_scanned_again_s": summary(took),
        "shards_taken_s": summary(taken),
        "duplicates": len(doubled),
        "duplicate_examples": doubled[:10],
        "rows": rows,
    }


async def _after_kill(
    watch: ScanWatch, url: str, victim: Node, survivors: list[str], held: list[str]
) -> tuple[float, float]:
    """(when the last of `held` was first scanned by a survivor, when the survivors held every
    shard), unix seconds; waits at most 4 sentinel intervals."""
    killed = time.time()
    shards: float | None = None
    end = time.monotonic() + 4 * SENTINEL + LEASE_TTL
    while time.monotonic() < end:
        await watch.poll()
        counts = await shard_counts(url)
        if shards is None and sum(counts.get(s, 0) for s in survivors) == 64:
            shards = time.time()
        firsts = [watch.first_after(t, killed, exclude=victim.name) for t in held]
        if shards is not None and all(firsts):
            return max(f or 0.0 for f in firsts), shards
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{victim.name}'s targets not scanned again in time")


# -- 3 nodes x 3,000 targets ------------------------------------------------------------------


async def scale(n_targets: int, seconds: float) -> dict[str, Any]:
    """Three nodes, `n_targets` on the default schedule for `seconds`: freshness, CPU, RSS."""
    _raise_nofile()
    targets = loopback_targets(n_targets, 9)
    names = [t.name for t in targets]
    listeners = Listeners()
    open_listeners(targets, listeners)
    with (
        tempfile.TemporaryDirectory(prefix="emfleet-") as tmp,
        cluster_database() as (cluster, url),
    ):
        nodes = make_nodes(Path(tmp), url, targets)
        async with aiohttp.ClientSession() as session:
            try:
                began = time.monotonic()
                for node in nodes.values():
                    node.start()
                ready = {
                    n.name: round(await wait_ready(session, n, 180), 2) for n in nodes.values()
                }
                result = await _observe(session, cluster, nodes, names, began, seconds)
                result["ready_s"] = ready
            finally:
                for node in nodes.values():
                    node.stop()
                listeners.close()
    result["targets"] = n_targets
    return result


async def _observe(
    session: aiohttp.ClientSession,
    cluster: postgres.Cluster,
    nodes: dict[str, Node],
    names: list[str],
    began: float,
    seconds: float,
) -> dict[str, Any]:
    """Scrape every 10 s until `seconds`: freshness (union of the nodes' /metrics), CPU."""
    watch = ScanWatch(list(nodes.values()), session)
    cpu: list[tuple[float, dict[str, float]]] = []
    fresh: list[tuple[float, float, int]] = []  # (at, fresh share, targets listed)
    while (at := time.monotonic() - began) < seconds:
        sample = {n.name: cpu_seconds(n.pid) for n in nodes.values()}
        sample["postgres"] = server_cpu(cluster)
        cpu.append((at, sample))
        if at >= 20.0:
            watch.scans.clear()
            await watch.poll()
            now = time.time()
            latest = {t: max(times) for t, times in watch.scans.items()}
            ok = sum(1 for t in names if now - latest.get(t, 0.0) <= FRESH_WITHIN)
            fresh.append((at, ok / len(names), len(latest)))
        await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - began - at)))
    late = {}
    for node in nodes.values():
        late[node.name] = await node.metric(
            session, 'exposuremon_scans_late_total{kind="sentinel"}'
        )
    from_60 = [share for at, share, _ in fresh if at >= 60.0]
    first, last = cpu[0], cpu[-1]
    steady = next((s for s in cpu if s[0] >= 60.0), first)

    def share(
        a: tuple[float, dict[str, float]], b: tuple[float, dict[str, float]], who: str
    ) -> float | None:
        return round((b[1][who] - a[1][who]) / (b[0] - a[0]), 3) if b[0] > a[0] else None

    who = [*nodes, "postgres"]
    return {
        "schedule": {"sentinel": "30s", "quick": "15m", "full": "24h", "lease_ttl": "15s"},
        "seconds": round(last[0], 1),
        "sentinel_fresh_share_from_60s": {
            "min": min(from_60) if from_60 else None,
            "mean": round(statistics.mean(from_60), 4) if from_60 else None,
            "scrapes": len(from_60),
            "by_second": {round(at): [round(s, 4), listed] for at, s, listed in fresh},
        },
        "cpu_share_of_one_core_first_60s": {w: share(first, steady, w) for w in who},
        "cpu_share_of_one_core_after_60s": {w: share(steady, last, w) for w in who},
        "peak_rss_mb": {n.name: round(peak_rss_mb(n.pid), 1) for n in nodes.values()},
        "sentinel_scans_late": late,
    }


def _raise_nofile() -> None:
    """Hundreds of listeners and three nodes' sockets: the hard limit as the soft one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def save(phases: dict[str, Any]) -> Path:
    """Merge these phases into bench/results/fleet.json (other phases are kept)."""
    old: dict[str, Any] = {}
    existing = RESULTS / "fleet.json"
    if existing.exists():
        old = json.loads(existing.read_text())
    doc = {"machine": machine(), "goals": GOALS, "phases": {**old.get("phases", {}), **phases}}
    return write_results("fleet", doc)


def main(argv: list[str] | None = None) -> int:
    """Run the phases; write bench/results/fleet.json."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--targets", type=int, default=300, help="failover phase targets")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--scale-targets", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=300, help="scale phase duration")
    parser.add_argument("--only", choices=("failover", "scale"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("fleet benchmark needs root (a throwaway PostgreSQL cluster)", file=sys.stderr)
        return 2
    phases: dict[str, Any] = {}
    if args.only in (None, "failover"):
        phases["failover"] = asyncio.run(failover(args.targets, args.kills))
        print(f"failover: {json.dumps(phases['failover'])}", flush=True)
    if args.only in (None, "scale"):
        phases["scale"] = asyncio.run(scale(args.scale_targets, args.seconds))
        print(f"scale: {json.dumps(phases['scale'])}", flush=True)
    print(f"written {save(phases)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
