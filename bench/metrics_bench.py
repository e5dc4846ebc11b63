"""`/metrics` scrape time with 1000 targets and 10,000 open-port rows in the store.

The store is filled the way the daemon fills it: a synthetic full-scan observation per target
goes through detection (`detect.evaluate`) and `Store.apply`. Then the daemon's own HTTP app
is scraped over a real loopback connection, with Prometheus' Accept headers (OpenMetrics,
gzip). Between scrapes (not timed) the store changes as in a live fleet: 20 targets get a new
scan result with a changed port and every target's scan times advance (the quiet-scan flush).
The reference, side by side in the same run, is prometheus-client serving the same series
from plain in-memory Gauges (no store read at all). Goal: scrape ≤ 100 ms.

Run: `python -m bench.metrics_bench` (part of `make bench`); writes bench/results/metrics.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.aiohttp import make_aiohttp_handler

from bench.common import RESULTS, machine
from exposuremon import detect
from exposuremon.config import Config, parse_config
from exposuremon.metrics import Metrics, StateCollector, scrape_handler
from exposuremon.model import Observation, Observed, ScanKind, TargetState
from exposuremon.store import Store
from exposuremon.web import HttpServer
from tests.support.records import scan_record_of

GOAL_MS = 100.0


def config_text(targets: int, state_dir: Path) -> str:
    """A config with `targets` targets, two expected ports each."""
    lines = [f'[daemon]\nstate_dir = "{state_dir}"\n[http]\nlisten = "127.0.0.1:0"']
    for i in range(targets):
        lines.append(
            f'[[targets]]\nname = "t{i:04d}"\naddress = "127.{1 + i // 250}.{i % 250}.1"\n'
            'expected_open = "443,8443"'
        )
    return "\n".join(lines) + "\n"


def observation(name: str, address: str, open_ports: list[int], when: dt.datetime) -> Observation:
    """A complete full scan of 1000 ports with `open_ports` open, the rest closed."""
    states = {p: Observed.CLOSED for p in range(1, 1001)}
    states.update({p: Observed.OPEN for p in open_ports})
    return Observation(
        target=name,
        kind=ScanKind.FULL,
        address=address,
        started=when - dt.timedelta(seconds=5),
        finished=when,
        complete=True,
        states=states,
        confirmed_open=frozenset(open_ports),
        responded=True,
    )


async def fill(store: Store, config: Config, open_per_target: int) -> dict[str, TargetState]:
    """Apply one full scan per target through detection; returns the states stored."""
    now = dt.datetime.now(dt.UTC)
    states = {}
    for target in config.targets:
        # Two expected ports plus unexpected ones: a finding each for the latter.
        ports = [443, 8443, *range(80, 80 + open_per_target - 2)]
        states[target.name] = await scan(
            store, config, target.name, TargetState(name=target.name), ports, now
        )
    return states


async def scan(
    store: Store, config: Config, name: str, prev: TargetState, ports: list[int], now: dt.datetime
) -> TargetState:
    """One full scan of `name` seeing `ports` open, through detection into the store."""
    target = next(t for t in config.targets if t.name == name)
    obs = observation(name, str(target.ip or target.address), ports, now)
    outcome = detect.evaluate(prev, obs, target.policy(config.scan), now)
    applied = await store.apply(
        scan_record_of(obs), outcome.state, outcome.events, outcome.findings, ()
    )
    return applied.state


async def churn(
    store: Store, config: Config, states: dict[str, TargetState], round_: int, changed: int
) -> None:
    """What a minute of a live fleet writes: `changed` targets' ports change, all times advance."""
    now = dt.datetime.now(dt.UTC)
    names = sorted(states)
    for i in range(changed):
        name = names[(round_ * changed + i) % len(names)]
        state = states[name]
        open_now = sorted(p for p, rec in state.ports.items() if rec.state is Observed.OPEN)
        extra = 9000 + round_ % 50  # one more unexpected port opens (or the set shifts)
        ports = [p for p in open_now if p < 9000] + [extra]
        states[name] = await scan(store, config, name, state, ports, now)
    await store.touch(list(states.values()))


def reference_registry(snapshot: str) -> CollectorRegistry:
    """Plain Gauges holding the same samples (parsed from one scrape): the rendering floor."""
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    for family in text_string_to_metric_families(snapshot):
        if not family.samples:
            continue
        labels = sorted(family.samples[0].labels)
        gauge = Gauge(f"ref_{family.name}", family.documentation, labels, registry=registry)
        for sample in family.samples:
            if labels:
                gauge.labels(**sample.labels).set(sample.value)
            else:
                gauge.set(sample.value)
    return registry


# What Prometheus 2.x sends: OpenMetrics preferred, gzip accepted.
SCRAPE_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


async def scrape_times(
    url: str, rounds: int, between: Callable[[int], Awaitable[None]] | None = None
) -> tuple[list[float], int]:
    """Wall time of `rounds` scrapes as Prometheus makes them (ms), and the last body's size.

    `between(i)` runs before scrape i (not timed): the store changes as in a live fleet.
    """
    times: list[float] = []
    size = 0
    async with aiohttp.ClientSession(headers=SCRAPE_HEADERS) as http:
        for i in range(rounds):
            if between is not None:
                await between(i)
            start = time.perf_counter()
            async with http.get(url) as resp:
                body = await resp.read()
                resp.raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
            size = len(body)
    return times, size


async def run(targets: int, open_per_target: int, rounds: int, changed: int) -> dict[str, Any]:
    """Fill a store, scrape the daemon's app and the reference; the figures."""
    with tempfile.TemporaryDirectory(prefix="exposuremon-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        config = parse_config(config_text(targets, state_dir), Path(tmp))
        async with await Store.open(state_dir) as store:
            start = time.perf_counter()
            states = await fill(store, config, open_per_target)
            fill_s = time.perf_counter() - start
            rows = sum(
                1
                for st in states.values()
                for rec in st.ports.values()
                if rec.state is Observed.OPEN
            )
            metrics = Metrics()
            collector = StateCollector(store.gauges, lambda: config)
            app = web.Application()  # the daemon's /metrics route, alone
            app.router.add_get(
                "/metrics", scrape_handler(metrics.registry, collector.refresh, collector.render)
            )
            server = HttpServer(app, "127.0.0.1", 0)
            await server.start()
            try:
                assert server.bound is not None
                url = f"http://127.0.0.1:{server.bound[1]}/metrics"
                first, _ = await scrape_times(url, 1)  # after a restart: nothing cached

                async def live(i: int) -> None:
                    await churn(store, config, states, i, changed)

                ours, size = await scrape_times(url, rounds, live)
                async with aiohttp.ClientSession() as http, http.get(url) as resp:
                    text = await resp.text()  # text format, for the reference's parser
            finally:
                await server.stop()
        ref_app = web.Application()
        ref_app.router.add_get("/metrics", make_aiohttp_handler(reference_registry(text)))
        ref_server = HttpServer(ref_app, "127.0.0.1", 0)
        await ref_server.start()
        try:
            assert ref_server.bound is not None
            ref_url = f"http://127.0.0.1:{ref_server.bound[1]}/metrics"
            ref, ref_size = await scrape_times(ref_url, rounds)
        finally:
            await ref_server.stop()
    samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    median, ref_median = statistics.median(ours), statistics.median(ref)
    return {
        "targets": targets,
        "open_port_rows": rows,
        "samples": samples,
        "body_bytes": size,
        "fill_s": round(fill_s, 1),
        "rounds": rounds,
        "changed_targets_between_scrapes": changed,
        "first_scrape_ms": round(first[0], 1),
        "scrape_ms": {
            "median": round(median, 1),
            "p95": round(sorted(ours)[int(0.95 * (len(ours) - 1))], 1),
            "max": round(max(ours), 1),
        },
        "reference_ms": {"median": round(ref_median, 1), "body_bytes": ref_size},
        "ratio_to_reference": round(median / ref_median, 2),
        "goal_ms": GOAL_MS,
        "ratio_to_goal": round(median / GOAL_MS, 2),
        "goal_met": median <= GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/metrics.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--open-per-target", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--changed", type=int, default=20, help="targets changed per scrape")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.targets, args.open_per_target, args.rounds, args.changed))
    report = {"machine": machine(), "metrics_scrape": result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
