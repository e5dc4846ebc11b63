"""Store CPU per sentinel scan: SQLite vs PostgreSQL through psycopg 3 and through asyncpg.

One workload, the store's share of a sentinel round, run on each backend in the same process:
per target `load_state`, then `apply` of a sentinel scan whose state advanced its times (a
scan row, the target row, its port rows, the change stamps), and per round one `touch` of every
target (the quiet-scan flush). Targets have 15 sentinel ports, 3 of them open. PostgreSQL is a
throwaway cluster on a Unix socket (tests/support/postgres.py, needs root), fsync off like
SQLite's `synchronous=NORMAL` in WAL mode, which does not sync at commit either.

CPU is measured, not wall time: the client's (this process, `time.process_time`) and for
PostgreSQL also the server's (every process of the cluster, from /proc), both per sentinel
scan. SQLite does all its work in this process. Ratios are to SQLite.

Run: `python -m bench.store_bench` (root); writes bench/results/store.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CLK_TCK, RESULTS, machine
from exposuremon.model import Observed, PortRecord, ScanKind, TargetState, TargetStatus
from exposuremon.store import ScanRecord, Store
from tests.support.postgres import Cluster, missing_requirements, running_cluster

SENTINEL_PORTS = (21, 22, 23, 80, 81, 82, 83, 84, 85, 443, 444, 445, 3389, 8080, 8443)
OPEN_PORTS = (22, 443, 8443)
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def initial_state(name: str) -> TargetState:
    """A target that is up with its sentinel ports recorded, as after its first scans."""
    ports = {
        p: PortRecord(
            port=p,
            state=Observed.OPEN if p in OPEN_PORTS else Observed.CLOSED,
            first_seen=T0,
            last_seen=T0,
            last_change=T0,
            times_opened=int(p in OPEN_PORTS),
            first_open=T0 if p in OPEN_PORTS else None,
            last_open=T0 if p in OPEN_PORTS else None,
            observed_at=T0,
        )
        for p in SENTINEL_PORTS
    }
    return TargetState(
        name=name,
        address="198.51.100.7",
        status=TargetStatus.UP,
        status_since=T0,
        ports=ports,
        last_scan={ScanKind.SENTINEL: T0},
        last_observed=T0,
        answered_at=T0,
    )


def advanced(state: TargetState, when: dt.datetime) -> TargetState:
    """The state after a sentinel scan at `when` that saw the same ports."""
    ports = {
        p: dataclasses.replace(
            rec,
            last_seen=when,
            observed_at=when,
            last_open=when if rec.state is Observed.OPEN else rec.last_open,
        )
        for p, rec in state.ports.items()
    }
    return dataclasses.replace(
        state,
        ports=ports,
        last_scan={**state.last_scan, ScanKind.SENTINEL: when},
        last_observed=when,
        answered_at=when,
    )


def scan_of(name: str, when: dt.datetime) -> ScanRecord:
    """The sentinel scan's row."""
    return ScanRecord(
        name,
        ScanKind.SENTINEL,
        "198.51.100.7",
        when - dt.timedelta(seconds=1),
        when,
        True,
        len(SENTINEL_PORTS),
        len(OPEN_PORTS),
        len(SENTINEL_PORTS) - len(OPEN_PORTS),
        0,
        1.0,
    )


async def round_of(store: Store, names: list[str], when: dt.datetime) -> None:
    """One sentinel round: per target load, apply; then one touch of every target."""
    touched = []
    for name in names:
        state = await store.load_state(name)
        applied = await store.apply(scan_of(name, when), advanced(state, when), [], [], ())
        touched.append(advanced(applied.state, when + dt.timedelta(seconds=1)))
    await store.touch(touched)


def server_cpu(cluster: Cluster | None) -> float:
    """CPU seconds (user + system) of every process of the cluster so far."""
    if cluster is None:
        return 0.0
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        pid, ppid = int(stat.parent.name), int(fields[1])
        if postmaster in (pid, ppid):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


async def measure(
    where: Path | str, cluster: Cluster | None, targets: int, rounds: int
) -> dict[str, Any]:
    """Fill, warm up (connections, caches), then time `rounds` rounds."""
    names = [f"t{i:04d}" for i in range(targets)]
    store = await Store.open(where)
    try:
        for name in names:
            state = initial_state(name)
            await store.apply(scan_of(name, T0), state, [], [], ())
        await round_of(store, names, T0 + dt.timedelta(seconds=30))
        client0, server0, wall0 = time.process_time(), server_cpu(cluster), time.perf_counter()
        for r in range(rounds):
            await round_of(store, names, T0 + dt.timedelta(seconds=60 + 30 * r))
        client = time.process_time() - client0
        server = server_cpu(cluster) - server0
        wall = time.perf_counter() - wall0
    finally:
        await store.close()
    scans = targets * rounds
    return {
        "client_cpu_ms_per_scan": round(1000 * client / scans, 3),
        "server_cpu_ms_per_scan": round(1000 * server / scans, 3),
        "total_cpu_ms_per_scan": round(1000 * (client + server) / scans, 3),
        "wall_ms_per_scan": round(1000 * wall / scans, 3),
    }


async def run(targets: int, rounds: int, cluster: Cluster) -> dict[str, Any]:
    """Each backend in turn on a fresh database; ratios to SQLite."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = await measure(Path(tmp), None, targets, rounds)
    for driver in ("psycopg", "asyncpg"):
        with cluster.database() as url:
            explicit = url.replace("postgresql://", f"postgresql+{driver}://", 1)
            results[f"postgresql_{driver}"] = await measure(explicit, cluster, targets, rounds)
    base = results["sqlite"]["total_cpu_ms_per_scan"]
    for key in ("postgresql_psycopg", "postgresql_asyncpg"):
        res = results[key]
        res["client_cpu_ratio_to_sqlite"] = round(res["client_cpu_ms_per_scan"] / base, 2)
        res["total_cpu_ratio_to_sqlite"] = round(res["total_cpu_ms_per_scan"] / base, 2)
    psycopg, asyncpg = (results[f"postgresql_{d}"] for d in ("psycopg", "asyncpg"))
    results["psycopg_to_asyncpg_total_cpu"] = round(
        psycopg["total_cpu_ms_per_scan"] / asyncpg["total_cpu_ms_per_scan"], 2
    )
    return {"targets": targets, "rounds": rounds, "sentinel_ports": len(SENTINEL_PORTS), **results}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/store.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS / "store.json")
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        parser.error(f"needs a throwaway PostgreSQL cluster: {reason}")
    with running_cluster() as cluster:
        result = asyncio.run(run(args.targets, args.rounds, cluster))
    report = {"machine": machine(), "store_cpu_per_sentinel_scan": result}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
