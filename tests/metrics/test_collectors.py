"""Metrics: state gauges read from the store at scrape time, work counters, bounded labels."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exposuremon.config.models import load_config, parse_config
from exposuremon.metrics import build_version
from exposuremon.metrics.collectors import StateCollector
from exposuremon.model import EventType, PortFlap, ScanKind, TargetState, TargetStatus
from exposuremon.service import Service
from exposuremon.store.database import ScanRecord, Store
from tests.support.daemon import all_events, of_type, wait_until, write_config
from tests.support.databases import Backend
from tests.support.loopback import Listeners, listening_ports

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parsed(text: str, *, openmetrics: bool = False) -> Samples:
    """Every sample of an exposition, parsed by prometheus-client's own parsers."""
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    out: Samples = {}
    for family in parse(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def samples(collector: StateCollector) -> Samples:
    """The collector's samples; both formats it serves must parse to the same."""
    text = parsed(collector.render(False).decode())
    om = parsed(collector.render(True).decode() + "# EOF\n", openmetrics=True)
    assert om == text
    registry = CollectorRegistry()  # and as a prometheus-client collector
    registry.register(collector)
    assert parsed(generate_latest(registry).decode()) == text
    return text


def value(found: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the series is absent."""
    return found.get((name, tuple(sorted(labels.items()))))


def series(found: Samples, name: str) -> list[Mapping[str, str]]:
    """The label sets of every sample of one metric."""
    return [dict(labels) for (n, labels) in found if n == name]


async def test_state_gauges_follow_the_store_and_survive_a_restart(tmp_path: Path) -> None:
    """Open, unexpected and reopened ports show in the gauges, and again from the store alone."""
    listeners = Listeners()
    expected = listeners.open("127.0.0.5")
    stray = listeners.open("127.0.0.5")
    config_path = write_config(
        tmp_path,
        [
            {"name": "gw", "address": "127.0.0.5", "expected_open": str(expected)},
        ],
        extra="",
    )
    config = load_config(config_path)
    service = Service(config, config_path)
    await service.start()
    try:

        async def reopened() -> bool:
            events = await all_events(service.store, "gw")
            if not of_type(events, EventType.FINDING_OPENED):
                return False
            if not of_type(events, EventType.FINDING_RESOLVED):
                listeners.close()  # the stray port closes: its finding resolves
                listeners.open("127.0.0.5", expected)
                return False
            if not of_type(events, EventType.FINDING_REOPENED):
                if stray not in listeners:
                    listeners.open("127.0.0.5", stray)
                return False
            return True

        await wait_until(reopened, 40, "the stray port's finding opened, resolved, reopened")
        await service.state_metrics.refresh()
        live = samples(service.state_metrics)
    finally:
        await service.stop()
        listeners.close()

    assert value(live, "exposuremon_port_open", target="gw", port=str(expected)) == 1
    assert value(live, "exposuremon_port_open", target="gw", port=str(stray)) == 1
    # Other listeners on the machine (0.0.0.0) are open on 127.0.0.5 too: the oracle says which.
    ambient = listening_ports("127.0.0.5") - {expected, stray}
    unexpected = {s["port"]: s["severity"] for s in series(live, "exposuremon_port_unexpected")}
    assert unexpected.pop(str(stray)) == "critical"  # reopened (docs/architecture.md "Detection")
    assert set(unexpected) <= {str(p) for p in ambient}
    assert value(live, "exposuremon_unexpected_open_ports", target="gw") == 1 + len(unexpected)
    assert value(live, "exposuremon_target_up", target="gw") == 1
    assert value(live, "exposuremon_findings", target="gw", state="open") == 1 + len(unexpected)
    assert value(live, "exposuremon_findings", target="gw", state="resolved") == 1
    assert value(live, "exposuremon_findings_reopened_total", target="gw") == 1
    assert value(
        live, "exposuremon_last_scan_success_timestamp_seconds", target="gw", kind="sentinel"
    )
    # Port labels only for open ports: nothing closed or filtered is a series.
    open_ports = {s["port"] for s in series(live, "exposuremon_port_open")}
    assert (
        {str(expected), str(stray)} <= open_ports <= {str(p) for p in ambient | {expected, stray}}
    )

    # After the daemon is gone, the store alone gives the same state.
    async with await Store.open(config.daemon.state_dir) as store:
        collector = StateCollector(store.gauges, lambda: config)
        await collector.refresh()
        again = samples(collector)
    state_names = {
        "exposuremon_port_open",
        "exposuremon_port_unexpected",
        "exposuremon_unexpected_open_ports",
        "exposuremon_target_up",
        "exposuremon_findings",
        "exposuremon_findings_reopened_total",
        "exposuremon_reboots_suspected_total",
    }
    assert {k: v for k, v in again.items() if k[0] in state_names} == {
        k: v for k, v in live.items() if k[0] in state_names
    }


async def test_removed_targets_leave_the_gauges(tmp_path: Path) -> None:
    """A target that is no longer configured has no series, though the store keeps it."""
    listeners = Listeners()
    port = listeners.open("127.0.0.7")
    config_path = write_config(tmp_path, [{"name": "old", "address": "127.0.0.7"}])
    config = load_config(config_path)
    service = Service(config, config_path)
    await service.start()
    try:

        async def found() -> bool:
            return bool(of_type(await all_events(service.store, "old"), EventType.FINDING_OPENED))

        await wait_until(found, 20, "a finding on the old target")
    finally:
        await service.stop()
        listeners.close()
    other = load_config(write_config(tmp_path, [{"name": "new", "address": "127.0.0.8"}]))
    async with await Store.open(config.daemon.state_dir) as store:
        collector = StateCollector(store.gauges, lambda: other)
        await collector.refresh()
        found_samples = samples(collector)
    targets = {dict(labels).get("target") for (_, labels) in found_samples}
    assert "old" not in targets
    # A configured target never scanned: zero-valued series, but no up/down guess.
    assert value(found_samples, "exposuremon_unexpected_open_ports", target="new") == 0
    assert value(found_samples, "exposuremon_findings_reopened_total", target="new") == 0
    assert value(found_samples, "exposuremon_target_up", target="new") is None
    interval = value(
        found_samples, "exposuremon_schedule_interval_seconds", target="new", kind="quick"
    )
    assert interval == 30  # write_config's quick interval
    assert port  # the old target did have an open port


def test_collector_registers_without_reading_the_store(tmp_path: Path) -> None:
    """Registering the collector describes its families without a snapshot or a store."""

    async def never() -> tuple[dict[str, object], int]:
        raise AssertionError("read at registration")

    config = load_config(write_config(tmp_path, [{"name": "a", "address": "127.0.0.9"}]))
    found = samples(StateCollector(never, lambda: config))  # type: ignore[arg-type]
    assert value(found, "exposuremon_outbox_pending") == 0
    assert value(found, "exposuremon_findings", target="a", state="acked") == 0


def test_a_fleet_node_shows_only_the_targets_it_holds(tmp_path: Path) -> None:
    """Two nodes splitting the targets show each target's state series on one node only."""

    async def never() -> tuple[dict[str, object], int]:
        raise AssertionError("not read")

    names = ["a", "b", "c", "d"]
    config = load_config(
        write_config(
            tmp_path, [{"name": n, "address": f"127.0.0.{20 + i}"} for i, n in enumerate(names)]
        )
    )
    mine = {"a", "c"}
    shown = []
    for owns in (mine.__contains__, lambda name: name not in mine):
        collector = StateCollector(never, lambda: config, owns=owns)  # type: ignore[arg-type]
        found = samples(collector)
        shown.append({dict(labels)["target"] for (_, labels) in found if "target" in dict(labels)})
    assert shown[0] == mine
    assert shown[1] == set(names) - mine
    assert value(found, "exposuremon_outbox_pending") == 0  # not per target: on every node


async def test_scrape_serves_both_formats_over_http(tmp_path: Path) -> None:
    """/metrics answers OpenMetrics to Prometheus, text otherwise, the state included."""
    listeners = Listeners()
    port = listeners.open("127.0.0.10")
    config_path = write_config(
        tmp_path, [{"name": "gw", "address": "127.0.0.10", "expected_open": str(port)}]
    )
    service = Service(load_config(config_path), config_path)
    await service.start()
    try:

        async def scanned() -> bool:
            return service.scans_recorded >= 1

        await wait_until(scanned, 20, "a scan recorded")
        assert service.http_address is not None
        url = "http://{}:{}/metrics".format(*service.http_address)
        accept = (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Accept": accept}) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/openmetrics-text"
                om = await resp.text()
            async with http.get(url) as resp:
                assert resp.content_type == "text/plain"
                text = await resp.text()
    finally:
        await service.stop()
        listeners.close()
    assert om.endswith("# EOF\n")
    assert om.count("# EOF") == 1
    from_om = parsed(om, openmetrics=True)
    from_text = parsed(text)
    for found in (from_om, from_text):
        assert value(found, "exposuremon_port_open", target="gw", port=str(port)) == 1
        assert value(found, "exposuremon_target_up", target="gw") == 1
        assert value(found, "exposuremon_scans_total", kind="sentinel", complete="true")
        assert value(found, "exposuremon_build_info", version=build_version()) == 1


async def test_port_flapping_shows_the_ports_in_an_episode(backend: Backend) -> None:
    """`port_flapping{target,port}` is 1 for each port in a flapping episode, read from the
    store (both dialects), and gone once the episode ended."""
    t0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
    config = parse_config(
        '[[targets]]\nname = "gw"\naddress = "198.51.100.7"\n', Path("."), "<test>"
    )
    flapping = TargetState(
        name="gw",
        status=TargetStatus.UP,
        flaps={8081: PortFlap(changes=(t0,), since=t0), 22: PortFlap(changes=(t0,))},
    )
    async with await Store.open(backend.where) as store:
        await store.apply(scan_of("gw", t0), flapping, [], [], [])
        collector = StateCollector(store.gauges, lambda: config)
        await collector.refresh()
        live = samples(collector)
        assert series(live, "exposuremon_port_flapping") == [{"target": "gw", "port": "8081"}]
        assert value(live, "exposuremon_port_flapping", target="gw", port="8081") == 1
        settled = dataclasses.replace(flapping, flaps={})
        await store.apply(scan_of("gw", t0 + dt.timedelta(minutes=1)), settled, [], [], [])
        await collector.refresh()  # incremental: only the changed target is re-read
        assert series(samples(collector), "exposuremon_port_flapping") == []


def scan_of(target: str, when: dt.datetime) -> ScanRecord:
    """A quick scan record finishing at `when`."""
    return ScanRecord(
        target=target,
        kind=ScanKind.QUICK,
        address="198.51.100.7",
        started=when - dt.timedelta(seconds=2),
        finished=when,
        complete=True,
        ports_scanned=100,
        open_count=1,
        closed_count=99,
        filtered_count=0,
        duration_s=2.0,
    )
