"""A real Prometheus scraping the three nodes of one fleet (issue 16, "metrics that do not
double-count").

Three `exposuremon run` processes share one PostgreSQL database (the `pg_url` fixture) and
twelve loopback targets, four ports of which listen unexpectedly (findings). Prometheus
scrapes all three every second with the shipped deploy/prometheus/alerts.yml. Once the
shards are balanced, every state series appears exactly once across the fleet (counted over
the instances, every other label kept), every target is shown by exactly one node, and
ExposuremonUnexpectedPortOpen fires once per finding, not once per node.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import write_config
from tests.support.fleet_nodes import Node, start_nodes, stop_nodes, wait_ready
from tests.support.loopback import Listeners
from tests.support.prom import Prometheus, free_port, missing_binaries, running_prometheus

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = "exposuremon"
SHARDS = 64
TARGETS = {f"fl-{i:02d}": f"127.0.21.{i}" for i in range(1, 13)}
# Unexpected open ports (hot ports: the sentinel scans them every second).
OPEN = {("fl-02", "8081"), ("fl-05", "8082"), ("fl-05", "8443"), ("fl-09", "8088")}
# The state series (read from the store at each scrape); each must come from one node only.
STATE = (
    "exposuremon_port_open",
    "exposuremon_port_unexpected",
    "exposuremon_unexpected_open_ports",
    "exposuremon_target_up",
    "exposuremon_findings",
    "exposuremon_findings_reopened_total",
    "exposuremon_reboots_suspected_total",
    "exposuremon_last_scan_success_timestamp_seconds",
    "exposuremon_schedule_interval_seconds",
)
# Of those, the ones every target has once it answered a scan.
PER_TARGET = (
    "exposuremon_unexpected_open_ports",
    "exposuremon_target_up",
    "exposuremon_findings",
    "exposuremon_findings_reopened_total",
    "exposuremon_reboots_suspected_total",
    "exposuremon_schedule_interval_seconds",
)


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    opened = Listeners()
    try:
        for target, port in OPEN:
            opened.open(TARGETS[target], int(port))
        yield opened
    finally:
        opened.close()


def fleet_nodes(tmp_path: Path) -> list[Node]:
    """Three nodes' configs: the shared targets, each its node name, port and state dir."""
    targets = [
        {"name": name, "address": address, "ports_quick": "hot", "ports_full": "1-1024"}
        for name, address in TARGETS.items()
    ]
    nodes = []
    for i in range(1, 4):
        name = f"node-{i}"
        directory = tmp_path / name
        directory.mkdir()
        fleet = (
            '[store]\nurl_env = "EXPOSUREMON_STORE_URL"\n'
            f'[fleet]\nnode = "{name}"\nlease_ttl = "3s"\n'
        )
        config = write_config(directory, targets, sentinel="1s", quick="30s", extra=fleet)
        port = free_port()
        text = config.read_text()
        config.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
        nodes.append(Node(name, config, port, directory / "exposuremon.log"))
    return nodes


def balanced(prom: Prometheus) -> bool:
    """Every node scraped holds its share: 64 shards over 3 nodes, 21 or 22 each."""
    held = [float(s["value"][1]) for s in prom.query(f'exposuremon_shards_held{{job="{JOB}"}}')]
    return len(held) == 3 and sum(held) == SHARDS and max(held) - min(held) <= 1


def unexpected_ports(prom: Prometheus) -> set[tuple[str, str]]:
    return {
        (s["metric"]["target"], s["metric"]["port"])
        for s in prom.query(f'exposuremon_port_unexpected{{job="{JOB}"}}')
    }


def shown_targets(prom: Prometheus, metric: str) -> set[str]:
    """The targets that have series of `metric` (from any node)."""
    return {
        s["metric"]["target"] for s in prom.query(f'count by (target) ({metric}{{job="{JOB}"}})')
    }


def port_alerts(prom: Prometheus) -> list[tuple[str, str]]:
    """(target, port) of each firing ExposuremonUnexpectedPortOpen, one entry per alert."""
    return [
        (a["labels"]["target"], a["labels"]["port"])
        for a in prom.alerts(state="firing")
        if a["labels"]["alertname"] == "ExposuremonUnexpectedPortOpen"
    ]


@pytest.mark.timeout(120)
def test_each_state_series_once_across_three_nodes_and_one_alert_per_finding(
    tmp_path: Path, pg_url: str, listeners: Listeners
) -> None:
    if missing_binaries():
        pytest.skip(missing_binaries() or "")
    nodes = fleet_nodes(tmp_path)
    try:
        start_nodes(nodes, pg_url)
        wait_ready(nodes, 40)
        with running_prometheus(
            tmp_path / "prom",
            scrape=[f"127.0.0.1:{n.port}" for n in nodes],
            job=JOB,
            rule_files=[RULES],
            interval=1.0,
        ) as prom:
            try:
                _scenario(prom, nodes)
            except AssertionError as exc:
                tails = "\n".join(f"--- {n.name}:\n{n.log_tail(20)}" for n in nodes)
                raise AssertionError(f"{exc}\n{tails}") from None
    finally:
        stop_nodes(nodes)


def _scenario(prom: Prometheus, nodes: list[Node]) -> None:
    prom.wait_for(lambda: len(prom.query(f'up{{job="{JOB}"}} == 1')) == 3, 15, "three scrapes")
    prom.wait_for(lambda: balanced(prom), 45, "the shards balanced over the three nodes")
    # Each node now shows its own targets; the findings on the listening ports are open.
    prom.wait_for(lambda: unexpected_ports(prom) >= OPEN, 30, f"findings on {sorted(OPEN)}")
    prom.wait_for(
        lambda: set(port_alerts(prom)) >= OPEN, 15, "ExposuremonUnexpectedPortOpen for each"
    )
    prom.wait_for(
        lambda: all(shown_targets(prom, m) == set(TARGETS) for m in PER_TARGET),
        20,
        "every target's state series (target_up once it answered)",
    )

    # Three looks a scrape apart: no state series is exported by two nodes at once.
    for _ in range(3):
        for metric in STATE:  # counted per metric: an aggregation drops the name
            doubled = prom.query(f'count without (instance) ({metric}{{job="{JOB}"}}) > 1')
            assert not doubled, f"{metric} exported by more than one node: {doubled}"
        for metric in PER_TARGET:
            assert shown_targets(prom, metric) == set(TARGETS), metric
        # Each target's series come from one node, the one whose /metrics shows it.
        by_node = {f"127.0.0.1:{n.port}": n.targets() for n in nodes}
        for sample in prom.query(f'exposuremon_schedule_interval_seconds{{job="{JOB}"}}'):
            instance, target = sample["metric"]["instance"], sample["metric"]["target"]
            assert target in by_node[instance], (target, instance)

        # One alert per finding: the firing alerts are exactly the unexpected open ports,
        # each once (the series of a finding exists once, so the rule fires once).
        alerts = Counter(port_alerts(prom))
        assert set(alerts) == unexpected_ports(prom)
        assert set(alerts) >= OPEN
        assert all(n == 1 for n in alerts.values()), alerts
        doubled = prom.query(
            'count by (target, port) (ALERTS{alertname="ExposuremonUnexpectedPortOpen", '
            'alertstate="firing"}) > 1'
        )
        assert not doubled, doubled
        time.sleep(1.0)
