"""The shipped alert rules and dashboard against a real Prometheus scraping the daemon.

The daemon (a subprocess, as systemd runs it) watches a test-bed router; Prometheus scrapes it
every second with deploy/prometheus/alerts.yml loaded (`for:` set to 0 s). The router's
unexpected port is closed, the router reboots, the port reopens: ExposuremonPortReopened must
fire for that target. Every other alert is made to fire too, and every expression of the
rules and of the Grafana dashboard is evaluated through the HTTP API: none may fail, and
each must return data.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import daemon_process, write_config
from tests.support.prom import (
    Prometheus,
    dashboard_exprs,
    dashboard_variable_queries,
    free_port,
    missing_binaries,
    running_prometheus,
    substitute,
)
from tests.support.testbed import Router

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "exposuremon.json"
JOB = "exposuremon"  # the job name the shipped rules expect
TOKEN = "prometheus-test-token"
AHEAD = 400.0  # seconds: "later" for the stale-scan check (> 2 full intervals, > 5 minutes)
# Alerts whose condition needs more time than a test has: their expressions are evaluated
# AHEAD seconds in the future instead (Prometheus runs with a lookback longer than that, so
# the last samples still count, as if the daemon had stopped scanning then).
EVALUATED_AHEAD = {"ExposuremonScanStale"}
# Series that exist only in some situations (a target behind SYN-flood protection; the live
# nodes per vantage, set by fleet mode's lease keeper; a port in a flapping episode): their
# panels may be empty here, and the metric may or may not have been exported in this run.
SITUATIONAL = {
    "exposuremon_target_accepted_connection_rate",
    "exposuremon_port_flapping",
    "exposuremon_fleet_nodes",
    "exposuremon_fleet_shards",
}
# Expressions reading a series only fleet mode's lease keeper sets may be empty; among them
# the fleet alerts, which cannot fire for one healthy node (it holds every shard).
KEEPER_SERIES = {"exposuremon_fleet_nodes", "exposuremon_fleet_shards"}
# Alerts this scenario cannot make fire, whose series it does export (the selectors are still
# checked): a degraded vantage needs [fleet] vantage_min_targets (3) answering targets going
# silent at once; its firing is tested by promtool (alerts_test.yml) and the uplink cut of
# tests/e2e/test_vantage_health.py.
QUIET_HERE = {"ExposuremonVantageDegraded"}


# -- helpers --------------------------------------------------------------------------------


def shortened_rules(directory: Path) -> Path:
    """A copy of alerts.yml with every `for:` set to 0 s, so alerts fire at the first true."""
    text, count = re.subn(r"^(\s+)for:\s*\S+\s*$", r"\1for: 0s", RULES.read_text(), flags=re.M)
    assert count >= 3, "alerts.yml has fewer `for:` clauses than expected"
    path = directory / "alerts.yml"
    path.write_text(text)
    return path


class HookServer(http.server.ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 that answers every POST with `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.status = status
        self.hits = 0


class _Hook(http.server.BaseHTTPRequestHandler):
    server: HookServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits += 1
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows the test's own output


@contextlib.contextmanager
def webhook(status: int) -> Iterator[HookServer]:
    """A running HookServer, shut down afterwards."""
    server = HookServer(status)
    thread = threading.Thread(target=server.serve_forever, name=f"hook-{status}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def notify_section(name: str, server: HookServer) -> str:
    """A generic-webhook [[notify]] channel posting to a loopback receiver."""
    host, port = server.server_address[:2]
    return (
        f'[[notify]]\nname = "{name}"\ntype = "webhook"\n'
        f'url = "http://{host!s}:{port}/hook/{name}"\nmin_severity = "info"\n'
    )


def wait_ready(url: str, deadline: float) -> None:
    """Block until the daemon's /readyz answers 200."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"daemon not ready within {deadline}s")
        time.sleep(0.1)


def firing(prom: Prometheus, alertname: str, **labels: str) -> list[dict[str, Any]]:
    """Firing alerts of one name whose labels include `labels`."""
    return [
        a
        for a in prom.alerts(state="firing")
        if a["labels"]["alertname"] == alertname
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def fired(prom: Prometheus, alertname: str, **labels: str) -> Callable[[], bool]:
    """A check: the alert fired at some point of the last 10 minutes (ALERTS history)."""
    matchers = "".join(f', {k}="{v}"' for k, v in labels.items())
    expr = f'max_over_time(ALERTS{{alertname="{alertname}", alertstate="firing"{matchers}}}[10m])'
    return lambda: bool(prom.query(expr))


SELECTOR = re.compile(r"\b([a-zA-Z_:][\w:]*)\s*\{([^{}]*)\}")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}


def selectors(expr: str) -> set[str]:
    """The `metric{matchers}` selectors of a PromQL expression (what must have series)."""
    return {f"{m.group(1)}{{{m.group(2)}}}" for m in SELECTOR.finditer(expr)} - {
        f"{w}{{}}" for w in PROMQL_WORDS
    }


def metric_names(expr: str) -> set[str]:
    """The exposuremon metric names an expression reads."""
    return set(re.findall(r"\bexposuremon_\w+", expr))


# -- the test -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_alerts_and_dashboard_against_real_prometheus(
    router: Router, router_factory: Callable[..., Router], tmp_path: Path
) -> None:
    """A reopened port fires ExposuremonPortReopened; every rule and panel query has data."""
    if missing_binaries():
        pytest.skip(missing_binaries() or "")
    spare = router_factory()  # a second target: its first full scan comes after the test
    router.listen(443, "tls")
    router.listen(8080, "http", server_header="bintec", title="Login")
    # The firmware's boot configuration opens the admin port 8080 besides the forward 443.
    router.set_policy("reject", {443: "accept", 8080: "accept"})
    router.save_boot_state()
    port = free_port()
    with (
        webhook(200) as ok,
        webhook(500) as broken,
        webhook(404) as gone,
    ):
        config = write_config(
            tmp_path,
            [
                {"name": "surgery", "address": router.addr, "expected_open": "443",
                 "ports_quick": "hot", "ports_full": "1-1024,8080"},
                {"name": "spare", "address": spare.addr, "ports_quick": "hot",
                 "ports_full": "1-1024"},
            ],
            sentinel="1s",
            quick="30s",
            full="120s",  # the second target's first full scan runs 60 s after start
            extra=notify_section("chat-ok", ok)
            + notify_section("chat-broken", broken)
            + notify_section("chat-gone", gone),
        )  # fmt: skip
        text = config.read_text()
        assert 'listen = "127.0.0.1:0"' in text
        token = tmp_path / "api-token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        listen = f'listen = "127.0.0.1:{port}"\ntoken_file = "{token}"'
        config.write_text(text.replace('listen = "127.0.0.1:0"', listen))
        with daemon_process(config, tmp_path / "daemon.log") as daemon:
            daemon.start()
            wait_ready(f"http://127.0.0.1:{port}", 30)
            with running_prometheus(
                tmp_path / "prom",
                scrape=[f"127.0.0.1:{port}"],
                job=JOB,
                rule_files=[shortened_rules(tmp_path)],
                interval=1.0,
                extra_args=["--query.lookback-delta=15m"],
            ) as prom:
                try:
                    _scenario(prom, router, daemon.kill, f"http://127.0.0.1:{port}")
                except AssertionError as exc:
                    tail = daemon.log()[-4000:]
                    raise AssertionError(f"{exc}\n--- daemon log tail:\n{tail}") from None
    assert ok.hits
    assert broken.hits
    assert gone.hits


def ack_open_finding(api: str, target: str, port: int) -> None:
    """Acknowledge the target's open finding on `port` through the API, for a day."""
    with urllib.request.urlopen(f"{api}/api/v1/findings?target={target}&state=open") as resp:
        found = [f for f in json.load(resp)["findings"] if f["port"] == port]
    assert len(found) == 1, found
    request = urllib.request.Request(
        f"{api}/api/v1/findings/{found[0]['id']}/ack",
        data=json.dumps({"until": "1d", "reason": "reopen seen, fix scheduled"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as resp:
        assert resp.status == 200


def _scenario(prom: Prometheus, router: Router, stop_daemon: Callable[[], None], api: str) -> None:
    start = time.time()
    prom.wait_for(lambda: prom.query(f'up{{job="{JOB}"}} == 1'), 15, "first scrape")

    # 1. The boot config exposes 8080: a critical finding, alerted per port.
    prom.wait_for(
        lambda: firing(prom, "ExposuremonUnexpectedPortOpen", target="surgery", port="8080"),
        30,
        "ExposuremonUnexpectedPortOpen for surgery:8080",
    )
    assert not firing(prom, "ExposuremonPortReopened")  # opened, not reopened

    # 2. The admin closes it (not saved to the boot config): the finding resolves.
    router.set_policy("reject", {443: "accept"})
    prom.wait_for(
        lambda: prom.query('exposuremon_findings{target="surgery", state="resolved"} >= 1'),
        30,
        "the 8080 finding resolved",
    )
    prom.wait_for(
        lambda: not firing(prom, "ExposuremonUnexpectedPortOpen", target="surgery"),
        10,
        "the port alert resolved",
    )

    # 3. Reboot: down for a few sentinel scans, back with the boot config: 8080 reopens.
    router.reboot(5.0)
    reopened = prom.wait_for(
        lambda: firing(prom, "ExposuremonPortReopened", target="surgery"),
        40,
        "ExposuremonPortReopened for surgery",
    )
    assert reopened[0]["labels"]["severity"] == "critical"
    assert reopened[0]["labels"]["port"] == "8080"  # per port, from port_reopened
    assert reopened[0]["annotations"]["runbook_url"].endswith("#exposuremonportreopened")
    prom.wait_for(fired(prom, "ExposuremonTargetDown", target="surgery"), 10, "TargetDown fired")
    assert firing(prom, "ExposuremonUnexpectedPortOpen", target="surgery", port="8080")
    # The daemon's own notifications: a receiver answering 500, one answering 404.
    prom.wait_for(
        lambda: firing(prom, "ExposuremonNotificationsFailing", channel="chat-broken"),
        20,
        "NotificationsFailing for the channel answering 500",
    )
    prom.wait_for(
        lambda: firing(prom, "ExposuremonNotificationsFailing", channel="chat-gone"),
        20,
        "NotificationsFailing for the channel answering 404 (dead letters)",
    )
    assert not firing(prom, "ExposuremonNotificationsFailing", channel="chat-ok")

    # The reopened 8080 is acknowledged: its alerts go silent, per port.
    ack_open_finding(api, "surgery", 8080)
    prom.wait_for(
        lambda: prom.query('exposuremon_port_acked{target="surgery", port="8080"} == 1'),
        20,
        "port_acked for surgery:8080",
    )
    prom.wait_for(
        lambda: not firing(prom, "ExposuremonPortReopened", target="surgery"),
        20,
        "ExposuremonPortReopened silenced by the ack",
    )
    assert prom.query('exposuremon_port_reopened{target="surgery", port="8080"} == 1')
    assert not firing(prom, "ExposuremonUnexpectedPortOpen", target="surgery", port="8080")

    # 4. Stale scans: the same expression, evaluated AHEAD seconds later.
    rules = {r["name"]: r for r in prom.rules() if r["type"] == "alerting"}
    later = time.time() + AHEAD
    stale = prom.query(rules["ExposuremonScanStale"]["query"], at=later)
    stale_keys = {(s["metric"]["target"], s["metric"]["kind"]) for s in stale}
    # ("spare", "full"): never completed a full scan, counted from the daemon's start.
    assert {("surgery", "full"), ("surgery", "sentinel"), ("spare", "full")} <= stale_keys

    # 5. The daemon stops: ExposuremonDown.
    stop_daemon()
    prom.wait_for(lambda: firing(prom, "ExposuremonDown"), 15, "ExposuremonDown")
    end = time.time()

    _every_expression_has_data(prom, rules, start, end, {"ExposuremonScanStale": stale})


def _every_expression_has_data(
    prom: Prometheus,
    rules: dict[str, dict[str, Any]],
    start: float,
    end: float,
    ahead: dict[str, list[dict[str, Any]]],
) -> None:
    """Each rule and dashboard expression evaluates without error and returns data.

    `ahead`: results of the EVALUATED_AHEAD alerts, taken while the daemon still ran (once
    it is stopped, Prometheus marks its series stale and nothing is left to look ahead at).
    """
    dashboard = json.loads(DASHBOARD.read_text())
    values = {
        "job": JOB,
        "instance": ".*",
        "target": ".*",
        "__rate_interval": "4s",  # Grafana: max(4 x scrape interval, interval + scrape)
        "__interval": "2s",
        "__range": f"{int(end - start) + 1}s",
    }
    exprs = [(f"alert {name}", rule["query"]) for name, rule in rules.items()]
    exprs += [(where, substitute(expr, values)) for where, expr in dashboard_exprs(dashboard)]
    empty, checked = [], set()
    for where, expr in exprs:
        # Errors raise PromError; an instant query at the end checks the `time()` arithmetic.
        prom.query(expr, at=end)
        name = where.removeprefix("alert ")
        if metric_names(expr) <= SITUATIONAL or metric_names(expr) & KEEPER_SERIES:
            continue
        if name in EVALUATED_AHEAD:
            result = ahead[name]
        elif name in QUIET_HERE:
            result = [{"quiet": "not expected to fire here"}]
        else:
            result = prom.query_range(expr, start, end, step=1.0)
        if not result:
            empty.append(f"{where}: {expr}")
        for selector in selectors(expr):
            if selector not in checked:
                checked.add(selector)
                if not prom.series(selector, start=start):
                    empty.append(f"{where}: selector {selector} matches no series")
    for variable, label, var_selector in dashboard_variable_queries(dashboard):
        found = prom.series(substitute(var_selector or "", values), start=start)
        if not any(label in series for series in found):
            empty.append(f"variable {variable}: label_values({var_selector}, {label}) is empty")
    assert not empty, "expressions without data:\n" + "\n".join(empty)

    # Every exposuremon metric the daemon exports is shown or alerted on, and vice versa.
    exported = {
        n
        for n in prom.label_values("__name__", match=f'{{job="{JOB}"}}')
        if n.startswith("exposuremon_") and not n.endswith("_created")
    }
    used = set().union(*(metric_names(expr) for _, expr in exprs))
    missing = used - exported - SITUATIONAL
    assert not missing, f"queries read metrics that do not exist: {missing}"
    # A histogram is stored as its _bucket, _sum and _count series: each counts on its own.
    unused = exported - used - SITUATIONAL
    assert not unused, f"exported metrics no panel or alert uses: {sorted(unused)}"
