"""The daemon against a router with SYN-flood protection: nothing changes, so nothing is said."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from exposuremon.model import EventType, FindingState, ScanKind
from tests.support.daemon import (
    all_events,
    running_service,
    stored_last_scan,
    wait_until,
    write_config,
)
from tests.support.testbed import Router

# The quick scan shares the router's bucket with the sentinel scans: on a busy machine it can
# take a minute and more, so the test waits longer than the suite's default 120 s.
pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(300)]

BUG_PORTS = [*range(80, 90), *range(440, 443), *range(444, 450)]  # 443 is the forward
SENTINEL_ROUNDS = 8


async def test_a_rate_limited_router_raises_no_event(router: Router, tmp_path: Path) -> None:
    """Under a 20/s burst 5 limit on new connections, with 19 findings open, rounds of sentinel
    and quick scans raise no event at all: no resolve, no reopen, no port closed, no reboot.
    """
    router.listen(443, "tls")
    for port in BUG_PORTS:
        router.listen(port, "http")
    rules: dict[int | tuple[int, int], str] = {443: "accept", (80, 89): "accept"}
    rules[(440, 449)] = "accept"
    router.set_policy("reject", rules)
    target = {
        "name": "r",
        "address": router.addr,
        "expected_open": "443",
        # Sentinel scans of 36 ports every 4 s take 9 of the 20 connections a second; the
        # quick scan of 80 ports gets the rest: about 8 s, meeting the bucket many times.
        # (Sentinels every 2 s took 18/s, and a quick scan on a busy machine over 100 s. A
        # quick scan that starts while a sentinel drains the bucket paces itself down and
        # can take 4x as long: 160 ports took 16-66 s on an idle machine.)
        "ports_quick": "1-70,440-449",
    }
    config = write_config(tmp_path, [target], sentinel="4s", quick="20s")
    async with running_service(config) as service:
        store = service.store

        async def findings_open() -> bool:
            rows, _ = await store.findings(target="r", state=FindingState.OPEN, limit=100)
            return len(rows) == len(BUG_PORTS)

        await wait_until(findings_open, 60, "a finding for each of the 19 bug ports")
        router.rate_limit(20, burst=5)
        before = len(await all_events(store, "r"))
        quick_before = await stored_last_scan(service, "r", ScanKind.QUICK)
        start = service.scans_recorded

        async def rounds_done() -> bool:
            quick = await stored_last_scan(service, "r", ScanKind.QUICK)
            newer_quick = quick is not None and (quick_before is None or quick > quick_before)
            return service.scans_recorded >= start + SENTINEL_ROUNDS and newer_quick

        await wait_until(rounds_done, 240, f"{SENTINEL_ROUNDS} scans and a quick scan")
        await service.flush_quiet()
        events = (await all_events(store, "r"))[before:]
        assert [(e.type, e.port) for e in events] == []
        rows, _ = await store.findings(target="r", state=FindingState.OPEN, limit=100)
        assert len(rows) == len(BUG_PORTS)
        assert not any(e.type is EventType.FINDING_REOPENED for e in events)

        # The limit was learned and is shown: the API and the metric.
        assert service.http_address is not None
        host, port = service.http_address
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/api/v1/targets/r") as response,
        ):
            body = await response.json()
        rate = body["accepted_connection_rate"]
        assert rate is not None
        assert 1 <= rate <= 100, rate
        sample = service.metrics.registry.get_sample_value(
            "exposuremon_target_accepted_connection_rate", {"target": "r"}
        )
        assert sample is not None
        assert sample > 0
