"""Per-port alerting: `port_reopened` and `port_acked` follow each port's finding, both dialects."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

from exposuremon import detect
from exposuremon.config import Config, parse_config
from exposuremon.metrics import StateCollector
from exposuremon.model import FindingState, Observation, Observed, ScanKind
from exposuremon.store import Store
from tests.metrics.test_incremental import parsed
from tests.support.databases import Backend
from tests.support.records import scan_record_of

T0 = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
PORTS = (22, 80, 443, 8080)


def config_of(state_dir: Path) -> Config:
    """Two routers expecting 443; a third configured, never scanned."""
    text = f'[daemon]\nstate_dir = "{state_dir}"\n'
    for i, name in enumerate(("gw-a", "gw-b", "gw-c")):
        text += (
            f'[[targets]]\nname = "{name}"\naddress = "192.0.2.{i + 1}"\nexpected_open = "443"\n'
        )
    return parse_config(text, state_dir)


def observation(name: str, open_ports: set[int], when: dt.datetime) -> Observation:
    """A complete sentinel scan of PORTS with `open_ports` open."""
    return Observation(
        target=name,
        kind=ScanKind.SENTINEL,
        address="192.0.2.1",
        started=when - dt.timedelta(seconds=1),
        finished=when,
        complete=True,
        states={p: Observed.OPEN if p in open_ports else Observed.CLOSED for p in PORTS},
        confirmed_open=frozenset(open_ports),
        responded=True,
    )


async def test_port_reopened_and_acked_follow_each_port(backend: Backend, tmp_path: Path) -> None:
    """Reopened and acked series appear for exactly the ports with such a finding, per port."""
    config = config_of(tmp_path)
    clock = itertools.count(1)

    def now() -> dt.datetime:
        return T0 + dt.timedelta(minutes=next(clock))

    async with await Store.open(backend.where) as store:
        collector = StateCollector(store.gauges, lambda: config)

        async def scan(name: str, open_ports: set[int]) -> None:
            when = now()
            prev = await store.load_state(name)
            obs = observation(name, open_ports, when)
            policy = config.targets[0].policy(config.scan)
            out = detect.evaluate(prev, obs, policy, when)
            await store.apply(scan_record_of(obs), out.state, out.events, out.findings, ())

        async def ack(name: str, port: int) -> None:
            when = now()
            state = await store.load_state(name)
            _, acked = detect.acknowledge(state, port, when + dt.timedelta(days=7), "ok", when)
            await store.save_ack(acked)

        async def gauges() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
            await collector.refresh()
            text = collector.render(False).decode()
            samples = parsed(text, openmetrics=False)
            assert parsed(collector.render(True).decode(), openmetrics=True) == samples

            def ports(metric: str) -> set[tuple[str, str]]:
                found = set()
                for (name, labels), value in samples.items():
                    if name == metric:
                        assert value == 1  # present means 1: no zero-valued port series
                        pairs = dict(labels)
                        assert set(pairs) == {"target", "port"}
                        found.add((pairs["target"], pairs["port"]))
                return found

            return ports("exposuremon_port_reopened"), ports("exposuremon_port_acked")

        # 80 and 8080 open on gw-a, 22 on gw-b: findings, none reopened, none acked.
        await scan("gw-a", {80, 443, 8080})
        await scan("gw-b", {22, 443})
        assert await gauges() == (set(), set())
        await ack("gw-b", 22)
        assert await gauges() == (set(), {("gw-b", "22")})
        # The admin closes 80 and 8080 (resolved after two scans), the router reboots: both
        # are open again, reopened; one of them is acknowledged.
        await scan("gw-a", {443})
        await scan("gw-a", {443})
        assert (await store.load_state("gw-a")).findings == {}
        await scan("gw-a", {80, 443, 8080})
        state = await store.load_state("gw-a")
        assert {p: f.reopen_count for p, f in state.findings.items()} == {80: 1, 8080: 1}
        assert await gauges() == ({("gw-a", "80"), ("gw-a", "8080")}, {("gw-b", "22")})
        await ack("gw-a", 8080)
        state = await store.load_state("gw-a")
        assert state.findings[8080].state is FindingState.ACKED
        assert await gauges() == (
            {("gw-a", "80"), ("gw-a", "8080")},
            {("gw-a", "8080"), ("gw-b", "22")},
        )
        # 80 closes for good: its series goes; the target's counter keeps the two reopens.
        await scan("gw-a", {443, 8080})
        await scan("gw-a", {443, 8080})
        assert await gauges() == ({("gw-a", "8080")}, {("gw-a", "8080"), ("gw-b", "22")})
        text = collector.render(False).decode()
        assert 'exposuremon_findings_reopened_total{target="gw-a"} 2' in text
        assert 'exposuremon_port_reopened{target="gw-c"' not in text
        # A fresh collector (a restarted daemon) reads the same from the store alone.
        fresh = StateCollector(store.gauges, lambda: config)
        await fresh.refresh()
        assert fresh.render(False) == collector.render(False)
